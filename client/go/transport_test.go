package memgate_test

// How the server's HTTP/2 transport treats a grpc-go client: streams of
// tens of thousands of small messages on one call, driven through the
// generated stubs so that nothing in this package paces them; a request
// over the server's --max-message-bytes; the latency of calls on loopback.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	memgate "github.com/memgate/memgate/client/go"
	memgatev1 "github.com/memgate/memgate/client/go/gen/memgate/v1"
)

const smallMessages = 20000

// TestRawClientStreamOfSmallMessages sends 20,000 tiny messages on one
// BatchDeleteStream as fast as HTTP/2 flow control allows.
func TestRawClientStreamOfSmallMessages(t *testing.T) {
	c, p := dial(t), tinyPrefix(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	stream, err := memgatev1.NewCacheClient(c.Conn()).BatchDeleteStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < smallMessages; i++ {
		if err := stream.Send(&memgatev1.DeleteRequest{Key: fmt.Sprintf("%s%d", p, i)}); err != nil {
			if err != io.EOF {
				t.Fatal(err)
			}
			break // the server ended the stream; CloseAndRecv says why
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatalf("raw BatchDeleteStream of %d keys: %v (code %v)", smallMessages, err, status.Code(err))
	}
	if resp.GetDeleted() != 0 || len(resp.GetErrors()) != 0 {
		t.Fatalf("raw BatchDeleteStream of never-set keys = %v", resp)
	}
}

// TestRawGetStreamSendsEveryKeyBeforeReading sends 20,000 tiny keys on one
// BatchGetStream and closes its sending side before reading any result.
// The server reads keys only while it can pass results on, so this works
// because the client's receive window (DefaultStreamWindowBytes) holds the
// results; with grpc-go's default 64 KiB it stalls after about 16,000
// one-byte keys.
func TestRawGetStreamSendsEveryKeyBeforeReading(t *testing.T) {
	c := dial(t)
	p := tinyPrefix(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	stream, err := memgatev1.NewCacheClient(c.Conn()).BatchGetStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < smallMessages; i++ {
		if err := stream.Send(&memgatev1.GetRequest{Key: fmt.Sprintf("%s%d", p, i)}); err != nil {
			t.Fatalf("Send of key %d before reading: %v", i, err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if i != smallMessages {
				t.Fatalf("%d results, want %d", i, smallMessages)
			}
			return
		}
		if err != nil {
			t.Fatalf("Recv %d: %v", i, err)
		}
		if want := fmt.Sprintf("%s%d", p, i); r.GetKey() != want || r.GetFound() || r.GetError() != "" {
			t.Fatalf("result %d = %v, want a miss for %s", i, r, want)
		}
	}
}

// tinyPrefix returns a short unique key prefix, for keys of a dozen bytes.
func tinyPrefix(t testing.TB) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "t:" + hex.EncodeToString(b[:]) + ":"
}

// TestRequestOverMessageLimit sends one BatchSet over the server's default
// --max-message-bytes (16 MiB): RESOURCE_EXHAUSTED, naming the flag, and
// the connection stays usable.
func TestRequestOverMessageLimit(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	items := map[string][]byte{}
	for i := 0; i < 18; i++ {
		items[fmt.Sprintf("%s%d", p, i)] = make([]byte, 1_000_000)
	}
	_, err := c.BatchSet(ctx, items)
	wantCode(t, err, codes.ResourceExhausted)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "--max-message-bytes") {
		t.Errorf("message %q does not name --max-message-bytes", msg)
	}
	if got, err := c.BatchGet(ctx, []string{p + "0", p + "17"}); err != nil || len(got) != 0 {
		t.Fatalf("after the refused BatchSet: %v, %v; want nothing written", got, err)
	}
}

// TestUnaryLatency: on loopback a unary call takes well under a
// millisecond; without TCP_NODELAY on the server's sockets each took ~40ms.
func TestUnaryLatency(t *testing.T) {
	c, ctx, p := dial(t), ctxT(t), prefix(t)
	if err := c.Set(ctx, p+"k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	var times []time.Duration
	for i := 0; i < 21; i++ {
		start := time.Now()
		if _, _, err := c.Get(ctx, p+"k"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Health(ctx, memgate.ServiceName); err != nil {
			t.Fatal(err)
		}
		times = append(times, time.Since(start)/2)
	}
	slices.Sort(times)
	if median := times[len(times)/2]; median > 10*time.Millisecond {
		t.Fatalf("median unary call on loopback took %v (want < 10ms)", median)
	}
}
