// binfacts: a small Go program whose binary the gobinary/discovery/inspect tests read and run.
//
// It parks goroutines on a channel, a mutex and a timer so the runtime functions lgf probes are
// all linked in, prints "ready <pid> <address of main.work>" once running (the address as this
// process sees it: for a PIE build, tests check lgf's load bias against it), and exits when stdin
// closes (or after the number of seconds given as its first argument, so a forgotten child never
// lingers).
package main

import (
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"sync"
	"time"
)

// work hands values from a mutex-guarded sender to a receiver: channel and lock waits.
//
//go:noinline
func work(mu *sync.Mutex, ch chan int) {
	for i := 0; ; i++ {
		mu.Lock()
		ch <- i
		mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
}

// bigframe has a frame larger than the Go stack's "big" limit (4 KiB), so its stack-bound check
// takes the compiler's third prologue shape (mov/sub/jb before the compare); lgf must decode it.
//
//go:noinline
func bigframe(n int) byte {
	var buf [8192]byte
	for i := range buf {
		buf[i] = byte(i * n)
	}
	return buf[n%len(buf)]
}

func main() {
	limit := 60 * time.Second
	if len(os.Args) > 1 {
		if s, err := strconv.Atoi(os.Args[1]); err == nil {
			limit = time.Duration(s) * time.Second
		}
	}
	if bigframe(len(os.Args)) == 255 {
		fmt.Println("unlikely")
	}
	var mu sync.Mutex
	ch := make(chan int)
	go work(&mu, ch)
	go func() {
		for range ch {
		}
	}()
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	fmt.Printf("ready %d %#x\n", os.Getpid(), reflect.ValueOf(work).Pointer())
	select {
	case <-done:
	case <-time.After(limit):
	}
}
