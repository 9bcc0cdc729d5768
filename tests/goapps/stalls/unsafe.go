package main

import "unsafe"

// uintptrOf passes a pointer to a raw syscall (kept apart so main.go reads as plain Go).
func uintptrOf[T any](p *T) uintptr { return uintptr(unsafe.Pointer(p)) }
