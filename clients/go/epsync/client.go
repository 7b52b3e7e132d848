// Package epsync is a Go client for the epsync API: the standard calls for workload endpoints
// and profiles, the write stream, and Watch, a live local copy of the endpoints matching a filter
// that resumes by itself across disconnects, server restarts and replica fail-over.
//
// Errors answered by the server are *Error values carrying the status details (ErrorInfo
// reason and metadata, BadRequest field violations); test them with errors.Is and the Err*
// sentinels, or read them with errors.As.
package epsync

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"iter"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/epsync/epsync/clients/go/epsyncv1"
)

// Client is a connection to one epsync server or to several replicas. It is safe for concurrent use.
type Client struct {
	conn     *grpc.ClientConn
	weps     epsyncv1.WorkloadEndpointServiceClient
	profiles epsyncv1.ProfileServiceClient
	backoff  Backoff
}

// Backoff is the reconnect delay of a watch: Initial, doubling up to Max, each with ±50% jitter.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
}

// DefaultBackoff is the watch reconnect delay when no WithBackoff option is given.
var DefaultBackoff = Backoff{Initial: 50 * time.Millisecond, Max: 5 * time.Second}

type options struct {
	dial    []grpc.DialOption
	backoff Backoff
	tls     *TLSFiles
}

// TLSFiles are the PEM files of a TLS connection, as the CLI's --ca-file, --cert-file and
// --key-file: the CA bundle the server's certificate chains to ("" for the system's roots), and
// for mutual TLS this client's certificate and key (its identity; both or neither).
type TLSFiles struct {
	CAFile, CertFile, KeyFile string
}

// WithTLS connects with TLS, reading the files at Dial.
func WithTLS(files TLSFiles) Option {
	return func(o *options) { o.tls = &files }
}

// transportCredentials loads the files of WithTLS.
func (f *TLSFiles) transportCredentials() (credentials.TransportCredentials, error) {
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("epsync: reading the CA file: %w", err)
		}
		config.RootCAs = x509.NewCertPool()
		if !config.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("epsync: %s holds no PEM certificate", f.CAFile)
		}
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, errors.New("epsync: a client certificate and its key go together")
	}
	if f.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("epsync: loading the client certificate: %w", err)
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(config), nil
}

// Option configures Dial.
type Option func(*options)

// WithDialOptions adds gRPC dial options, after the defaults (plaintext, a connect backoff of at
// most 5 s), so they can replace them (e.g. grpc.WithTransportCredentials for TLS of your own
// making; WithTLS covers the usual files).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, opts...) }
}

// WithBackoff sets the delays between a watch's reconnects.
func WithBackoff(b Backoff) Option {
	return func(o *options) { o.backoff = b }
}

// Dial makes a client for the servers at addrs ("host:port" each). With several addresses, the
// channel connects to the first that answers and moves on to the next when it fails (gRPC's
// pick_first over a per-client manual resolver); calls on a lost connection fail with UNAVAILABLE
// and watches resume on the next live replica. Dial does not wait for a connection: the first
// call connects. It fails only on bad arguments, or when ctx is already done.
func Dial(ctx context.Context, addrs []string, opts ...Option) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, errors.New("epsync: no server address given")
	}
	o := options{backoff: DefaultBackoff}
	for _, opt := range opts {
		opt(&o)
	}
	addresses := make([]resolver.Address, 0, len(addrs))
	for _, a := range addrs {
		if a == "" {
			return nil, errors.New("epsync: empty server address")
		}
		// TLS checks the server's certificate against the host of the address dialled (the
		// channel's own authority is this client's made-up target).
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("epsync: server address %q: %w", a, err)
		}
		addresses = append(addresses, resolver.Address{Addr: a, ServerName: host})
	}
	r := manual.NewBuilderWithScheme("epsync")
	r.InitialState(resolver.State{Addresses: addresses})
	dialOpts := append([]grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16 << 20)),
	}, o.dial...)
	if o.tls != nil {
		creds, err := o.tls.transportCredentials()
		if err != nil {
			return nil, err
		}
		dialOpts = append(dialOpts, grpc.WithTransportCredentials(creds))
	}
	conn, err := grpc.NewClient(r.Scheme()+":///epsync", dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("epsync: %w", err)
	}
	conn.Connect()
	return &Client{
		conn:     conn,
		weps:     epsyncv1.NewWorkloadEndpointServiceClient(conn),
		profiles: epsyncv1.NewProfileServiceClient(conn),
		backoff:  o.backoff,
	}, nil
}

// Close closes the connection; running watches end.
func (c *Client) Close() error { return c.conn.Close() }

// Endpoints is the generated WorkloadEndpointService client on this connection, for what this
// package does not wrap. Its errors are plain status errors; FromError converts them.
func (c *Client) Endpoints() epsyncv1.WorkloadEndpointServiceClient { return c.weps }

// Profiles is the generated ProfileService client on this connection.
func (c *Client) Profiles() epsyncv1.ProfileServiceClient { return c.profiles }

// GetOptions are the options of the Get calls.
type GetOptions struct {
	// MinResourceVersion makes the server wait (up to 3 s) until it has reached this revision,
	// else UNAVAILABLE: read-your-writes through another replica.
	MinResourceVersion int64
}

// ListOptions are the filter and paging of the List calls. Namespace and Node apply to endpoints only.
type ListOptions struct {
	Namespace          string // "" = all namespaces
	Node               string
	Selector           string // Calico label selector, on effective labels
	PageSize           int32  // 0 = the server's default (500)
	MinResourceVersion int64
}

// UpdateOptions are the options of the Update calls.
type UpdateOptions struct {
	AllowMissing bool // create the object when it does not exist
}

// DeleteOptions are the preconditions and options of the Delete calls.
type DeleteOptions struct {
	ResourceVersion int64  // non-zero: the stored version must be this one (else ABORTED)
	UID             string // non-empty: the stored uid must be this one (else ABORTED)
	AllowMissing    bool   // a missing object is not an error (the result is then nil)
}

// Key is the key of an endpoint in a View and in known resource versions: "namespace/name".
func Key(w *epsyncv1.WorkloadEndpoint) string {
	return w.GetMetadata().GetNamespace() + "/" + w.GetMetadata().GetName()
}

// GetEndpoint returns one endpoint; namespace "" means "default".
func (c *Client) GetEndpoint(ctx context.Context, namespace, name string, opts GetOptions) (*epsyncv1.WorkloadEndpoint, error) {
	resp, err := c.weps.GetWorkloadEndpoint(ctx, &epsyncv1.GetWorkloadEndpointRequest{
		Namespace: namespace, Name: name, MinResourceVersion: opts.MinResourceVersion,
	})
	if err != nil {
		return nil, FromError(err)
	}
	return resp.GetWorkloadEndpoint(), nil
}

// ListEndpoints returns every matching endpoint, all pages, in (namespace, name) order, with the
// revision of the first page (a Watch from there converges).
func (c *Client) ListEndpoints(ctx context.Context, opts ListOptions) ([]*epsyncv1.WorkloadEndpoint, int64, error) {
	var items []*epsyncv1.WorkloadEndpoint
	var revision int64
	for page, err := range c.EndpointPages(ctx, opts) {
		if err != nil {
			return nil, 0, err
		}
		revision = page.GetResourceVersion()
		items = append(items, page.GetItems()...)
	}
	return items, revision, nil
}

// EndpointPages iterates over the pages of a List; it stops after the first error.
func (c *Client) EndpointPages(ctx context.Context, opts ListOptions) iter.Seq2[*epsyncv1.ListWorkloadEndpointsResponse, error] {
	return func(yield func(*epsyncv1.ListWorkloadEndpointsResponse, error) bool) {
		req := &epsyncv1.ListWorkloadEndpointsRequest{
			Namespace: opts.Namespace, Node: opts.Node, LabelSelector: opts.Selector,
			PageSize: opts.PageSize, MinResourceVersion: opts.MinResourceVersion,
		}
		for {
			resp, err := c.weps.ListWorkloadEndpoints(ctx, req)
			if err != nil {
				yield(nil, FromError(err))
				return
			}
			if !yield(resp, nil) || resp.GetNextPageToken() == "" {
				return
			}
			req.PageToken = resp.GetNextPageToken()
		}
	}
}

// AllEndpoints iterates over every matching endpoint, page by page; it stops after the first error.
func (c *Client) AllEndpoints(ctx context.Context, opts ListOptions) iter.Seq2[*epsyncv1.WorkloadEndpoint, error] {
	return func(yield func(*epsyncv1.WorkloadEndpoint, error) bool) {
		for page, err := range c.EndpointPages(ctx, opts) {
			if err != nil {
				yield(nil, err)
				return
			}
			for _, item := range page.GetItems() {
				if !yield(item, nil) {
					return
				}
			}
		}
	}
}

// CreateEndpoint stores a new endpoint and returns it as stored (name derived when left out,
// uid, creation timestamp, resource version).
func (c *Client) CreateEndpoint(ctx context.Context, w *epsyncv1.WorkloadEndpoint) (*epsyncv1.WorkloadEndpoint, error) {
	resp, err := c.weps.CreateWorkloadEndpoint(ctx, &epsyncv1.CreateWorkloadEndpointRequest{WorkloadEndpoint: w})
	if err != nil {
		return nil, FromError(err)
	}
	return resp.GetWorkloadEndpoint(), nil
}

// UpdateEndpoint replaces an endpoint; a non-zero metadata.resource_version must match the stored one.
func (c *Client) UpdateEndpoint(ctx context.Context, w *epsyncv1.WorkloadEndpoint, opts UpdateOptions) (*epsyncv1.WorkloadEndpoint, error) {
	resp, err := c.weps.UpdateWorkloadEndpoint(ctx, &epsyncv1.UpdateWorkloadEndpointRequest{
		WorkloadEndpoint: w, AllowMissing: opts.AllowMissing,
	})
	if err != nil {
		return nil, FromError(err)
	}
	return resp.GetWorkloadEndpoint(), nil
}

// DeleteEndpoint deletes an endpoint and returns it as it was, with the delete's revision.
func (c *Client) DeleteEndpoint(ctx context.Context, namespace, name string, opts DeleteOptions) (*epsyncv1.WorkloadEndpoint, int64, error) {
	resp, err := c.weps.DeleteWorkloadEndpoint(ctx, &epsyncv1.DeleteWorkloadEndpointRequest{
		Namespace: namespace, Name: name, ResourceVersion: opts.ResourceVersion, Uid: opts.UID, AllowMissing: opts.AllowMissing,
	})
	if err != nil {
		return nil, 0, FromError(err)
	}
	return resp.GetWorkloadEndpoint(), resp.GetResourceVersion(), nil
}

// GetProfile returns one profile.
func (c *Client) GetProfile(ctx context.Context, name string, opts GetOptions) (*epsyncv1.Profile, error) {
	resp, err := c.profiles.GetProfile(ctx, &epsyncv1.GetProfileRequest{Name: name, MinResourceVersion: opts.MinResourceVersion})
	if err != nil {
		return nil, FromError(err)
	}
	return resp.GetProfile(), nil
}

// ListProfiles returns every matching profile (Selector and paging of opts), all pages, with the
// revision of the first page.
func (c *Client) ListProfiles(ctx context.Context, opts ListOptions) ([]*epsyncv1.Profile, int64, error) {
	req := &epsyncv1.ListProfilesRequest{LabelSelector: opts.Selector, PageSize: opts.PageSize, MinResourceVersion: opts.MinResourceVersion}
	var items []*epsyncv1.Profile
	var revision int64
	for {
		resp, err := c.profiles.ListProfiles(ctx, req)
		if err != nil {
			return nil, 0, FromError(err)
		}
		if req.PageToken == "" {
			revision = resp.GetResourceVersion()
		}
		items = append(items, resp.GetItems()...)
		if resp.GetNextPageToken() == "" {
			return items, revision, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// CreateProfile stores a new profile and returns it as stored.
func (c *Client) CreateProfile(ctx context.Context, p *epsyncv1.Profile) (*epsyncv1.Profile, error) {
	resp, err := c.profiles.CreateProfile(ctx, &epsyncv1.CreateProfileRequest{Profile: p})
	if err != nil {
		return nil, FromError(err)
	}
	return resp.GetProfile(), nil
}

// UpdateProfile replaces a profile; a non-zero metadata.resource_version must match the stored one.
func (c *Client) UpdateProfile(ctx context.Context, p *epsyncv1.Profile, opts UpdateOptions) (*epsyncv1.Profile, error) {
	resp, err := c.profiles.UpdateProfile(ctx, &epsyncv1.UpdateProfileRequest{Profile: p, AllowMissing: opts.AllowMissing})
	if err != nil {
		return nil, FromError(err)
	}
	return resp.GetProfile(), nil
}

// DeleteProfile deletes a profile and returns it as it was, with the delete's revision.
func (c *Client) DeleteProfile(ctx context.Context, name string, opts DeleteOptions) (*epsyncv1.Profile, int64, error) {
	resp, err := c.profiles.DeleteProfile(ctx, &epsyncv1.DeleteProfileRequest{
		Name: name, ResourceVersion: opts.ResourceVersion, Uid: opts.UID, AllowMissing: opts.AllowMissing,
	})
	if err != nil {
		return nil, 0, FromError(err)
	}
	return resp.GetProfile(), resp.GetResourceVersion(), nil
}
