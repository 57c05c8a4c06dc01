// Package kivigo is a memgate backend for the kivigo key-value library
// (github.com/kivigo/kivigo). It stores kivigo's raw (encoded) values in
// memgate, so a program that uses kivigo's memcached backend moves to
// memgate by changing its constructor:
//
//	opt := kivigo.NewOptions() // this package, imported as memgatekv
//	opt.Target = "memgate:50051"
//	store, err := memgatekv.New(opt)
//	...
//	client, err := kivigo.New(store) // github.com/kivigo/kivigo, unchanged
//
// The Backend implements kivigo's backend interfaces models.KV,
// models.KVWithBatch and models.KVWithHealth (method sets checked at
// compile time in contract.go). It does not implement models.KVWithTTL:
// memgate has no way to change the TTL of an existing key. Set a TTL for
// every write with Option.DefaultTTL instead.
//
// This package does not import kivigo itself, so using it adds no
// dependency: Go interfaces are satisfied by method sets alone.
package kivigo

import (
	"context"
	"errors"
	"fmt"
	"time"

	memgate "github.com/memgate/memgate/client/go"
)

// ErrNotFound is returned by GetRaw for a missing key unless
// Option.NotFoundError replaces it. Its text is kivigo's ("key not found").
var ErrNotFound = errors.New("key not found")

// ErrEmptyKey is returned for an empty key without calling the server,
// like kivigo's own backends do.
var ErrEmptyKey = errors.New("key is empty")

// Option configures a Backend, in the style of kivigo's backend options.
type Option struct {
	// Target is memgate's gRPC address, "host:port" or any gRPC target.
	Target string
	// Timeout bounds each call whose context has no deadline; 0 means
	// memgate.DefaultTimeout.
	Timeout time.Duration
	// DefaultTTL is the time to live of every value written (whole seconds,
	// rounded up). 0 leaves it to the server's --default-ttl, which is
	// "never expires" unless the server is configured otherwise. It is a
	// time.Duration: write 5*time.Minute, not 300.
	DefaultTTL time.Duration
	// NotFoundError is what GetRaw returns for a missing key; nil means
	// ErrNotFound. kivigo users set it to kivigo's errs.ErrNotFound so that
	// errors.Is(err, errs.ErrNotFound) works on client.Get's error.
	NotFoundError error
	// ClientOptions are passed to memgate.Dial: memgate.WithBearerToken for
	// a server with --auth-token-file, memgate.WithTransportCredentials for
	// TLS, message size, ...
	ClientOptions []memgate.Option
}

// NewOptions returns an empty Option to fill in.
func NewOptions() Option { return Option{} }

// DefaultOptions returns options for a memgate on localhost:50051, its
// default listen address.
func DefaultOptions() Option {
	return Option{Target: "localhost:50051", Timeout: memgate.DefaultTimeout}
}

// Backend is a kivigo backend over a memgate client. It is safe for
// concurrent use.
type Backend struct {
	c        *memgate.Client
	setOpts  []memgate.SetOption
	notFound error
}

// New creates a Backend. Like kivigo's memcached backend it does not
// contact the server: the first call connects, and Health checks that the
// server is reachable and serving.
func New(opt Option) (*Backend, error) {
	if opt.Target == "" {
		return nil, errors.New("memgate kivigo backend: Option.Target is empty")
	}
	if opt.DefaultTTL < 0 {
		return nil, fmt.Errorf("memgate kivigo backend: negative DefaultTTL %v", opt.DefaultTTL)
	}
	if opt.DefaultTTL > 0 && opt.DefaultTTL < time.Millisecond {
		return nil, fmt.Errorf("memgate kivigo backend: DefaultTTL %v is a time.Duration; write e.g. %d*time.Second", opt.DefaultTTL, int64(opt.DefaultTTL))
	}
	copts := []memgate.Option{memgate.WithLazyConnect()}
	if opt.Timeout > 0 {
		copts = append(copts, memgate.WithTimeout(opt.Timeout))
	}
	copts = append(copts, opt.ClientOptions...)
	c, err := memgate.Dial(context.Background(), opt.Target, copts...)
	if err != nil {
		return nil, err
	}
	b := &Backend{c: c, notFound: opt.NotFoundError}
	if b.notFound == nil {
		b.notFound = ErrNotFound
	}
	if opt.DefaultTTL > 0 {
		b.setOpts = []memgate.SetOption{memgate.WithTTL(opt.DefaultTTL)}
	}
	return b, nil
}

// Client returns the underlying memgate client, for what kivigo's
// interfaces do not cover (per-call TTLs, streams, List limits).
func (b *Backend) Client() *memgate.Client { return b.c }

// SetRaw stores value under key (kivigo models.KV).
func (b *Backend) SetRaw(ctx context.Context, key string, value []byte) error {
	if key == "" {
		return ErrEmptyKey
	}
	return b.c.Set(ctx, key, value, b.setOpts...)
}

// GetRaw reads key (kivigo models.KV). A missing key is Option.NotFoundError
// (ErrNotFound by default).
func (b *Backend) GetRaw(ctx context.Context, key string) ([]byte, error) {
	if key == "" {
		return nil, ErrEmptyKey
	}
	v, found, err := b.c.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, b.notFound
	}
	return v, nil
}

// Delete removes key (kivigo models.KV). Deleting a missing key is not an
// error.
func (b *Backend) Delete(ctx context.Context, key string) error {
	if key == "" {
		return ErrEmptyKey
	}
	_, err := b.c.Delete(ctx, key)
	return err
}

// List returns the keys starting with prefix, sorted (kivigo models.KV); an
// empty prefix lists every key. It returns at most the server's
// --list-max-keys keys (10000 by default). On memcached the listing is a
// point-in-time snapshot per shard.
func (b *Backend) List(ctx context.Context, prefix string) ([]string, error) {
	return b.c.List(ctx, prefix, 0)
}

// Close closes the connection (kivigo models.KV).
func (b *Backend) Close() error { return b.c.Close() }

// Health reports whether memgate serves the cache (kivigo
// models.KVWithHealth): nil when its health service says SERVING for
// memgate.v1.Cache, which it does while every memcached shard answers.
func (b *Backend) Health(ctx context.Context) error {
	st, err := b.c.Health(ctx, memgate.ServiceName)
	if err != nil {
		return err
	}
	if st != "SERVING" {
		return fmt.Errorf("memgate: %s is %s", memgate.ServiceName, st)
	}
	return nil
}

// BatchGetRaw reads keys in one call (kivigo models.KVWithBatch). Like
// kivigo's memcached backend, every requested key is in the map: missing
// keys map to nil, present ones to a non-nil slice (empty for an empty
// value). If some keys could not be read the map is returned with a
// *memgate.BatchError naming them.
func (b *Backend) BatchGetRaw(ctx context.Context, keys []string) (map[string][]byte, error) {
	for _, k := range keys {
		if k == "" {
			return nil, ErrEmptyKey
		}
	}
	found, err := b.c.BatchGet(ctx, keys)
	if found == nil {
		return nil, err
	}
	out := make(map[string][]byte, len(keys))
	for _, k := range keys {
		out[k] = found[k] // nil when missing
	}
	return out, err
}

// BatchSetRaw stores kv in one call (kivigo models.KVWithBatch). It is not
// atomic: on a *memgate.BatchError the items it does not name were stored.
func (b *Backend) BatchSetRaw(ctx context.Context, kv map[string][]byte) error {
	for k := range kv {
		if k == "" {
			return ErrEmptyKey
		}
	}
	_, err := b.c.BatchSet(ctx, kv, b.setOpts...)
	return err
}

// BatchDelete removes keys in one call (kivigo models.KVWithBatch); missing
// keys are not an error.
func (b *Backend) BatchDelete(ctx context.Context, keys []string) error {
	for _, k := range keys {
		if k == "" {
			return ErrEmptyKey
		}
	}
	_, err := b.c.BatchDelete(ctx, keys)
	return err
}
