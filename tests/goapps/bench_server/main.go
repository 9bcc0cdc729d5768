// bench_server: a net/http server shaped like a real one, for lgf's kernel-side idle/stall
// verdict (tests/test_uprobe_verdict.py) and the CPU-per-request bench (bench/bench_idle_server.py).
//
// What a real server has and what must never page anyone: an accept loop waiting for the next
// connection, keep-alive connections waiting for their next request (-idle N client connections
// to itself, made at start and left open; their client side waits too, between responses), and a
// ticker goroutine doing a little work every -tick. What must page: a request stalled mid-work.
//
//	bench_server [-idle 4] [-tick 10ms]
//	-> {"ready":true,"pid":P,"addr":"127.0.0.1:PORT"}
//	<- "poke"        every idle keep-alive connection makes one more request (their idle waits end)
//	-> {"poked":N}
//	<- "connect"     one new connection (the accept loop's wait ends), one request, closed
//	-> {"connected":true}
//	<- "lock MS"     GET /lock?ms=MS: the handler waits MS ms on a mutex another goroutine holds
//	-> {"goid":G,"method":"GET","path":"/lock","duration_ns":D,"begin_ns":B,"end_ns":E,"earliest_end_ns":R}
//	<- "deep DEPTH MS"   GET /deep: the handler recurses DEPTH frames deep, then sleeps MS ms
//	-> {"goid":G,"method":"GET","path":"/deep","duration_ns":D,"begin_ns":B,"end_ns":E,"earliest_end_ns":R}
//
// begin_ns/end_ns are CLOCK_MONOTONIC (bpf_ktime_get_ns's clock) read around the wait, and
// earliest_end_ns the soonest it could end (the holder's read before unlocking; a sleep's begin +
// MS), so a test checks lgf's interval against causal bounds, not a tolerance a busy host breaks.
//
// Routes for load: "/" answers "hello". The main goroutine reads stdin (a blocking read syscall,
// never a park), and makes the requests itself, so no goroutine of the fixture's own waits on a
// channel for a command. Standard library only: built offline with every supported toolchain.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

var out = json.NewEncoder(os.Stdout)

func goid() int64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := strings.Fields(string(buf))
	id, _ := strconv.ParseInt(f[1], 10, 64)
	return id
}

type handled struct {
	goid                          int64
	dur                           time.Duration
	beginNs, endNs, earliestEndNs int64
}

var results = make(chan handled, 16)
var mu sync.Mutex

func lockHandler(w http.ResponseWriter, r *http.Request) {
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	held := make(chan struct{})
	var unlocking int64 // written under mu by the holder, read under mu by the handler
	go func() { // the holder: outside any request, its sleep is a stall of its own
		mu.Lock()
		close(held)
		time.Sleep(time.Duration(ms) * time.Millisecond)
		unlocking = monoNs()
		mu.Unlock()
	}()
	<-held
	begin := monoNs()
	t0 := time.Now()
	mu.Lock()
	d := time.Since(t0)
	end := monoNs()
	released := unlocking
	mu.Unlock()
	// Keep the request alive a while, so a test can read it back from memory.
	time.Sleep(300 * time.Millisecond)
	results <- handled{goid(), d, begin, end, released}
	_, _ = io.WriteString(w, "done\n")
}

//go:noinline
func recurse(n int, ms int) time.Duration {
	if n > 0 {
		return recurse(n-1, ms) + 0
	}
	t0 := time.Now()
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return time.Since(t0)
}

// monoNs reads CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns (Go's time.Now keeps it hidden).
// A raw syscall: no entersyscall, so reading the clock never changes what the scheduler does.
func monoNs() int64 {
	var ts syscall.Timespec
	syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0) // CLOCK_MONOTONIC
	return ts.Nano()
}

func deepHandler(w http.ResponseWriter, r *http.Request) {
	depth, _ := strconv.Atoi(r.URL.Query().Get("depth"))
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	begin := monoNs()
	d := recurse(depth, ms)
	results <- handled{goid(), d, begin, monoNs(), begin + int64(ms)*int64(time.Millisecond)}
	_, _ = io.WriteString(w, "done\n")
}

func get(c *http.Client, url string) {
	resp, err := c.Get(url)
	if err != nil {
		panic(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
}

func main() {
	idle := flag.Int("idle", 4, "keep-alive client connections left idle")
	tick := flag.Duration("tick", 10*time.Millisecond, "ticker period of the background loop")
	flag.Parse()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello\n") })
	mux.HandleFunc("/lock", lockHandler)
	mux.HandleFunc("/deep", deepHandler)
	go func() { _ = http.Serve(ln, mux) }()
	go func() { // a background loop on a ticker: idle between ticks
		t := time.NewTicker(*tick)
		n := 0
		for range t.C {
			n++
		}
	}()
	base := "http://" + ln.Addr().String()
	clients := make([]*http.Client, *idle)
	for i := range clients { // one transport each: one idle keep-alive connection each
		clients[i] = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		get(clients[i], base+"/")
	}
	_ = out.Encode(map[string]any{"ready": true, "pid": os.Getpid(), "addr": ln.Addr().String()})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "poke":
			for _, c := range clients {
				get(c, base+"/")
			}
			_ = out.Encode(map[string]any{"poked": len(clients)})
		case "connect":
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			get(c, base+"/")
			_ = out.Encode(map[string]any{"connected": true})
		case "lock", "deep":
			var url string
			if f[0] == "lock" {
				url = fmt.Sprintf("%s/lock?ms=%s", base, f[1])
			} else {
				url = fmt.Sprintf("%s/deep?depth=%s&ms=%s", base, f[1], f[2])
			}
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			get(c, url)
			h := <-results
			_ = out.Encode(map[string]any{"goid": h.goid, "method": "GET", "path": "/" + f[0],
				"duration_ns": h.dur.Nanoseconds(), "begin_ns": h.beginNs, "end_ns": h.endNs,
				"earliest_end_ns": h.earliestEndNs})
		}
	}
}
