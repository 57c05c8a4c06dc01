package memgate

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	memgatev1 "github.com/memgate/memgate/client/go/gen/memgate/v1"
)

// A failed key never has codes.OK: a server older than the per-key codes
// sends 0, which becomes codes.Unknown.
func TestKeyErrorCodes(t *testing.T) {
	got := appendKeyErrors(nil, []*memgatev1.KeyError{
		{Key: "old", Message: "shard down"},
		{Key: "new", Message: "shard down", Code: 14},
		{Key: "bad", Message: "invalid key", Code: 3},
	})
	want := []codes.Code{codes.Unknown, codes.Unavailable, codes.InvalidArgument}
	for i, ke := range got {
		if ke.Code != want[i] || status.Code(ke) != want[i] {
			t.Errorf("%q: Code %v, status.Code %v; want %v", ke.Key, ke.Code, status.Code(ke), want[i])
		}
		if s := status.Convert(ke); s.Message() != ke.Message {
			t.Errorf("%q: status message %q, want %q", ke.Key, s.Message(), ke.Message)
		}
	}
}
