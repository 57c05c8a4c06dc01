package memgate_test

// Increment, Touch, Locate and Stats against the live stack of
// scripts/with-stack.sh (MEMGATE_TARGET in front of the memcached servers
// in MEMGATE_MEMCACHED).

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	memgate "github.com/memgate/memgate/client/go"
)

// shards is the memcached addresses the stack's memgate was started with.
func shards(t testing.TB) []string {
	t.Helper()
	mc := os.Getenv("MEMGATE_MEMCACHED")
	if mc == "" {
		t.Fatal("MEMGATE_MEMCACHED is not set: run the tests under scripts/with-stack.sh")
	}
	return strings.Split(mc, ",")
}

func wantReason(t testing.TB, err error, code codes.Code, reason string) {
	t.Helper()
	wantCode(t, err, code)
	if got := memgate.Reason(err); got != reason {
		t.Fatalf("Reason(err) = %q, want %q (err: %v)", got, reason, err)
	}
}

func TestIncrement(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "n"

	// Create: the initial value is returned as is, the delta not applied.
	v, err := c.Increment(ctx, k, 5, memgate.WithInitialValue(10), memgate.WithCounterTTL(time.Minute))
	if err != nil || v != 10 {
		t.Fatalf("Increment (create) = %d, %v; want 10, nil", v, err)
	}
	if got, found, err := c.Get(ctx, k); err != nil || !found || string(got) != "10" {
		t.Fatalf("Get of a new counter = %q, %v, %v; want \"10\", true, nil", got, found, err)
	}

	// Increment an existing counter; the initial value is ignored then.
	if v, err = c.Increment(ctx, k, 5, memgate.WithInitialValue(1000)); err != nil || v != 15 {
		t.Fatalf("Increment +5 = %d, %v; want 15, nil", v, err)
	}
	if v, err = c.Increment(ctx, k, -3); err != nil || v != 12 {
		t.Fatalf("Increment -3 = %d, %v; want 12, nil", v, err)
	}

	// Decrement stops at 0; the stored text keeps its length.
	if v, err = c.Increment(ctx, k, -100); err != nil || v != 0 {
		t.Fatalf("Increment -100 = %d, %v; want 0, nil", v, err)
	}
	if got, _, err := c.Get(ctx, k); err != nil || strings.TrimRight(string(got), " ") != "0" {
		t.Fatalf("Get after the floor = %q, %v; want \"0\" (maybe space-padded)", got, err)
	}
	if v, err = c.Increment(ctx, k, 7); err != nil || v != 7 {
		t.Fatalf("Increment +7 after the floor = %d, %v; want 7, nil", v, err)
	}
}

func TestIncrementCounterFromSet(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "n"
	if err := c.Set(ctx, k, []byte("41")); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Increment(ctx, k, 1); err != nil || v != 42 {
		t.Fatalf("Increment of a Set \"41\" = %d, %v; want 42, nil", v, err)
	}
}

func TestIncrementMissingKey(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "missing"
	v, err := c.Increment(ctx, k, 1)
	wantReason(t, err, codes.NotFound, "KEY_NOT_FOUND")
	if v != 0 {
		t.Fatalf("Increment of a missing key returned %d with its error, want 0", v)
	}
	// Nothing was created.
	if _, found, err := c.Get(ctx, k); err != nil || found {
		t.Fatalf("Get after a failed Increment = found %v, %v; want false, nil", found, err)
	}
}

func TestIncrementNotANumber(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	for name, value := range map[string]string{"text": "hello", "empty": ""} {
		t.Run(name, func(t *testing.T) {
			k := p + name
			if err := c.Set(ctx, k, []byte(value)); err != nil {
				t.Fatal(err)
			}
			_, err := c.Increment(ctx, k, 1, memgate.WithInitialValue(3))
			wantReason(t, err, codes.FailedPrecondition, "NOT_A_NUMBER")
			// The value is left unchanged.
			if got, found, err := c.Get(ctx, k); err != nil || !found || string(got) != value {
				t.Fatalf("Get after NOT_A_NUMBER = %q, %v, %v; want %q, true, nil", got, found, err, value)
			}
		})
	}
}

func TestIncrementOptionValidation(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	_, err := c.Increment(ctx, p+"n", 1, memgate.WithInitialValue(0), memgate.WithCounterTTL(-time.Second))
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.Increment(ctx, "bad key", 1)
	wantReason(t, err, codes.InvalidArgument, "KEY_INVALID")
}

func TestTouch(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"
	if err := c.Set(ctx, k, []byte("kept"), memgate.WithTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	// Touch to "never expires": the item outlives its original 1s TTL.
	found, err := c.Touch(ctx, k, 0)
	if err != nil || !found {
		t.Fatalf("Touch of an existing key = %v, %v; want true, nil", found, err)
	}
	time.Sleep(2100 * time.Millisecond)
	if v, found, err := c.Get(ctx, k); err != nil || !found || string(v) != "kept" {
		t.Fatalf("Get after Touch(0) and 2.1s = %q, %v, %v; want \"kept\", true, nil", v, found, err)
	}
}

func TestTouchMissing(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "missing"
	found, err := c.Touch(ctx, k, time.Minute)
	if err != nil || found {
		t.Fatalf("Touch of a missing key = %v, %v; want false, nil", found, err)
	}
	// Touch does not create the key.
	if _, found, err := c.Get(ctx, k); err != nil || found {
		t.Fatalf("Get after Touch of a missing key = found %v, %v; want false, nil", found, err)
	}
	_, err = c.Touch(ctx, k, -time.Second)
	wantCode(t, err, codes.InvalidArgument)
}

func TestLocate(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	all := shards(t)
	var keys []string
	for i := 0; i < 32; i++ {
		keys = append(keys, p+string(rune('a'+i%26))+strings.Repeat("x", i/26))
	}
	keys = append(keys, keys[0]) // a duplicate is answered again
	locs, err := c.Locate(ctx, keys...)
	if err != nil {
		t.Fatal(err)
	}
	if len(locs) != len(keys) {
		t.Fatalf("Locate returned %d locations for %d keys", len(locs), len(keys))
	}
	used := map[string]bool{}
	for i, l := range locs {
		if l.Key != keys[i] {
			t.Fatalf("location %d is for %q, want %q (request order)", i, l.Key, keys[i])
		}
		if !slices.Contains(all, l.Shard) {
			t.Fatalf("Locate(%q).Shard = %q, not one of MEMGATE_MEMCACHED %v", l.Key, l.Shard, all)
		}
		if !l.Up {
			t.Fatalf("Locate(%q) = %+v, want Up", l.Key, l)
		}
		used[l.Shard] = true
	}
	if locs[len(locs)-1].Shard != locs[0].Shard {
		t.Fatalf("the same key located on %q and %q", locs[0].Shard, locs[len(locs)-1].Shard)
	}
	if len(used) < 2 {
		t.Fatalf("32 keys all located on %v: the keys are not spread over the shards", used)
	}

	if locs, err := c.Locate(ctx); err != nil || len(locs) != 0 {
		t.Fatalf("Locate() = %v, %v; want empty, nil", locs, err)
	}
	_, err = c.Locate(ctx, p+"ok", "bad key")
	wantReason(t, err, codes.InvalidArgument, "KEY_INVALID")
}

func TestStats(t *testing.T) {
	c, ctx := dial(t), ctxT(t)
	s, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.GetVersion() == "" || !strings.HasPrefix(s.GetStore(), "memcached") {
		t.Fatalf("Stats version %q, store %q; want a version and a memcached store", s.GetVersion(), s.GetStore())
	}
	all := shards(t)
	var got []string
	share := 0.0
	for _, sh := range s.GetShards() {
		got = append(got, sh.GetAddress())
		if !sh.GetUp() {
			t.Errorf("shard %s is not up: %q", sh.GetAddress(), sh.GetError())
		}
		share += sh.GetRingShare()
	}
	// One entry per shard. (cache.proto says they come in --memcached
	// order; the server does not keep it, so compare them as sets.)
	slices.Sort(got)
	want := slices.Clone(all)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Stats shards = %v, want every MEMGATE_MEMCACHED shard %v", got, want)
	}
	if share < 0.999 || share > 1.001 {
		t.Fatalf("ring shares sum to %v, want 1", share)
	}
}
