// revproxy: a reverse proxy whose requests wait on their upstream, for the peer tests
// (tests/test_peer.py).
//
//	revproxy -upstream 127.0.0.1:PORT -slowtcp 127.0.0.1:PORT [-h2 127.0.0.1:PORT]
//
// /proxy/... goes through net/http/httputil.ReverseProxy to -upstream (the handler's goroutine
// waits in net/http.(*persistConn).roundTrip for the upstream's answer); /h2/... asks -h2 the same
// over HTTPS with HTTP/2 (waiting in the HTTP/2 client connection's round trip); /tcp dials -slowtcp and
// reads one line (the handler's goroutine waits in "IO wait" on that socket). Each handler prints
// {"goid":N,"path":P} to stdout before it waits. Prints {"ready":true,"pid":P,"addr":...} once
// listening; serves until stdin closes.
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

var out = json.NewEncoder(os.Stdout)
var outMu sync.Mutex

func say(v map[string]any) {
	outMu.Lock()
	defer outMu.Unlock()
	_ = out.Encode(v)
}

// goid is the calling goroutine's id, from the first line of its stack trace.
func goid() int64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := strings.Fields(strings.TrimPrefix(string(buf), "goroutine "))
	n, _ := strconv.ParseInt(f[0], 10, 64)
	return n
}

func main() {
	upstream := flag.String("upstream", "", "host:port of the HTTP upstream")
	slowtcp := flag.String("slowtcp", "", "host:port of a TCP service that answers one line slowly")
	h2 := flag.String("h2", "", "host:port of the HTTPS upstream speaking HTTP/2 (a self-signed certificate)")
	flag.Parse()
	target, err := url.Parse("http://" + *upstream)
	if err != nil {
		panic(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	mux := http.NewServeMux()
	mux.HandleFunc("/proxy/", func(w http.ResponseWriter, r *http.Request) {
		say(map[string]any{"goid": goid(), "path": r.URL.Path})
		proxy.ServeHTTP(w, r)
	})
	h2client := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	mux.HandleFunc("/h2/", func(w http.ResponseWriter, r *http.Request) {
		say(map[string]any{"goid": goid(), "path": r.URL.Path})
		resp, err := h2client.Get("https://" + *h2 + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		_, _ = io.Copy(w, resp.Body)
	})
	mux.HandleFunc("/tcp", func(w http.ResponseWriter, r *http.Request) {
		c, err := net.Dial("tcp", *slowtcp)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer c.Close()
		say(map[string]any{"goid": goid(), "path": r.URL.Path, "local": c.LocalAddr().String(),
			"peer": c.RemoteAddr().String()})
		line, _ := bufio.NewReader(c).ReadString('\n')
		_, _ = io.WriteString(w, line)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() { _ = http.Serve(ln, mux) }()
	say(map[string]any{"ready": true, "pid": os.Getpid(), "addr": ln.Addr().String()})
	_, _ = io.Copy(io.Discard, os.Stdin)
}
