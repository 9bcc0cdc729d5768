// Command inline is a fixture for lgf's symbolizer tests: small functions the compiler inlines
// into each other (three deep), called in a loop from main, so the binary's pclntab carries an
// inline tree that the tests check against the binary's own DWARF.
package main

import (
	"fmt"
	"os"
)

var sink int

func leaf(x int) int {
	sink += x
	return x*3 + 1
}

func middle(x int) int {
	return leaf(x+1) + leaf(x+2)
}

func outer(x int) int {
	y := middle(x)
	return middle(y) ^ x
}

//go:noinline
func work(n int) int {
	total := 0
	for i := 0; i < n; i++ {
		total += outer(i)
	}
	return total
}

func main() {
	n := 1000
	if len(os.Args) > 1 {
		fmt.Sscan(os.Args[1], &n)
	}
	fmt.Println(work(n), sink)
}
