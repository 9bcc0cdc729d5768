// pingpong: two goroutines bounce a value over unbuffered channels; prints ns per round trip.
//
// The probe-cost benchmark (bench/bench_probe_cost.py) runs it with and without lgf attached.
// Every round trip is two park/wake cycles, so it shows the cost of per-switch probes at its
// worst. Protocol: prints {"ready":true,"pid":P}, then for each line read on stdin runs -n round
// trips and prints {"ns_per_round_trip":X}; exits when stdin closes. -sleep D: the main goroutine
// sleeps D after printing ready and before it reads stdin (a program idling at start-up, while
// the pong goroutine waits for its first ping).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"time"
)

func main() {
	n := flag.Int("n", 200000, "round trips per measurement")
	sleep := flag.Duration("sleep", 0, "sleep this long at start-up, after printing ready")
	flag.Parse()
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
	}()
	out := json.NewEncoder(os.Stdout)
	_ = out.Encode(map[string]any{"ready": true, "pid": os.Getpid()})
	time.Sleep(*sleep)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		t0 := time.Now()
		for i := 0; i < *n; i++ {
			ping <- i
			<-pong
		}
		ns := float64(time.Since(t0).Nanoseconds()) / float64(*n)
		_ = out.Encode(map[string]any{"ns_per_round_trip": ns})
	}
}
