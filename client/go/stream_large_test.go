package memgate_test

import (
	"fmt"
	"testing"
)

// TestLargeStreams sends far more small messages than the server's HTTP/2
// small-DATA-frame budget allows unread at once (about 3,000): the client
// keeps GetStream's unanswered keys bounded and splits SetStream and
// DeleteStream, so these succeed. See TestServerSmallFrameBudget in
// known_server_bugs_test.go.
func TestLargeStreams(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	const n = 20000
	key := func(i int) string { return fmt.Sprintf("%s%06d", p, i) }
	keys := func(yield func(string) bool) {
		for i := 0; i < n; i++ {
			if !yield(key(i)) {
				return
			}
		}
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
		i++
	}
	if i != n {
		t.Fatalf("GetStream yielded %d results, want %d", i, n)
	}
	deleted, err := c.DeleteStream(ctx, keys)
	if err != nil || deleted != n {
		t.Fatalf("DeleteStream of %d keys = %d, %v", n, deleted, err)
	}
}
