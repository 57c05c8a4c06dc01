package memgate

import (
	"context"
	"math/rand/v2"
	"time"
)

const (
	// DefaultFillLeaseTTL is how long GetOrFill's lease (the placeholder
	// that makes other callers wait) lives unless WithFillLeaseTTL says
	// otherwise: a filler that dies leaves the key blocked at most this
	// long.
	DefaultFillLeaseTTL = 10 * time.Second
	// DefaultFillWait is how long GetOrFill waits for another caller's
	// fill before it fills the key itself, unless WithFillWait says
	// otherwise.
	DefaultFillWait = 5 * time.Second

	fillBackoffStart = 5 * time.Millisecond
	fillBackoffMax   = 100 * time.Millisecond
)

// FillOption configures GetOrFill.
type FillOption func(*fillConfig)

type fillConfig struct {
	leaseTTL, wait time.Duration
}

// WithFillLeaseTTL sets how long GetOrFill's lease lives (default
// DefaultFillLeaseTTL, rounded up to whole seconds). It should be longer
// than fill takes.
func WithFillLeaseTTL(ttl time.Duration) FillOption {
	return func(c *fillConfig) { c.leaseTTL = ttl }
}

// WithFillWait sets how long GetOrFill waits for another caller's fill
// (default DefaultFillWait) before calling fill itself. 0 fills at once
// when the lease is held.
func WithFillWait(d time.Duration) FillOption {
	return func(c *fillConfig) { c.wait = d }
}

// GetOrFill returns the value under key, computing it with fill and
// storing it (Set with WithTTL(ttl)) when it is missing, such that of many
// concurrent callers, on any number of memgate replicas, only one calls
// fill (a stampede turns into one fill and a short wait for the others):
//
//  1. It reads the key with a lease (GetItem with WithLeaseTTL).
//  2. A fresh value is returned; fill is not called.
//  3. A stale value (Invalidate) is returned at once, unless this caller
//     won the lease to refresh it: it then calls fill, stores and returns
//     the new value (a fill error is returned; the stale value stays).
//  4. On a miss with the lease won it calls fill, stores and returns the
//     value. If fill fails, it releases the lease (deletes the
//     placeholder, so that another caller can win it at once) and returns
//     fill's error as is.
//  5. On a miss with the lease held by another caller it sleeps a jittered
//     backoff (5 ms doubling up to 100 ms, each times a random factor in
//     [0.5, 1.5)) and reads again, until the wait (WithFillWait, default
//     5 s) has passed since the call started; then it calls fill and
//     stores the value itself.
//
// fill gets ctx. Errors of the Get and Set calls are returned as they
// are; ctx ending during a backoff returns the context's error as a
// status error (codes.Canceled or codes.DeadlineExceeded). A nil fill, a
// negative ttl or wait, or a lease TTL that is not positive is
// codes.InvalidArgument.
func (c *Client) GetOrFill(ctx context.Context, key string, fill func(context.Context) ([]byte, error), ttl time.Duration, opts ...FillOption) ([]byte, error) {
	start := time.Now()
	cfg := fillConfig{leaseTTL: DefaultFillLeaseTTL, wait: DefaultFillWait}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case fill == nil:
		return nil, errInvalid("GetOrFill: fill is nil")
	case cfg.leaseTTL <= 0:
		return nil, errInvalid("GetOrFill: lease TTL %v is not positive", cfg.leaseTTL)
	case cfg.wait < 0:
		return nil, errInvalid("GetOrFill: negative wait %v", cfg.wait)
	}
	if _, err := ttlToSeconds(ttl); err != nil {
		return nil, err
	}
	backoff := fillBackoffStart
	for {
		it, err := c.GetItem(ctx, key, WithLeaseTTL(cfg.leaseTTL))
		if err != nil {
			return nil, err
		}
		switch {
		case it.Found && !it.Stale:
			return it.Value, nil
		case it.Found:
			if it.Lease == LeaseWon {
				return c.fillAndSet(ctx, key, fill, ttl)
			}
			return it.Value, nil
		case it.Lease == LeaseWon:
			v, err := fill(ctx)
			if err != nil {
				c.releaseLease(ctx, key)
				return nil, err
			}
			if err := c.Set(ctx, key, v, WithTTL(ttl)); err != nil {
				return nil, err
			}
			return v, nil
		case it.Lease == LeaseHeld:
			left := cfg.wait - time.Since(start)
			if left <= 0 {
				return c.fillAndSet(ctx, key, fill, ttl)
			}
			d := min(jitter(backoff), left)
			if err := sleepCtx(ctx, d); err != nil {
				return nil, err
			}
			backoff = min(2*backoff, fillBackoffMax)
		default: // no lease reported on a miss: should not happen
			return c.fillAndSet(ctx, key, fill, ttl)
		}
	}
}

// fillAndSet calls fill and stores its value.
func (c *Client) fillAndSet(ctx context.Context, key string, fill func(context.Context) ([]byte, error), ttl time.Duration) ([]byte, error) {
	v, err := fill(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.Set(ctx, key, v, WithTTL(ttl)); err != nil {
		return nil, err
	}
	return v, nil
}

// releaseLease deletes the lease placeholder of key after a failed fill.
// It runs even when ctx has ended (fill may have failed because of it),
// bounded by the client's default timeout; if it fails, the placeholder
// expires after its lease TTL.
func (c *Client) releaseLease(ctx context.Context, key string) {
	rctx := context.WithoutCancel(ctx)
	if c.timeout <= 0 {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(rctx, DefaultTimeout)
		defer cancel()
	}
	_, _ = c.Delete(rctx, key)
}

// jitter multiplies d by a random factor in [0.5, 1.5).
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.5 + rand.Float64()))
}

// sleepCtx sleeps d or until ctx ends, whichever comes first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return convert(ctx, ctx.Err())
	}
}
