package epsync

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Reasons carried in google.rpc.ErrorInfo by the epsync API (SPEC §5).
const (
	ReasonResourceVersionTooOld = "RESOURCE_VERSION_TOO_OLD"
	ReasonResourceVersionTooNew = "RESOURCE_VERSION_TOO_NEW"
	ReasonWatcherTooSlow        = "WATCHER_TOO_SLOW"
	ReasonTooManyWatchers       = "TOO_MANY_WATCHERS"
	ReasonShuttingDown          = "SHUTTING_DOWN"
)

// FieldViolation is one problem of a rejected request (google.rpc.BadRequest).
type FieldViolation struct {
	Field       string // e.g. "spec.ports[1].port"
	Description string
}

// Error is an error answered by the server, with the details the API attaches to its status.
// Every method of Client returns its RPC errors as *Error; use errors.As to read it and
// errors.Is with the Err* sentinels to test it.
type Error struct {
	Code    codes.Code
	Message string
	// From google.rpc.ErrorInfo, when the status carries one.
	Reason   string
	Domain   string
	Metadata map[string]string
	// From google.rpc.BadRequest, when the status carries one (INVALID_ARGUMENT).
	FieldViolations []FieldViolation

	status *status.Status
}

// Sentinels for errors.Is: an *Error matches one when the codes are equal and, for the sentinels
// that name a reason, the reasons are equal too.
var (
	ErrNotFound         = &Error{Code: codes.NotFound}
	ErrAlreadyExists    = &Error{Code: codes.AlreadyExists}
	ErrAborted          = &Error{Code: codes.Aborted} // resource version or uid precondition failed
	ErrInvalidArgument  = &Error{Code: codes.InvalidArgument}
	ErrUnavailable      = &Error{Code: codes.Unavailable}
	ErrPermissionDenied = &Error{Code: codes.PermissionDenied}

	ErrResourceVersionTooOld = &Error{Code: codes.OutOfRange, Reason: ReasonResourceVersionTooOld}
	ErrResourceVersionTooNew = &Error{Code: codes.OutOfRange, Reason: ReasonResourceVersionTooNew}
	ErrWatcherTooSlow        = &Error{Code: codes.ResourceExhausted, Reason: ReasonWatcherTooSlow}
	ErrTooManyWatchers       = &Error{Code: codes.ResourceExhausted, Reason: ReasonTooManyWatchers}
	ErrShuttingDown          = &Error{Code: codes.Unavailable, Reason: ReasonShuttingDown}
)

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "epsync: %s", e.Code)
	if e.Reason != "" {
		fmt.Fprintf(&b, " (%s)", e.Reason)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	for _, v := range e.FieldViolations {
		fmt.Fprintf(&b, "; %s: %s", v.Field, v.Description)
	}
	return b.String()
}

// Is reports whether target is a sentinel this error matches (see the Err* variables), or
// context.Canceled / context.DeadlineExceeded for the codes CANCELLED / DEADLINE_EXCEEDED.
func (e *Error) Is(target error) bool {
	switch target {
	case context.Canceled:
		return e.Code == codes.Canceled
	case context.DeadlineExceeded:
		return e.Code == codes.DeadlineExceeded
	}
	t, ok := target.(*Error)
	if !ok || t.status != nil {
		return false // only the sentinels match by value; other *Error values match by identity
	}
	return t.Code == e.Code && (t.Reason == "" || t.Reason == e.Reason)
}

// GRPCStatus returns the status the error was built from, so status.FromError and
// status.Code work on it.
func (e *Error) GRPCStatus() *status.Status {
	if e.status != nil {
		return e.status
	}
	return status.New(e.Code, e.Message)
}

// FromError turns a gRPC status error into an *Error with its details; other errors (nil
// included) are returned as they are.
func FromError(err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return errorFromStatus(st)
}

func errorFromStatus(st *status.Status) *Error {
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			e.Reason, e.Domain, e.Metadata = d.GetReason(), d.GetDomain(), d.GetMetadata()
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.FieldViolations = append(e.FieldViolations, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		}
	}
	return e
}

// IsNotFound reports whether err is a NOT_FOUND answer.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsAlreadyExists reports whether err is an ALREADY_EXISTS answer.
func IsAlreadyExists(err error) bool { return errors.Is(err, ErrAlreadyExists) }

// IsAborted reports whether err is an ABORTED answer (a failed resource version or uid precondition).
func IsAborted(err error) bool { return errors.Is(err, ErrAborted) }

// IsInvalidArgument reports whether err is an INVALID_ARGUMENT answer.
func IsInvalidArgument(err error) bool { return errors.Is(err, ErrInvalidArgument) }
