// runnable: a goroutine made runnable by one path of the Go scheduler waits for the only P while
// main holds it in a loop that cannot be preempted, for a time this program measures itself.
//
// The lgf tests (tests/test_sched_latency.py) run it under the uprobe source and compare each
// wait for a P that lgf reports (cause sched_latency, extra.runnable_from) with this program's
// own figure: goid and duration. Protocol on stdin/stdout, as tests/goapps/stalls:
//
//	runnable MODE [-d 120ms] [-n N] [-step] [-gate FD] [-wake FD]
//	-> {"ready":true,"pid":P,"main_goid":G}         (then waits for one line on stdin)
//	<- "\n"                                          (the test has attached: go)
//	-> {"mode":M,"goid":G,"wait_ns":D,"wait_min_ns":E,"from":F}  one line per wait for a P (N of them)
//	-> {"done":true}                                 (then waits for stdin to close, max 60 s)
//
// With -step, each wait after the first starts only after one more line on stdin.
//
// With -gate FD, main keeps the P after its -d of spinning until it has read one byte from file
// descriptor FD (a pipe the test holds): a raw read, so the P stays with main, blocked in the
// kernel, and the wait for a P lasts until the test has seen what it waits for. With -wake FD
// (netpoll mode), main writes to the parked reader only after one byte from FD (instead of a
// 20 ms sleep): the park lasts until the test says.
//
// Modes (F: the path that made the goroutine runnable, as lgf names it):
//
//	syscall  a goroutine returns from a blocking nanosleep while main spins: exitsyscall finds
//	         no P and queues it (exitsyscall0, exitsyscallNoP in Go 1.27).  F = syscall_exit.
//	         The wait starts when the sleep ends: the time before it plus its length.
//	netpoll  a goroutine parked on a socket read; main writes the byte, then stops and restarts
//	         the world (runtime.ReadMemStats), whose netpoll(0) hands the reader to the run queue
//	         through injectglist; main spins.                                F = netpoll.
//	         The wait starts when ReadMemStats returns (the reader is queued just before).
//	gosched  a goroutine calls runtime.Gosched while main is runnable; main spins. F = gosched.
//	newproc  main starts a goroutine and spins.                              F = newproc.
//
// The wait began between two instants the program reads on either side of the scheduler's
// transition, and ended between main's last instant before it lets the P go and the goroutine's
// first after it runs (a busy kernel may deschedule a thread in between): wait_ns is the longest
// the wait can have been, wait_min_ns the shortest. In syscall mode the start is the sleep's end
// (the kernel cannot end it earlier), and its thread's wait for a CPU widens the bracket.
//
// Every mode sets GOMAXPROCS=1 and needs GODEBUG=asyncpreemptoff=1, so nothing takes the P from
// main's loop (it has no call in its body). Durations use Go's monotonic clock. Standard library
// only: the tests build it offline with every supported Go toolchain.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

var hold = flag.Duration("d", 120*time.Millisecond, "how long main holds the only P")
var count = flag.Int("n", 1, "how many waits to induce")
var step = flag.Bool("step", false, "wait for a line on stdin before each wait after the first")
var gate = flag.Int("gate", -1, "after spinning, keep the P until one byte is read from this fd")
var wake = flag.Int("wake", -1, "netpoll: wake the reader only after one byte is read from this fd")

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

var sink uint64

// busyLoop burns a little CPU. nosplit: calling it is no preemption point (no stack check).
//
//go:nosplit
//go:noinline
func busyLoop(n int) {
	x := sink
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	sink = x
}

// nanotime is the runtime's CLOCK_MONOTONIC, the clock of lgf's BPF timestamps too. It is
// nosplit, so calling it is no preemption point: main reads it the moment its loop ends, before
// anything can take the P (its next ordinary call would yield to the waiting goroutine).
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

// spin holds the P for d by the clock: it calls only nosplit functions, none of them a
// preemption point, so with GODEBUG=asyncpreemptoff=1 nothing can take the P before d is over.
func spin(d time.Duration) {
	end := nanotime() + d.Nanoseconds()
	for nanotime() < end {
		busyLoop(1000)
	}
}

// takeByte blocks until it reads one byte from fd. A raw syscall (no entersyscall): the P stays
// with the calling goroutine, so nothing else runs meanwhile (GOMAXPROCS=1). nosplit, as
// RawSyscall: calling it is no preemption point.
//
//go:nosplit
func takeByte(fd int) {
	var b [1]byte
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 || n != 1 {
			panic(fmt.Sprintf("read gate fd %d: %d bytes, %v", fd, n, errno))
		}
		return
	}
}

// holdP keeps the P: spin for *hold, then, with -gate, until the test's byte arrives.
//
//go:nosplit
func holdP() {
	spin(*hold)
	if *gate >= 0 {
		takeByte(*gate)
	}
}

// nanosleep blocks the thread in the kernel for d (a raw syscall: entersyscall/exitsyscall).
func nanosleep(d time.Duration) {
	ts := syscall.NsecToTimespec(d.Nanoseconds())
	var rem syscall.Timespec
	for {
		_, _, errno := syscall.Syscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), uintptr(unsafe.Pointer(&rem)), 0)
		if errno != syscall.EINTR {
			return
		}
		ts = rem
	}
}

// runDelay is how long this thread has waited on a CPU run queue (ns), from the kernel's schedstat.
func runDelay() int64 {
	b, err := os.ReadFile("/proc/thread-self/schedstat")
	if err != nil {
		panic(err)
	}
	f := strings.Fields(string(b))
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		panic(err)
	}
	return n
}

// inSyscall: the goroutine sleeps 30 ms in the kernel; sysmon hands its P to main, which spins
// for *hold; the sleep ends while main spins, and the goroutine waits for the P. The goroutine is
// locked to its thread, so the time that thread then waited for a CPU (the kernel's run delay)
// bounds how late after the sleep's end exitsyscall can have made it runnable.
func inSyscall(mode string) {
	const sleep = 30 * time.Millisecond
	done := make(chan result)
	started := make(chan struct{})
	var spun int64
	go func() {
		runtime.LockOSThread()
		id := goid()
		delay0 := runDelay()
		close(started) // main becomes runnable: sysmon will retake the P during the sleep
		t0 := nanotime()
		nanosleep(sleep)
		ran := nanotime()
		cpuWait := runDelay() - delay0
		end := t0 + sleep.Nanoseconds()
		done <- result{"mode": mode, "goid": id, "wait_ns": ran - end, "wait_min_ns": spun - end - cpuWait,
			"from": "syscall_exit"}
	}()
	<-started
	holdP()
	spun = nanotime() // read by the goroutine, which runs only once main has let the P go
	report(<-done)
}

// viaNetpoll: the reader parks on the network; main writes to it, then ReadMemStats stops and
// starts the world, and startTheWorld's netpoll(0) queues the reader; main keeps the P.
func viaNetpoll(mode string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			panic(err)
		}
		accepted <- c
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	defer client.Close()
	server := <-accepted
	defer server.Close()
	parked := make(chan int64)
	done := make(chan int64)
	go func() {
		parked <- goid()
		buf := make([]byte, 1)
		_, _ = server.Read(buf) // parks: IO wait
		done <- nanotime()
	}()
	id := <-parked
	if *wake >= 0 {
		takeByte(*wake) // parked until the test says
	} else {
		time.Sleep(20 * time.Millisecond) // let it park on the read
	}
	if _, err := client.Write([]byte("x")); err != nil {
		panic(err)
	}
	var ms runtime.MemStats
	before := nanotime()
	runtime.ReadMemStats(&ms) // stop and start the world: netpoll(0) + injectglist
	queued := nanotime()
	holdP()
	spun := nanotime()
	ran := <-done
	report(result{"mode": mode, "goid": id, "wait_ns": ran - before, "wait_min_ns": spun - queued,
		"from": "netpoll"})
}

// yielding: the goroutine calls Gosched while main is runnable; main then spins.
func yielding(mode string) {
	done := make(chan int64)
	var id, t0 int64
	go func() {
		id = goid()
		t0 = nanotime()
		runtime.Gosched()
		done <- nanotime()
	}()
	runtime.Gosched() // let it start: it yields back to main, which spins
	back := nanotime()
	holdP()
	spun := nanotime()
	ran := <-done
	report(result{"mode": mode, "goid": id, "wait_ns": ran - t0, "wait_min_ns": spun - back, "from": "gosched"})
}

// spawning: main starts a goroutine and spins before it can run.
func spawning(mode string) {
	done := make(chan result)
	t0 := nanotime()
	var t1, spun int64
	go func() {
		ran := nanotime()
		done <- result{"mode": mode, "goid": goid(), "wait_ns": ran - t0, "wait_min_ns": spun - t1,
			"from": "newproc"}
	}()
	t1 = nanotime() // t1 and spun are read by the new goroutine, which cannot run before main
	holdP()         // lets the P go
	spun = nanotime()
	report(<-done)
}

func runMode(mode string) {
	switch mode {
	case "syscall":
		inSyscall(mode)
	case "netpoll":
		viaNetpoll(mode)
	case "gosched":
		yielding(mode)
	case "newproc":
		spawning(mode)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		os.Exit(2)
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: runnable MODE [-d 120ms] [-n N]")
		os.Exit(2)
	}
	if err := flag.CommandLine.Parse(os.Args[2:]); err != nil {
		os.Exit(2)
	}
	mode := os.Args[1]
	runtime.GOMAXPROCS(1)
	in := bufio.NewReader(os.Stdin)
	report(result{"ready": true, "main_goid": goid()})
	if _, err := in.ReadString('\n'); err != nil {
		os.Exit(0)
	}
	for i := 0; i < *count; i++ {
		if *step && i > 0 {
			if _, err := in.ReadString('\n'); err != nil {
				os.Exit(0)
			}
		}
		runMode(mode)
		time.Sleep(20 * time.Millisecond)
	}
	report(result{"done": true})
	go func() { time.Sleep(60 * time.Second); os.Exit(0) }()
	_, _ = in.ReadString('\n')
}
