// Command agents is the load test's watcher agents in Go: one process holding every node agent and
// selector watcher of a run, each on its own connection, driven by the orchestrator over stdin and
// stdout exactly as bench/loadtest/agents.py is (bench/loadtest/control.py: one JSON command per
// line in, one answer per command and a report every second out).
//
//	agents --mode epsync|etcd|raw --target HOST:PORT[,HOST:PORT...]
//
// epsync and raw watchers are Views of the Go client (github.com/epsync/epsync/clients/go); etcd
// watchers use etcd's own clientv3. Go agents take a fraction of the CPU the Python ones took, so
// the servers under test keep the machine's cores.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// lineLimit bounds one command line (the orchestrator's largest is a start with every watcher).
const lineLimit = 1 << 30

type message = map[string]any

// channel writes answers and reports to the orchestrator, one JSON line each.
type channel struct {
	mu  sync.Mutex
	out *bufio.Writer
}

func (c *channel) send(m message) {
	line, err := json.Marshal(m)
	if err != nil {
		log.Fatalf("encoding %v: %v", m, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _ = c.out.Write(append(line, '\n'))
	if err := c.out.Flush(); err != nil {
		log.Fatalf("the orchestrator is gone: %v", err)
	}
}

func cpuSeconds() float64 {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		return 0
	}
	return float64(u.Utime.Nano()+u.Stime.Nano()) / 1e9
}

func main() {
	mode := flag.String("mode", "", "epsync, etcd or raw")
	target := flag.String("target", "", "the server(s): host:port, comma-separated for replicas")
	flag.Parse()
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	if *mode != "epsync" && *mode != "etcd" && *mode != "raw" {
		log.Fatalf("--mode must be epsync, etcd or raw, not %q", *mode)
	}
	out := &channel{out: bufio.NewWriter(os.Stdout)}
	a := newAgents(out, *mode, *target)
	go a.reportEverySecond()

	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), lineLimit)
	var running sync.WaitGroup
	for in.Scan() {
		var command message
		if err := json.Unmarshal(in.Bytes(), &command); err != nil {
			log.Fatalf("bad command line: %v", err)
		}
		id := command["id"]
		delete(command, "id")
		running.Add(1)
		go func() { // each command on its own, so a long one does not hold up a quick one
			defer running.Done()
			reply, err := a.handle(command)
			if err != nil {
				log.Printf("command %v failed: %v", command["cmd"], err)
				out.send(message{"id": id, "error": err.Error()})
				return
			}
			out.send(merge(message{"id": id, "ok": true}, reply))
			if reply["exit"] == true {
				os.Exit(0)
			}
		}()
	}
	if err := in.Err(); err != nil {
		log.Fatalf("reading commands: %v", err)
	}
	// stdin closed: the orchestrator is done with us.
	a.stopAll()
}

func merge(into, from message) message {
	for k, v := range from {
		into[k] = v
	}
	return into
}

// agents is this process's watchers and the commands the orchestrator sends it.
type agents struct {
	out    *channel
	mode   string
	tally  *tally
	mu     sync.Mutex
	target string
	all    map[int]watcher
}

func newAgents(out *channel, mode, target string) *agents {
	return &agents{out: out, mode: mode, target: target, tally: newTally(), all: map[int]watcher{}}
}

// targetFor is the server watcher id talks to: with several (replicas), they take turns.
func (a *agents) targetFor(id int) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	targets := strings.Split(a.target, ",")
	return targets[id%len(targets)]
}

func (a *agents) make(s spec) watcher {
	if a.mode == "etcd" {
		return newEtcdWatcher(s, a.tally)
	}
	return newEpsyncWatcher(s, a.tally)
}

func (a *agents) handle(command message) (message, error) {
	cmd, _ := command["cmd"].(string)
	if t, ok := command["target"].(string); ok && t != "" {
		a.mu.Lock()
		a.target = t
		a.mu.Unlock()
	}
	switch cmd {
	case "start":
		var specs []spec
		if err := decodeInto(command["watchers"], &specs); err != nil {
			return nil, err
		}
		chosen := make([]watcher, 0, len(specs))
		for _, s := range specs {
			w := a.make(s)
			a.mu.Lock()
			a.all[s.ID] = w
			a.mu.Unlock()
			chosen = append(chosen, w)
		}
		for _, w := range chosen {
			w.start(a.targetFor(w.base().ID), false)
		}
		return a.waitSynced(command, chosen)
	case "drop":
		a.each(a.chosen(command), watcher.drop)
		return message{}, nil
	case "reconnect":
		chosen := a.chosen(command)
		fresh, _ := command["fresh"].(bool)
		for _, w := range chosen {
			w.start(a.targetFor(w.base().ID), fresh)
		}
		return a.waitSynced(command, chosen)
	case "stall":
		for _, w := range a.chosen(command) {
			w.base().setStalled(true)
		}
		return message{}, nil
	case "unstall":
		for _, w := range a.chosen(message{}) {
			w.base().setStalled(false)
		}
		return message{}, nil
	case "counters":
		out := message{}
		for _, w := range a.chosen(message{}) {
			out[fmt.Sprint(w.base().ID)] = w.base().counters()
		}
		return message{"watchers": out}, nil
	case "views":
		out := message{}
		for _, w := range a.chosen(message{}) {
			out[fmt.Sprint(w.base().ID)] = w.view()
		}
		return message{"views": out}, nil
	case "stop":
		a.stopAll()
		return message{"exit": true}, nil
	}
	return nil, fmt.Errorf("unknown command %q", cmd)
}

// stopAll drops every watcher and sends a last report.
func (a *agents) stopAll() {
	a.each(a.chosen(message{}), watcher.drop)
	a.report()
}

// each runs fn on every watcher at once and waits for all.
func (a *agents) each(chosen []watcher, fn func(watcher)) {
	var wg sync.WaitGroup
	for _, w := range chosen {
		wg.Go(func() { fn(w) })
	}
	wg.Wait()
}

// chosen is the watchers a command names ("ids"), or all of them.
func (a *agents) chosen(command message) []watcher {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []int
	if raw, ok := command["ids"]; ok && raw != nil {
		if err := decodeInto(raw, &ids); err != nil {
			log.Printf("bad ids %v: %v", raw, err)
		}
	} else {
		for id := range a.all {
			ids = append(ids, id)
		}
	}
	out := make([]watcher, 0, len(ids))
	for _, id := range ids {
		if w, ok := a.all[id]; ok {
			out = append(out, w)
		}
	}
	return out
}

// waitSynced waits until every chosen watcher is in sync (within the command's "timeout" seconds)
// and reports when each got there and the bytes it took.
func (a *agents) waitSynced(command message, chosen []watcher) (message, error) {
	within := 120.0
	if t, ok := command["timeout"].(float64); ok {
		within = t
	}
	started := time.Now()
	deadline := time.After(time.Duration(within * float64(time.Second)))
	for _, w := range chosen {
		select {
		case <-w.base().syncedChan():
		case <-deadline:
			late := 0
			for _, w := range chosen {
				if !w.base().inSync.Load() {
					late++
				}
			}
			return nil, fmt.Errorf("TimeoutError: %d of %d watchers not in sync after %.0f s", late, len(chosen), within)
		}
	}
	sync := message{}
	for _, w := range chosen {
		sync[fmt.Sprint(w.base().ID)] = w.base().syncReport()
	}
	return message{"seconds": time.Since(started).Seconds(), "sync": sync}, nil
}

func (a *agents) reportEverySecond() {
	for range time.Tick(time.Second) {
		a.report()
	}
}

func (a *agents) report() {
	a.out.send(merge(message{"type": "tick", "t": float64(time.Now().UnixNano()) / 1e9, "cpu": cpuSeconds()}, a.tally.report()))
}

// decodeInto converts a decoded JSON value into v's type.
func decodeInto(raw any, v any) error {
	data, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}
