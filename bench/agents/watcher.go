package main

import (
	"context"
	"errors"
	"io"
	"log"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/epsync/epsync/clients/go/epsync"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// maxMessage is the receive limit of every watcher (a resync may bring a large response).
const maxMessage = 64 << 20

// spec is one watcher as the orchestrator describes it (bench/loadtest/run.py's watcher_specs).
type spec struct {
	ID          int    `json:"id"`
	Class       string `json:"cls"`
	Node        string `json:"node"`
	Selector    string `json:"selector"`
	SmallWindow int    `json:"small_window"`
}

// watcher is one node agent or selector watcher on its own connection.
type watcher interface {
	base() *common
	// start connects (again) to target and syncs; fresh drops what the watcher held first.
	start(target string, fresh bool)
	// drop cuts the connection now, keeping what the watcher holds.
	drop()
	// view is key -> resource version of everything held.
	view() map[string]int64
}

// common is what every kind of watcher keeps: its counters, its sync state and its stall switch.
type common struct {
	spec
	tally *tally

	mu          sync.Mutex
	current     *running      // the connection, nil while dropped
	synced      chan struct{} // closed once the current connection is in sync
	syncStarted time.Time
	syncSeconds float64
	reading     chan struct{} // closed while the watcher reads; open (blocking) while it stalls

	syncBytes  atomic.Int64 // response bytes from the start of a (re)connect until in sync
	inSync     atomic.Bool
	cutoffs    atomic.Int64
	reconnects atomic.Int64
}

func newCommon(s spec, st *tally) common {
	reading := make(chan struct{})
	close(reading)
	return common{spec: s, tally: st, synced: make(chan struct{}), reading: reading}
}

func (c *common) base() *common { return c }

// beginSync starts timing a (re)connect.
func (c *common) beginSync() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.synced = make(chan struct{})
	c.syncStarted = time.Now()
	c.syncSeconds = 0
	c.syncBytes.Store(0)
	c.inSync.Store(false)
}

func (c *common) markSynced() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inSync.Store(true)
	select {
	case <-c.synced:
	default:
		c.syncSeconds = time.Since(c.syncStarted).Seconds()
		close(c.synced)
	}
}

// syncedChan is closed when the current (re)connect is in sync.
func (c *common) syncedChan() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

func (c *common) syncReport() []any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return []any{c.syncSeconds, c.syncBytes.Load()}
}

// setStalled stops (or resumes) reading: a stalled watcher takes nothing more from its stream, so
// its HTTP/2 window fills and the server's buffer for it grows.
func (c *common) setStalled(stalled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.reading:
		if stalled {
			c.reading = make(chan struct{})
		}
	default:
		if !stalled {
			close(c.reading)
		}
	}
}

// waitReading returns once the watcher may read, or false when ctx ends first.
func (c *common) waitReading(ctx context.Context) bool {
	c.mu.Lock()
	reading := c.reading
	c.mu.Unlock()
	select {
	case <-reading:
		return true
	case <-ctx.Done():
		return false
	}
}

// streamEnded counts a stream that ended by itself (not by drop) and why, as agents.py does.
func (c *common) streamEnded(err error) {
	c.reconnects.Add(1)
	if err == nil {
		c.tally.error("stream ended")
		return
	}
	if errors.Is(err, epsync.ErrWatcherTooSlow) {
		c.cutoffs.Add(1)
	}
	var e *epsync.Error
	switch {
	case errors.As(err, &e) && e.Reason != "":
		c.tally.error(e.Reason)
	default:
		c.tally.error(codeName(status.Code(err)))
	}
}

// running is the connection a watcher runs: its client, and the goroutine that reads it.
type running struct {
	client io.Closer
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has finished
}

// run makes r the watcher's connection (the caller has dropped the one before).
func (c *common) run(r *running) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.current = r
}

// drop ends the watcher's connection, if it runs one: its context cancelled, its goroutine
// finished, its client closed. What the watcher holds stays.
func (c *common) drop() {
	c.mu.Lock()
	r := c.current
	c.current = nil
	c.mu.Unlock()
	if r == nil {
		return
	}
	r.cancel()
	<-r.done
	if err := r.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
		log.Printf("watcher %d: closing: %v", c.ID, err)
	}
}

// counters is what the "counters" command reports of one watcher.
func (c *common) counters() map[string]any {
	return map[string]any{"cutoffs": c.cutoffs.Load(), "reconnects": c.reconnects.Load(), "synced": c.inSync.Load()}
}

// received counts a response of n bytes, and its bytes toward the sync cost until in sync.
func (c *common) received(n int) {
	c.tally.received(n)
	if !c.inSync.Load() {
		c.syncBytes.Add(int64(n))
	}
}

// latencyMicros is receive time minus the send time the writer stamped into the container ID
// (bench/population.py: the first 16 hex digits are its time.time_ns()).
func latencyMicros(now time.Time, containerID string) int64 {
	if len(containerID) < 16 {
		return 0
	}
	sent, err := strconv.ParseUint(containerID[:16], 16, 64)
	if err != nil {
		return 0
	}
	return (now.UnixNano() - int64(sent)) / 1000
}

// codeName spells a status code as Python's grpc.StatusCode names do (UNAVAILABLE, DEADLINE_EXCEEDED).
func codeName(c codes.Code) string {
	var out []rune
	for i, r := range c.String() {
		if i > 0 && unicode.IsUpper(r) {
			out = append(out, '_')
		}
		out = append(out, unicode.ToUpper(r))
	}
	return string(out)
}

// payloadCounter is a gRPC stats handler counting the responses a connection receives.
type payloadCounter struct{ c *common }

func (p payloadCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (p payloadCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if in, ok := s.(*stats.InPayload); ok {
		p.c.received(in.Length)
	}
}
func (p payloadCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (p payloadCounter) HandleConn(context.Context, stats.ConnStats) {}

// dialOptions are every watcher's connection options: its own TCP connection (a ClientConn never
// shares one with another), responses counted, and for a watcher that stalls a small HTTP/2
// window (gRPC-Go's floor is 64 KiB) without BDP growth, so its stall reaches the server soon.
func (c *common) dialOptions() []grpc.DialOption {
	opts := []grpc.DialOption{
		grpc.WithStatsHandler(payloadCounter{c}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage)),
		grpc.WithNoProxy(), // loopback servers: never through a proxy the environment names
	}
	if c.SmallWindow > 0 {
		window := int32(max(c.SmallWindow, 64<<10))
		opts = append(opts, grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window))
	}
	return opts
}
