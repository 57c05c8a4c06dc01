// Package memgate is the Go client for memgate, a gRPC cache service in
// front of a sharded memcached pool (package memgate.v1, service Cache).
//
// It wraps the generated stubs in gen/memgate/v1 with an idiomatic API:
//
//	c, err := memgate.Dial(ctx, "127.0.0.1:50051")
//	if err != nil { ... }
//	defer c.Close()
//	err = c.Set(ctx, "user:42", []byte("hello"), memgate.WithTTL(time.Minute))
//	v, found, err := c.Get(ctx, "user:42")
//
// # Errors
//
// Every error that comes from the server, or from the RPC machinery, is a
// gRPC status error: status.Code(err) gives its code (codes.InvalidArgument
// for a bad key, value, TTL or batch; codes.Unavailable when a shard cannot be
// reached; codes.DeadlineExceeded when a deadline passed, and so on). When the
// caller's own context ended the call, the error also matches
// context.DeadlineExceeded or context.Canceled with errors.Is.
//
// The server's errors also carry a stable reason (KEY_INVALID, SHARD_DOWN,
// OVERLOADED, ...; cache.proto lists them), what failed (the shard, the
// key, the request field) and how long to wait before retrying:
// Reason(err) and Details(err) read them.
//
// A miss is not an error: Get reports found=false, BatchGet leaves the key
// out of its map, Delete reports false.
//
// The batch and stream calls can partly succeed: the server stores (or
// reads, or deletes) what it can and names the keys that failed. The client
// then returns what succeeded together with a *BatchError listing the failed
// keys, each a KeyError with the server's reason and the status code a
// single-key call would have returned (KeyError.Code: codes.Unavailable for
// a shard that is down, codes.InvalidArgument for an invalid item in a
// stream). status.Code of a *BatchError itself is codes.Unknown, since the
// call partly succeeded; use errors.As to get at the list.
//
// # Authentication and TLS
//
// WithBearerToken sends a token to a server started with --auth-token-file;
// WithTransportCredentials sets TLS (credentials.NewTLS) for a server
// started with --tls-cert and --tls-key.
//
// # Deadlines
//
// Every method takes a context.Context and its deadline and cancellation
// are sent to the server with the call. Unary calls whose context has no
// deadline get the client's default timeout (WithTimeout, 5s unless
// changed). Streaming calls are bounded by their context only.
package memgate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	memgatev1 "github.com/memgate/memgate/client/go/gen/memgate/v1"
)

const (
	// DefaultTimeout bounds a unary call whose context has no deadline.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxMessageBytes is the largest gRPC message the client sends or
	// accepts unless WithMaxMessageBytes says otherwise. It is above the
	// server's own default limit (16 MiB), so the server's limit is the one
	// that applies.
	DefaultMaxMessageBytes = 64 << 20
	// DefaultStreamWindowBytes and DefaultConnWindowBytes are the HTTP/2
	// receive windows the client advertises, per stream and per connection:
	// how much the server may send that the application has not read yet.
	// grpc-go's default, 64 KiB that grows only while data flows, lets a
	// GetStream whose consumer pauses hold a few hundred results; the server
	// then stops reading keys (its backpressure), so a key sequence that
	// waits for the consumer stalls. 4 MiB holds tens of thousands of small
	// results. Override them with WithDialOptions(grpc.WithInitialWindowSize(n),
	// grpc.WithInitialConnWindowSize(n)).
	DefaultStreamWindowBytes = 4 << 20
	DefaultConnWindowBytes   = 16 << 20
	// ServiceName is the fully-qualified gRPC service name, which is also the
	// name its health status is reported under.
	ServiceName = "memgate.v1.Cache"
)

// Client is a connection to one memgate server (or a load-balanced set of
// them, depending on the target). It is safe for concurrent use; create one
// and share it.
type Client struct {
	conn    *grpc.ClientConn
	rpc     memgatev1.CacheClient
	health  healthpb.HealthClient
	timeout time.Duration
}

type config struct {
	timeout  time.Duration
	dialOpts []grpc.DialOption
	creds    credentials.TransportCredentials
	token    *string
	maxMsg   int
	lazy     bool
}

// Option configures Dial.
type Option func(*config)

// WithTimeout sets the default per-call timeout, applied to unary calls
// (and to Dial's wait for a connection) whose context has no deadline of
// its own. A context deadline always takes precedence. Zero or a negative
// value turns the default off, so calls without a deadline can wait forever.
func WithTimeout(d time.Duration) Option {
	return func(c *config) { c.timeout = d }
}

// WithDialOptions passes extra options to grpc.NewClient. They are applied
// after the ones this package sets, so they win on conflict.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dialOpts = append(c.dialOpts, opts...) }
}

// WithTransportCredentials sets the transport security, for example
// credentials.NewTLS(tlsConfig) for a server started with --tls-cert and
// --tls-key (put the CA that signed its certificate in tlsConfig.RootCAs,
// and a client certificate in tlsConfig.Certificates for a server with
// --tls-client-ca). The default is plaintext (insecure.NewCredentials()).
func WithTransportCredentials(creds credentials.TransportCredentials) Option {
	return func(c *config) { c.creds = creds }
}

// WithBearerToken sends token to a server started with --auth-token-file,
// as the metadata "authorization: Bearer <token>" on every memgate.v1.Cache
// call; health checks go without it, since the server keeps them open.
// Without a valid token the server answers codes.Unauthenticated.
//
// It is a per-RPC credential (credentials.PerRPCCredentials) that does not
// require transport security, so it works on a plaintext connection too.
// A token sent over plaintext can be read by anyone on the path: use it
// without TLS (WithTransportCredentials) only over loopback or a trusted
// network. Dial fails with codes.InvalidArgument for a token that could
// never be accepted (empty, with leading or trailing white space, or with
// characters outside printable ASCII).
func WithBearerToken(token string) Option {
	return func(c *config) { c.token = &token }
}

// bearerToken is the per-RPC credential of WithBearerToken.
type bearerToken struct{ header string }

// GetRequestMetadata returns the authorization header for calls to the
// Cache service. grpc-go passes the service's URI, e.g.
// "https://host:port/memgate.v1.Cache", and nothing for other services.
func (b bearerToken) GetRequestMetadata(_ context.Context, uri ...string) (map[string]string, error) {
	for _, u := range uri {
		if strings.HasSuffix(u, "/"+ServiceName) {
			return map[string]string{"authorization": b.header}, nil
		}
	}
	return nil, nil
}

// RequireTransportSecurity reports false so that grpc-go also sends the
// token on plaintext connections (it refuses otherwise). See
// WithBearerToken for what that means.
func (bearerToken) RequireTransportSecurity() bool { return false }

func checkToken(token string) error {
	if token == "" || strings.TrimSpace(token) != token {
		return errors.New("the bearer token is empty or starts or ends with white space")
	}
	for i := 0; i < len(token); i++ {
		if token[i] < 0x20 || token[i] > 0x7e {
			return errors.New("the bearer token has a character outside printable ASCII")
		}
	}
	return nil
}

// WithMaxMessageBytes sets the largest gRPC message the client sends or
// receives (default DefaultMaxMessageBytes). Large BatchGet responses need
// it to be at least the server's --max-message-bytes.
func WithMaxMessageBytes(n int) Option {
	return func(c *config) { c.maxMsg = n }
}

// WithLazyConnect makes Dial return at once without waiting for a
// connection; the first call connects. By default Dial waits until the
// server is reachable.
func WithLazyConnect() Option {
	return func(c *config) { c.lazy = true }
}

// Dial creates a client for target ("host:port", or any gRPC target such as
// "dns:///memgate.svc:50051").
//
// Unless WithLazyConnect is given, Dial connects before it returns: it waits
// until the connection is ready, until ctx ends (or, if ctx has no deadline,
// the default timeout passes), or until the first connection attempt fails.
// Its errors carry a gRPC code: codes.Unavailable if the server could not be
// reached, codes.DeadlineExceeded or codes.Canceled if ctx ended first.
func Dial(ctx context.Context, target string, opts ...Option) (*Client, error) {
	cfg := config{timeout: DefaultTimeout, maxMsg: DefaultMaxMessageBytes}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxMsg <= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "memgate: max message bytes must be positive, got %d", cfg.maxMsg)
	}
	var tokenOpt []grpc.DialOption
	if cfg.token != nil {
		if err := checkToken(*cfg.token); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "memgate: %v", err)
		}
		tokenOpt = append(tokenOpt, grpc.WithPerRPCCredentials(bearerToken{header: "Bearer " + *cfg.token}))
	}
	creds := cfg.creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(cfg.maxMsg),
			grpc.MaxCallSendMsgSize(cfg.maxMsg),
		),
		grpc.WithInitialWindowSize(DefaultStreamWindowBytes),
		grpc.WithInitialConnWindowSize(DefaultConnWindowBytes),
	}, tokenOpt...)
	dialOpts = append(dialOpts, cfg.dialOpts...)

	conn, err := grpc.NewClient(target, dialOpts...)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "memgate: dial %q: %v", target, err)
	}
	c := &Client{
		conn:    conn,
		rpc:     memgatev1.NewCacheClient(conn),
		health:  healthpb.NewHealthClient(conn),
		timeout: cfg.timeout,
	}
	if cfg.lazy {
		return c, nil
	}
	wctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	if err := waitReady(wctx, conn); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("memgate: dial %q: %w", target, convert(wctx, err))
	}
	return c, nil
}

// waitReady connects and waits until conn is READY. It gives up as soon as
// a connection attempt fails (TRANSIENT_FAILURE) or ctx ends.
func waitReady(ctx context.Context, conn *grpc.ClientConn) error {
	conn.Connect()
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure:
			return status.Error(codes.Unavailable, "server unreachable (connection attempt failed)")
		case connectivity.Shutdown:
			return status.Error(codes.Canceled, "connection shut down")
		}
		if !conn.WaitForStateChange(ctx, s) {
			return ctx.Err()
		}
	}
}

// Close tears down the connection. Calls in flight fail with
// codes.Canceled.
func (c *Client) Close() error {
	return c.conn.Close()
}

// Conn returns the underlying gRPC connection, for using the generated
// stubs (gen/memgate/v1) directly.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Health asks the server's grpc.health.v1 service about service ("" for the
// server as a whole, or ServiceName) and returns the status name, e.g.
// "SERVING" or "NOT_SERVING". An unknown service is codes.NotFound.
func (c *Client) Health(ctx context.Context, service string) (string, error) {
	ctx, cancel := c.withDefaultTimeout(ctx)
	defer cancel()
	resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return "", convert(ctx, err)
	}
	return resp.GetStatus().String(), nil
}

// withDefaultTimeout applies the client's default timeout to a context
// that has no deadline.
func (c *Client) withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.timeout > 0 {
		if _, ok := ctx.Deadline(); !ok {
			return context.WithTimeout(ctx, c.timeout)
		}
	}
	return ctx, func() {}
}

// ctxError is a status error caused by the caller's own context ending: it
// keeps the gRPC status (status.Code works) and also unwraps to
// context.DeadlineExceeded or context.Canceled (errors.Is works).
type ctxError struct {
	st     *status.Status
	ctxErr error
}

func (e *ctxError) Error() string              { return e.st.Err().Error() }
func (e *ctxError) GRPCStatus() *status.Status { return e.st }
func (e *ctxError) Unwrap() error              { return e.ctxErr }

// convert turns an error from a call made with ctx into the error this
// package returns: a status error, which also unwraps to the context's
// error when the context is what ended the call.
func convert(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		if _, ok := err.(interface{ GRPCStatus() *status.Status }); !ok {
			return &ctxError{st: status.FromContextError(err), ctxErr: err}
		}
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if cerr := ctx.Err(); cerr != nil &&
		((st.Code() == codes.DeadlineExceeded && errors.Is(cerr, context.DeadlineExceeded)) ||
			(st.Code() == codes.Canceled && errors.Is(cerr, context.Canceled))) {
		return &ctxError{st: st, ctxErr: cerr}
	}
	return err
}
