// lgfdemo: a small Go service that stalls, on purpose, in every way lgf knows, so `lgf demo`
// has something real to show a newcomer within seconds.
//
// Every round (default every 2 s) it runs one scenario after another, each a named function so
// the stack lgf reports says which one it was:
//
//	channel   waits on a channel receive until a timer sends, -hold later
//	select    waits in a select on two channels
//	lock      waits on a sync.Mutex that a timer unlocks
//	syscall   a blocking nanosleep(2) system call (raw: the goroutine keeps its thread)
//	network   a client reads from a local TCP server that answers -hold later
//	sleep     a job sleeps in the middle of its work
//	starve    a woken goroutine waits for the only P, which a busy loop keeps (scheduling latency)
//	gc_stw    runtime.GC waits to stop the world while a loop that cannot be preempted runs
//	http      GET /checkout with a W3C traceparent header; the handler waits on a lock
//
// Each scenario prints one line on stdout ("demo: lock stall of 150ms in main.lockStall") so the
// output can be compared with what lgf reports. The starve and gc_stw scenarios need a loop the
// runtime cannot preempt asynchronously: the program re-executes itself once with
// GODEBUG=asyncpreemptoff=1 when that is not already set. Standard library only, so it builds
// offline with any Go toolchain from 1.21 on.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

var (
	hold     = flag.Duration("hold", 150*time.Millisecond, "how long each stall lasts")
	every    = flag.Duration("every", 2*time.Second, "pause between rounds")
	rounds   = flag.Int("rounds", 0, "stop after this many rounds (0: run until killed)")
	traceIDs = flag.String("trace-id", "4bf92f3577b34da6a3ce929d0e0e4736", "trace id sent in the traceparent header")
)

func say(cause, where string, d time.Duration) {
	fmt.Printf("demo: %s stall of %s in %s\n", cause, d.Round(time.Millisecond), where)
}

// Each scenario blocks the calling goroutine itself and is released by a timer (time.AfterFunc
// runs the release on a goroutine of its own that never waits): the one long wait of a scenario
// is the stall it means to show, and nothing else in the demo waits past lgf's threshold.

//go:noinline
func channelStall() {
	ch := make(chan int)
	t0 := time.Now()
	time.AfterFunc(*hold, func() { ch <- 1 })
	<-ch
	say("channel", "main.channelStall", time.Since(t0))
}

//go:noinline
func selectStall() {
	a, b := make(chan int), make(chan int)
	t0 := time.Now()
	time.AfterFunc(*hold, func() { b <- 1 })
	select {
	case <-a:
	case <-b:
	}
	say("select", "main.selectStall", time.Since(t0))
}

//go:noinline
func lockStall() {
	var mu sync.Mutex
	mu.Lock()
	t0 := time.Now()
	time.AfterFunc(*hold, mu.Unlock)
	mu.Lock()
	mu.Unlock()
	say("lock", "main.lockStall", time.Since(t0))
}

//go:noinline
func syscallStall() {
	t0 := time.Now()
	ts := syscall.NsecToTimespec(hold.Nanoseconds())
	var rem syscall.Timespec
	for { // nanosleep is not restarted after a signal (Go's preemption signal): sleep what remains
		_, _, errno := syscall.Syscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)),
			uintptr(unsafe.Pointer(&rem)), 0)
		if errno != syscall.EINTR {
			break
		}
		ts = rem
	}
	say("syscall", "main.syscallStall", time.Since(t0))
}

//go:noinline
func networkStall() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo: network:", err)
		return
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		time.AfterFunc(*hold, func() { _, _ = c.Write([]byte("x")); c.Close() })
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo: network:", err)
		return
	}
	defer conn.Close()
	buf := make([]byte, 1)
	t0 := time.Now()
	_, _ = conn.Read(buf)
	say("net_io", "main.networkStall", time.Since(t0))
}

//go:noinline
func sleepStall() {
	t0 := time.Now()
	time.Sleep(*hold)
	say("sleep", "main.sleepStall", time.Since(t0))
}

// spin burns CPU for about d in a loop with no call in its body: with asyncpreemptoff=1
// nothing can take its P away.
func spin(d time.Duration) { busyLoop(int(float64(d.Nanoseconds()) / nsPerIter)) }

var nsPerIter float64
var sink uint64
var spinning atomic.Int32

//go:noinline
func busyLoop(n int) {
	x := sink
	spinning.Store(1)
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	sink = x
}

func calibrate() {
	const probe = 20_000_000
	t0 := time.Now()
	busyLoop(probe)
	nsPerIter = float64(time.Since(t0).Nanoseconds()) / probe
}

// starveStall readies a goroutine with a channel send, then keeps the only P busy: the woken
// goroutine is runnable but cannot run.
//
//go:noinline
func starveStall() {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	ch := make(chan time.Time)
	res := make(chan time.Duration)
	go func() {
		sent := <-ch
		res <- time.Since(sent)
	}()
	time.Sleep(20 * time.Millisecond)
	ch <- time.Now()
	spin(*hold)
	say("sched_latency", "main.starveStall", <-res)
}

// gcStall starts a loop that cannot be preempted and calls runtime.GC: the collector's
// stop-the-world waits for the loop to end, and the whole process runs no user code meanwhile.
//
//go:noinline
func gcStall() {
	prev := runtime.GOMAXPROCS(2)
	defer runtime.GOMAXPROCS(prev)
	spinning.Store(0)
	end := make(chan time.Time)
	go func() { spin(*hold); end <- time.Now() }()
	for spinning.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	t0 := time.Now()
	runtime.GC()
	say("gc_stw", "runtime.GC", (<-end).Sub(t0))
}

var checkoutMu sync.Mutex

// checkout is a request handler that waits on a lock held elsewhere: a stall in the middle of a
// unit of work, with the caller's trace id in its traceparent header.
func checkout(w http.ResponseWriter, r *http.Request) {
	checkoutMu.Lock()
	checkoutMu.Unlock()
	fmt.Fprintln(w, "ok", r.Header.Get("traceparent"))
}

//go:noinline
func httpStall(url string) {
	checkoutMu.Lock()
	time.AfterFunc(*hold, checkoutMu.Unlock)
	req, _ := http.NewRequest("GET", url+"/checkout", nil)
	req.Close = true // no idle keep-alive connection left waiting between rounds
	req.Header.Set("traceparent", "00-"+*traceIDs+"-00f067aa0ba902b7-01")
	t0 := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo: http:", err)
		return
	}
	resp.Body.Close()
	fmt.Printf("demo: lock stall of %s in main.checkout (GET /checkout, trace id %s)\n",
		time.Since(t0).Round(time.Millisecond), *traceIDs)
}

func serve() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/checkout", checkout)
	srv := &http.Server{Handler: mux}
	srv.SetKeepAlivesEnabled(false)
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String()
}

func reexecWithoutAsyncPreemption() {
	if strings.Contains(os.Getenv("GODEBUG"), "asyncpreemptoff=1") {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	env := append(os.Environ(), "GODEBUG=asyncpreemptoff=1")
	_ = syscall.Exec(exe, os.Args, env) // on failure: run on, starve/gc_stw may be shorter
}

func main() {
	flag.Parse()
	reexecWithoutAsyncPreemption()
	calibrate()
	url := serve()
	fmt.Printf("demo: pid %d stalls every %s for %s (channel, select, lock, syscall, network, sleep, "+
		"scheduler, GC stop-the-world, HTTP)\n", os.Getpid(), *every, *hold)
	scenarios := []func(){channelStall, selectStall, lockStall, syscallStall, networkStall,
		sleepStall, starveStall, gcStall, func() { httpStall(url) }}
	for round := 1; *rounds == 0 || round <= *rounds; round++ {
		for _, s := range scenarios {
			s()
			pause(20 * time.Millisecond)
		}
		pause(*every)
	}
}

// pause waits d in sleeps of at most 20 ms: the demo's own pacing must stay under lgf's
// threshold, so that every stall lgf reports is one the demo meant.
func pause(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
}
