// Command nodeagent keeps a live copy of the workload endpoints of one node and prints every
// change: what a node agent programming its dataplane would consume.
//
//	go run ./examples/nodeagent -node node1 -servers 127.0.0.1:50051,127.0.0.2:50051
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/epsync/epsync/clients/go/epsync"
	"github.com/epsync/epsync/clients/go/epsyncv1"
)

func main() {
	node := flag.String("node", "node1", "the node whose endpoints to watch")
	servers := flag.String("servers", "127.0.0.1:50051", "epsync servers (replicas), comma-separated")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *node, strings.Split(*servers, ",")); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

func run(ctx context.Context, node string, servers []string) error {
	client, err := epsync.Dial(ctx, servers)
	if err != nil {
		return err
	}
	defer client.Close()

	view := client.Watch(ctx, epsync.Filter{Node: node})
	for ev := range view.Events() {
		switch {
		case ev.InitialEventsEnd:
			fmt.Printf("SYNCED at revision %d: %d endpoints on %s\n", ev.ResourceVersion, len(view.Objects()), node)
		case ev.Type == epsyncv1.EventType_BOOKMARK:
			// Progress only: everything up to ev.ResourceVersion has been received.
		default:
			w := ev.Object
			fmt.Printf("%-8s %6d %s %v\n", ev.Type, ev.ResourceVersion, epsync.Key(w), w.GetSpec().GetIpNetworks())
		}
	}
	// Events is closed: the context ended, or the server rejected the request.
	return view.Err()
}
