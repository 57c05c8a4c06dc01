package memgate_test

// GetItem (CAS, remaining TTL, get-and-touch, leases), the conditional
// writes (SetIf, Add, Replace, CompareAndSwap, BatchSetItems) and
// Invalidate, against the live stack of scripts/with-stack.sh.

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	memgate "github.com/memgate/memgate/client/go"
)

// wantValue checks that key holds want (Get, not GetItem).
func wantValue(t testing.TB, c *memgate.Client, key, want string) {
	t.Helper()
	v, found, err := c.Get(ctxT(t), key)
	if err != nil || !found || string(v) != want {
		t.Fatalf("Get(%q) = %q, %v, %v; want %q, true, nil", key, v, found, err, want)
	}
}

func wantMissing(t testing.TB, c *memgate.Client, key string) {
	t.Helper()
	v, found, err := c.Get(ctxT(t), key)
	if err != nil || found {
		t.Fatalf("Get(%q) = %q, %v, %v; want a miss", key, v, found, err)
	}
}

func TestAdd(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"

	// Absent: stored, with a CAS token that GetItem reads back.
	stored, cas, err := c.Add(ctx, k, []byte("first"))
	if err != nil || !stored || cas == 0 {
		t.Fatalf("Add of a missing key = %v, %d, %v; want true, a CAS, nil", stored, cas, err)
	}
	it, err := c.GetItem(ctx, k)
	if err != nil || !it.Found || string(it.Value) != "first" || it.CAS != cas {
		t.Fatalf("GetItem after Add = %+v, %v; want value first, CAS %d", it, err, cas)
	}

	// Present: refused, not an error, nothing written.
	stored, cas, err = c.Add(ctx, k, []byte("second"))
	if err != nil || stored || cas != 0 {
		t.Fatalf("Add of an existing key = %v, %d, %v; want false, 0, nil", stored, cas, err)
	}
	wantValue(t, c, k, "first")
}

func TestAddRaceHasOneWinner(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "lock"
	const n = 20
	var wg sync.WaitGroup
	stored := make([]bool, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			stored[i], _, errs[i] = c.Add(ctx, k, []byte(fmt.Sprint(i)))
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Add #%d: %v", i, errs[i])
		}
		if stored[i] {
			if winner >= 0 {
				t.Fatalf("Add stored for #%d and #%d; want exactly one", winner, i)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatal("no Add stored")
	}
	wantValue(t, c, k, fmt.Sprint(winner))
}

func TestReplace(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"

	// Missing: refused, and not created.
	stored, cas, err := c.Replace(ctx, k, []byte("v"))
	if err != nil || stored || cas != 0 {
		t.Fatalf("Replace of a missing key = %v, %d, %v; want false, 0, nil", stored, cas, err)
	}
	wantMissing(t, c, k)

	// Present: stored, with the TTL given.
	if err := c.Set(ctx, k, []byte("old"), memgate.WithTTL(0)); err != nil {
		t.Fatal(err)
	}
	stored, cas, err = c.Replace(ctx, k, []byte("new"), memgate.WithTTL(time.Hour))
	if err != nil || !stored || cas == 0 {
		t.Fatalf("Replace of an existing key = %v, %d, %v; want true, a CAS, nil", stored, cas, err)
	}
	it, err := c.GetItem(ctx, k)
	if err != nil || string(it.Value) != "new" || it.CAS != cas || !it.HasTTL || it.TTL > time.Hour || it.TTL < time.Hour-5*time.Second {
		t.Fatalf("GetItem after Replace = %+v, %v; want new, CAS %d, TTL about 1h", it, err, cas)
	}
}

func TestCompareAndSwap(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"

	// A missing key never matches.
	stored, cas, err := c.CompareAndSwap(ctx, k, []byte("v"), 12345)
	if err != nil || stored || cas != 0 {
		t.Fatalf("CompareAndSwap of a missing key = %v, %d, %v; want false, 0, nil", stored, cas, err)
	}
	wantMissing(t, c, k)

	stored, cas1, err := c.SetIf(ctx, k, []byte("v1"), memgate.Always())
	if err != nil || !stored || cas1 == 0 {
		t.Fatalf("SetIf(Always) = %v, %d, %v; want true, a CAS, nil", stored, cas1, err)
	}
	it, err := c.GetItem(ctx, k)
	if err != nil || it.CAS != cas1 {
		t.Fatalf("GetItem = %+v, %v; want CAS %d", it, err, cas1)
	}

	// The right token: stored, and the token changes.
	stored, cas2, err := c.CompareAndSwap(ctx, k, []byte("v2"), it.CAS)
	if err != nil || !stored || cas2 == 0 || cas2 == cas1 {
		t.Fatalf("CompareAndSwap with the current token = %v, %d, %v; want true, a new CAS (old %d), nil", stored, cas2, err, cas1)
	}
	wantValue(t, c, k, "v2")

	// The old token no longer matches.
	stored, cas, err = c.CompareAndSwap(ctx, k, []byte("v3"), cas1)
	if err != nil || stored || cas != 0 {
		t.Fatalf("CompareAndSwap with a stale token = %v, %d, %v; want false, 0, nil", stored, cas, err)
	}
	wantValue(t, c, k, "v2")

	// A plain Set changes the token too.
	if err := c.Set(ctx, k, []byte("v4")); err != nil {
		t.Fatal(err)
	}
	if stored, _, err = c.CompareAndSwap(ctx, k, []byte("v5"), cas2); err != nil || stored {
		t.Fatalf("CompareAndSwap after a Set = %v, %v; want false, nil", stored, err)
	}
	wantValue(t, c, k, "v4")
}

func TestCompareAndSwapRaceHasOneWinner(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"
	if err := c.Set(ctx, k, []byte("start")); err != nil {
		t.Fatal(err)
	}
	it, err := c.GetItem(ctx, k)
	if err != nil || !it.Found || it.CAS == 0 {
		t.Fatalf("GetItem = %+v, %v; want a CAS token", it, err)
	}
	const n = 20
	stored := make([]bool, n)
	newCAS := make([]uint64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			stored[i], newCAS[i], errs[i] = c.CompareAndSwap(ctx, k, []byte(fmt.Sprint("writer", i)), it.CAS)
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("CompareAndSwap #%d: %v", i, errs[i])
		}
		if stored[i] {
			if winner >= 0 {
				t.Fatalf("CompareAndSwap stored for #%d and #%d with the same token; want exactly one", winner, i)
			}
			winner = i
		} else if newCAS[i] != 0 {
			t.Fatalf("CompareAndSwap #%d not stored but returned CAS %d; want 0", i, newCAS[i])
		}
	}
	if winner < 0 {
		t.Fatal("no CompareAndSwap stored")
	}
	after, err := c.GetItem(ctx, k)
	if err != nil || string(after.Value) != fmt.Sprint("writer", winner) || after.CAS != newCAS[winner] {
		t.Fatalf("GetItem after the race = %+v, %v; want writer%d with CAS %d", after, err, winner, newCAS[winner])
	}
}

func TestSetIfValidation(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	_, _, err := c.Add(ctx, p+"k", []byte("v"), memgate.WithTTL(-time.Second))
	wantCode(t, err, codes.InvalidArgument)
	_, _, err = c.CompareAndSwap(ctx, "bad key", []byte("v"), 1)
	wantReason(t, err, codes.InvalidArgument, "KEY_INVALID")
	_, err = c.GetItem(ctx, p+"k", memgate.WithTouchTTL(-time.Second))
	wantCode(t, err, codes.InvalidArgument)
	_, err = c.GetItem(ctx, "bad key")
	wantReason(t, err, codes.InvalidArgument, "KEY_INVALID")
	_, err = c.Invalidate(ctx, "bad key")
	wantReason(t, err, codes.InvalidArgument, "KEY_INVALID")
}

func TestGetItemCASAndTTL(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"

	// A miss.
	it, err := c.GetItem(ctx, k)
	if err != nil || it.Found || it.Value != nil || it.CAS != 0 || it.HasTTL || it.Lease != memgate.LeaseNone || it.Stale {
		t.Fatalf("GetItem of a missing key = %+v, %v; want the zero Item", it, err)
	}

	// An item with a TTL: its CAS and the time it has left.
	_, cas, err := c.SetIf(ctx, k, []byte("v"), memgate.Always(), memgate.WithTTL(100*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	it, err = c.GetItem(ctx, k)
	if err != nil || !it.Found || string(it.Value) != "v" || it.CAS != cas || it.Stale || it.Lease != memgate.LeaseNone {
		t.Fatalf("GetItem = %+v, %v; want v, CAS %d, fresh, no lease", it, err, cas)
	}
	if !it.HasTTL || it.TTL > 100*time.Second || it.TTL < 95*time.Second {
		t.Fatalf("GetItem TTL = %v (HasTTL %v); want about 100s", it.TTL, it.HasTTL)
	}

	// An item that never expires has no TTL.
	if err := c.Set(ctx, k, []byte("forever"), memgate.WithTTL(0)); err != nil {
		t.Fatal(err)
	}
	if it, err = c.GetItem(ctx, k); err != nil || !it.Found || it.HasTTL {
		t.Fatalf("GetItem of a never-expiring item = %+v, %v; want HasTTL false", it, err)
	}

	// An empty value is found, non-nil.
	if err := c.Set(ctx, k, nil); err != nil {
		t.Fatal(err)
	}
	if it, err = c.GetItem(ctx, k); err != nil || !it.Found || it.Value == nil || len(it.Value) != 0 {
		t.Fatalf("GetItem of an empty value = %+v, %v; want found, non-nil empty", it, err)
	}
}

func TestGetItemTouch(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"
	if err := c.Set(ctx, k, []byte("v"), memgate.WithTTL(100*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Get-and-touch reports the new TTL ...
	it, err := c.GetItem(ctx, k, memgate.WithTouchTTL(1000*time.Second))
	if err != nil || !it.Found || string(it.Value) != "v" || !it.HasTTL || it.TTL > 1000*time.Second || it.TTL < 995*time.Second {
		t.Fatalf("GetItem with touch 1000s = %+v, %v; want v with TTL about 1000s", it, err)
	}
	// ... and a plain read sees it.
	if it, err = c.GetItem(ctx, k); err != nil || !it.HasTTL || it.TTL > 1000*time.Second || it.TTL < 995*time.Second {
		t.Fatalf("GetItem after the touch = %+v, %v; want TTL about 1000s", it, err)
	}
	// Touching to 0 makes it never expire.
	if it, err = c.GetItem(ctx, k, memgate.WithTouchTTL(0)); err != nil || !it.Found || it.HasTTL {
		t.Fatalf("GetItem with touch 0 = %+v, %v; want found, HasTTL false", it, err)
	}
	if it, err = c.GetItem(ctx, k); err != nil || it.HasTTL {
		t.Fatalf("GetItem after touch 0 = %+v, %v; want HasTTL false", it, err)
	}
	// Touching a missing key does not create it.
	if it, err = c.GetItem(ctx, p+"missing", memgate.WithTouchTTL(time.Minute)); err != nil || it.Found {
		t.Fatalf("GetItem with touch of a missing key = %+v, %v; want a miss", it, err)
	}
	wantMissing(t, c, p+"missing")
}

func TestGetItemLease(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"
	lease := memgate.WithLeaseTTL(30 * time.Second)

	won, err := c.GetItem(ctx, k, lease)
	if err != nil || won.Found || won.Lease != memgate.LeaseWon || won.Value != nil || won.CAS == 0 {
		t.Fatalf("first GetItem with a lease = %+v, %v; want not found, LeaseWon, a CAS", won, err)
	}
	for i := range 3 {
		held, err := c.GetItem(ctx, k, lease)
		if err != nil || held.Found || held.Lease != memgate.LeaseHeld {
			t.Fatalf("GetItem with a lease #%d after the winner = %+v, %v; want not found, LeaseHeld", i+2, held, err)
		}
	}
	// Without the option no lease is reported, and the placeholder is no
	// value.
	if it, err := c.GetItem(ctx, k); err != nil || it.Found || it.Lease != memgate.LeaseNone {
		t.Fatalf("GetItem without a lease on a placeholder = %+v, %v; want not found, LeaseNone", it, err)
	}
	wantMissing(t, c, k)
	// The placeholder counts as existing for Add.
	if stored, _, err := c.Add(ctx, k, []byte("sneaky")); err != nil || stored {
		t.Fatalf("Add on a lease placeholder = %v, %v; want false, nil", stored, err)
	}

	// The winner's Set ends the lease.
	if err := c.Set(ctx, k, []byte("filled"), memgate.WithTTL(time.Minute)); err != nil {
		t.Fatal(err)
	}
	it, err := c.GetItem(ctx, k, lease)
	if err != nil || !it.Found || string(it.Value) != "filled" || it.Stale || it.Lease != memgate.LeaseNone {
		t.Fatalf("GetItem with a lease after the Set = %+v, %v; want filled, fresh, LeaseNone", it, err)
	}
}

func TestGetItemLeaseWonWithCAS(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"
	won, err := c.GetItem(ctx, k, memgate.WithLeaseTTL(30*time.Second))
	if err != nil || won.Lease != memgate.LeaseWon {
		t.Fatalf("GetItem with a lease = %+v, %v; want LeaseWon", won, err)
	}
	// The winner can fill with the placeholder's token, to lose to any
	// write made meanwhile.
	stored, _, err := c.CompareAndSwap(ctx, k, []byte("filled"), won.CAS)
	if err != nil || !stored {
		t.Fatalf("CompareAndSwap with the lease's token = %v, %v; want true, nil", stored, err)
	}
	wantValue(t, c, k, "filled")
}

func TestInvalidate(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	k := p + "k"

	if existed, err := c.Invalidate(ctx, p+"missing"); err != nil || existed {
		t.Fatalf("Invalidate of a missing key = %v, %v; want false, nil", existed, err)
	}
	wantMissing(t, c, p+"missing")

	if err := c.Set(ctx, k, []byte("old"), memgate.WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if existed, err := c.Invalidate(ctx, k); err != nil || !existed {
		t.Fatalf("Invalidate = %v, %v; want true, nil", existed, err)
	}

	// Still readable, marked stale; Get reads it as found.
	it, err := c.GetItem(ctx, k)
	if err != nil || !it.Found || !it.Stale || string(it.Value) != "old" || it.Lease != memgate.LeaseNone {
		t.Fatalf("GetItem after Invalidate = %+v, %v; want old, stale, LeaseNone", it, err)
	}
	wantValue(t, c, k, "old")

	// Lease readers: one wins the refresh, the others are held; all get
	// the old value.
	lease := memgate.WithLeaseTTL(30 * time.Second)
	it, err = c.GetItem(ctx, k, lease)
	if err != nil || !it.Found || !it.Stale || string(it.Value) != "old" || it.Lease != memgate.LeaseWon {
		t.Fatalf("first GetItem with a lease after Invalidate = %+v, %v; want old, stale, LeaseWon", it, err)
	}
	for i := range 3 {
		it, err = c.GetItem(ctx, k, lease)
		if err != nil || !it.Found || !it.Stale || string(it.Value) != "old" || it.Lease != memgate.LeaseHeld {
			t.Fatalf("GetItem with a lease #%d after Invalidate = %+v, %v; want old, stale, LeaseHeld", i+2, it, err)
		}
	}

	// A Set clears the stale state.
	if err := c.Set(ctx, k, []byte("new")); err != nil {
		t.Fatal(err)
	}
	it, err = c.GetItem(ctx, k, lease)
	if err != nil || !it.Found || it.Stale || string(it.Value) != "new" || it.Lease != memgate.LeaseNone {
		t.Fatalf("GetItem after the refresh = %+v, %v; want new, fresh, LeaseNone", it, err)
	}

	// A stale item counts as existing: Add fails, Replace succeeds.
	if _, err := c.Invalidate(ctx, k); err != nil {
		t.Fatal(err)
	}
	if stored, _, err := c.Add(ctx, k, []byte("added")); err != nil || stored {
		t.Fatalf("Add on a stale item = %v, %v; want false, nil", stored, err)
	}
	if stored, _, err := c.Replace(ctx, k, []byte("replaced")); err != nil || !stored {
		t.Fatalf("Replace on a stale item = %v, %v; want true, nil", stored, err)
	}
	if it, err = c.GetItem(ctx, k); err != nil || it.Stale || string(it.Value) != "replaced" {
		t.Fatalf("GetItem after Replace of a stale item = %+v, %v; want replaced, fresh", it, err)
	}
}

func TestBatchSetItemsConditions(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	exists, fresh, plain, missing, casOK, casBad := p+"exists", p+"fresh", p+"plain", p+"missing", p+"casok", p+"casbad"
	for _, k := range []string{exists, casOK, casBad} {
		if err := c.Set(ctx, k, []byte("before")); err != nil {
			t.Fatal(err)
		}
	}
	okItem, err := c.GetItem(ctx, casOK)
	if err != nil || okItem.CAS == 0 {
		t.Fatalf("GetItem = %+v, %v; want a CAS", okItem, err)
	}
	badItem, err := c.GetItem(ctx, casBad)
	if err != nil {
		t.Fatal(err)
	}

	stored, err := c.BatchSetItems(ctx, []memgate.SetItem{
		{Key: exists, Value: []byte("after"), If: memgate.IfAbsent()},       // fails
		{Key: fresh, Value: []byte("after"), If: memgate.IfAbsent()},        // stored
		{Key: plain, Value: []byte("after")},                                // stored
		{Key: missing, Value: []byte("after"), If: memgate.IfPresent()},     // fails
		{Key: casOK, Value: []byte("after"), If: memgate.IfCAS(okItem.CAS)}, // stored
		{Key: casBad, Value: []byte("after"), If: memgate.IfCAS(badItem.CAS + 1)},
	}, memgate.WithTTL(time.Minute))
	if stored != 3 {
		t.Fatalf("BatchSetItems stored %d, want 3 (err: %v)", stored, err)
	}
	var be *memgate.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("BatchSetItems error = %v, want a *BatchError", err)
	}
	var failed []string
	for _, ke := range be.Errors {
		if ke.Code != codes.FailedPrecondition || status.Code(ke) != codes.FailedPrecondition {
			t.Errorf("KeyError %q code %v, want FailedPrecondition (%v)", ke.Key, ke.Code, ke)
		}
		failed = append(failed, ke.Key)
	}
	slices.Sort(failed)
	want := []string{exists, missing, casBad}
	slices.Sort(want)
	if !slices.Equal(failed, want) {
		t.Fatalf("BatchSetItems failed keys %q, want %q", failed, want)
	}

	for _, k := range []string{fresh, plain, casOK} {
		wantValue(t, c, k, "after")
	}
	for _, k := range []string{exists, casBad} {
		wantValue(t, c, k, "before")
	}
	wantMissing(t, c, missing)

	// Every condition holding: no error.
	if stored, err := c.BatchSetItems(ctx, []memgate.SetItem{
		{Key: p + "a", Value: []byte("1"), If: memgate.IfAbsent()},
		{Key: fresh, Value: []byte("2"), If: memgate.IfPresent()},
	}); err != nil || stored != 2 {
		t.Fatalf("BatchSetItems with holding conditions = %d, %v; want 2, nil", stored, err)
	}
	if stored, err := c.BatchSetItems(ctx, nil); err != nil || stored != 0 {
		t.Fatalf("BatchSetItems(nil) = %d, %v; want 0, nil", stored, err)
	}
}
