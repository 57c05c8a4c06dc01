package memgate

import (
	"context"
	"time"

	memgatev1 "github.com/memgate/memgate/client/go/gen/memgate/v1"
)

// IncrementOption configures Increment.
type IncrementOption func(*incrementConfig)

type incrementConfig struct {
	initial    uint64
	hasInitial bool
	ttl        time.Duration
	hasTTL     bool
}

// WithInitialValue makes Increment create a missing counter holding v
// (returned as is: the delta is not applied to it). Without it, Increment
// of a missing key is codes.NotFound with reason KEY_NOT_FOUND.
func WithInitialValue(v uint64) IncrementOption {
	return func(c *incrementConfig) { c.initial, c.hasInitial = v, true }
}

// WithCounterTTL sets the time to live of a counter that Increment creates
// (with WithInitialValue); an existing counter keeps its TTL. Without it
// the server's --default-ttl applies; WithCounterTTL(0) means "never
// expires". It is rounded up to whole seconds like WithTTL, and a negative
// TTL is codes.InvalidArgument.
func WithCounterTTL(ttl time.Duration) IncrementOption {
	return func(c *incrementConfig) { c.ttl, c.hasTTL = ttl, true }
}

// Increment adds delta to the counter under key atomically and returns its
// new value. Counters are unsigned 64-bit decimal numbers stored as text
// (Get reads "42"); a negative delta decrements, stopping at 0, and an
// increment past 2^64-1 wraps around, as memcached's does. A counter whose
// number got shorter keeps its length with trailing spaces ("15" minus 100
// reads "0 " with Get).
//
// A missing key is codes.NotFound (reason KEY_NOT_FOUND) unless
// WithInitialValue is given. A value that is not a decimal number is
// codes.FailedPrecondition (reason NOT_A_NUMBER) and is left unchanged. A
// shard without the meta protocol answers codes.Unimplemented (reason
// SHARD_UNSUPPORTED).
//
// Increment is not idempotent: after an error such as codes.Unavailable or
// codes.DeadlineExceeded the increment may or may not have been applied.
func (c *Client) Increment(ctx context.Context, key string, delta int64, opts ...IncrementOption) (uint64, error) {
	var cfg incrementConfig
	for _, o := range opts {
		o(&cfg)
	}
	req := &memgatev1.IncrementRequest{Key: key, Delta: delta}
	if cfg.hasInitial {
		v := cfg.initial
		req.InitialValue = &v
	}
	if cfg.hasTTL {
		s, err := ttlToSeconds(cfg.ttl)
		if err != nil {
			return 0, err
		}
		req.TtlSeconds = &s
	}
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.Increment(ctx, req)
	if err != nil {
		return 0, convert(ctx, err)
	}
	return resp.GetValue(), nil
}

// Touch sets a new time to live on an existing item without reading or
// changing its value, and reports whether the key existed (a missing key
// is not an error). ttl 0 means "never expires"; it is rounded up to whole
// seconds like WithTTL, and a negative ttl is codes.InvalidArgument. A
// shard without the meta protocol answers codes.Unimplemented (reason
// SHARD_UNSUPPORTED).
func (c *Client) Touch(ctx context.Context, key string, ttl time.Duration) (found bool, err error) {
	secs, err := ttlToSeconds(ttl)
	if err != nil {
		return false, err
	}
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.Touch(ctx, &memgatev1.TouchRequest{Key: key, TtlSeconds: secs})
	if err != nil {
		return false, convert(ctx, err)
	}
	return resp.GetFound(), nil
}
