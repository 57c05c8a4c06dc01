package kivigo_test

// Runs the backend against a live memgate (MEMGATE_TARGET, as set by
// scripts/with-stack.sh).
//
// kivigo's own client (github.com/kivigo/kivigo) could not be fetched from
// the Go module proxy when this was written, so the tests drive the backend
// through kvClient below: a minimal stand-in that uses the backend the way
// kivigo's client does (JSON-encode then SetRaw; GetRaw then decode; a nil
// raw value in BatchGetRaw's map means "missing"; Health through the
// health interface). Once kivigo is a dependency, replace kvClient with
// kivigo.New(backend).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	memgatekv "github.com/memgate/memgate/client/go/kivigo"
)

type kvClient struct{ b *memgatekv.Backend }

func (c kvClient) Set(ctx context.Context, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.b.SetRaw(ctx, key, raw)
}

func (c kvClient) Get(ctx context.Context, key string, dst any) error {
	raw, err := c.b.GetRaw(ctx, key)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, dst)
}

func (c kvClient) BatchSet(ctx context.Context, kv map[string]any) error {
	raws := make(map[string][]byte, len(kv))
	for k, v := range kv {
		raw, err := json.Marshal(v)
		if err != nil {
			return err
		}
		raws[k] = raw
	}
	return c.b.BatchSetRaw(ctx, raws)
}

// BatchGet decodes into dst, skipping missing keys, as kivigo's does.
func BatchGet[T any](ctx context.Context, c kvClient, keys []string, dst map[string]T) error {
	raws, err := c.b.BatchGetRaw(ctx, keys)
	if err != nil {
		return err
	}
	for k, raw := range raws {
		if raw == nil {
			continue
		}
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		dst[k] = v
	}
	return nil
}

func (c kvClient) Health(ctx context.Context) error {
	if h, ok := any(c.b).(interface{ Health(context.Context) error }); ok {
		return h.Health(ctx)
	}
	return nil
}

func target(t *testing.T) string {
	t.Helper()
	tgt := os.Getenv("MEMGATE_TARGET")
	if tgt == "" {
		t.Fatal("MEMGATE_TARGET is not set: run the tests against a live server, e.g. scripts/with-stack.sh go test ./... (from the repo root, in client/go)")
	}
	return tgt
}

func newBackend(t *testing.T, mod func(*memgatekv.Option)) *memgatekv.Backend {
	t.Helper()
	opt := memgatekv.NewOptions()
	opt.Target = target(t)
	opt.Timeout = 5 * time.Second
	if mod != nil {
		mod(&opt)
	}
	b, err := memgatekv.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func prefix(t *testing.T) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("gotest:kivigo:%s:%d:%s:", t.Name(), time.Now().UnixNano(), hex.EncodeToString(b[:]))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type User struct {
	Name  string   `json:"name"`
	Email string   `json:"email"`
	Roles []string `json:"roles"`
	Bio   string   `json:"bio"`
}

func TestSetGetStruct(t *testing.T) {
	b, ctx, p := newBackend(t, nil), ctxT(t), prefix(t)
	c := kvClient{b}
	want := User{Name: "Ada", Email: "ada@example.com", Roles: []string{"admin"}, Bio: "line1\r\nline2\x00"}
	if err := c.Set(ctx, p+"user:1", want); err != nil {
		t.Fatal(err)
	}
	var got User
	if err := c.Get(ctx, p+"user:1", &got); err != nil {
		t.Fatal(err)
	}
	if got.Name != want.Name || got.Email != want.Email || !slices.Equal(got.Roles, want.Roles) || got.Bio != want.Bio {
		t.Fatalf("Get = %+v, want %+v", got, want)
	}
	if err := b.Delete(ctx, p+"user:1"); err != nil {
		t.Fatal(err)
	}
	err := c.Get(ctx, p+"user:1", &got)
	if !errors.Is(err, memgatekv.ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
	// Deleting a missing key is fine.
	if err := b.Delete(ctx, p+"user:1"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
}

func TestRawBinary(t *testing.T) {
	b, ctx, p := newBackend(t, nil), ctxT(t), prefix(t)
	want := []byte("\x00\r\n\xff END\r\n")
	if err := b.SetRaw(ctx, p+"bin", want); err != nil {
		t.Fatal(err)
	}
	got, err := b.GetRaw(ctx, p+"bin")
	if err != nil || string(got) != string(want) {
		t.Fatalf("GetRaw = %q, %v", got, err)
	}
}

func TestNotFoundErrorOption(t *testing.T) {
	// kivigo users pass kivigo's errs.ErrNotFound here.
	sentinel := errors.New("kivigo: key not found")
	b, ctx, p := newBackend(t, func(o *memgatekv.Option) { o.NotFoundError = sentinel }), ctxT(t), prefix(t)
	_, err := b.GetRaw(ctx, p+"missing")
	if !errors.Is(err, sentinel) {
		t.Fatalf("GetRaw of a missing key: %v, want the configured sentinel", err)
	}
}

func TestBatch(t *testing.T) {
	b, ctx, p := newBackend(t, nil), ctxT(t), prefix(t)
	c := kvClient{b}
	in := map[string]any{
		p + "user:1": User{Name: "Ada"},
		p + "user:2": User{Name: "Grace"},
		p + "user:3": User{Name: "Linus"},
	}
	if err := c.BatchSet(ctx, in); err != nil {
		t.Fatal(err)
	}
	keys := []string{p + "user:1", p + "user:2", p + "user:3", p + "user:404"}
	got := map[string]User{}
	if err := BatchGet(ctx, c, keys, got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[p+"user:2"].Name != "Grace" {
		t.Fatalf("BatchGet = %+v", got)
	}
	raws, err := b.BatchGetRaw(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := raws[p+"user:404"]; !ok || v != nil {
		t.Fatalf("BatchGetRaw: missing key maps to %q (present %v), want nil", v, ok)
	}
	if len(raws) != 4 {
		t.Fatalf("BatchGetRaw returned %d entries, want one per key (4)", len(raws))
	}
	if err := b.BatchDelete(ctx, keys[:2]); err != nil {
		t.Fatal(err)
	}
	got = map[string]User{}
	if err := BatchGet(ctx, c, keys, got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[p+"user:3"].Name != "Linus" {
		t.Fatalf("BatchGet after BatchDelete = %+v", got)
	}
	// An empty value is present, not missing.
	if err := b.SetRaw(ctx, p+"empty", []byte{}); err != nil {
		t.Fatal(err)
	}
	raws, err = b.BatchGetRaw(ctx, []string{p + "empty"})
	if err != nil || raws[p+"empty"] == nil {
		t.Fatalf("BatchGetRaw of an empty value = %v, %v; want a non-nil empty slice", raws, err)
	}
}

func TestList(t *testing.T) {
	b, ctx, p := newBackend(t, nil), ctxT(t), prefix(t)
	c := kvClient{b}
	for _, k := range []string{"session:b", "session:a", "session:c", "config:x"} {
		if err := c.Set(ctx, p+k, map[string]bool{"active": true}); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := b.List(ctx, p+"session:")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{p + "session:a", p + "session:b", p + "session:c"}
	if !slices.Equal(keys, want) {
		t.Fatalf("List = %v, want %v", keys, want)
	}
	all, err := b.List(ctx, p)
	if err != nil || len(all) != 4 {
		t.Fatalf("List of the test prefix = %v, %v", all, err)
	}
}

func TestHealth(t *testing.T) {
	b, ctx := newBackend(t, nil), ctxT(t)
	c := kvClient{b}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := c.Health(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Health: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// An unreachable server is unhealthy.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	down, err := memgatekv.New(memgatekv.Option{Target: addr, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	if err := down.Health(ctx); status.Code(err) != codes.Unavailable {
		t.Fatalf("Health of an unreachable server: %v, want Unavailable", err)
	}
}

func TestDefaultTTL(t *testing.T) {
	b, ctx, p := newBackend(t, func(o *memgatekv.Option) { o.DefaultTTL = time.Second }), ctxT(t), prefix(t)
	if err := b.SetRaw(ctx, p+"k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := b.BatchSetRaw(ctx, map[string][]byte{p + "b": []byte("v")}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(6 * time.Second)
	for _, k := range []string{p + "k", p + "b"} {
		for {
			_, err := b.GetRaw(ctx, k)
			if errors.Is(err, memgatekv.ErrNotFound) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s written with DefaultTTL 1s still present", k)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func TestErrors(t *testing.T) {
	b, ctx, p := newBackend(t, nil), ctxT(t), prefix(t)
	if err := b.SetRaw(ctx, "", []byte("v")); !errors.Is(err, memgatekv.ErrEmptyKey) {
		t.Fatalf("SetRaw with an empty key: %v", err)
	}
	if _, err := b.BatchGetRaw(ctx, []string{p + "a", ""}); !errors.Is(err, memgatekv.ErrEmptyKey) {
		t.Fatalf("BatchGetRaw with an empty key: %v", err)
	}
	// Server-side validation keeps its gRPC code.
	if err := b.SetRaw(ctx, p+"a b", []byte("v")); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("SetRaw with a space in the key: %v, want InvalidArgument", err)
	}
	// Deadlines flow through.
	expired, cancel := context.WithTimeout(ctx, -time.Second)
	defer cancel()
	if _, err := b.GetRaw(expired, p+"a"); !errors.Is(err, context.DeadlineExceeded) || status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("GetRaw with an expired context: %v", err)
	}
	// Options are checked.
	if _, err := memgatekv.New(memgatekv.NewOptions()); err == nil {
		t.Fatal("New without a Target succeeded")
	}
	if _, err := memgatekv.New(memgatekv.Option{Target: target(t), DefaultTTL: 3600}); err == nil {
		t.Fatal("New with DefaultTTL 3600 (nanoseconds) succeeded")
	}
}
