// stalls: induces one kind of goroutine or process stall on demand and reports its own figure.
//
// The lgf source tests (tests/test_source_*.py) run it under a tracer and compare what lgf saw
// with what the program measured itself: pid, goid and duration. Protocol on stdin/stdout, so a
// test can attach its probes before anything happens:
//
//	stalls MODE [-d 120ms] [-n N] [-trace FILE]
//	-> {"ready":true,"pid":P,"main_goid":G}        (then waits for one line on stdin)
//	<- "\n"                                         (the test has attached: go)
//	-> {"mode":M,"pid":P,"goid":G,"duration_ns":D,"begin_ns":B,"end_ns":E,"earliest_end_ns":R}
//	                                                one line per induced stall
//	-> {"done":true}                                (then waits for stdin to close, max 60 s)
//
// Modes: chanrecv chansend select mutex rwmutex waitgroup cond pipe nanosleep tcpread sleep
// starve stw noise. Durations are measured with Go's monotonic clock around the blocking call,
// so lgf's BPF figure (park -> ready, or syscall enter -> exit) is a little shorter, never longer.
//
// begin_ns, end_ns and earliest_end_ns are CLOCK_MONOTONIC, the clock bpf_ktime_get_ns reads, so
// a test checks lgf's [start, end] against causal bounds instead of a tolerance that a busy host
// breaks: the wait began after begin_ns and ended before end_ns (both read by the waiting
// goroutine around its blocking call), and it cannot have ended before earliest_end_ns (read by
// whoever ends it, just before it does; for a timer, begin_ns + the hold).
// "starve" and "stw" need GODEBUG=asyncpreemptoff=1 so their busy loop cannot be preempted.
// Standard library only: the tests build it offline with every supported Go toolchain.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"net"
	"os"
	"runtime"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var hold = flag.Duration("d", 120*time.Millisecond, "how long the stall lasts")
var count = flag.Int("n", 1, "how many stalls to induce (noise: how many workers)")
var gap = flag.Duration("gap", 0, "pause between two stalls (lets a tier being armed finish first)")
var traceTo = flag.String("trace", "", "write Go's execution trace (runtime/trace) of the stalls here")
var longWait = flag.Duration("long", 50*time.Millisecond, "noise: report waits that took this long or more")

// result is one line of output: the stall as the fixture itself measured it.
type result map[string]any

var out = json.NewEncoder(os.Stdout)
var outMu sync.Mutex

func report(r result) {
	outMu.Lock()
	defer outMu.Unlock()
	r["pid"] = os.Getpid()
	if err := out.Encode(r); err != nil {
		panic(err)
	}
}

// goid parses the current goroutine's id out of its own stack header ("goroutine 18 [running]").
func goid() int64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := strings.Fields(string(buf))
	id, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		panic(err)
	}
	return id
}

// stallIn runs block on a fresh goroutine, while release (after *hold) ends the stall, and
// reports the blocked goroutine's id, the time block took and its clock bounds. A nil release
// means block ends by itself after *hold (a timer).
func stallIn(mode string, block func(), release func()) {
	done := make(chan result)
	started := make(chan struct{})
	go func() {
		id := goid()
		close(started)
		begin := monoNs()
		t0 := time.Now()
		block()
		d := time.Since(t0).Nanoseconds()
		done <- result{"mode": mode, "goid": id, "duration_ns": d, "begin_ns": begin, "end_ns": monoNs()}
	}()
	<-started
	time.Sleep(*hold)
	released := monoNs()
	if release != nil {
		release()
	}
	r := <-done
	if release == nil {
		released = r["begin_ns"].(int64) + hold.Nanoseconds()
	}
	r["earliest_end_ns"] = released
	report(r)
}

// spin burns CPU until d has passed, in a loop whose only call is monoNs, which is nosplit: with
// GODEBUG=asyncpreemptoff=1 nothing can take its P away (a call to a function with a stack check
// would be a preemption point). Timed by the clock, not by a calibrated count: a count measured
// while the host was busy makes a short spin later, shorter than the stall a test asks for.
func spin(d time.Duration) {
	busyLoop(monoNs() + d.Nanoseconds())
}

// spinning is set from inside busyLoop's body (an intrinsic store, not a call), so a caller can
// wait until the loop is surely past its last preemption point.
var spinning atomic.Int32

// spunNs is when the last busy loop ended (CLOCK_MONOTONIC), read before the loop's goroutine
// reaches any preemption point: nothing else can have run on its P before this instant.
var spunNs int64

//go:noinline
func busyLoop(until int64) {
	spinning.Store(1)
	now := monoNs()
	for now < until {
		now = monoNs()
	}
	spunNs = now
}

func runMode(mode string) {
	switch mode {
	case "chanrecv":
		ch := make(chan int)
		stallIn(mode, func() { <-ch }, func() { ch <- 1 })
	case "chansend":
		ch := make(chan int)
		stallIn(mode, func() { ch <- 1 }, func() { <-ch })
	case "select":
		a, b := make(chan int), make(chan int)
		stallIn(mode, func() {
			select {
			case <-a:
			case <-b:
			}
		}, func() { b <- 1 })
	case "mutex":
		var mu sync.Mutex
		mu.Lock()
		stallIn(mode, func() { mu.Lock() }, func() { mu.Unlock() })
	case "rwmutex":
		var mu sync.RWMutex
		mu.Lock()
		stallIn(mode, func() { mu.RLock() }, func() { mu.Unlock() })
	case "waitgroup":
		var wg sync.WaitGroup
		wg.Add(1)
		stallIn(mode, func() { wg.Wait() }, func() { wg.Done() })
	case "cond":
		var mu sync.Mutex
		c := sync.NewCond(&mu)
		ready := false
		stallIn(mode, func() {
			mu.Lock()
			for !ready {
				c.Wait()
			}
			mu.Unlock()
		}, func() {
			mu.Lock()
			ready = true
			c.Signal()
			mu.Unlock()
		})
	case "pipe":
		var fds [2]int
		if err := syscall.Pipe(fds[:]); err != nil {
			panic(err)
		}
		buf := make([]byte, 1)
		stallIn(mode, func() { _, _ = syscall.Read(fds[0], buf) },
			func() { _, _ = syscall.Write(fds[1], []byte{1}) })
	case "nanosleep":
		stallIn(mode, func() {
			// nanosleep is never restarted after a signal handler (man 7 signal): Go's
			// preemption signal can cut it short with EINTR, so sleep on for what remains.
			ts := syscall.NsecToTimespec(hold.Nanoseconds())
			var rem syscall.Timespec
			for {
				_, _, errno := syscall.Syscall(syscall.SYS_NANOSLEEP, uintptrOf(&ts), uintptrOf(&rem), 0)
				if errno != syscall.EINTR {
					return
				}
				ts = rem
			}
		}, nil)
	case "tcpread":
		tcpRead(mode)
	case "sleep":
		stallIn(mode, func() { time.Sleep(*hold) }, nil)
	case "starve":
		starve(mode)
	case "stw":
		stw(mode)
	case "noise":
		noise(mode)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		os.Exit(2)
	}
}

// tcpRead blocks a goroutine in conn.Read on a local server that answers after *hold: a netpoller
// wait ("IO wait").
func tcpRead(mode string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	var wrote atomic.Int64
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		time.Sleep(*hold)
		wrote.Store(monoNs())
		_, _ = c.Write([]byte("x"))
		c.Close()
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	res := make(chan result)
	go func() {
		id := goid()
		buf := make([]byte, 1)
		begin := monoNs()
		t0 := time.Now()
		_, _ = conn.Read(buf)
		d := time.Since(t0).Nanoseconds()
		res <- result{"mode": mode, "goid": id, "duration_ns": d, "begin_ns": begin, "end_ns": monoNs(),
			"earliest_end_ns": wrote.Load()}
	}()
	report(<-res)
}

// starve wakes a goroutine with a channel send and then keeps the only P busy for *hold: the
// woken goroutine is runnable but cannot run (scheduling latency). Needs GOMAXPROCS=1 (set here)
// and GODEBUG=asyncpreemptoff=1.
func starve(mode string) {
	runtime.GOMAXPROCS(1)
	ch := make(chan time.Time)
	res := make(chan result)
	go func() {
		id := goid()
		sent := <-ch
		d := time.Since(sent).Nanoseconds()
		res <- result{"mode": mode, "goid": id, "duration_ns": d, "end_ns": monoNs()}
	}()
	time.Sleep(20 * time.Millisecond) // let it park on the receive
	// The unbuffered send hands the value over and readies the receiver, but we keep the only P.
	begin := monoNs()
	ch <- time.Now()
	spin(*hold) // the receiver runs only once this goroutine gives the P up, after spunNs
	r := <-res
	r["begin_ns"], r["earliest_end_ns"] = begin, spunNs
	report(r)
}

// stw starts a non-preemptible loop on one P and calls runtime.GC on another: the GC's first
// stop-the-world cannot finish until the loop ends. Reports the time from the GC call to the
// loop's end (goid 0: the whole process stalls). Needs GODEBUG=asyncpreemptoff=1.
func stw(mode string) {
	runtime.GOMAXPROCS(2)
	runtime.GC() // a first cycle starts the mark workers, so the measured one goes straight to its STW
	spinning.Store(0)
	looping := make(chan struct{})
	loopEnd := make(chan time.Time)
	go func() {
		close(looping)
		spin(*hold) // the world can stop only at a preemption point, after spunNs
		loopEnd <- time.Now()
	}()
	<-looping
	for spinning.Load() == 0 { // until the loop runs (on a busy host its thread may start late)
		time.Sleep(time.Millisecond)
	}
	begin := monoNs()
	gcStart := time.Now()
	runtime.GC()
	end := <-loopEnd
	report(result{"mode": mode, "goid": 0, "duration_ns": end.Sub(gcStart).Nanoseconds(),
		"begin_ns": begin, "end_ns": monoNs(), "earliest_end_ns": spunNs})
}

// noise: *count workers doing short (1-10 ms) waits of every common kind for about two seconds.
// None of them should ever be reported over a 50 ms threshold, unless the host itself held the
// process off its CPUs that long: each wait is timed by the fixture too, and the ones that took
// -long or more are reported as "long_waits" ([goid, begin_ns, end_ns, kind]), the only ones lgf
// may report. "short_sleeps" counts the sleeps that took under 2^14 us by the fixture's clock:
// lgf's per-wait figure lies inside the fixture's, so its histogram holds at least that many.
func noise(mode string) {
	var wg sync.WaitGroup
	ids := make([]int64, *count)
	var mu sync.Mutex
	locks := make([]sync.Mutex, (*count+1)/2) // two workers per lock: contention, never a queue
	deadline := time.Now().Add(2 * time.Second)
	waits, shortSleeps := 0, 0
	long := [][]any{}
	for w := 0; w < *count; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			id := goid()
			ids[w] = id
			r := rand.New(rand.NewSource(int64(w)))
			n, short := 0, 0
			var mine [][]any
			timed := func(kind string, wait func()) {
				begin := monoNs()
				wait()
				end := monoNs()
				if end-begin >= longWait.Nanoseconds() {
					mine = append(mine, []any{id, begin, end, kind})
				}
				if kind == "sleep" && end-begin < 1<<14*1000 {
					short++
				}
			}
			for time.Now().Before(deadline) {
				d := time.Duration(1+r.Intn(10)) * time.Millisecond
				switch n % 3 {
				case 0:
					timed("sleep", func() { time.Sleep(d) })
				case 1:
					timed("lock", func() { locks[w/2].Lock() })
					timed("sleep", func() { time.Sleep(d / 4) })
					locks[w/2].Unlock()
				case 2:
					t := time.NewTimer(d)
					timed("timer", func() { <-t.C })
				}
				n++
			}
			mu.Lock()
			waits += n
			shortSleeps += short
			long = append(long, mine...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	report(result{"mode": mode, "goids": ids, "waits": waits, "short_sleeps": shortSleeps, "long_waits": long})
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: stalls MODE [-d 120ms] [-n N]")
		os.Exit(2)
	}
	if err := flag.CommandLine.Parse(os.Args[2:]); err != nil {
		os.Exit(2)
	}
	mode := os.Args[1]
	in := bufio.NewReader(os.Stdin)
	report(result{"ready": true, "main_goid": goid()})
	if _, err := in.ReadString('\n'); err != nil {
		os.Exit(0)
	}
	if *traceTo != "" { // the oracle the cross-check test compares lgf with
		f, err := os.Create(*traceTo)
		if err != nil {
			panic(err)
		}
		if err := trace.Start(f); err != nil {
			panic(err)
		}
		defer f.Close()
	}
	for i := 0; i < *count || (mode == "noise" && i == 0); i++ {
		if i > 0 && *gap > 0 {
			time.Sleep(*gap)
		}
		runMode(mode)
		if mode == "noise" {
			break
		}
	}
	if *traceTo != "" {
		trace.Stop()
	}
	report(result{"done": true})
	go func() { time.Sleep(60 * time.Second); os.Exit(0) }()
	_, _ = in.ReadString('\n')
}
