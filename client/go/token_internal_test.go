package memgate

import (
	"context"
	"testing"
)

// The token goes with Cache calls only: grpc-go passes the service's URI.
func TestBearerTokenOnlyForTheCacheService(t *testing.T) {
	b := bearerToken{header: "Bearer secret-token-value"}
	md, err := b.GetRequestMetadata(context.Background(), "https://127.0.0.1:5000/memgate.v1.Cache")
	if err != nil || md["authorization"] != "Bearer secret-token-value" {
		t.Fatalf("for memgate.v1.Cache: %v, %v", md, err)
	}
	for _, uri := range []string{
		"https://127.0.0.1:5000/grpc.health.v1.Health",
		"https://127.0.0.1:5000/grpc.reflection.v1.ServerReflection",
	} {
		if md, err := b.GetRequestMetadata(context.Background(), uri); err != nil || len(md) != 0 {
			t.Errorf("for %s: %v, %v; want no metadata", uri, md, err)
		}
	}
	if b.RequireTransportSecurity() {
		t.Error("RequireTransportSecurity() = true: grpc-go would refuse the token on plaintext")
	}
}
