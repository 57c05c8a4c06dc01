package memgate_test

// Per-key failures and their status codes, on an extra memgate started by
// startMemgate in front of one live memcached (the first of
// $MEMGATE_MEMCACHED) and a port nothing listens on: keys on the dead shard
// fail with codes.Unavailable, keys on the live one succeed, and an invalid
// key in a stream fails with codes.InvalidArgument.

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	memgate "github.com/memgate/memgate/client/go"
)

// halfDown starts a memgate whose second shard is down and returns a client
// for it.
func halfDown(t *testing.T) *memgate.Client {
	t.Helper()
	live := strings.Split(os.Getenv("MEMGATE_MEMCACHED"), ",")[0]
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens there now
	addr := startMemgate(t, []string{
		"--memcached", live + "," + dead, "--connect-timeout", "200ms", "--timeout", "500ms",
	})
	return dialTo(t, addr)
}

// splitByShard writes 40 keys and returns those on the live shard and those
// on the dead one.
func splitByShard(t *testing.T, c *memgate.Client) (live, dead []string) {
	t.Helper()
	ctx, p := ctxT(t), prefix(t)
	for i := range 40 {
		k := fmt.Sprintf("%s%d", p, i)
		err := c.Set(ctx, k, []byte(k))
		switch status.Code(err) {
		case codes.OK:
			live = append(live, k)
		case codes.Unavailable:
			dead = append(dead, k)
		default:
			t.Fatalf("Set(%q): %v", k, err)
		}
	}
	if len(live) == 0 || len(dead) == 0 {
		t.Fatalf("40 keys should land on both shards: %d live, %d dead", len(live), len(dead))
	}
	return live, dead
}

// keyCodes returns the code of each failed key of err, a *BatchError.
func keyCodes(t *testing.T, op string, err error) map[string]codes.Code {
	t.Helper()
	var be *memgate.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("%s: err = %v, want a *BatchError", op, err)
	}
	if got := status.Code(err); got != codes.Unknown {
		t.Fatalf("%s: status.Code(*BatchError) = %v, want Unknown (the call partly succeeded)", op, got)
	}
	out := map[string]codes.Code{}
	for _, ke := range be.Errors {
		if status.Code(ke) != ke.Code {
			t.Fatalf("%s: status.Code(%v) = %v, want its Code %v", op, ke, status.Code(ke), ke.Code)
		}
		out[ke.Key] = ke.Code
	}
	return out
}

func allCode(keys []string, c codes.Code) map[string]codes.Code {
	out := make(map[string]codes.Code, len(keys))
	for _, k := range keys {
		out[k] = c
	}
	return out
}

func TestDeadShardKeyCodes(t *testing.T) {
	c := halfDown(t)
	ctx := ctxT(t)
	live, dead := splitByShard(t, c)
	keys := append(slices.Clone(live), dead...)
	sort.Strings(dead)

	_, _, err := c.Get(ctx, dead[0])
	wantCode(t, err, codes.Unavailable)

	values, err := c.BatchGet(ctx, keys)
	if got, want := keyCodes(t, "BatchGet", err), allCode(dead, codes.Unavailable); !maps.Equal(got, want) {
		t.Fatalf("BatchGet key codes = %v, want %v", got, want)
	}
	if len(values) != len(live) {
		t.Fatalf("BatchGet read %d keys, want the %d live ones", len(values), len(live))
	}

	items := map[string][]byte{}
	for _, k := range keys {
		items[k] = []byte("new")
	}
	stored, err := c.BatchSet(ctx, items)
	if got, want := keyCodes(t, "BatchSet", err), allCode(dead, codes.Unavailable); !maps.Equal(got, want) || stored != len(live) {
		t.Fatalf("BatchSet = %d, key codes %v; want %d and %v", stored, got, len(live), want)
	}

	deleted, err := c.BatchDelete(ctx, keys)
	if got, want := keyCodes(t, "BatchDelete", err), allCode(dead, codes.Unavailable); !maps.Equal(got, want) || deleted != len(live) {
		t.Fatalf("BatchDelete = %d, key codes %v; want %d and %v", deleted, got, len(live), want)
	}
}

func TestDeadShardStreamKeyCodes(t *testing.T) {
	c := halfDown(t)
	ctx := ctxT(t)
	live, dead := splitByShard(t, c)

	// GetStream: each result's Err carries its own code.
	var got []codes.Code
	for r, err := range c.GetStream(ctx, slices.Values([]string{live[0], dead[0], "bad key", live[1]})) {
		if err != nil {
			t.Fatalf("GetStream failed as a whole: %v", err)
		}
		got = append(got, status.Code(r.Err))
		var ke memgate.KeyError
		if r.Err != nil && (!errors.As(r.Err, &ke) || ke.Key != r.Key || ke.Code != status.Code(r.Err)) {
			t.Fatalf("GetStream: %q: Err = %#v, want a KeyError for it", r.Key, r.Err)
		}
	}
	if want := []codes.Code{codes.OK, codes.Unavailable, codes.InvalidArgument, codes.OK}; !slices.Equal(got, want) {
		t.Fatalf("GetStream codes = %v, want %v", got, want)
	}

	// SetStream and DeleteStream: the dead shard's keys and an invalid one,
	// each with its own code.
	want := allCode(dead, codes.Unavailable)
	want["bad key"] = codes.InvalidArgument
	all := append(append(slices.Clone(live), dead...), "bad key")
	items := func(yield func(string, []byte) bool) {
		for _, k := range all {
			if !yield(k, []byte("s")) {
				return
			}
		}
	}
	stored, err := c.SetStream(ctx, items)
	if got := keyCodes(t, "SetStream", err); !maps.Equal(got, want) || stored != len(live) {
		t.Fatalf("SetStream = %d, key codes %v; want %d and %v", stored, got, len(live), want)
	}
	deleted, err := c.DeleteStream(ctx, slices.Values(all))
	if got := keyCodes(t, "DeleteStream", err); !maps.Equal(got, want) || deleted != len(live) {
		t.Fatalf("DeleteStream = %d, key codes %v; want %d and %v", deleted, got, len(live), want)
	}
}
