// runtimestate: a Go program in a known scheduler/GC/netpoller state, reporting its own figures.
//
// The enricher tests (tests/test_enrich*.py) read this process's runtime from outside and
// compare with what the program says about itself:
//
//	runtimestate [-procs 3] [-parked 40] [-conns 5] [-busy 0]
//	-> {"pid":P,"goroutines":N,"gomaxprocs":3,"ncpu":C,"numgc":G,"net_waiters":W}
//	<- "gc\n"    runs runtime.GC() and answers {"numgc":G}
//	<- "state\n" answers the first line again (figures taken now)
//	stdin closed: exit
//
// net_waiters is what the program arranged: one goroutine blocked in Accept and one per
// connection blocked in Read, so runtime.netpollWaiters must be at least that. Standard library only.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"net"
	"os"
	"runtime"
)

var procs = flag.Int("procs", 3, "GOMAXPROCS")
var parked = flag.Int("parked", 40, "goroutines parked on a channel forever")
var conns = flag.Int("conns", 5, "loopback TCP connections, each with a goroutine blocked in Read")
var busy = flag.Int("busy", 0, "goroutines spinning (runnable or running)")

var sink uint64

// keep holds both ends of every connection: unreachable conns would be closed by their
// finalizers at the next GC and the blocked Reads would return.
var keep []net.Conn

func spin() {
	x := uint64(1)
	for {
		for i := 0; i < 1000000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		sink = x
	}
}

func state(w *json.Encoder) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.Encode(map[string]any{"pid": os.Getpid(), "goroutines": runtime.NumGoroutine(),
		"gomaxprocs": runtime.GOMAXPROCS(0), "ncpu": runtime.NumCPU(), "numgc": ms.NumGC,
		"net_waiters": *conns + 1})
}

func main() {
	flag.Parse()
	runtime.GOMAXPROCS(*procs)
	never := make(chan int)
	for i := 0; i < *parked; i++ {
		go func() { <-never }()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	accepted := make(chan net.Conn)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	reading := make(chan struct{})
	for i := 0; i < *conns; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			panic(err)
		}
		keep = append(keep, c, <-accepted)
		go func() {
			buf := make([]byte, 1)
			reading <- struct{}{}
			c.Read(buf) // blocks in the netpoller: nobody writes
		}()
		<-reading
	}
	for i := 0; i < *busy; i++ {
		go spin()
	}
	runtime.GC()
	w := json.NewEncoder(os.Stdout)
	state(w)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "gc":
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			w.Encode(map[string]any{"numgc": ms.NumGC})
		case "state":
			state(w)
		}
	}
}
