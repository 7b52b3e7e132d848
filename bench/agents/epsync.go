package main

import (
	"context"
	"errors"
	"log"
	"sync"
	"time"

	"github.com/epsync/epsync/clients/go/epsync"
	"github.com/epsync/epsync/clients/go/epsyncv1"
)

// epsyncWatcher is a node agent or selector watcher on epsync (or on the raw server, which serves
// the same method), built on the Go client's View: it resumes as any Go agent does, from its
// revision with the versions of everything it holds.
type epsyncWatcher struct {
	common

	connMu  sync.Mutex // guards what follows
	client  *epsync.Client
	current *epsync.View // the running view, or the stopped one the next start resumes from
	cancel  context.CancelFunc
	done    chan struct{} // closed when the running view's events are drained
}

func newEpsyncWatcher(s spec, st *tally) *epsyncWatcher {
	return &epsyncWatcher{common: newCommon(s, st)}
}

func (w *epsyncWatcher) start(target string, fresh bool) {
	w.drop()
	w.beginSync()
	client, err := epsync.Dial(context.Background(), []string{target},
		epsync.WithDialOptions(w.dialOptions()...),
		epsync.WithBackoff(epsync.Backoff{Initial: 50 * time.Millisecond, Max: 2 * time.Second}))
	if err != nil {
		log.Printf("watcher %d: %v", w.ID, err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	opts := []epsync.WatchOption{epsync.OnStreamEnd(func(err error) {
		if ctx.Err() == nil { // not our own drop
			w.streamEnded(err)
		}
	})}
	w.connMu.Lock()
	defer w.connMu.Unlock()
	if w.current != nil && !fresh {
		opts = append(opts, epsync.ResumeFrom(w.current))
	}
	view := client.Watch(ctx, epsync.Filter{Node: w.Node, Selector: w.Selector}, opts...)
	done := make(chan struct{})
	w.client, w.current, w.cancel, w.done = client, view, cancel, done
	go w.consume(ctx, view, done)
}

// consume takes every event of the view, pausing while the watcher stalls.
func (w *epsyncWatcher) consume(ctx context.Context, view *epsync.View, done chan struct{}) {
	defer close(done)
	for ev := range view.Events() {
		if !w.waitReading(ctx) {
			break
		}
		if ev.Type == epsyncv1.EventType_BOOKMARK {
			if ev.InitialEventsEnd {
				w.markSynced()
			}
			continue
		}
		w.tally.event(w.Class, ev.Synced, latencyMicros(time.Now(), ev.Object.GetSpec().GetContainerId()))
	}
	for range view.Events() { // after a drop: let the view finish
	}
}

func (w *epsyncWatcher) drop() {
	w.connMu.Lock()
	client, cancel, done := w.client, w.cancel, w.done
	w.client, w.cancel, w.done = nil, nil, nil
	w.connMu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	if err := client.Close(); err != nil && !errors.Is(err, context.Canceled) {
		log.Printf("watcher %d: closing: %v", w.ID, err)
	}
}

func (w *epsyncWatcher) view() map[string]int64 {
	w.connMu.Lock()
	view := w.current
	w.connMu.Unlock()
	out := map[string]int64{}
	if view == nil {
		return out
	}
	for key, obj := range view.Objects() {
		out[key] = obj.GetMetadata().GetResourceVersion()
	}
	return out
}
