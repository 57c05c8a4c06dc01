package memgate_test

// These tests run against a live memgate: MEMGATE_TARGET=host:port, as set
// by scripts/with-stack.sh. The server is shared, so every test works under
// its own unique key prefix.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	memgate "github.com/memgate/memgate/client/go"
)

func target(t testing.TB) string {
	t.Helper()
	tgt := os.Getenv("MEMGATE_TARGET")
	if tgt == "" {
		t.Fatal("MEMGATE_TARGET is not set: run the tests against a live server, e.g. scripts/with-stack.sh go test ./... (from the repo root, in client/go)")
	}
	return tgt
}

func dial(t testing.TB, opts ...memgate.Option) *memgate.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := memgate.Dial(ctx, target(t), opts...)
	if err != nil {
		t.Fatalf("Dial(%s): %v", target(t), err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// prefix returns a key prefix no other test (or run) uses.
func prefix(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	return fmt.Sprintf("gotest:%s:%d:%s:", name, time.Now().UnixNano(), hex.EncodeToString(b[:]))
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t testing.TB, err error, want codes.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	if got := status.Code(err); got != want {
		t.Fatalf("status.Code(err) = %v, want %v (err: %v)", got, want, err)
	}
}

func TestSetGetDelete(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "a"

	if err := c.Set(ctx, k, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	v, found, err := c.Get(ctx, k)
	if err != nil || !found || string(v) != "hello" {
		t.Fatalf("Get = %q, %v, %v; want hello, true, nil", v, found, err)
	}
	// Overwrite.
	if err := c.Set(ctx, k, []byte("world")); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := c.Get(ctx, k); string(v) != "world" {
		t.Fatalf("after overwrite Get = %q, want world", v)
	}
	deleted, err := c.Delete(ctx, k)
	if err != nil || !deleted {
		t.Fatalf("Delete = %v, %v; want true, nil", deleted, err)
	}
	v, found, err = c.Get(ctx, k)
	if err != nil || found || v != nil {
		t.Fatalf("Get after delete = %q, %v, %v; want nil, false, nil", v, found, err)
	}
	deleted, err = c.Delete(ctx, k)
	if err != nil || deleted {
		t.Fatalf("second Delete = %v, %v; want false, nil", deleted, err)
	}
}

func TestMissIsNotAnError(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	v, found, err := c.Get(ctx, p+"never-written")
	if err != nil {
		t.Fatalf("Get of a missing key: %v", err)
	}
	if found || v != nil {
		t.Fatalf("Get of a missing key = %q, %v; want nil, false", v, found)
	}
}

func TestBinaryValuesRoundTrip(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := bytes.Repeat([]byte("\x00\r\nEND\r\n"), 64<<10) // 512 KiB
	cases := map[string][]byte{
		"nul":         []byte("a\x00b\x00"),
		"crlf":        []byte("line1\r\nline2\r\n"),
		"lf-cr":       []byte("\n\r\n\r"),
		"fake-end":    []byte("VALUE x 0 3\r\nabc\r\nEND\r\n"),
		"all-bytes":   all,
		"empty":       {},
		"invalid-utf": {0xff, 0xfe, 0xc3, 0x28},
		"big":         big,
	}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			k := p + name
			if err := c.Set(ctx, k, want); err != nil {
				t.Fatal(err)
			}
			got, found, err := c.Get(ctx, k)
			if err != nil || !found {
				t.Fatalf("Get = found %v, err %v", found, err)
			}
			if got == nil || !bytes.Equal(got, want) {
				t.Fatalf("value changed in round trip: got %d bytes %q..., want %d bytes", len(got), trunc(got), len(want))
			}
		})
	}
	// The same values through the batch and stream paths.
	items := map[string][]byte{}
	for name, v := range cases {
		items[p+"batch:"+name] = v
	}
	if n, err := c.BatchSet(ctx, items); err != nil || n != len(items) {
		t.Fatalf("BatchSet = %d, %v", n, err)
	}
	got, err := c.BatchGet(ctx, slices.Collect(maps.Keys(items)))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range items {
		if !bytes.Equal(got[k], want) || got[k] == nil {
			t.Errorf("BatchGet %s: got %q, want %q", k, trunc(got[k]), trunc(want))
		}
	}
	for r, err := range c.GetStream(ctx, maps.Keys(items)) {
		if err != nil {
			t.Fatal(err)
		}
		if !r.Found || !bytes.Equal(r.Value, items[r.Key]) {
			t.Errorf("GetStream %s: found %v, value %q", r.Key, r.Found, trunc(r.Value))
		}
	}
}

func trunc(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}

func TestTTLExpires(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	one, two, forever, long := p+"ttl1", p+"ttl2", p+"forever", p+"long"
	start := time.Now()
	if err := c.Set(ctx, one, []byte("x"), memgate.WithTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, two, []byte("x"), memgate.WithTTL(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, forever, []byte("x"), memgate.WithTTL(0)); err != nil {
		t.Fatal(err)
	}
	// Over memcached's 30-day relative-TTL limit: the server must convert it.
	if err := c.Set(ctx, long, []byte("x"), memgate.WithTTL(60*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	// memcached's clock ticks in whole seconds and an item expires once the
	// tick reaches its expiry, so a TTL of n seconds lasts between n-1 and n
	// seconds: a 1s item may already be gone, a 2s item may not.
	if _, found, err := c.Get(ctx, two); err != nil || !found {
		t.Fatalf("Get right after Set with TTL 2s: found %v, err %v", found, err)
	}
	if _, found, err := c.Get(ctx, one); err != nil {
		t.Fatal(err)
	} else if !found {
		t.Logf("TTL 1s item already gone %v after Set (memcached's whole-second clock ticked)", time.Since(start))
	}
	// Poll rather than sleep for a fixed time.
	for _, k := range []string{one, two} {
		deadline := start.Add(6 * time.Second)
		for {
			_, found, err := c.Get(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			if !found {
				t.Logf("%s expired after %v", strings.TrimPrefix(k, p), time.Since(start).Round(time.Millisecond))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still present after %v", k, time.Since(start))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, k := range []string{forever, long} {
		if _, found, err := c.Get(ctx, k); err != nil || !found {
			t.Errorf("%s gone after the short TTLs passed: found %v, err %v", k, found, err)
		}
	}
}

// TestTTLPast2038 sets TTLs that end after 2038-01-19 03:14:07 UTC (unix
// time 2^31-1), the end of memcached's 32-bit expiry time: the server caps
// them there, so the items are readable right after, whichever call set
// them.
func TestTTLPast2038(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	maxTTL := memgate.WithTTL(time.Duration(1<<32-1) * time.Second)
	for _, secs := range []int64{20 * 365 * 24 * 3600, 1<<32 - 1} {
		k := fmt.Sprintf("%s%d", p, secs)
		if err := c.Set(ctx, k, []byte("x"), memgate.WithTTL(time.Duration(secs)*time.Second)); err != nil {
			t.Fatalf("Set with TTL %ds: %v", secs, err)
		}
		if _, found, err := c.Get(ctx, k); err != nil || !found {
			t.Errorf("Get right after Set with TTL %ds: found %v, err %v", secs, found, err)
		}
	}
	if _, err := c.BatchSet(ctx, map[string][]byte{p + "batch": []byte("x")}, maxTTL); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetStream(ctx, maps.All(map[string][]byte{p + "stream": []byte("x")}), maxTTL); err != nil {
		t.Fatal(err)
	}
	got, err := c.BatchGet(ctx, []string{p + "batch", p + "stream"})
	if err != nil || len(got) != 2 {
		t.Fatalf("BatchGet of items set with the largest TTL = %v, %v; want both", got, err)
	}
}

func TestTTLOptionValidation(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	wantCode(t, c.Set(ctx, p+"neg", []byte("x"), memgate.WithTTL(-time.Second)), codes.InvalidArgument)
	_, err := c.BatchSet(ctx, map[string][]byte{p + "neg": []byte("x")}, memgate.WithTTL(-1))
	wantCode(t, err, codes.InvalidArgument)
	// A sub-second TTL is rounded up to 1s, not down to 0 ("never").
	if err := c.Set(ctx, p+"sub", []byte("x"), memgate.WithTTL(time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, found, err := c.Get(ctx, p+"sub")
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("key with TTL 1ms (rounded up to 1s) did not expire")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestInvalidKeys(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	bad := map[string]string{
		"empty":    "",
		"space":    p + "a b",
		"newline":  p + "a\nb",
		"cr":       p + "a\rb",
		"nul":      p + "a\x00b",
		"tab":      p + "a\tb",
		"del":      p + "a\x7fb",
		"too-long": p + strings.Repeat("k", 251),
	}
	for name, k := range bad {
		t.Run(name, func(t *testing.T) {
			wantCode(t, c.Set(ctx, k, []byte("x")), codes.InvalidArgument)
			_, _, err := c.Get(ctx, k)
			wantCode(t, err, codes.InvalidArgument)
			_, err = c.Delete(ctx, k)
			wantCode(t, err, codes.InvalidArgument)
			_, err = c.BatchGet(ctx, []string{p + "ok", k})
			wantCode(t, err, codes.InvalidArgument)
			_, err = c.BatchDelete(ctx, []string{p + "ok", k})
			wantCode(t, err, codes.InvalidArgument)
		})
	}
	// 250 bytes is the limit and is fine.
	max := p + strings.Repeat("k", 250-len(p))
	if err := c.Set(ctx, max, []byte("x")); err != nil {
		t.Fatalf("Set of a 250-byte key: %v", err)
	}
	// Non-ASCII UTF-8 is allowed.
	if err := c.Set(ctx, p+"clé-日本", []byte("x")); err != nil {
		t.Fatalf("Set of a UTF-8 key: %v", err)
	}
	// An invalid item fails the whole BatchSet before anything is written.
	good := p + "batch-good"
	_, err := c.BatchSet(ctx, map[string][]byte{good: []byte("x"), p + "bad key": []byte("y")})
	wantCode(t, err, codes.InvalidArgument)
	if _, found, err := c.Get(ctx, good); err != nil || found {
		t.Fatalf("valid item of a rejected BatchSet: found %v, err %v; want not written", found, err)
	}
	// errors.As finds the status too.
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(c.Set(ctx, "", nil), &se) {
		t.Fatal("error does not carry a gRPC status")
	}
}

func TestValueTooLarge(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	// The server's default --max-value-bytes is 1 MiB.
	err := c.Set(ctx, p+"huge", make([]byte, 2<<20))
	wantCode(t, err, codes.InvalidArgument)
	if _, found, _ := c.Get(ctx, p+"huge"); found {
		t.Fatal("oversized value was stored")
	}
}

func TestList(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	var want []string
	for i := 0; i < 25; i++ {
		k := fmt.Sprintf("%sk%02d", p, i)
		want = append(want, k)
		if err := c.Set(ctx, k, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// A sibling prefix must not match.
	if err := c.Set(ctx, strings.TrimSuffix(p, ":")+"x:other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	got, err := c.List(ctx, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("List(%q, 0) = %v, want %v", p, got, want)
	}
	got, err = c.List(ctx, p, 7)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want[:7]) {
		t.Fatalf("List(%q, 7) = %v, want %v", p, got, want[:7])
	}
	got, err = c.List(ctx, p+"nothing-here", 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("List of an unused prefix = %v, %v", got, err)
	}
	// Deleted keys disappear from the listing.
	if _, err := c.BatchDelete(ctx, want[:5]); err != nil {
		t.Fatal(err)
	}
	got, err = c.List(ctx, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want[5:]) {
		t.Fatalf("List after deleting 5 = %v, want %v", got, want[5:])
	}
	_, err = c.List(ctx, p, -1)
	wantCode(t, err, codes.InvalidArgument)
}

func TestBatch(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	items := map[string][]byte{}
	for i := 0; i < 50; i++ {
		items[fmt.Sprintf("%s%d", p, i)] = []byte(fmt.Sprintf("value-%d", i))
	}
	stored, err := c.BatchSet(ctx, items, memgate.WithTTL(time.Hour))
	if err != nil || stored != len(items) {
		t.Fatalf("BatchSet = %d, %v; want %d, nil", stored, err, len(items))
	}
	keys := append(slices.Sorted(maps.Keys(items)), p+"missing-1", p+"0", p+"missing-2")
	got, err := c.BatchGet(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(got, items, bytes.Equal) {
		t.Fatalf("BatchGet returned %d keys, want exactly the %d stored ones", len(got), len(items))
	}
	deleteKeys := []string{p + "0", p + "1", p + "2", p + "missing-1"}
	n, err := c.BatchDelete(ctx, deleteKeys)
	if err != nil || n != 3 {
		t.Fatalf("BatchDelete = %d, %v; want 3, nil (a missing key is not counted)", n, err)
	}
	got, err = c.BatchGet(ctx, deleteKeys)
	if err != nil || len(got) != 0 {
		t.Fatalf("BatchGet of deleted keys = %v, %v", got, err)
	}
	// Empty batches are no-ops.
	if m, err := c.BatchGet(ctx, nil); err != nil || len(m) != 0 {
		t.Fatalf("empty BatchGet = %v, %v", m, err)
	}
	if n, err := c.BatchSet(ctx, nil); err != nil || n != 0 {
		t.Fatalf("empty BatchSet = %d, %v", n, err)
	}
	if n, err := c.BatchDelete(ctx, nil); err != nil || n != 0 {
		t.Fatalf("empty BatchDelete = %d, %v", n, err)
	}
}

func TestBatchTooManyKeys(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	// The server's default --max-batch-keys is 1000.
	keys := make([]string, 1001)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s%d", p, i)
	}
	_, err := c.BatchGet(ctx, keys)
	wantCode(t, err, codes.InvalidArgument)
}

func TestStreams(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	const n = 2500 // more than one server chunk and than --max-batch-keys
	key := func(i int) string { return fmt.Sprintf("%s%05d", p, i) }
	val := func(i int) []byte { return []byte(fmt.Sprintf("v\x00%d\r\n", i)) }

	stored, err := c.SetStream(ctx, func(yield func(string, []byte) bool) {
		for i := 0; i < n; i++ {
			if !yield(key(i), val(i)) {
				return
			}
		}
	}, memgate.WithTTL(time.Hour))
	if err != nil || stored != n {
		t.Fatalf("SetStream = %d, %v; want %d, nil", stored, err, n)
	}

	// Read them back with a few misses mixed in; results come in request order.
	var req []string
	for i := 0; i < n; i++ {
		req = append(req, key(i))
		if i%500 == 0 {
			req = append(req, p+"miss")
		}
	}
	i := 0
	for r, err := range c.GetStream(ctx, slices.Values(req)) {
		if err != nil {
			t.Fatalf("GetStream after %d results: %v", i, err)
		}
		if r.Key != req[i] {
			t.Fatalf("result %d is for %q, want %q (order)", i, r.Key, req[i])
		}
		if r.Err != nil {
			t.Fatalf("result %d: %v", i, r.Err)
		}
		if r.Key == p+"miss" {
			if r.Found || r.Value != nil {
				t.Fatalf("miss reported as found: %+v", r)
			}
		} else {
			var idx int
			fmt.Sscanf(strings.TrimPrefix(r.Key, p), "%d", &idx)
			if !r.Found || !bytes.Equal(r.Value, val(idx)) {
				t.Fatalf("result %d: found %v value %q, want %q", i, r.Found, r.Value, val(idx))
			}
		}
		i++
	}
	if i != len(req) {
		t.Fatalf("GetStream yielded %d results, want %d", i, len(req))
	}

	// Keys from a channel.
	ch := make(chan string)
	go func() {
		defer close(ch)
		for i := 0; i < 10; i++ {
			ch <- key(i)
		}
	}()
	got := 0
	for r, err := range c.GetStream(ctx, func(yield func(string) bool) {
		for k := range ch {
			if !yield(k) {
				return
			}
		}
	}) {
		if err != nil || !r.Found {
			t.Fatalf("GetStream from channel: %+v, %v", r, err)
		}
		got++
	}
	if got != 10 {
		t.Fatalf("GetStream from channel yielded %d, want 10", got)
	}

	// Delete half of them, plus some that do not exist.
	deleted, err := c.DeleteStream(ctx, func(yield func(string) bool) {
		for i := 0; i < n; i += 2 {
			if !yield(key(i)) {
				return
			}
		}
		yield(p + "miss")
	})
	if err != nil || deleted != n/2 {
		t.Fatalf("DeleteStream = %d, %v; want %d, nil", deleted, err, n/2)
	}
	// Read every key back rather than List them: List (memcached's
	// lru_crawler metadump) can miss items that other writers make move
	// in the LRU while it runs.
	left := 0
	for r, err := range c.GetStream(ctx, func(yield func(string) bool) {
		for i := 0; i < n; i++ {
			if !yield(key(i)) {
				return
			}
		}
	}) {
		if err != nil {
			t.Fatal(err)
		}
		var idx int
		fmt.Sscanf(strings.TrimPrefix(r.Key, p), "%d", &idx)
		if r.Found != (idx%2 == 1) {
			t.Fatalf("after DeleteStream of the even keys, %s found = %v", r.Key, r.Found)
		}
		if r.Found {
			left++
		}
	}
	if left != n/2 {
		t.Fatalf("after DeleteStream %d keys left, want %d", left, n/2)
	}

	// Empty streams.
	if n, err := c.SetStream(ctx, maps.All(map[string][]byte{})); err != nil || n != 0 {
		t.Fatalf("empty SetStream = %d, %v", n, err)
	}
	if n, err := c.DeleteStream(ctx, slices.Values([]string(nil))); err != nil || n != 0 {
		t.Fatalf("empty DeleteStream = %d, %v", n, err)
	}
	for r, err := range c.GetStream(ctx, slices.Values([]string(nil))) {
		t.Fatalf("empty GetStream yielded %+v, %v", r, err)
	}
}

func TestStreamInvalidItems(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	// SetStream: invalid items are reported and the stream goes on.
	stored, err := c.SetStream(ctx, maps.All(map[string][]byte{
		p + "ok1":   []byte("a"),
		p + "bad 1": []byte("b"),
		p + "ok2":   []byte("c"),
	}))
	var be *memgate.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("SetStream with an invalid key: err = %v, want a *BatchError", err)
	}
	if stored != 2 || len(be.Errors) != 1 || be.Errors[0].Key != p+"bad 1" || be.Errors[0].Message == "" {
		t.Fatalf("SetStream = %d, %+v; want 2 stored and one error for %q", stored, be.Errors, p+"bad 1")
	}
	if be.Errors[0].Code != codes.InvalidArgument || status.Code(be.Errors[0]) != codes.InvalidArgument {
		t.Fatalf("SetStream: invalid key has code %v, want InvalidArgument", be.Errors[0].Code)
	}
	if status.Code(be) != codes.Unknown {
		t.Fatalf("status.Code(*BatchError) = %v, want Unknown (the call partly succeeded)", status.Code(be))
	}
	if _, found, _ := c.Get(ctx, p+"ok2"); !found {
		t.Fatal("valid item after an invalid one was not stored")
	}
	deleted, err := c.DeleteStream(ctx, slices.Values([]string{p + "ok1", p + "bad 2", p + "ok2"}))
	if !errors.As(err, &be) || deleted != 2 || len(be.Errors) != 1 || be.Errors[0].Key != p+"bad 2" || be.Errors[0].Code != codes.InvalidArgument {
		t.Fatalf("DeleteStream with an invalid key = %d, %v; want 2 and a *BatchError for %q (InvalidArgument)", deleted, err, p+"bad 2")
	}
	// GetStream: an invalid key is reported for that key, or fails the stream
	// with INVALID_ARGUMENT; either way it is never reported as a miss.
	var sawBad bool
	for r, err := range c.GetStream(ctx, slices.Values([]string{p + "ok1", p + "bad 3"})) {
		if err != nil {
			wantCode(t, err, codes.InvalidArgument)
			sawBad = true
			break
		}
		if r.Key == p+"bad 3" {
			if r.Err == nil {
				t.Fatalf("invalid key in GetStream reported as %+v", r)
			}
			wantCode(t, r.Err, codes.InvalidArgument)
			sawBad = true
		} else if status.Code(r.Err) != codes.OK {
			t.Fatalf("GetStream: %q has error %v", r.Key, r.Err)
		}
	}
	if !sawBad {
		t.Fatal("GetStream said nothing about an invalid key")
	}
}

func TestStreamEarlyBreak(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	if err := c.Set(ctx, p+"k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	// An endless key sequence: breaking out must cancel the stream and stop
	// the producer.
	var mu sync.Mutex
	produced := 0
	endless := func(yield func(string) bool) {
		for {
			mu.Lock()
			produced++
			mu.Unlock()
			if !yield(p + "k") {
				return
			}
		}
	}
	got := 0
	for r, err := range c.GetStream(ctx, endless) {
		if err != nil {
			t.Fatal(err)
		}
		if !r.Found {
			t.Fatalf("%+v", r)
		}
		got++
		if got == 100 {
			break
		}
	}
	// The producer stops once the cancelled stream refuses more sends.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		a := produced
		mu.Unlock()
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		b := produced
		mu.Unlock()
		if a == b {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("key producer still running 5s after the loop broke")
		}
	}
	// The client still works.
	if _, found, err := c.Get(ctx, p+"k"); err != nil || !found {
		t.Fatalf("Get after an abandoned stream: %v %v", found, err)
	}
}

func TestContextDeadline(t *testing.T) {
	c, p := dial(t), prefix(t)

	// An expired context fails at once with DEADLINE_EXCEEDED.
	ctx, cancel := context.WithTimeout(context.Background(), -time.Second)
	defer cancel()
	_, _, err := c.Get(ctx, p+"k")
	wantCode(t, err, codes.DeadlineExceeded)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("errors.Is(err, context.DeadlineExceeded) = false for %v", err)
	}

	// A cancelled context: CANCELED.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	wantCode(t, c.Set(ctx, p+"k", []byte("v")), codes.Canceled)

	// A deadline that passes while a stream waits: the call ends on time.
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	release := make(chan struct{})
	defer close(release)
	blocked := func(yield func(string) bool) {
		if !yield(p + "k") {
			return
		}
		<-release // send no more keys until the test is over
	}
	var streamErr error
	for _, err := range c.GetStream(ctx, blocked) {
		if err != nil {
			streamErr = err
		}
	}
	wantCode(t, streamErr, codes.DeadlineExceeded)
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("stream with a 300ms deadline ended after %v", el)
	}
	_, err = c.SetStream(ctx, func(yield func(string, []byte) bool) {}) // ctx already past
	wantCode(t, err, codes.DeadlineExceeded)

	// The client's default timeout applies when the context has none...
	short := dial(t, memgate.WithTimeout(time.Nanosecond))
	_, _, err = short.Get(context.Background(), p+"k")
	wantCode(t, err, codes.DeadlineExceeded)
	// ...but a context deadline takes precedence over it.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := short.Get(ctx, p+"k"); err != nil {
		t.Fatalf("Get with its own deadline on a client with a 1ns default timeout: %v", err)
	}
}

func TestHealth(t *testing.T) {
	c, ctx := dial(t), ctxT(t)
	// with-stack.sh starts the tests once the server reports SERVING.
	for _, svc := range []string{"", memgate.ServiceName} {
		if st, err := c.Health(ctx, svc); err != nil || st != "SERVING" {
			t.Fatalf("Health(%q) = %s, %v; want SERVING", svc, st, err)
		}
	}
	_, err := c.Health(ctx, "no.such.Service")
	wantCode(t, err, codes.NotFound)
}

func TestDialUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err = memgate.Dial(ctx, addr)
	wantCode(t, err, codes.Unavailable)
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("Dial of a closed port took %v", el)
	}
	// Lazily, Dial succeeds and the first call fails.
	c, err := memgate.Dial(ctx, addr, memgate.WithLazyConnect())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _, err = c.Get(ctx, "k")
	wantCode(t, err, codes.Unavailable)

	// Dial respects its context.
	expired, cancel2 := context.WithTimeout(context.Background(), -time.Second)
	defer cancel2()
	_, err = memgate.Dial(expired, target(t))
	wantCode(t, err, codes.DeadlineExceeded)
}

func TestConcurrentUse(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				k := fmt.Sprintf("%s%d:%d", p, g, i)
				v := []byte(k)
				if err := c.Set(ctx, k, v); err != nil {
					errs <- err
					return
				}
				got, found, err := c.Get(ctx, k)
				if err != nil || !found || !bytes.Equal(got, v) {
					errs <- fmt.Errorf("Get %s = %q %v %v", k, got, found, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	keys, err := c.List(ctx, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 16*50 || !sort.StringsAreSorted(keys) {
		t.Fatalf("List after concurrent writes: %d keys (sorted %v), want 800", len(keys), sort.StringsAreSorted(keys))
	}
}

func TestErrorDetails(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	_, _, err := c.Get(ctx, p+"a b")
	wantCode(t, err, codes.InvalidArgument)
	if got := memgate.Reason(err); got != "KEY_INVALID" {
		t.Fatalf("Reason(err) = %q, want KEY_INVALID (err: %v)", got, err)
	}
	_, err = c.BatchGet(ctx, []string{p + "ok", p + "ok2", ""})
	d, ok := memgate.Details(err)
	if !ok {
		t.Fatalf("no details on %v", err)
	}
	if d.Reason != "KEY_INVALID" || d.Metadata["field"] != "keys[2]" {
		t.Fatalf("details = %+v, want KEY_INVALID at keys[2]", d)
	}
	if len(d.FieldViolations) != 1 || d.FieldViolations[0].Field != "keys[2]" ||
		!strings.Contains(d.FieldViolations[0].Description, "empty") {
		t.Fatalf("field violations = %+v", d.FieldViolations)
	}
	if d.HasRetryDelay {
		t.Fatalf("an invalid key got a retry delay: %+v", d)
	}
	// The client's own errors carry no server details.
	if _, ok := memgate.Details(c.Set(ctx, p+"neg", nil, memgate.WithTTL(-time.Second))); ok {
		t.Fatal("details on a client-side error")
	}
}
