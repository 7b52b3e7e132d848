package epsync_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epsync/epsync/clients/go/epsync"
	"github.com/epsync/epsync/clients/go/epsyncv1"
)

var (
	namespaces = []string{"ns-a", "ns-b"}
	nodes      = []string{"node1", "node2", "node3"}
)

// randomWrite is a create, an upsert or a delete of one of 2 x 3 x 12 endpoints.
func randomWrite(rng *rand.Rand, id int) *epsyncv1.WriteWorkloadEndpointsRequest {
	ns, node := namespaces[rng.IntN(len(namespaces))], nodes[rng.IntN(len(nodes))]
	pod := fmt.Sprintf("p%d", rng.IntN(12))
	name := node + "-k8s-" + pod + "-eth0"
	req := &epsyncv1.WriteWorkloadEndpointsRequest{RequestId: fmt.Sprint(id)}
	w := endpoint(ns, node, pod, map[string]string{"app": []string{"web", "db"}[rng.IntN(2)]})
	w.Metadata.Name = name
	w.Spec.Mac = fmt.Sprintf("ee:ee:ee:ee:%02x:%02x", rng.IntN(256), rng.IntN(256))
	switch r := rng.IntN(100); {
	case r < 15:
		req.Operation = &epsyncv1.WriteWorkloadEndpointsRequest_Create{Create: &epsyncv1.CreateWorkloadEndpointRequest{WorkloadEndpoint: w}}
	case r < 75:
		req.Operation = &epsyncv1.WriteWorkloadEndpointsRequest_Update{Update: &epsyncv1.UpdateWorkloadEndpointRequest{WorkloadEndpoint: w, AllowMissing: true}}
	default:
		req.Operation = &epsyncv1.WriteWorkloadEndpointsRequest_Delete{Delete: &epsyncv1.DeleteWorkloadEndpointRequest{Namespace: ns, Name: name, AllowMissing: true}}
	}
	return req
}

// writeRandom sends n random writes through one write stream, one at a time, counting answers in
// answered. It returns the stream's error (nil when all n are answered).
func writeRandom(ctx context.Context, t *testing.T, c *epsync.Client, rng *rand.Rand, n int, answered *atomic.Int64) error {
	var stream *epsync.WriteStream
	var err error
	for { // after a restart the channel may still be reconnecting
		if stream, err = c.Write(ctx); err == nil {
			break
		}
		if ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer func() { _ = stream.CloseSend() }()
	for i := range n {
		if err := stream.Send(randomWrite(rng, i)); err != nil {
			return err
		}
		results, err := stream.Recv()
		if err != nil {
			return err
		}
		for _, r := range results {
			if r.Err != nil && !epsync.IsAlreadyExists(r.Err) {
				t.Errorf("write %s: %v", r.RequestID, r.Err)
			}
		}
		answered.Add(1)
	}
	return nil
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

type watched struct {
	name    string
	filter  epsync.Filter
	view    *epsync.View
	mu      sync.Mutex
	inSync  int // initial_events_end bookmarks seen
	lastRev int64
	events  int
}

// Random writes through the write stream while three views watch (one node; all namespaces; a
// namespace and selector), a kill -9 of the server in the middle of the writes and a restart on
// the same port and data, more writes: at the end every view holds exactly what a List with its
// filter returns (keys and resource versions), and each reported in-sync again after the restart.
func TestWatchResumesAcrossKill(t *testing.T) {
	srv := startServer(t)
	ctx := testContext(t, 50*time.Second)
	writer := dial(t, srv.addr())
	// The watches' client lists a dead address first: pick_first moves on to the live one.
	watcher := dial(t, closedPort(t), srv.addr())
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	var answered atomic.Int64

	if err := writeRandom(ctx, t, writer, rng, 60, &answered); err != nil {
		t.Fatal(err)
	}
	views := []*watched{
		{name: "node1", filter: epsync.Filter{Node: "node1"}},
		{name: "all", filter: epsync.Filter{}},
		{name: "ns-a web", filter: epsync.Filter{Namespace: "ns-a", Selector: "app == 'web'"}},
	}
	watchCtx, stopWatches := context.WithCancel(ctx)
	var drained sync.WaitGroup
	defer drained.Wait()
	defer stopWatches()
	for _, w := range views {
		w.view = watcher.Watch(watchCtx, w.filter)
		drained.Add(1)
		go func() {
			defer drained.Done()
			for ev := range w.view.Events() {
				w.mu.Lock()
				w.events++
				if ev.InitialEventsEnd {
					w.inSync++
				}
				if ev.ResourceVersion < w.lastRev {
					t.Errorf("view %s: event at %d after one at %d", w.name, ev.ResourceVersion, w.lastRev)
				}
				w.lastRev = ev.ResourceVersion
				w.mu.Unlock()
			}
		}()
	}
	for _, w := range views {
		if err := w.view.WaitSynced(testContext(t, 10*time.Second), 0); err != nil {
			t.Fatalf("view %s not in sync: %v", w.name, err)
		}
	}

	// Writes with the watches running; the server is killed in the middle of them.
	done := make(chan error, 1)
	go func() { done <- writeRandom(ctx, t, writer, rng, 1000, &answered) }()
	deadline := time.After(15 * time.Second)
	for answered.Load() < 60+80 {
		select {
		case <-deadline:
			t.Fatalf("only %d writes answered", answered.Load())
		case <-time.After(5 * time.Millisecond):
		}
	}
	srv.kill()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the write stream outlived the server")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the write stream did not end with the server")
	}
	srv.start()
	t.Logf("%d writes answered before the kill; restarted on %s", answered.Load(), srv.addr())

	if err := writeRandom(ctx, t, writer, rng, 150, &answered); err != nil {
		t.Fatal(err)
	}
	// A last write that every view sees, so each reaches the store's final revision.
	fence := endpoint("ns-a", "node1", "fence", map[string]string{"app": "web"})
	fence.Metadata.Name = "node1-k8s-fence-eth0"
	if _, err := writer.UpdateEndpoint(ctx, fence, epsync.UpdateOptions{AllowMissing: true}); err != nil {
		t.Fatal(err)
	}

	for _, w := range views {
		list, revision, err := writer.ListEndpoints(ctx, epsync.ListOptions{Namespace: w.filter.Namespace, Node: w.filter.Node, Selector: w.filter.Selector})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.view.WaitSynced(testContext(t, 10*time.Second), revision); err != nil {
			t.Fatalf("view %s did not reach revision %d: %v (at %d, synced %v)", w.name, revision, err, w.view.Revision(), w.view.Synced())
		}
		got := w.view.Objects()
		want := map[string]int64{}
		for _, item := range list {
			want[epsync.Key(item)] = item.GetMetadata().GetResourceVersion()
		}
		for key, version := range want {
			if o, ok := got[key]; !ok {
				t.Errorf("view %s lacks %s", w.name, key)
			} else if o.GetMetadata().GetResourceVersion() != version {
				t.Errorf("view %s holds %s at %d, List at %d", w.name, key, o.GetMetadata().GetResourceVersion(), version)
			}
		}
		for key := range got {
			if _, ok := want[key]; !ok {
				t.Errorf("view %s holds %s, which List does not", w.name, key)
			}
		}
		if !w.view.Synced() {
			t.Errorf("view %s does not report in-sync", w.name)
		}
	}
	// Every event applied is in its channel; stop the views and count what the drains saw.
	stopWatches()
	drained.Wait()
	for _, w := range views {
		if w.inSync < 2 || w.view.Reconnects() < 1 {
			t.Errorf("view %s: %d in-sync bookmarks and %d reconnects, want at least 2 and 1", w.name, w.inSync, w.view.Reconnects())
		}
		t.Logf("view %s: %d objects at revision %d, %d events, %d in-sync bookmarks, %d reconnects",
			w.name, len(w.view.Objects()), w.view.Revision(), w.events, w.inSync, w.view.Reconnects())
	}
}

// A rejected watch request is final: the view stops with the typed error and closes Events.
func TestWatchBadRequestIsFinal(t *testing.T) {
	srv := startServer(t)
	c := dial(t, srv.addr())
	ctx := testContext(t, 10*time.Second)
	v := c.Watch(ctx, epsync.Filter{Selector: "app ==="})
	for range v.Events() {
	}
	var e *epsync.Error
	if err := v.Err(); !errors.Is(err, epsync.ErrInvalidArgument) || !errors.As(err, &e) {
		t.Fatalf("view error %v, want INVALID_ARGUMENT", err)
	}
	if v.Reconnects() != 0 {
		t.Errorf("%d reconnects after a bad request", v.Reconnects())
	}
}

// The view ends with its context.
func TestWatchStopsWithContext(t *testing.T) {
	srv := startServer(t)
	c := dial(t, srv.addr())
	ctx, cancel := context.WithCancel(context.Background())
	v := c.Watch(ctx, epsync.Filter{Node: "node1"})
	if err := v.WaitSynced(testContext(t, 10*time.Second), 0); err != nil {
		t.Fatal(err)
	}
	cancel()
	go func() {
		for range v.Events() {
		}
	}()
	select {
	case <-v.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the view did not stop")
	}
	if !errors.Is(v.Err(), context.Canceled) {
		t.Errorf("view error %v, want context.Canceled", v.Err())
	}
}

// A view whose store is wiped (the server comes back on an empty data directory, revisions from 1
// again) drops what it held, telling the consumer, and starts over from the new store.
func TestWatchStartsOverOnAWipedStore(t *testing.T) {
	srv := startServer(t, "--workers", "1")
	ctx := testContext(t, 40*time.Second)
	c := dial(t, srv.addr())
	for _, pod := range []string{"old-a", "old-b", "old-c"} {
		if _, err := c.CreateEndpoint(ctx, endpoint("default", "node1", pod, nil)); err != nil {
			t.Fatal(err)
		}
	}
	view := c.Watch(ctx, epsync.Filter{})
	deleted := make(chan string, 16)
	go func() {
		for ev := range view.Events() {
			if ev.Type == epsyncv1.EventType_DELETED {
				deleted <- ev.Object.GetMetadata().GetName()
			}
		}
	}()
	if err := view.WaitSynced(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if n := len(view.Objects()); n != 3 {
		t.Fatalf("the view holds %d objects, not 3", n)
	}
	srv.kill()
	if err := os.RemoveAll(srv.dataDir); err != nil {
		t.Fatal(err)
	}
	srv.start("--workers", "1")
	fresh, err := dial(t, srv.addr()).CreateEndpoint(ctx, endpoint("default", "node1", "new", nil))
	if err != nil {
		t.Fatal(err)
	}
	for {
		objects := view.Objects()
		if _, ok := objects["default/"+fresh.GetMetadata().GetName()]; ok && len(objects) == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the view never started over: it holds %v\nserver log:\n%s", view.Objects(), srv.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	for told := 0; told < 3; told++ {
		select {
		case <-deleted:
		case <-ctx.Done():
			t.Fatalf("the consumer was told of %d deletions, not 3", told)
		}
	}
}

// A stopped view's state moves to a view on another client (ResumeFrom): the new view catches up
// with only what changed meanwhile (no re-list), marks those catch-up events as not Synced and the
// live ones after as Synced, and OnStreamEnd hears of every stream that ends.
func TestWatchResumesFromAStoppedView(t *testing.T) {
	srv := startServer(t, "--workers", "1")
	ctx := testContext(t, 30*time.Second)
	writer := dial(t, srv.addr())
	for i := range 10 {
		if _, err := writer.CreateEndpoint(ctx, endpoint("default", "node1", fmt.Sprintf("p%d", i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	var ended []error
	var endedMu sync.Mutex
	onEnd := epsync.OnStreamEnd(func(err error) {
		endedMu.Lock()
		defer endedMu.Unlock()
		ended = append(ended, err)
	})
	firstCtx, stopFirst := context.WithCancel(ctx)
	first := dial(t, srv.addr()).Watch(firstCtx, epsync.Filter{Node: "node1"}, onEnd)
	go func() {
		for range first.Events() {
		}
	}()
	if err := first.WaitSynced(ctx, 0); err != nil {
		t.Fatal(err)
	}
	stopFirst()
	<-first.Done()

	// Changes while no view runs: two updates, a delete and a create.
	for _, pod := range []string{"p1", "p2"} {
		w := endpoint("default", "node1", pod, map[string]string{"changed": "yes"})
		w.Metadata.Name = "node1-k8s-" + pod + "-eth0"
		if _, err := writer.UpdateEndpoint(ctx, w, epsync.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := writer.DeleteEndpoint(ctx, "default", "node1-k8s-p3-eth0", epsync.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.CreateEndpoint(ctx, endpoint("default", "node1", "p10", nil)); err != nil {
		t.Fatal(err)
	}

	second := dial(t, srv.addr()).Watch(ctx, epsync.Filter{Node: "node1"}, epsync.ResumeFrom(first), onEnd)
	var catchUp, live int
	var sawEnd, wroteLive bool
	for ev := range second.Events() {
		switch {
		case ev.InitialEventsEnd:
			sawEnd = true
			if !ev.Synced {
				t.Error("the initial_events_end bookmark is not Synced")
			}
		case ev.Type == epsyncv1.EventType_BOOKMARK:
		case !sawEnd:
			catchUp++
			if ev.Synced {
				t.Errorf("catch-up event %v %s marked Synced", ev.Type, epsync.Key(ev.Object))
			}
		default:
			live++
			if !ev.Synced {
				t.Errorf("live event %v %s not marked Synced", ev.Type, epsync.Key(ev.Object))
			}
		}
		if sawEnd && !wroteLive {
			if _, err := writer.CreateEndpoint(ctx, endpoint("default", "node1", "live", nil)); err != nil {
				t.Fatal(err)
			}
			wroteLive = true
		}
		if live == 1 {
			break
		}
	}
	if catchUp != 4 {
		t.Errorf("%d catch-up events, want the 4 changes (a re-list would send 10)", catchUp)
	}
	list, _, err := writer.ListEndpoints(ctx, epsync.ListOptions{Node: "node1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := second.Objects(); len(got) != len(list) {
		t.Errorf("the resumed view holds %d objects, List %d", len(got), len(list))
	}
	endedMu.Lock()
	defer endedMu.Unlock()
	if len(ended) != 1 || !errors.Is(ended[0], context.Canceled) {
		t.Errorf("OnStreamEnd heard %v, want the first view's context.Canceled", ended)
	}
}
