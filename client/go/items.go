package memgate

import (
	"context"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	memgatev1 "github.com/memgate/memgate/client/go/gen/memgate/v1"
)

// LeaseState tells a GetItem with WithLeaseTTL who refills a missing or
// stale key.
type LeaseState int

const (
	// LeaseNone: no lease was taken or reported (a hit on a fresh item, or
	// a GetItem without WithLeaseTTL).
	LeaseNone LeaseState = iota
	// LeaseWon: this caller should compute the value and Set it.
	LeaseWon
	// LeaseHeld: another caller is refilling the key; use the stale value
	// if there is one, or retry shortly.
	LeaseHeld
)

func (s LeaseState) String() string {
	switch s {
	case LeaseNone:
		return "LeaseNone"
	case LeaseWon:
		return "LeaseWon"
	case LeaseHeld:
		return "LeaseHeld"
	}
	return "LeaseState(" + strconv.Itoa(int(s)) + ")"
}

func leaseState(l memgatev1.LeaseState) LeaseState {
	switch l {
	case memgatev1.LeaseState_LEASE_STATE_WON:
		return LeaseWon
	case memgatev1.LeaseState_LEASE_STATE_HELD:
		return LeaseHeld
	}
	return LeaseNone
}

// Item is what GetItem read.
type Item struct {
	// Value is the stored bytes when Found (non-nil, maybe empty), nil
	// otherwise.
	Value []byte
	// Found is true if the key holds a value. A lease placeholder is not a
	// value: Found is false then, and Lease says who fills it.
	Found bool
	// Stale is true when the value was invalidated (Invalidate) and is
	// being, or is about to be, refreshed: usable, but old.
	Stale bool
	// CAS is the item's CAS token, for CompareAndSwap. It is 0 on a miss
	// and on shards that speak only memcached's text protocol; with a lease
	// on a miss (Found false, Lease LeaseWon or LeaseHeld) it is the
	// placeholder's token.
	CAS uint64
	// TTL is the time the item has left, in whole seconds, when HasTTL is
	// true. HasTTL is false when the item never expires, on a miss, and on
	// text-protocol shards.
	TTL    time.Duration
	HasTTL bool
	// Lease is who refills the key; always LeaseNone without WithLeaseTTL.
	Lease LeaseState
}

// GetOption configures GetItem.
type GetOption func(*getConfig)

type getConfig struct {
	touch, lease       time.Duration
	hasTouch, hasLease bool
}

// WithTouchTTL makes GetItem a get-and-touch: a hit also gets this time to
// live (0: never expires), and Item.TTL reports it. It is rounded up to
// whole seconds like WithTTL; a negative TTL is codes.InvalidArgument.
func WithTouchTTL(ttl time.Duration) GetOption {
	return func(c *getConfig) { c.touch, c.hasTouch = ttl, true }
}

// WithLeaseTTL takes a lease against stampedes: a miss creates a
// placeholder living ttl (rounded up to whole seconds), and exactly one
// caller, across every memgate replica, gets Lease LeaseWon; the others
// get LeaseHeld until the winner's Set or the placeholder's expiry. A
// stale item (Invalidate) is returned with Stale true, and one reader also
// gets LeaseWon. GetOrFill builds on it.
func WithLeaseTTL(ttl time.Duration) GetOption {
	return func(c *getConfig) { c.lease, c.hasLease = ttl, true }
}

// GetItem reads one key with its CAS token and remaining TTL, and
// optionally touches it (WithTouchTTL) or takes a lease (WithLeaseTTL). A
// miss is not an error: Found is false. A shard that speaks only
// memcached's text protocol answers the options with codes.Unimplemented
// (reason SHARD_UNSUPPORTED).
func (c *Client) GetItem(ctx context.Context, key string, opts ...GetOption) (Item, error) {
	var cfg getConfig
	for _, o := range opts {
		o(&cfg)
	}
	req := &memgatev1.GetRequest{Key: key}
	if cfg.hasTouch {
		s, err := ttlToSeconds(cfg.touch)
		if err != nil {
			return Item{}, err
		}
		req.TouchTtlSeconds = &s
	}
	if cfg.hasLease {
		s, err := ttlToSeconds(cfg.lease)
		if err != nil {
			return Item{}, err
		}
		req.LeaseTtlSeconds = &s
	}
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.Get(ctx, req)
	if err != nil {
		return Item{}, convert(ctx, err)
	}
	it := Item{
		Found: resp.GetFound(),
		Stale: resp.GetStale(),
		CAS:   resp.GetCas(),
		Lease: leaseState(resp.GetLease()),
	}
	if it.Found {
		it.Value = nonNil(resp.GetValue())
	}
	if resp.TtlRemainingSeconds != nil {
		it.TTL, it.HasTTL = time.Duration(resp.GetTtlRemainingSeconds())*time.Second, true
	}
	return it, nil
}

// Condition makes a write conditional (SetIf, BatchSetItems). The zero
// Condition is Always.
type Condition struct {
	kind memgatev1.SetCondition
	cas  uint64
}

// Always stores unconditionally, like Set.
func Always() Condition { return Condition{} }

// IfAbsent stores only if the key does not exist (memcached's add): a lock,
// or a first writer wins. A lease placeholder and a stale item exist.
func IfAbsent() Condition { return Condition{kind: memgatev1.SetCondition_SET_CONDITION_ABSENT} }

// IfPresent stores only if the key exists (memcached's replace).
func IfPresent() Condition { return Condition{kind: memgatev1.SetCondition_SET_CONDITION_PRESENT} }

// IfCAS stores only if the item's CAS token is still cas (from GetItem or
// a previous write): compare-and-swap. A missing key never matches.
func IfCAS(cas uint64) Condition {
	return Condition{kind: memgatev1.SetCondition_SET_CONDITION_CAS_MATCH, cas: cas}
}

func (cond Condition) String() string {
	switch cond.kind {
	case memgatev1.SetCondition_SET_CONDITION_UNSPECIFIED:
		return "Always"
	case memgatev1.SetCondition_SET_CONDITION_ABSENT:
		return "IfAbsent"
	case memgatev1.SetCondition_SET_CONDITION_PRESENT:
		return "IfPresent"
	case memgatev1.SetCondition_SET_CONDITION_CAS_MATCH:
		return "IfCAS(" + strconv.FormatUint(cond.cas, 10) + ")"
	}
	return cond.kind.String()
}

// SetIf stores value under key if cond holds and reports whether it did,
// with the item's new CAS token (0 when not stored, and on text-protocol
// shards). A condition that does not hold is not an error: stored is
// false and nothing was written. opts are Set's (WithTTL). A condition
// on a shard that speaks only memcached's text protocol is
// codes.Unimplemented (reason SHARD_UNSUPPORTED).
func (c *Client) SetIf(ctx context.Context, key string, value []byte, cond Condition, opts ...SetOption) (stored bool, cas uint64, err error) {
	ttl, err := ttlSeconds(opts)
	if err != nil {
		return false, 0, err
	}
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.Set(ctx, &memgatev1.SetRequest{
		Key: key, Value: value, TtlSeconds: ttl, Condition: cond.kind, Cas: cond.cas,
	})
	if err != nil {
		return false, 0, convert(ctx, err)
	}
	return resp.GetStored(), resp.GetCas(), nil
}

// Add stores value only if key does not exist (SetIf with IfAbsent).
func (c *Client) Add(ctx context.Context, key string, value []byte, opts ...SetOption) (stored bool, cas uint64, err error) {
	return c.SetIf(ctx, key, value, IfAbsent(), opts...)
}

// Replace stores value only if key exists (SetIf with IfPresent).
func (c *Client) Replace(ctx context.Context, key string, value []byte, opts ...SetOption) (stored bool, cas uint64, err error) {
	return c.SetIf(ctx, key, value, IfPresent(), opts...)
}

// CompareAndSwap stores value only if the item's CAS token is still cas
// (SetIf with IfCAS). Of several writers holding the same token, exactly
// one stores; the others get stored=false and read the item again.
func (c *Client) CompareAndSwap(ctx context.Context, key string, value []byte, cas uint64, opts ...SetOption) (stored bool, newCAS uint64, err error) {
	return c.SetIf(ctx, key, value, IfCAS(cas), opts...)
}

// Invalidate marks key stale instead of removing it, and reports whether
// it existed. The old value stays readable for the server's --stale-ttl
// (30 s by default): GetItem answers it with Stale true, and the first
// GetItem with WithLeaseTTL wins the lease to refresh it (GetOrFill does
// that), so readers keep a value while one caller recomputes it. A Set
// clears the stale state. Get and BatchGet read a stale value as found.
// A text-protocol-only shard answers codes.Unimplemented (reason
// SHARD_UNSUPPORTED).
func (c *Client) Invalidate(ctx context.Context, key string) (existed bool, err error) {
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.Delete(ctx, &memgatev1.DeleteRequest{Key: key, Invalidate: true})
	if err != nil {
		return false, convert(ctx, err)
	}
	return resp.GetDeleted(), nil
}

// SetItem is one item of BatchSetItems.
type SetItem struct {
	Key   string
	Value []byte
	// If is the condition the item is stored under (zero: Always).
	If Condition
}

// BatchSetItems stores items, each under its own condition, in one call
// and returns how many were stored. An item whose condition does not hold
// is not stored and is listed in the returned *BatchError as a KeyError
// with Code codes.FailedPrecondition; other failures are listed as in
// BatchSet. An invalid item fails the whole call with
// codes.InvalidArgument before anything is written. opts (WithTTL) apply
// to every item.
func (c *Client) BatchSetItems(ctx context.Context, items []SetItem, opts ...SetOption) (stored int, err error) {
	ttl, err := ttlSeconds(opts)
	if err != nil {
		return 0, err
	}
	if len(items) == 0 {
		return 0, nil
	}
	req := &memgatev1.BatchSetRequest{Items: make([]*memgatev1.SetRequest, 0, len(items))}
	for _, it := range items {
		req.Items = append(req.Items, &memgatev1.SetRequest{
			Key: it.Key, Value: it.Value, TtlSeconds: ttl, Condition: it.If.kind, Cas: it.If.cas,
		})
	}
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.BatchSet(ctx, req)
	if err != nil {
		return 0, convert(ctx, err)
	}
	return int(resp.GetStored()), batchError("BatchSet", resp.GetErrors())
}

// errInvalid is a codes.InvalidArgument error made on the client side.
func errInvalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "memgate: "+format, args...)
}
