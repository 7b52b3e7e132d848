package epsync

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/epsync/epsync/clients/go/epsyncv1"
)

// WriteStream is an open WriteWorkloadEndpoints stream: Send requests, Recv one result per write,
// in the order sent. Send and Recv may run in different goroutines (one of each).
type WriteStream struct {
	stream grpc.BidiStreamingClient[epsyncv1.WriteWorkloadEndpointsRequest, epsyncv1.WriteWorkloadEndpointsResponse]
}

// WriteResult is the answer to one write of a stream.
type WriteResult struct {
	RequestID       string
	Endpoint        *epsyncv1.WorkloadEndpoint // as stored; for a delete, as it was
	ResourceVersion int64                      // the write's revision
	Err             error                      // this write's own failure (*Error), nil on success
}

// Write opens a write stream; it ends when ctx is done.
func (c *Client) Write(ctx context.Context) (*WriteStream, error) {
	stream, err := c.weps.WriteWorkloadEndpoints(ctx)
	if err != nil {
		return nil, FromError(err)
	}
	return &WriteStream{stream: stream}, nil
}

// Send sends one request (a create, update or delete, or a batch of them).
func (w *WriteStream) Send(req *epsyncv1.WriteWorkloadEndpointsRequest) error {
	return FromError(w.stream.Send(req))
}

// CloseSend half-closes the stream: the server answers what is in flight, then Recv returns io.EOF.
func (w *WriteStream) CloseSend() error { return w.stream.CloseSend() }

// Recv returns the results of the next response: one, or a batch's. A broken stream returns an
// error (io.EOF after CloseSend once everything is answered); unanswered writes then have an
// unknown outcome.
func (w *WriteStream) Recv() ([]WriteResult, error) {
	resp, err := w.stream.Recv()
	if err != nil {
		return nil, FromError(err)
	}
	if len(resp.GetBatch()) == 0 {
		return []WriteResult{result(resp)}, nil
	}
	results := make([]WriteResult, 0, len(resp.GetBatch()))
	for _, r := range resp.GetBatch() {
		results = append(results, result(r))
	}
	return results, nil
}

func result(r *epsyncv1.WriteWorkloadEndpointsResponse) WriteResult {
	res := WriteResult{RequestID: r.GetRequestId(), Endpoint: r.GetWorkloadEndpoint(), ResourceVersion: r.GetResourceVersion()}
	if s := r.GetStatus(); s != nil && s.GetCode() != 0 {
		res.Err = errorFromStatus(status.FromProto(s))
	}
	return res
}
