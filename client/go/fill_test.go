package memgate_test

// GetOrFill against the live stack of scripts/with-stack.sh.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	memgate "github.com/memgate/memgate/client/go"
)

// counted returns a fill that counts its calls and returns value.
func counted(calls *atomic.Int32, value string) func(context.Context) ([]byte, error) {
	return func(context.Context) ([]byte, error) {
		calls.Add(1)
		return []byte(value), nil
	}
}

func mustNotFill(t *testing.T) func(context.Context) ([]byte, error) {
	return func(context.Context) ([]byte, error) {
		t.Error("fill was called")
		return []byte("unexpected fill"), nil
	}
}

func TestGetOrFillMissAndHit(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"
	var calls atomic.Int32

	v, err := c.GetOrFill(ctx, k, counted(&calls, "computed"), time.Minute)
	if err != nil || string(v) != "computed" || calls.Load() != 1 {
		t.Fatalf("GetOrFill of a missing key = %q, %v with %d fills; want computed, nil, 1 fill", v, err, calls.Load())
	}
	// Stored with the TTL, lease gone.
	it, err := c.GetItem(ctx, k)
	if err != nil || !it.Found || string(it.Value) != "computed" || !it.HasTTL || it.TTL > time.Minute || it.TTL < 55*time.Second {
		t.Fatalf("GetItem after GetOrFill = %+v, %v; want computed with TTL about 1m", it, err)
	}
	// A hit does not fill.
	v, err = c.GetOrFill(ctx, k, mustNotFill(t), time.Minute)
	if err != nil || string(v) != "computed" {
		t.Fatalf("GetOrFill of a present key = %q, %v; want computed, nil", v, err)
	}
}

// getWatcher reports the Get calls a client made, by the caller id put in
// their context with withCaller: a test can wait until a caller has been
// answered instead of sleeping.
type getWatcher struct{ done chan int }

type callerKey struct{}

func withCaller(ctx context.Context, id int) context.Context {
	return context.WithValue(ctx, callerKey{}, id)
}

// dialWatched dials a client whose completed Get calls w reports.
func dialWatched(t *testing.T) (*memgate.Client, *getWatcher) {
	w := &getWatcher{done: make(chan int, 100000)}
	c := dial(t, memgate.WithDialOptions(grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if id, ok := ctx.Value(callerKey{}).(int); ok && method == "/memgate.v1.Cache/Get" {
				select {
				case w.done <- id:
				default:
				}
			}
			return err
		})))
	return c, w
}

// waitAll waits until each of the callers 0..n-1 has had a Get answered.
func (w *getWatcher) waitAll(ctx context.Context, n int) error {
	seen := make(map[int]bool, n)
	for len(seen) < n {
		select {
		case id := <-w.done:
			if id < n {
				seen[id] = true
			}
		case <-ctx.Done():
			return fmt.Errorf("only %d of %d callers had a Get answered: %w", len(seen), n, ctx.Err())
		}
	}
	return nil
}

func TestGetOrFillConcurrentCallersFillOnce(t *testing.T) {
	c, w := dialWatched(t)
	ctx, p := ctxT(t), prefix(t)
	k := p + "k"
	const n = 50
	var calls atomic.Int32
	start := make(chan struct{})
	// The fill returns only once every caller's first Get was answered:
	// each of the others then found the lease held (the value is not
	// stored before fill returns), none found the value.
	fill := func(context.Context) ([]byte, error) {
		calls.Add(1)
		if err := w.waitAll(ctx, n); err != nil {
			return nil, err
		}
		return []byte("the value"), nil
	}
	vals := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			vals[i], errs[i] = c.GetOrFill(withCaller(ctx, i), k, fill, time.Minute)
		}()
	}
	close(start)
	wg.Wait()
	if got := calls.Load(); got != 1 {
		t.Fatalf("%d concurrent GetOrFill called fill %d times, want 1", n, got)
	}
	for i := range n {
		if errs[i] != nil || string(vals[i]) != "the value" {
			t.Fatalf("GetOrFill #%d = %q, %v; want \"the value\", nil", i, vals[i], errs[i])
		}
	}
}

func TestGetOrFillStaleServedToNonWinners(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"
	if err := c.Set(ctx, k, []byte("old"), memgate.WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Invalidate(ctx, k); err != nil {
		t.Fatal(err)
	}
	// Another caller is refreshing: it holds the lease.
	if it, err := c.GetItem(ctx, k, memgate.WithLeaseTTL(30*time.Second)); err != nil || it.Lease != memgate.LeaseWon || !it.Stale {
		t.Fatalf("GetItem with a lease after Invalidate = %+v, %v; want stale, LeaseWon", it, err)
	}
	// Non-winners get the stale value at once: no fill, no waiting for
	// the (long) wait.
	begin := time.Now()
	for range 5 {
		v, err := c.GetOrFill(ctx, k, mustNotFill(t), time.Minute, memgate.WithFillWait(10*time.Second))
		if err != nil || string(v) != "old" {
			t.Fatalf("GetOrFill of a stale key held by another = %q, %v; want old, nil", v, err)
		}
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("5 GetOrFill of a stale key took %v: the stale value was not served at once", d)
	}
}

func TestGetOrFillRefreshesStale(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"
	if err := c.Set(ctx, k, []byte("old")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Invalidate(ctx, k); err != nil {
		t.Fatal(err)
	}
	// The first GetOrFill wins the stale item's lease and refreshes it.
	var calls atomic.Int32
	v, err := c.GetOrFill(ctx, k, counted(&calls, "new"), time.Minute)
	if err != nil || string(v) != "new" || calls.Load() != 1 {
		t.Fatalf("GetOrFill of a stale key = %q, %v with %d fills; want new, nil, 1 fill", v, err, calls.Load())
	}
	it, err := c.GetItem(ctx, k)
	if err != nil || !it.Found || it.Stale || string(it.Value) != "new" {
		t.Fatalf("GetItem after the refresh = %+v, %v; want new, fresh", it, err)
	}
}

func TestGetOrFillFailureReleasesLease(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"
	boom := errors.New("boom")
	// A long lease: without the release the next caller would be held
	// for 60 s.
	lease := memgate.WithFillLeaseTTL(60 * time.Second)
	_, err := c.GetOrFill(ctx, k, func(context.Context) ([]byte, error) { return nil, boom }, time.Minute, lease)
	if !errors.Is(err, boom) {
		t.Fatalf("GetOrFill with a failing fill = %v, want fill's error", err)
	}
	wantMissing(t, c, k)
	// The lease was released: the next caller wins it at once.
	it, err := c.GetItem(ctx, k, memgate.WithLeaseTTL(60*time.Second))
	if err != nil || it.Found || it.Lease != memgate.LeaseWon {
		t.Fatalf("GetItem with a lease after a failed fill = %+v, %v; want not found, LeaseWon", it, err)
	}
	if _, err := c.Delete(ctx, k); err != nil { // give that lease back too
		t.Fatal(err)
	}
	var calls atomic.Int32
	begin := time.Now()
	v, err := c.GetOrFill(ctx, k, counted(&calls, "second try"), time.Minute, lease, memgate.WithFillWait(30*time.Second))
	if err != nil || string(v) != "second try" || calls.Load() != 1 {
		t.Fatalf("GetOrFill after a failed fill = %q, %v with %d fills; want \"second try\", nil, 1 fill", v, err, calls.Load())
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("GetOrFill after a failed fill took %v: it waited for a lease", d)
	}
}

func TestGetOrFillWaitsThenFills(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"
	// Another caller holds the lease and never fills.
	if it, err := c.GetItem(ctx, k, memgate.WithLeaseTTL(60*time.Second)); err != nil || it.Lease != memgate.LeaseWon {
		t.Fatalf("GetItem with a lease = %+v, %v; want LeaseWon", it, err)
	}
	const wait = 400 * time.Millisecond
	var calls atomic.Int32
	begin := time.Now()
	v, err := c.GetOrFill(ctx, k, counted(&calls, "fallback"), time.Minute, memgate.WithFillWait(wait))
	took := time.Since(begin)
	if err != nil || string(v) != "fallback" || calls.Load() != 1 {
		t.Fatalf("GetOrFill with the lease held = %q, %v with %d fills; want fallback, nil, 1 fill", v, err, calls.Load())
	}
	if took < wait {
		t.Fatalf("GetOrFill filled after %v, before its wait of %v", took, wait)
	}
	wantValue(t, c, k, "fallback")
}

func TestGetOrFillPicksUpAnotherCallersFill(t *testing.T) {
	c, w := dialWatched(t)
	ctx, p := ctxT(t), prefix(t)
	k := p + "k"
	// This test is the other caller: it holds the lease ...
	if it, err := c.GetItem(ctx, k, memgate.WithLeaseTTL(60*time.Second)); err != nil || it.Lease != memgate.LeaseWon {
		t.Fatalf("GetItem with a lease = %+v, %v; want LeaseWon", it, err)
	}
	type result struct {
		v   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := c.GetOrFill(withCaller(ctx, 0), k, mustNotFill(t), time.Minute, memgate.WithFillWait(15*time.Second))
		done <- result{v, err}
	}()
	// ... and fills once the waiter found it held.
	if err := w.waitAll(ctx, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		t.Fatalf("GetOrFill returned %q, %v while the lease was held", r.v, r.err)
	default:
	}
	if err := c.Set(ctx, k, []byte("from the winner")); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || string(r.v) != "from the winner" {
		t.Fatalf("waiting GetOrFill = %q, %v; want the winner's value", r.v, r.err)
	}
}

func TestGetOrFillContextEndsWhileWaiting(t *testing.T) {
	c, p := dial(t), prefix(t)
	k := p + "k"
	if it, err := c.GetItem(ctxT(t), k, memgate.WithLeaseTTL(60*time.Second)); err != nil || it.Lease != memgate.LeaseWon {
		t.Fatalf("GetItem with a lease = %+v, %v; want LeaseWon", it, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.GetOrFill(ctx, k, mustNotFill(t), time.Minute, memgate.WithFillWait(30*time.Second))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GetOrFill with a deadline while the lease is held = %v, want context.DeadlineExceeded", err)
	}
	wantCode(t, err, codes.DeadlineExceeded)
}

func TestGetOrFillValidation(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"
	_, err := c.GetOrFill(ctx, k, nil, time.Minute)
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.GetOrFill(ctx, k, mustNotFill(t), -time.Second)
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.GetOrFill(ctx, k, mustNotFill(t), time.Minute, memgate.WithFillLeaseTTL(0))
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.GetOrFill(ctx, k, mustNotFill(t), time.Minute, memgate.WithFillWait(-time.Second))
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.GetOrFill(ctx, "bad key", mustNotFill(t), time.Minute)
	wantReason(t, err, codes.InvalidArgument, "KEY_INVALID")
}
