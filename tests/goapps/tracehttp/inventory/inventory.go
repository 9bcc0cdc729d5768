// Package inventory stalls on purpose: on a mutex held by another goroutine, on a channel fed
// late, or on a slow upstream HTTP server (SlowUpstream, on 127.0.0.1).
package inventory

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

type Client struct {
	upstream string
	mu       sync.Mutex
}

func NewClient(upstream string) *Client { return &Client{upstream: upstream} }

// Reserve stalls for ms milliseconds in the way named by stall.
//
//go:noinline
func (c *Client) Reserve(ctx context.Context, stall string, ms int) error {
	d := time.Duration(ms) * time.Millisecond
	switch stall {
	case "lock":
		held := make(chan struct{})
		go func() {
			c.mu.Lock()
			close(held)
			time.Sleep(d)
			c.mu.Unlock()
		}()
		<-held
		c.mu.Lock()
		c.mu.Unlock()
	case "chan":
		ch := make(chan int)
		go func() { time.Sleep(d); ch <- 1 }()
		<-ch
	case "upstream":
		req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/?ms=%d", c.upstream, ms), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	case "", "none":
	default:
		return fmt.Errorf("unknown stall %q", stall)
	}
	return nil
}

// SlowUpstream answers after ?ms= milliseconds.
func SlowUpstream(w http.ResponseWriter, r *http.Request) {
	var ms int
	_, _ = fmt.Sscanf(r.URL.Query().Get("ms"), "%d", &ms)
	time.Sleep(time.Duration(ms) * time.Millisecond)
	_, _ = w.Write([]byte("reserved\n"))
}
