// httphello: a net/http "hello" server on 127.0.0.1 for the probe-cost benchmark.
//
// Prints {"ready":true,"pid":P,"addr":"127.0.0.1:PORT"} once listening; serves until stdin closes.
package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("hello\n"))
	})
	go func() { _ = http.Serve(ln, nil) }()
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"ready": true, "pid": os.Getpid(),
		"addr": ln.Addr().String()})
	_, _ = io.Copy(io.Discard, os.Stdin)
}
