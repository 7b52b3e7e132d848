package epsync_test

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/epsync/epsync/clients/go/epsync"
	"github.com/epsync/epsync/clients/go/epsyncv1"
)

func TestEndpointRoundTrip(t *testing.T) {
	srv := startServer(t)
	c := dial(t, srv.addr())
	ctx := testContext(t, 20*time.Second)

	created, err := c.CreateEndpoint(ctx, endpoint("default", "node1", "web-7f9", map[string]string{"app": "web"}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := created.GetMetadata().GetName(), "node1-k8s-web--7f9-eth0"; got != want {
		t.Errorf("derived name %q, want %q", got, want)
	}
	if created.GetMetadata().GetResourceVersion() == 0 || created.GetMetadata().GetUid() == "" {
		t.Errorf("created endpoint lacks resource version or uid: %v", created)
	}
	got, err := c.GetEndpoint(ctx, "default", created.GetMetadata().GetName(), epsync.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetMetadata().GetResourceVersion() != created.GetMetadata().GetResourceVersion() {
		t.Errorf("get: version %d, want %d", got.GetMetadata().GetResourceVersion(), created.GetMetadata().GetResourceVersion())
	}

	update := got
	update.Spec.Mac = "ee:ee:ee:ee:ee:ee"
	updated, err := c.UpdateEndpoint(ctx, update, epsync.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if updated.GetMetadata().GetResourceVersion() <= created.GetMetadata().GetResourceVersion() {
		t.Errorf("update did not advance the version")
	}
	// The old version as a precondition: ABORTED.
	stale := proto.Clone(updated).(*epsyncv1.WorkloadEndpoint)
	stale.Metadata.ResourceVersion = created.GetMetadata().GetResourceVersion()
	if _, err := c.UpdateEndpoint(ctx, stale, epsync.UpdateOptions{}); !epsync.IsAborted(err) || !errors.Is(err, epsync.ErrAborted) {
		t.Errorf("stale update: %v, want ABORTED", err)
	}
	if _, err := c.CreateEndpoint(ctx, endpoint("default", "node1", "web-7f9", nil)); !errors.Is(err, epsync.ErrAlreadyExists) {
		t.Errorf("second create: %v, want ALREADY_EXISTS", err)
	}
	// Upsert.
	upserted, err := c.UpdateEndpoint(ctx, &epsyncv1.WorkloadEndpoint{
		Metadata: &epsyncv1.ObjectMeta{Namespace: "prod", Name: "node2-k8s-db-eth0"},
		Spec:     endpoint("prod", "node2", "db", nil).GetSpec(),
	}, epsync.UpdateOptions{AllowMissing: true})
	if err != nil {
		t.Fatal(err)
	}

	// Paging: three pages of one, two and no next token.
	for i, pod := range []string{"a", "b", "c"} {
		if _, err := c.CreateEndpoint(ctx, endpoint("paged", "node3", pod, map[string]string{"i": string(rune('0' + i))})); err != nil {
			t.Fatal(err)
		}
	}
	pages := 0
	for page, err := range c.EndpointPages(ctx, epsync.ListOptions{Namespace: "paged", PageSize: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(page.GetItems()) != 1 {
			t.Errorf("page of %d items, want 1", len(page.GetItems()))
		}
	}
	if pages != 3 {
		t.Errorf("%d pages, want 3", pages)
	}
	all, revision, err := c.ListEndpoints(ctx, epsync.ListOptions{PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 || revision == 0 {
		t.Errorf("list: %d items at revision %d, want 5 at a non-zero revision", len(all), revision)
	}
	onNode, _, err := c.ListEndpoints(ctx, epsync.ListOptions{Node: "node2"})
	if err != nil || len(onNode) != 1 || onNode[0].GetMetadata().GetName() != upserted.GetMetadata().GetName() {
		t.Errorf("list by node: %v, %v", onNode, err)
	}
	web, _, err := c.ListEndpoints(ctx, epsync.ListOptions{Selector: "app == 'web'"})
	if err != nil || len(web) != 1 {
		t.Errorf("list by selector: %d items, %v", len(web), err)
	}

	// Delete with a wrong uid, then with the right version.
	if _, _, err := c.DeleteEndpoint(ctx, "default", updated.GetMetadata().GetName(), epsync.DeleteOptions{UID: "nope"}); !epsync.IsAborted(err) {
		t.Errorf("delete with a wrong uid: %v, want ABORTED", err)
	}
	deleted, deleteRevision, err := c.DeleteEndpoint(ctx, "default", updated.GetMetadata().GetName(),
		epsync.DeleteOptions{ResourceVersion: updated.GetMetadata().GetResourceVersion()})
	if err != nil {
		t.Fatal(err)
	}
	if deleted.GetMetadata().GetUid() != created.GetMetadata().GetUid() || deleteRevision <= updated.GetMetadata().GetResourceVersion() {
		t.Errorf("delete returned %v at %d", deleted, deleteRevision)
	}
	if _, err := c.GetEndpoint(ctx, "default", updated.GetMetadata().GetName(), epsync.GetOptions{}); !epsync.IsNotFound(err) {
		t.Errorf("get after delete: %v, want NOT_FOUND", err)
	}
	if _, _, err := c.DeleteEndpoint(ctx, "default", updated.GetMetadata().GetName(), epsync.DeleteOptions{AllowMissing: true}); err != nil {
		t.Errorf("delete allow_missing of a missing endpoint: %v", err)
	}
}

func TestProfileRoundTrip(t *testing.T) {
	srv := startServer(t)
	c := dial(t, srv.addr())
	ctx := testContext(t, 20*time.Second)

	p, err := c.CreateProfile(ctx, &epsyncv1.Profile{
		Metadata: &epsyncv1.ObjectMeta{Name: "kns.prod"},
		Spec:     &epsyncv1.ProfileSpec{LabelsToApply: map[string]string{"env": "prod"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Spec.LabelsToApply["tier"] = "1"
	if p, err = c.UpdateProfile(ctx, p, epsync.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetProfile(ctx, "kns.prod", epsync.GetOptions{MinResourceVersion: p.GetMetadata().GetResourceVersion()})
	if err != nil || got.GetSpec().GetLabelsToApply()["tier"] != "1" {
		t.Fatalf("get profile: %v, %v", got, err)
	}
	list, _, err := c.ListProfiles(ctx, epsync.ListOptions{})
	if err != nil || len(list) != 1 {
		t.Fatalf("list profiles: %d, %v", len(list), err)
	}
	if _, _, err := c.DeleteProfile(ctx, "kns.prod", epsync.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetProfile(ctx, "kns.prod", epsync.GetOptions{}); !errors.Is(err, epsync.ErrNotFound) {
		t.Errorf("get of a deleted profile: %v, want NOT_FOUND", err)
	}
}

func TestTypedErrors(t *testing.T) {
	srv := startServer(t)
	c := dial(t, srv.addr())
	ctx := testContext(t, 20*time.Second)

	bad := endpoint("default", "node1", "web", nil)
	bad.Spec.IpNetworks = []string{"not-an-ip"}
	bad.Spec.Ports = []*epsyncv1.WorkloadEndpointPort{{Name: "http", Protocol: "TCP", Port: 80}, {Name: "bad", Protocol: "TCP", Port: 70000}}
	_, err := c.CreateEndpoint(ctx, bad)
	var e *epsync.Error
	if !errors.As(err, &e) {
		t.Fatalf("create of a bad endpoint: %v (%T), want *epsync.Error", err, err)
	}
	if e.Code != codes.InvalidArgument || !epsync.IsInvalidArgument(err) {
		t.Errorf("code %v, want INVALID_ARGUMENT", e.Code)
	}
	fields := map[string]bool{}
	for _, v := range e.FieldViolations {
		fields[v.Field] = true
		if v.Description == "" {
			t.Errorf("violation of %s without a description", v.Field)
		}
	}
	if !fields["spec.ports[1].port"] || len(fields) < 2 {
		t.Errorf("field violations %v, want spec.ports[1].port and the ip network", e.FieldViolations)
	}

	_, err = c.GetEndpoint(ctx, "default", "missing", epsync.GetOptions{})
	if !errors.As(err, &e) || e.Code != codes.NotFound || !errors.Is(err, epsync.ErrNotFound) || errors.Is(err, epsync.ErrAborted) {
		t.Errorf("get of a missing endpoint: %v, want NOT_FOUND", err)
	}
}

// An ErrorInfo reason: resuming a watch from a revision older than the server's history, with no
// known versions, is OUT_OF_RANGE with RESOURCE_VERSION_TOO_OLD and the oldest retained revision.
func TestResourceVersionTooOld(t *testing.T) {
	srv := startServer(t, "--history-window", "5")
	c := dial(t, srv.addr())
	ctx := testContext(t, 20*time.Second)
	for i := range 20 {
		if _, err := c.UpdateEndpoint(ctx, endpoint("default", "node1", "web", map[string]string{"i": string(rune('a' + i))}),
			epsync.UpdateOptions{AllowMissing: true}); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := c.Endpoints().WatchWorkloadEndpoints(ctx, &epsyncv1.WatchWorkloadEndpointsRequest{ResourceVersion: 1})
	if err == nil {
		_, err = stream.Recv()
	}
	err = epsync.FromError(err)
	if !errors.Is(err, epsync.ErrResourceVersionTooOld) || errors.Is(err, epsync.ErrResourceVersionTooNew) {
		t.Fatalf("watch from revision 1: %v, want RESOURCE_VERSION_TOO_OLD", err)
	}
	var e *epsync.Error
	if !errors.As(err, &e) || e.Code != codes.OutOfRange || len(e.Metadata) == 0 {
		t.Errorf("error %#v: want OUT_OF_RANGE with metadata", e)
	}
	t.Logf("%v, metadata %v", e, e.Metadata)
}
