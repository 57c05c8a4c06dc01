package memgate

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the ErrorInfo domain of memgate's errors.
const ErrorDomain = "memgate.v1"

// ErrorDetails is the machine-readable part of an error status from
// memgate: the google.rpc details it sends in the grpc-status-details-bin
// trailer.
type ErrorDetails struct {
	// Reason is the stable cause (ErrorInfo.reason): KEY_INVALID,
	// VALUE_TOO_LARGE, TOO_MANY_KEYS, SHARD_UNAVAILABLE, SHARD_DOWN,
	// SHARD_TIMEOUT, OVERLOADED, ...; proto/memgate/v1/cache.proto lists
	// them all. Program against it, not against the message text.
	Reason string
	// Metadata says what failed (ErrorInfo.metadata): "shard" (address),
	// "key", "field", "limit" (the server flag), and so on.
	Metadata map[string]string
	// RetryDelay is how long the server asks the client to wait before
	// retrying (RetryInfo), when HasRetryDelay: sent with UNAVAILABLE and
	// when the server is overloaded.
	RetryDelay    time.Duration
	HasRetryDelay bool
	// FieldViolations name the request fields that broke a rule
	// (BadRequest), with INVALID_ARGUMENT: e.g. Field "keys[3]" and the
	// rule in Description. In a BatchSet the index is the position in the
	// request, whose order follows the map's iteration; Metadata["key"]
	// names the key.
	FieldViolations []FieldViolation
}

// FieldViolation is one field of a request that broke a rule.
type FieldViolation struct {
	Field       string
	Description string
}

// Details returns the details memgate sent with err, and false when err is
// not a gRPC status error from memgate or carries none (an error raised by
// the client itself, a connection failure, a *BatchError).
func Details(err error) (*ErrorDetails, bool) {
	st, ok := status.FromError(err)
	if !ok || st == nil {
		return nil, false
	}
	var d ErrorDetails
	found := false
	for _, detail := range st.Details() {
		switch x := detail.(type) {
		case *errdetails.ErrorInfo:
			if x.GetDomain() != ErrorDomain {
				continue
			}
			found = true
			d.Reason = x.GetReason()
			d.Metadata = x.GetMetadata()
		case *errdetails.RetryInfo:
			if x.GetRetryDelay() != nil {
				d.RetryDelay = x.GetRetryDelay().AsDuration()
				d.HasRetryDelay = true
			}
		case *errdetails.BadRequest:
			for _, v := range x.GetFieldViolations() {
				d.FieldViolations = append(d.FieldViolations, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		}
	}
	if !found {
		return nil, false
	}
	return &d, true
}

// Reason returns the stable reason memgate gave for err (e.g. "KEY_INVALID",
// "SHARD_DOWN"), or "" when it gave none. See Details.
func Reason(err error) string {
	if d, ok := Details(err); ok {
		return d.Reason
	}
	return ""
}
