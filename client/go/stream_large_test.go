package memgate_test

import (
	"fmt"
	"testing"
	"time"
)

// TestLargeStreams sends 20,000 tiny items through SetStream, GetStream and
// DeleteStream, one gRPC stream each. GetStream's consumer reads one result
// and then waits until every key has been handed to the stream, so the
// client must send without waiting for results.
func TestLargeStreams(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), tinyPrefix(t)
	const n = 20000
	key := func(i int) string { return fmt.Sprintf("%s%d", p, i) }
	allSent := make(chan struct{})
	keys := func(yield func(string) bool) {
		for i := 0; i < n; i++ {
			if !yield(key(i)) {
				return
			}
		}
		close(allSent)
	}
	stored, err := c.SetStream(ctx, func(yield func(string, []byte) bool) {
		for i := 0; i < n; i++ {
			if !yield(key(i), []byte{byte(i)}) {
				return
			}
		}
	})
	if err != nil || stored != n {
		t.Fatalf("SetStream of %d items = %d, %v", n, stored, err)
	}
	i := 0
	for r, err := range c.GetStream(ctx, keys) {
		if err != nil {
			t.Fatalf("GetStream after %d results: %v", i, err)
		}
		if r.Key != key(i) || !r.Found || len(r.Value) != 1 || r.Value[0] != byte(i) {
			t.Fatalf("result %d = %+v", i, r)
		}
		if i == 0 {
			select {
			case <-allSent:
			case <-time.After(15 * time.Second):
				t.Fatal("GetStream stopped sending keys while results were not read")
			}
		}
		i++
	}
	if i != n {
		t.Fatalf("GetStream yielded %d results, want %d", i, n)
	}
	allSent = make(chan struct{})
	deleted, err := c.DeleteStream(ctx, keys)
	if err != nil || deleted != n {
		t.Fatalf("DeleteStream of %d keys = %d, %v", n, deleted, err)
	}
}
