// slowupstream: an upstream that answers slowly, for the peer tests (tests/test_peer.py).
//
// Listens on 127.0.0.1 three times: an HTTP server whose every answer waits -delay (150 ms by
// default), the same over HTTPS with HTTP/2 (a self-signed certificate: httptest's), and a raw
// TCP port that, for each connection, waits -delay and then writes one line.
// Prints {"ready":true,"pid":P,"http":"127.0.0.1:PORT","h2":"127.0.0.1:PORT","tcp":"127.0.0.1:PORT"}
// once listening; serves until stdin closes.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"time"
)

func main() {
	delay := flag.Duration("delay", 150*time.Millisecond, "how long each answer waits")
	flag.Parse()
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(*delay)
		_, _ = io.WriteString(w, "upstream "+r.URL.Path+" "+r.Proto+"\n")
	})
	go func() { _ = http.Serve(web, slow) }()
	h2 := httptest.NewUnstartedServer(slow)
	h2.EnableHTTP2 = true
	h2.StartTLS()
	go func() {
		for {
			c, err := raw.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				time.Sleep(*delay)
				_, _ = io.WriteString(c, "slow line\n")
			}()
		}
	}()
	_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"ready": true, "pid": os.Getpid(),
		"http": web.Addr().String(), "h2": h2.Listener.Addr().String(), "tcp": raw.Addr().String()})
	_, _ = io.Copy(io.Discard, os.Stdin)
}
