package memgate

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	memgatev1 "github.com/memgate/memgate/client/go/gen/memgate/v1"
)

// SetOption configures Set, BatchSet and SetStream.
type SetOption func(*setConfig)

type setConfig struct {
	ttl    time.Duration
	hasTTL bool
}

// WithTTL sets the time to live of the stored items. Without it the
// server's --default-ttl applies. WithTTL(0) means "never expires". The TTL
// is sent in whole seconds, rounded up (a 1.5s TTL becomes 2s, so a short
// positive TTL never turns into "never expires"). Any TTL up to about 136
// years works; the server handles memcached's 30-day limit itself. A
// negative TTL is codes.InvalidArgument.
func WithTTL(ttl time.Duration) SetOption {
	return func(c *setConfig) { c.ttl, c.hasTTL = ttl, true }
}

// ttlSeconds resolves the set options to the wire field (nil: absent).
func ttlSeconds(opts []SetOption) (*uint32, error) {
	var cfg setConfig
	for _, o := range opts {
		o(&cfg)
	}
	if !cfg.hasTTL {
		return nil, nil
	}
	s, err := ttlToSeconds(cfg.ttl)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// ttlToSeconds converts a TTL to the wire's whole seconds, rounded up:
// 0 stays 0 ("never expires"), a negative TTL or one over 2^32-1 seconds is
// codes.InvalidArgument.
func ttlToSeconds(ttl time.Duration) (uint32, error) {
	if ttl < 0 {
		return 0, status.Errorf(codes.InvalidArgument, "memgate: negative TTL %v", ttl)
	}
	secs := (ttl + time.Second - 1) / time.Second
	if secs > math.MaxUint32 {
		return 0, status.Errorf(codes.InvalidArgument, "memgate: TTL %v is longer than %d seconds", ttl, uint32(math.MaxUint32))
	}
	return uint32(secs), nil
}

// Get reads one key. A miss is not an error: found is false and value nil.
// A present key with an empty value gives found=true and a non-nil empty
// slice.
func (c *Client) Get(ctx context.Context, key string) (value []byte, found bool, err error) {
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.Get(ctx, &memgatev1.GetRequest{Key: key})
	if err != nil {
		return nil, false, convert(ctx, err)
	}
	if !resp.GetFound() {
		return nil, false, nil
	}
	return nonNil(resp.GetValue()), true, nil
}

// Set stores value under key. It returns nil only after memcached
// acknowledged the write.
func (c *Client) Set(ctx context.Context, key string, value []byte, opts ...SetOption) error {
	ttl, err := ttlSeconds(opts)
	if err != nil {
		return err
	}
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	_, err = c.rpc.Set(ctx, &memgatev1.SetRequest{Key: key, Value: value, TtlSeconds: ttl})
	return convert(ctx, err)
}

// Delete removes key and reports whether it existed.
func (c *Client) Delete(ctx context.Context, key string) (bool, error) {
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.Delete(ctx, &memgatev1.DeleteRequest{Key: key})
	if err != nil {
		return false, convert(ctx, err)
	}
	return resp.GetDeleted(), nil
}

// List returns up to limit keys starting with prefix, sorted by key
// (byte order). An empty prefix matches every key. limit 0 means the
// server's maximum (--list-max-keys, 10000 by default); a larger limit is
// capped to it, silently. On memcached this is a per-shard point-in-time
// snapshot: keys written while it runs may be missing.
func (c *Client) List(ctx context.Context, prefix string, limit int) ([]string, error) {
	if limit < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "memgate: negative List limit %d", limit)
	}
	lim := uint32(math.MaxUint32)
	if limit < math.MaxUint32 {
		lim = uint32(limit)
	}
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.List(ctx, &memgatev1.ListRequest{Prefix: prefix, Limit: lim})
	if err != nil {
		return nil, convert(ctx, err)
	}
	return resp.GetKeys(), nil
}

// BatchGet reads many keys in one call. The map holds the keys that were
// found (a found empty value is a non-nil empty slice); missing keys are
// absent. Duplicated keys are fine.
//
// If some keys could not be read (for example their shard is down) the map
// still holds every key that was read and the error is a *BatchError
// naming the others. An invalid key, or more keys than the server's
// --max-batch-keys, fails the whole call with codes.InvalidArgument.
func (c *Client) BatchGet(ctx context.Context, keys []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.BatchGet(ctx, &memgatev1.BatchGetRequest{Keys: keys})
	if err != nil {
		return nil, convert(ctx, err)
	}
	var failed []KeyError
	for _, r := range resp.GetResults() {
		switch {
		case r.GetError() != "":
			failed = append(failed, KeyError{Key: r.GetKey(), Code: keyCode(r.GetErrorCode()), Message: r.GetError()})
		case r.GetFound():
			out[r.GetKey()] = nonNil(r.GetValue())
		}
	}
	if len(failed) > 0 {
		return out, &BatchError{Op: "BatchGet", Errors: failed}
	}
	return out, nil
}

// BatchSet stores many items in one call and returns how many memcached
// acknowledged. Items that could not be stored are listed in a *BatchError
// (the others are stored). An invalid item fails the whole call with
// codes.InvalidArgument before anything is written.
func (c *Client) BatchSet(ctx context.Context, items map[string][]byte, opts ...SetOption) (stored int, err error) {
	ttl, err := ttlSeconds(opts)
	if err != nil {
		return 0, err
	}
	if len(items) == 0 {
		return 0, nil
	}
	req := &memgatev1.BatchSetRequest{Items: make([]*memgatev1.SetRequest, 0, len(items))}
	for k, v := range items {
		req.Items = append(req.Items, &memgatev1.SetRequest{Key: k, Value: v, TtlSeconds: ttl})
	}
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.BatchSet(ctx, req)
	if err != nil {
		return 0, convert(ctx, err)
	}
	return int(resp.GetStored()), batchError("BatchSet", resp.GetErrors())
}

// BatchDelete removes many keys in one call and returns how many existed.
// Keys whose deletion failed (a missing key is not a failure) are listed in
// a *BatchError.
func (c *Client) BatchDelete(ctx context.Context, keys []string) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.BatchDelete(ctx, &memgatev1.BatchDeleteRequest{Keys: keys})
	if err != nil {
		return 0, convert(ctx, err)
	}
	return int(resp.GetDeleted()), batchError("BatchDelete", resp.GetErrors())
}

// KeyError is why one key of a batch or stream failed.
//
// A KeyError is also a gRPC status error: status.Code(ke) is its Code, as it
// is for GetResult.Err in GetStream.
type KeyError struct {
	Key string
	// Code is the gRPC status code a single-key call for Key would have
	// returned: codes.Unavailable when its shard is down,
	// codes.InvalidArgument for an invalid key or value in a stream, and so
	// on. It is codes.Unknown if the server sent none (one older than the
	// per-key codes); never codes.OK.
	Code    codes.Code
	Message string
}

func (e KeyError) Error() string { return fmt.Sprintf("%q: %s", e.Key, e.Message) }

// GRPCStatus makes status.Code and status.FromError see e's Code and
// Message.
func (e KeyError) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// keyCode is the Code of a failed key from the wire: 0 (OK, from a server
// older than the per-key codes) becomes codes.Unknown.
func keyCode(c int32) codes.Code {
	if c == 0 {
		return codes.Unknown
	}
	return codes.Code(uint32(c))
}

// BatchError reports the keys of a batch or stream call that failed while
// the call itself succeeded. The results returned with it (values read,
// counts stored or deleted) are valid for the other keys.
//
// Each KeyError carries its own Code. The BatchError itself has none:
// status.Code(be) is codes.Unknown even when every key failed with the
// same code, because the call partly succeeded and a code such as
// codes.InvalidArgument would claim that nothing was written. Look at
// Errors[i].Code instead.
//
// For SetStream and DeleteStream the server returns at most a
// server-defined number of errors, so Errors may not name every failed key.
type BatchError struct {
	Op     string // "BatchGet", "BatchSet", "SetStream", ...
	Errors []KeyError
}

func (e *BatchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "memgate: %s: %d key(s) failed", e.Op, len(e.Errors))
	for i, ke := range e.Errors {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Errors)-i)
			break
		}
		b.WriteString("; ")
		b.WriteString(ke.Error())
	}
	return b.String()
}

func batchError(op string, errs []*memgatev1.KeyError) error {
	return batchErrorOf(op, appendKeyErrors(nil, errs))
}

func batchErrorOf(op string, errs []KeyError) error {
	if len(errs) == 0 {
		return nil
	}
	return &BatchError{Op: op, Errors: errs}
}

func appendKeyErrors(dst []KeyError, errs []*memgatev1.KeyError) []KeyError {
	for _, e := range errs {
		dst = append(dst, KeyError{Key: e.GetKey(), Code: keyCode(e.GetCode()), Message: e.GetMessage()})
	}
	return dst
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
