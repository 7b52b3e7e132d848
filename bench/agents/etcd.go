package main

import (
	"bytes"
	"context"
	"errors"
	"log"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/epsync/epsync/clients/go/epsyncv1"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// etcdPrefix is where the writer keeps endpoints in etcd (bench/population.py's ETCD_PREFIX):
// <prefix><node>/<namespace>/<name>.
const etcdPrefix = "/epsync-bench/weps/"

// etcdWatcher is a node agent on etcd without a fan-out layer, on etcd's own Go client: it Ranges
// its node's key prefix, then Watches it from the next revision. After a reconnect it lists again,
// since etcd has no known-versions resume.
type etcdWatcher struct {
	common
	prefix string

	heldMu sync.Mutex
	held   map[string]int64 // "namespace/name" -> mod revision
}

func newEtcdWatcher(s spec, st *tally) *etcdWatcher {
	return &etcdWatcher{common: newCommon(s, st), prefix: etcdPrefix + s.Node + "/", held: map[string]int64{}}
}

func (w *etcdWatcher) start(target string, fresh bool) {
	w.drop()
	w.beginSync()
	if fresh {
		w.heldMu.Lock()
		w.held = map[string]int64{}
		w.heldMu.Unlock()
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:          []string{target},
		DialTimeout:        10 * time.Second,
		DialOptions:        w.dialOptions(),
		MaxCallRecvMsgSize: maxMessage,
		Logger:             zap.NewNop(),
	})
	if err != nil {
		log.Printf("watcher %d: %v", w.ID, err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	w.run(&running{client: client, cancel: cancel, done: done})
	go w.follow(ctx, client, done)
}

func (w *etcdWatcher) follow(ctx context.Context, client *clientv3.Client, done chan struct{}) {
	defer close(done)
	delay := 50 * time.Millisecond
	for {
		err := w.stream(ctx, client)
		if ctx.Err() != nil {
			return
		}
		w.streamEnded(err)
		select {
		case <-time.After(time.Duration(float64(delay) * (0.5 + rand.Float64()))):
		case <-ctx.Done():
			return
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// stream lists the prefix, then watches it from the next revision until the watch fails.
func (w *etcdWatcher) stream(ctx context.Context, client *clientv3.Client) error {
	listed, err := client.Get(ctx, w.prefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	held := make(map[string]int64, len(listed.Kvs))
	for _, kv := range listed.Kvs {
		held[string(kv.Key[len(w.prefix):])] = kv.ModRevision
	}
	w.heldMu.Lock()
	w.held = held
	w.heldMu.Unlock()
	w.tally.caughtUp(w.Class, len(listed.Kvs))
	watch := client.Watch(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(listed.Header.Revision+1), clientv3.WithCreatedNotify())
	for resp := range watch {
		if !w.waitReading(ctx) {
			return ctx.Err()
		}
		if resp.Created {
			w.markSynced()
		}
		if err := resp.Err(); err != nil {
			return err
		}
		now := time.Now()
		for _, ev := range resp.Events {
			key := string(bytes.TrimPrefix(ev.Kv.Key, []byte(w.prefix)))
			w.heldMu.Lock()
			if ev.Type == clientv3.EventTypeDelete {
				delete(w.held, key)
				w.heldMu.Unlock()
				w.tally.untimed(w.Class)
				continue
			}
			w.held[key] = ev.Kv.ModRevision
			w.heldMu.Unlock()
			var obj epsyncv1.WorkloadEndpoint
			if err := proto.Unmarshal(ev.Kv.Value, &obj); err != nil {
				return err
			}
			w.tally.event(w.Class, true, latencyMicros(now, obj.GetSpec().GetContainerId()))
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("etcd closed the watch")
}

func (w *etcdWatcher) view() map[string]int64 {
	w.heldMu.Lock()
	defer w.heldMu.Unlock()
	out := make(map[string]int64, len(w.held))
	for key, revision := range w.held {
		out[key] = revision
	}
	return out
}
