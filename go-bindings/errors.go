package imv

import (
	"context"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a failure reported by imv: the library (in-process) or the daemon (over ttrpc).
//
// Its message is imv's own, unchanged. It unwraps to the containerd errdefs error of its
// code (errdefs.ErrNotFound for codes.NotFound, and so on), so errdefs.IsNotFound and the
// other predicates work on it, also after callers wrap it with %w. GRPCStatus lets a gRPC
// server (such as containerd's CRI service) pass the code on to its own caller.
type Error struct {
	// Code is the gRPC code imv reported; the library's status codes are gRPC codes.
	Code codes.Code
	// Message says what failed, without the code's name.
	Message string
}

// Error returns the message as imv wrote it.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the errdefs error (or context error) of e's code, for errors.Is and the
// errdefs predicates.
func (e *Error) Unwrap() error { return sentinel(e.Code) }

// GRPCStatus returns e as a gRPC status with the same code and message.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// sentinel maps a gRPC code to the error containerd's errdefs (and errgrpc.ToNative) uses
// for it, so that imv's errors answer the same predicates as containerd's own.
func sentinel(c codes.Code) error {
	switch c {
	case codes.Canceled:
		return context.Canceled
	case codes.DeadlineExceeded:
		return context.DeadlineExceeded
	case codes.InvalidArgument:
		return errdefs.ErrInvalidArgument
	case codes.NotFound:
		return errdefs.ErrNotFound
	case codes.AlreadyExists:
		return errdefs.ErrAlreadyExists
	case codes.PermissionDenied:
		return errdefs.ErrPermissionDenied
	case codes.ResourceExhausted:
		return errdefs.ErrResourceExhausted
	case codes.FailedPrecondition:
		return errdefs.ErrFailedPrecondition
	case codes.Aborted:
		return errdefs.ErrAborted
	case codes.OutOfRange:
		return errdefs.ErrOutOfRange
	case codes.Unimplemented:
		return errdefs.ErrNotImplemented
	case codes.Internal:
		return errdefs.ErrInternal
	case codes.Unavailable:
		return errdefs.ErrUnavailable
	case codes.DataLoss:
		return errdefs.ErrDataLoss
	case codes.Unauthenticated:
		return errdefs.ErrUnauthenticated
	default:
		return errdefs.ErrUnknown
	}
}

// newError makes an *Error; the binding's own errors (bad arguments caught before a call,
// a closed handle, a broken connection) use it too, so every error looks the same.
func newError(c codes.Code, msg string) error {
	return &Error{Code: c, Message: msg}
}
