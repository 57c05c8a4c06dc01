package memgate

import (
	"context"

	memgatev1 "github.com/memgate/memgate/client/go/gen/memgate/v1"
)

// Location is where one key lives (Locate).
type Location struct {
	Key string
	// Shard is the memcached server that holds Key now: its address
	// ("host:port") as configured on the server, or "embedded" for the
	// embedded store.
	Shard string
	// Up reports whether that server is up (answering and not marked down).
	Up bool
}

// Locate names, for each key, the memcached server that holds it now and
// whether that server is up, in the order of keys (duplicates included).
// Nothing is read or written. The keys follow the batch rules: an invalid
// key, or more than the server's --max-batch-keys, is
// codes.InvalidArgument.
func (c *Client) Locate(ctx context.Context, keys ...string) ([]Location, error) {
	if len(keys) == 0 {
		return []Location{}, nil
	}
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.Locate(ctx, &memgatev1.LocateRequest{Keys: keys})
	if err != nil {
		return nil, convert(ctx, err)
	}
	out := make([]Location, 0, len(resp.GetLocations()))
	for _, l := range resp.GetLocations() {
		out = append(out, Location{Key: l.GetKey(), Shard: l.GetShard(), Up: l.GetUp()})
	}
	return out, nil
}

// Stats reports on the server this call reaches and on each of its shards:
// memgate's version, uptime, store (as its startup log names it, e.g.
// "memcached pool of 3 shards [...]") and counters (for this replica
// only), and per shard: its address, whether it is up (with the error
// when not), its weight and share of the hash ring, memgate's counters for
// it and memcached's own stats. It returns the generated message (package memgatev1; cache.proto
// documents every field): use its getters, e.g. s.GetShards()[i].GetUp().
// A shard that fails to answer is reported with Up false, never failing
// the call.
func (c *Client) Stats(ctx context.Context) (*memgatev1.StatsResponse, error) {
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.rpc.Stats(ctx, &memgatev1.StatsRequest{})
	if err != nil {
		return nil, convert(ctx, err)
	}
	return resp, nil
}
