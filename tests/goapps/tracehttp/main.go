// tracehttp: a net/http server whose handler labels its goroutine (pprof.Do) and then stalls, so
// lgf's trace-context reading can be checked against what the program itself knows.
//
// Prints one JSON line when listening:
//
//	{"ready":true,"pid":P,"addr":"127.0.0.1:PORT","maps":{"small":"0x..","large":"0x..","header":"0x.."}}
//
// "maps" are the map values (what a map variable holds) of three maps built at start-up with
// known contents (see knownMaps), for reading back from outside.
//
// GET /order?stall=lock|chan|upstream&ms=N   labels {route=/order, tenant=<X-Tenant or "acme">}
//
//	(and span_id=<X-Span-Label>, as a tracing library's profiling bridge would set it),
//
//	then orders.(*Service).Place -> inventory.(*Client).Reserve stalls N ms on a mutex, a channel or
//	a slow upstream on 127.0.0.1 (this program's second listener).
//
// GET /hold   labels {route=/hold, tenant=acme}; prints {"req":"0x..","goid":N} and waits until a
//
//	line arrives on stdin (the test reads the request and the labels meanwhile).
//
// Serves until stdin closes.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"lgf.test/tracehttp/inventory"
	"lgf.test/tracehttp/orders"
)

var (
	smallMap  map[string]string
	largeMap  map[string]string
	headerMap map[string][]string
	out       sync.Mutex
	holds     = make(chan struct{}, 16) // a release may come before the handler waits
)

func mapValue[K comparable, V any](m map[K]V) string {
	return fmt.Sprintf("%#x", *(*uintptr)(unsafe.Pointer(&m)))
}

// knownMaps builds maps whose contents the test recomputes: small (3 entries), large (600
// entries: several tables or many buckets) and a header-like map[string][]string (200 keys, k
// values each, k = i % 4).
func knownMaps() {
	smallMap = map[string]string{"route": "/order", "tenant": "acme", "empty": ""}
	largeMap = make(map[string]string)
	for i := 0; i < 600; i++ {
		largeMap[fmt.Sprintf("key-%d", i)] = strings.Repeat("v", i%7) + strconv.Itoa(i)
	}
	delete(largeMap, "key-7") // a deleted slot must not be read
	headerMap = make(map[string][]string)
	for i := 0; i < 200; i++ {
		var vals []string
		for j := 0; j < i%4; j++ {
			vals = append(vals, fmt.Sprintf("h%d-%d", i, j))
		}
		headerMap[fmt.Sprintf("Header-%d", i)] = vals
	}
}

func goid() int64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := strings.Fields(string(buf))
	n, _ := strconv.ParseInt(f[1], 10, 64)
	return n
}

func say(v any) {
	out.Lock()
	defer out.Unlock()
	_ = json.NewEncoder(os.Stdout).Encode(v)
}

func main() {
	knownMaps()
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() { _ = http.Serve(up, http.HandlerFunc(inventory.SlowUpstream)) }()
	svc := orders.NewService(inventory.NewClient("http://" + up.Addr().String()))

	mux := http.NewServeMux()
	mux.HandleFunc("/order", func(w http.ResponseWriter, r *http.Request) {
		tenant := r.Header.Get("X-Tenant")
		if tenant == "" {
			tenant = "acme"
		}
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		labels := []string{"route", "/order", "tenant", tenant}
		if span := r.Header.Get("X-Span-Label"); span != "" { // as OpenTelemetry's profiling bridges do
			labels = append(labels, "span_id", span)
		}
		pprof.Do(r.Context(), pprof.Labels(labels...), func(ctx context.Context) {
			if err := svc.Place(ctx, r.URL.Query().Get("stall"), ms); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			_, _ = w.Write([]byte("ok\n"))
		})
	})
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) {
		pprof.Do(r.Context(), pprof.Labels("route", "/hold", "tenant", "acme"), func(ctx context.Context) {
			say(map[string]any{"req": fmt.Sprintf("%p", r), "goid": goid()})
			<-holds
			_, _ = w.Write([]byte("released\n"))
		})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() { _ = http.Serve(ln, mux) }()
	say(map[string]any{"ready": true, "pid": os.Getpid(), "addr": ln.Addr().String(),
		"maps": map[string]string{"small": mapValue(smallMap), "large": mapValue(largeMap),
			"header": mapValue(headerMap)}})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		select {
		case holds <- struct{}{}:
		default:
		}
	}
	runtime.KeepAlive(smallMap)
	runtime.KeepAlive(largeMap)
	runtime.KeepAlive(headerMap)
}
