package epsync

import (
	"context"
	"errors"
	"io"
	"maps"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/epsync/epsync/clients/go/epsyncv1"
)

// Filter selects the endpoints a View holds.
type Filter struct {
	Namespace string // "" = all namespaces
	Node      string // "" = every node
	Selector  string // Calico label selector on effective labels; "" = all
}

// Event is one change applied to a View, in the order the server sent it.
type Event struct {
	Type             epsyncv1.EventType // ADDED, MODIFIED, DELETED or BOOKMARK
	Object           *epsyncv1.WorkloadEndpoint
	ResourceVersion  int64 // the revision of the change that caused the event
	InitialEventsEnd bool  // the bookmark that marks the view in sync
	// Synced: the view was in sync when it applied this event. False for the events that bring a
	// new or resumed stream up to date (up to its InitialEventsEnd bookmark), which may be old.
	Synced bool
}

// WatchOption configures one Watch.
type WatchOption func(*watchOptions)

type watchOptions struct {
	onStreamEnd func(error)
	from        *View
}

// OnStreamEnd has fn called, on the view's goroutine, each time one of its streams ends, with why
// (an *Error such as ErrWatcherTooSlow or ErrUnavailable; nil when the server ended it cleanly),
// before the view reconnects or stops. fn must not block.
func OnStreamEnd(fn func(err error)) WatchOption {
	return func(o *watchOptions) { o.onStreamEnd = fn }
}

// ResumeFrom starts the view from what a stopped view holds (its objects, revision and store), as
// if its stream had broken: the server replays what it missed or sends the difference, with no
// re-list. It moves a view to another Client (new addresses or credentials). The stopped view must
// have the same filter; it is left as it was.
func ResumeFrom(stopped *View) WatchOption {
	return func(o *watchOptions) { o.from = stopped }
}

// View is a live local copy of the endpoints matching a Filter ("namespace/name" -> endpoint). It
// runs one watch stream at a time; when the stream breaks (server restart, network, replica gone,
// WATCHER_TOO_SLOW, SHUTTING_DOWN) it reconnects with backoff and resumes from the last revision
// it holds completely, sending the versions of everything it holds, so the server replays what
// it missed or sends the difference. Only a bad request (INVALID_ARGUMENT, PERMISSION_DENIED)
// or the end of the Watch context stops it.
//
// The view advances as its events are received: receive from Events until it is closed.
type View struct {
	client      *Client
	filter      Filter
	events      chan Event
	done        chan struct{}
	onStreamEnd func(error)

	mu         sync.Mutex
	objects    map[string]*epsyncv1.WorkloadEndpoint
	revision   int64  // every event up to here is applied (0: not in sync yet)
	synced     bool   // the current stream has sent its initial_events_end bookmark
	storeID    string // the store objects and revision come from, as the server named it
	reconnects int
	changed    chan struct{} // closed and replaced at every change of state
	err        error
}

// Watch starts a view of the endpoints matching f. It runs until ctx is done or the request is
// rejected; then Events is closed and Err says why.
func (c *Client) Watch(ctx context.Context, f Filter, opts ...WatchOption) *View {
	var o watchOptions
	for _, opt := range opts {
		opt(&o)
	}
	v := &View{
		client:      c,
		filter:      f,
		events:      make(chan Event, 64),
		done:        make(chan struct{}),
		onStreamEnd: o.onStreamEnd,
		objects:     map[string]*epsyncv1.WorkloadEndpoint{},
		changed:     make(chan struct{}),
	}
	if from := o.from; from != nil {
		from.mu.Lock()
		v.objects = maps.Clone(from.objects)
		v.revision, v.storeID = from.revision, from.storeID
		from.mu.Unlock()
	}
	go v.run(ctx)
	return v
}

// Events delivers every event applied to the view, in order; it is closed when the view stops.
func (v *View) Events() <-chan Event { return v.events }

// Done is closed when the view has stopped.
func (v *View) Done() <-chan struct{} { return v.done }

// Err is why the view stopped: the context's error or the rejection (*Error); nil while it runs.
func (v *View) Err() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}

// Objects returns a copy of the map the view holds (the endpoints are shared; do not modify them).
func (v *View) Objects() map[string]*epsyncv1.WorkloadEndpoint {
	v.mu.Lock()
	defer v.mu.Unlock()
	return maps.Clone(v.objects)
}

// Get returns the endpoint held under key ("namespace/name").
func (v *View) Get(key string) (*epsyncv1.WorkloadEndpoint, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	w, ok := v.objects[key]
	return w, ok
}

// Revision is the last revision the view holds completely (0 before it is first in sync).
func (v *View) Revision() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.revision
}

// Synced reports whether the current stream has caught up (sent its initial_events_end bookmark).
func (v *View) Synced() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.synced
}

// Reconnects counts the streams that ended and were resumed.
func (v *View) Reconnects() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.reconnects
}

// WaitSynced waits until the view is in sync and holds every change up to revision (0: any).
func (v *View) WaitSynced(ctx context.Context, revision int64) error {
	for {
		v.mu.Lock()
		ok, changed, err := v.synced && v.revision >= revision, v.changed, v.err
		v.mu.Unlock()
		if ok {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (v *View) notifyLocked() {
	close(v.changed)
	v.changed = make(chan struct{})
}

// MaxKnownVersions is the most known versions the server takes in one watch request. A view that
// holds more resumes by revision alone, and re-lists if the server's history no longer has it.
const MaxKnownVersions = 10_000

// request is the next stream's request: from the start, or a resume from what the view holds.
func (v *View) request() *epsyncv1.WatchWorkloadEndpointsRequest {
	v.mu.Lock()
	defer v.mu.Unlock()
	req := &epsyncv1.WatchWorkloadEndpointsRequest{
		Namespace: v.filter.Namespace, Node: v.filter.Node, LabelSelector: v.filter.Selector,
		SendInitialEvents: true, AllowBookmarks: true,
	}
	if v.revision != 0 || len(v.objects) != 0 {
		req.SendInitialEvents = false
		req.ResourceVersion = v.revision
		req.StoreId = v.storeID
		if len(v.objects) <= MaxKnownVersions {
			req.KnownResourceVersions = make(map[string]int64, len(v.objects))
			for key, w := range v.objects {
				req.KnownResourceVersions[key] = w.GetMetadata().GetResourceVersion()
			}
		}
	}
	return req
}

func (v *View) run(ctx context.Context) {
	defer close(v.done)
	defer close(v.events)
	delay := v.client.backoff.Initial
	for {
		err := v.stream(ctx, &delay)
		if v.onStreamEnd != nil {
			v.onStreamEnd(err)
		}
		if ctx.Err() != nil {
			v.stop(ctx.Err())
			return
		}
		if errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrPermissionDenied) {
			v.stop(err)
			return
		}
		if v.fromAnotherStore(err) {
			// A wiped store or another cluster: what the view holds means nothing there. Tell the consumer,
			// drop it, and start over from the new store's initial state.
			if !v.dropAll(ctx) {
				v.stop(ctx.Err())
				return
			}
		}
		v.mu.Lock()
		if errors.Is(err, ErrResourceVersionTooOld) && len(v.objects) == 0 {
			v.revision = 0 // nothing held: start over with the initial state
		}
		v.synced = false
		v.reconnects++
		v.notifyLocked()
		v.mu.Unlock()
		wait := time.Duration(float64(delay) * (0.5 + rand.Float64()))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			v.stop(ctx.Err())
			return
		}
		delay = min(delay*2, v.client.backoff.Max)
	}
}

// fromAnotherStore reports whether err refuses the resume because the server's store is not the one
// the view's state comes from.
func (v *View) fromAnotherStore(err error) bool {
	var e *Error
	if !errors.Is(err, ErrResourceVersionTooOld) || !errors.As(err, &e) {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	other, ok := e.Metadata["storeId"]
	return ok && other != v.storeID
}

// dropAll empties the view, sending a DELETED event for each object it held; false if ctx ended first.
func (v *View) dropAll(ctx context.Context) bool {
	v.mu.Lock()
	held := v.objects
	v.objects = map[string]*epsyncv1.WorkloadEndpoint{}
	v.revision, v.storeID = 0, ""
	v.mu.Unlock()
	for _, obj := range held {
		select {
		case v.events <- Event{Type: epsyncv1.EventType_DELETED, Object: obj}:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func (v *View) stop(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.err = err
	v.synced = false
	v.notifyLocked()
}

// stream runs one watch stream until it ends; nil means the server closed it cleanly.
func (v *View) stream(ctx context.Context, delay *time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := v.client.weps.WatchWorkloadEndpoints(ctx, v.request())
	if err != nil {
		return FromError(err)
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return FromError(err)
		}
		var last int64
		for _, ev := range resp.GetEvents() {
			event := v.apply(ev)
			last = max(last, ev.GetResourceVersion())
			if event.Synced {
				*delay = v.client.backoff.Initial
			}
			select {
			case v.events <- event:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		v.mu.Lock()
		if v.synced && !resp.GetFragment() {
			v.revision = max(v.revision, last)
			v.notifyLocked()
		}
		v.mu.Unlock()
	}
}

// apply applies one event to the map; the Event it returns says whether the view is in sync after it.
func (v *View) apply(ev *epsyncv1.WorkloadEndpointWatchEvent) Event {
	v.mu.Lock()
	defer v.mu.Unlock()
	event := Event{Type: ev.GetType(), ResourceVersion: ev.GetResourceVersion(), InitialEventsEnd: ev.GetInitialEventsEnd()}
	switch ev.GetType() {
	case epsyncv1.EventType_BOOKMARK:
		if ev.GetInitialEventsEnd() {
			v.synced = true
			if id := ev.GetStoreId(); id != "" {
				v.storeID = id
			}
		}
		if v.synced {
			v.revision = max(v.revision, ev.GetResourceVersion())
		}
		v.notifyLocked()
		event.Synced = v.synced
		return event
	case epsyncv1.EventType_DELETED:
		delete(v.objects, Key(ev.GetObject()))
	default:
		v.objects[Key(ev.GetObject())] = ev.GetObject()
	}
	event.Object, event.Synced = ev.GetObject(), v.synced
	return event
}
