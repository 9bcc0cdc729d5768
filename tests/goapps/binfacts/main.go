// binfacts: a small Go program whose binary the gobinary/discovery/inspect tests read and run.
//
// It parks goroutines on a channel, a mutex and a timer so the runtime functions lgf probes are
// all linked in, prints "ready <pid>" once running, and exits when stdin closes (or after the
// number of seconds given as its first argument, so a forgotten child never lingers).
package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
)

func main() {
	limit := 60 * time.Second
	if len(os.Args) > 1 {
		if s, err := strconv.Atoi(os.Args[1]); err == nil {
			limit = time.Duration(s) * time.Second
		}
	}
	var mu sync.Mutex
	ch := make(chan int)
	go func() {
		for i := 0; ; i++ {
			mu.Lock()
			ch <- i
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	go func() {
		for range ch {
		}
	}()
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	fmt.Printf("ready %d\n", os.Getpid())
	select {
	case <-done:
	case <-time.After(limit):
	}
}
