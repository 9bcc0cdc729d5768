// idleserver: a small net/http service that idles the way real servers do, and serves a few
// slow requests on demand; the fixture of lgf's "stall, not wait" tests (tests/test_idle.py).
//
// What idles in it, for as long as it lives (none of it may ever arm lgf or become an event):
// the main goroutine sleeping at start-up (-startsleep), the accept loop, keep-alive
// connections between requests (the test's clients), the reverse proxy's idle connections to
// its upstream (readLoop/writeLoop), a worker pool whose workers wait for jobs, a ticker loop,
// a sleep loop, a goroutine in select {} and one waiting on a context's Done; and two service
// loops waiting in a select one call below their goroutine's start, the shapes of Debian's
// Alertmanager: one entered through a closure that calls it and then wg.Done (silences'
// Maintenance), one through a method that sets up and then calls it (Dispatcher.Run).
//
// What stalls, on request (each must be reported once per goroutine that really waited):
//
//	GET /proxy/...  reverse-proxied to -upstream (the test's slow server): the handler waits
//	                in the transport for the upstream's answer.
//	GET /job?d=150ms the handler hands a job to the worker pool and waits for its result; the
//	                worker sleeps d inside process(): a worker mid-job.
//	GET /await?d=150ms the same through the awaiter, whose await() waits for the job's deadline
//	                in a select loop of its own: a service loop's shape, but called from the
//	                awaiter's loop over jobs, so a job mid-way (a stall).
//	GET /hold/...   the handler prints {"hold":true,"req":"0x...","goid":G} and blocks until
//	                GET /release (the request stays live, for reading it from outside).
//
// Protocol: prints {"hello":true,"pid":P} at once, sleeps -startsleep in main.main, prints
// {"ready":true,"addr":"127.0.0.1:PORT"}, serves until stdin closes. Handlers of /proxy and
// /job print {"route":R,"goid":G[,"worker_goid":W]} when they are done. Standard library only.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
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
	"time"
)

var out = json.NewEncoder(os.Stdout)
var outMu sync.Mutex

func say(v map[string]any) {
	outMu.Lock()
	defer outMu.Unlock()
	_ = out.Encode(v)
}

func goid() int64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _ := strconv.ParseInt(strings.Fields(string(buf))[1], 10, 64)
	return id
}

type job struct {
	d    time.Duration
	done chan int64 // the worker's goid
}

var jobs = make(chan job)

// worker waits for jobs at the head of its loop (idle) and sleeps inside process (a stall).
func worker() {
	for j := range jobs {
		j.done <- process(j)
	}
}

//go:noinline
func process(j job) int64 {
	time.Sleep(j.d)
	return goid()
}

var ticks, naps, beats int

// maintainer runs a ticker loop, entered through a closure that does more than call it.
type maintainer struct{ runs int }

//go:noinline
func (m *maintainer) run(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			m.runs++
		case <-stop:
			return
		}
	}
}

// dispatcher runs its loop after Run has set it up.
type dispatcher struct {
	mu     sync.Mutex
	groups map[string]int
	alerts chan string
}

func (d *dispatcher) Run() {
	d.mu.Lock()
	d.groups = map[string]int{}
	d.mu.Unlock()
	d.run(time.NewTicker(800 * time.Millisecond))
}

//go:noinline
func (d *dispatcher) run(t *time.Ticker) {
	for {
		select {
		case a := <-d.alerts:
			d.mu.Lock()
			d.groups[a]++
			d.mu.Unlock()
		case <-t.C:
			d.mu.Lock()
			d.groups = map[string]int{}
			d.mu.Unlock()
		}
	}
}

var awaits = make(chan job)

// awaiter takes jobs in its loop; await, called for each, waits in a select loop of its own.
func awaiter() {
	for j := range awaits {
		j.done <- await(j.d)
	}
}

//go:noinline
func await(d time.Duration) int64 {
	deadline := time.After(d)
	beat := time.NewTicker(time.Second)
	defer beat.Stop()
	for {
		select {
		case <-deadline:
			return goid()
		case <-beat.C:
			beats++
		}
	}
}

func tickerLoop() {
	t := time.NewTicker(700 * time.Millisecond)
	for range t.C {
		ticks++
	}
}

func sleepLoop() {
	for {
		time.Sleep(900 * time.Millisecond)
		naps++
	}
}

func main() {
	startSleep := flag.Duration("startsleep", 0, "how long main sleeps before it starts serving")
	upstream := flag.String("upstream", "", "base URL of the slow upstream /proxy/ forwards to")
	workers := flag.Int("workers", 4, "worker pool size")
	flag.Parse()
	say(map[string]any{"hello": true, "pid": os.Getpid()})
	time.Sleep(*startSleep)

	for i := 0; i < *workers; i++ {
		go worker()
	}
	go tickerLoop()
	go sleepLoop()
	go func() { select {} }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-ctx.Done() }()
	stop := make(chan struct{})
	defer close(stop)
	var wg sync.WaitGroup
	wg.Add(1)
	maint := &maintainer{}
	go func() {
		maint.run(700*time.Millisecond, stop)
		wg.Done()
	}()
	disp := &dispatcher{alerts: make(chan string)}
	go disp.Run()
	go awaiter()

	mux := http.NewServeMux()
	mux.HandleFunc("/fast", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello\n") })
	if *upstream != "" {
		u, err := url.Parse(*upstream)
		if err != nil {
			panic(err)
		}
		proxy := httputil.NewSingleHostReverseProxy(u)
		mux.HandleFunc("/proxy/", func(w http.ResponseWriter, r *http.Request) {
			proxy.ServeHTTP(w, r)
			say(map[string]any{"route": r.URL.Path, "goid": goid()})
		})
	}
	mux.HandleFunc("/job", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		j := job{d: d, done: make(chan int64)}
		jobs <- j
		wid := <-j.done
		say(map[string]any{"route": "/job", "goid": goid(), "worker_goid": wid})
		fmt.Fprintln(w, wid)
	})
	mux.HandleFunc("/await", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		j := job{d: d, done: make(chan int64)}
		awaits <- j
		wid := <-j.done
		say(map[string]any{"route": "/await", "goid": goid(), "worker_goid": wid})
		fmt.Fprintln(w, wid)
	})
	release := make(chan struct{})
	var releaseOnce sync.Once
	mux.HandleFunc("/hold/", func(w http.ResponseWriter, r *http.Request) {
		say(map[string]any{"hold": true, "req": fmt.Sprintf("%p", r), "goid": goid()})
		<-release
		_, _ = io.WriteString(w, "released\n")
	})
	mux.HandleFunc("/release", func(w http.ResponseWriter, r *http.Request) {
		releaseOnce.Do(func() { close(release) })
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() { _ = http.Serve(ln, mux) }()
	say(map[string]any{"ready": true, "addr": ln.Addr().String()})
	_, _ = io.Copy(io.Discard, os.Stdin)
}
