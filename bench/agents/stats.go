package main

import (
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
)

// histogram counts integer microseconds in log-linear buckets exactly as bench/loadtest/histogram.py
// does (below 128 one bucket per value; above, 64 buckets per power of two), so the orchestrator
// merges the Go agents' reports with any other's.
type histogram struct {
	counts   map[int]int64
	n, total int64
	min, max int64
}

func bucketOf(v int64) int {
	if v < 128 {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - 7
	return 64*shift + int(v>>shift)
}

func (h *histogram) record(v int64) {
	v = max(v, 0)
	if h.counts == nil {
		h.counts = map[int]int64{}
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	h.max = max(h.max, v)
	h.n++
	h.total += v
}

// toJSON is histogram.py's Histogram.to_json.
func (h *histogram) toJSON() map[string]any {
	counts := make(map[string]int64, len(h.counts))
	for k, c := range h.counts {
		counts[strconv.Itoa(k)] = c
	}
	return map[string]any{"c": counts, "n": h.n, "s": h.total, "lo": h.min, "hi": h.max}
}

// tally is what the process received since the last report (agents.py's Stats).
type tally struct {
	bytes     atomic.Int64 // response bytes (message length, before framing)
	responses atomic.Int64

	mu         sync.Mutex
	events     int64
	liveEvents int64
	byClass    map[string]int64
	latency    map[string]*histogram
	errors     map[string]int64
}

func newTally() *tally {
	s := &tally{}
	s.resetLocked()
	return s
}

func (s *tally) resetLocked() {
	s.events, s.liveEvents = 0, 0
	s.byClass = map[string]int64{}
	s.latency = map[string]*histogram{}
	s.errors = map[string]int64{}
}

// received counts one response of n bytes.
func (s *tally) received(n int) {
	s.bytes.Add(int64(n))
	s.responses.Add(1)
}

// event counts one applied event; a live one (the watcher was in sync) records its latency in us.
func (s *tally) event(cls string, live bool, latencyMicros int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events++
	s.byClass[cls]++
	if !live {
		return
	}
	s.liveEvents++
	h := s.latency[cls]
	if h == nil {
		h = &histogram{}
		s.latency[cls] = h
	}
	h.record(latencyMicros)
}

// untimed counts a live event that carries no send time (an etcd delete has no value).
func (s *tally) untimed(cls string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events++
	s.liveEvents++
	s.byClass[cls]++
}

// caughtUp counts n events of a (re)list that carry no latency (etcd's Range).
func (s *tally) caughtUp(cls string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events += int64(n)
	s.byClass[cls] += int64(n)
}

func (s *tally) error(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errors[what]++
}

// report returns what was received since the last report and starts counting afresh.
func (s *tally) report() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	latency := make(map[string]any, len(s.latency))
	for cls, h := range s.latency {
		latency[cls] = h.toJSON()
	}
	out := map[string]any{
		"events":          s.events,
		"live_events":     s.liveEvents,
		"bytes":           s.bytes.Swap(0),
		"responses":       s.responses.Swap(0),
		"events_by_class": s.byClass,
		"latency":         latency,
		"errors":          s.errors,
	}
	s.resetLocked()
	return out
}
