// manyg: a big process for bench/bench_many_goroutines.py (issue 18, "big processes").
//
// -n worker goroutines idle at their loop head (a receive on a channel nobody sends on, in a
// `for range` loop: what lgf calls an idle wait), and the main goroutine, which every -every, does a
// little work and then waits -hold on a mutex another goroutine holds (the holder sleeps -hold):
// a real lock stall, mid-work, not at a loop head.
//
//	manyg [-n 1000] [-every 2s] [-hold 120ms] [-stalls 10] [-warmup 0s]
//	-> {"ready":true,"pid":P,"goroutines":G}
//	<- "go"          start making stalls
//	-> {"goid":W,"begin_ns":B,"end_ns":E}   one line per stall (CLOCK_MONOTONIC, around the Lock)
//	-> {"done":true,"stalls":S}
//
// Standard library only: built offline with every supported toolchain.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
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

func monoNs() int64 {
	var ts syscall.Timespec
	syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0) // CLOCK_MONOTONIC
	return ts.Nano()
}

var mu sync.Mutex
var sink int

//go:noinline
func work(n int) int {
	s := 0
	for i := 0; i < n; i++ {
		s += i * i
	}
	return s
}

// stallOnce: some work, then a wait on mu, which a holder keeps for hold.
//
//go:noinline
func stallOnce(hold time.Duration) (int64, int64) {
	held := make(chan struct{})
	go func() {
		mu.Lock()
		close(held)
		time.Sleep(hold)
		mu.Unlock()
	}()
	<-held
	sink += work(1000)
	begin := monoNs()
	mu.Lock()
	end := monoNs()
	sink += work(1000)
	mu.Unlock()
	return begin, end
}

func main() {
	n := flag.Int("n", 1000, "idle worker goroutines")
	every := flag.Duration("every", 2*time.Second, "time between stalls")
	hold := flag.Duration("hold", 120*time.Millisecond, "how long each stall lasts")
	stalls := flag.Int("stalls", 10, "stalls to make")
	warmup := flag.Duration("warmup", 0, "after \"go\", wake every 10ms for this long before the first stall")
	flag.Parse()
	jobs := make(chan int)
	var started sync.WaitGroup
	started.Add(*n)
	for i := 0; i < *n; i++ {
		go func() {
			started.Done()
			for j := range jobs {
				sink += j
			}
		}()
	}
	started.Wait()
	_ = out.Encode(map[string]any{"ready": true, "pid": os.Getpid(), "goroutines": runtime.NumGoroutine()})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() && strings.TrimSpace(in.Text()) != "go" {
	}
	// The main goroutine makes the stalls: between them it waits at its ticker loop's head (idle),
	// so no goroutine of the fixture's own other than the stalling one parks mid-work.
	id := goid()
	// A warm-up makes the main goroutine one that was active lately (it parks and wakes every
	// 10 ms), as a busy service's goroutines are, rather than one idle since start-up.
	for end := time.Now().Add(*warmup); time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	t := time.NewTicker(*every)
	made := 0
	for range t.C {
		b, e := stallOnce(*hold)
		_ = out.Encode(map[string]any{"goid": id, "begin_ns": b, "end_ns": e})
		made++
		if made == *stalls {
			break
		}
	}
	_ = out.Encode(map[string]any{"done": true, "stalls": made})
}
