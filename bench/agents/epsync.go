package main

import (
	"context"
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

	heldMu sync.Mutex
	held   *epsync.View // the running view, or the stopped one the next start resumes from
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
	w.heldMu.Lock()
	defer w.heldMu.Unlock()
	if w.held != nil && !fresh {
		opts = append(opts, epsync.ResumeFrom(w.held))
	}
	view := client.Watch(ctx, epsync.Filter{Node: w.Node, Selector: w.Selector}, opts...)
	done := make(chan struct{})
	w.held = view
	w.run(&running{client: client, cancel: cancel, done: done})
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

func (w *epsyncWatcher) view() map[string]int64 {
	w.heldMu.Lock()
	view := w.held
	w.heldMu.Unlock()
	out := map[string]int64{}
	if view == nil {
		return out
	}
	for key, obj := range view.Objects() {
		out[key] = obj.GetMetadata().GetResourceVersion()
	}
	return out
}
