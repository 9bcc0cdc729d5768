package main

import (
	"syscall"
	"unsafe"
)

// uintptrOf passes a pointer to a raw syscall (kept apart so main.go reads as plain Go).
func uintptrOf[T any](p *T) uintptr { return uintptr(unsafe.Pointer(p)) }

// monoNs reads CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns (Go's time.Now keeps it hidden).
// A raw syscall: no entersyscall, so reading the clock never changes what the scheduler does.
// nosplit: no stack check, so calling it is no preemption point either (busyLoop relies on it).
//
//go:nosplit
func monoNs() int64 {
	var ts syscall.Timespec
	syscall.RawSyscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0) // CLOCK_MONOTONIC
	return ts.Nano()
}
