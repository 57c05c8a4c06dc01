package memgate_test

// Bearer tokens and TLS, against extra memgate processes these tests start
// themselves: the binary with-stack.sh runs ($MEMGATE_BIN), in front of its
// memcached ($MEMGATE_MEMCACHED), on a free port, polled until its health
// says SERVING. The certificates are made here with crypto/x509: a
// throwaway CA, a server certificate for localhost and 127.0.0.1, and a
// client certificate.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"maps"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	memgate "github.com/memgate/memgate/client/go"
)

// startMemgate starts memgate with args (after --listen, and after
// --memcached $MEMGATE_MEMCACHED unless args has its own --memcached) and
// returns its address once its health reports SERVING to a client dialled
// with opts. The process is stopped when the test ends.
func startMemgate(t *testing.T, args []string, opts ...memgate.Option) string {
	t.Helper()
	bin, mc := os.Getenv("MEMGATE_BIN"), os.Getenv("MEMGATE_MEMCACHED")
	if bin == "" || mc == "" {
		t.Fatal("MEMGATE_BIN and MEMGATE_MEMCACHED are not set: run the tests under scripts/with-stack.sh")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	var stderr bytes.Buffer
	flags := []string{"--listen", addr}
	if !slices.Contains(args, "--memcached") {
		flags = append(flags, "--memcached", mc)
	}
	cmd := exec.Command(bin, append(flags, args...)...)
	cmd.Env = append(os.Environ(), "MEMGATE_LOG=warn")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	probe, err := memgate.Dial(context.Background(), addr, append(opts, memgate.WithLazyConnect(), memgate.WithTimeout(time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("memgate %s exited: %s", strings.Join(args, " "), stderr.String())
		default:
		}
		if st, _ := probe.Health(context.Background(), ""); st == "SERVING" {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("memgate %s did not report SERVING within 10s", strings.Join(args, " "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func randomToken(t *testing.T) string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// tokenFile writes a token file that lists token (after a comment and
// another token) and returns its path.
func tokenFile(t *testing.T, token string) string {
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("# memgate tokens\n"+randomToken(t)+"\n"+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// everyCacheCall runs one call of each Cache method and returns the errors
// by method name.
func everyCacheCall(ctx context.Context, c *memgate.Client, p string) map[string]error {
	errs := map[string]error{}
	_, _, errs["Get"] = c.Get(ctx, p+"k")
	errs["Set"] = c.Set(ctx, p+"k", []byte("v"))
	_, errs["Delete"] = c.Delete(ctx, p+"k")
	_, errs["List"] = c.List(ctx, p, 0)
	_, errs["BatchGet"] = c.BatchGet(ctx, []string{p + "k"})
	_, errs["BatchSet"] = c.BatchSet(ctx, map[string][]byte{p + "k": []byte("v")})
	_, errs["BatchDelete"] = c.BatchDelete(ctx, []string{p + "k"})
	errs["GetStream"] = nil
	for _, err := range c.GetStream(ctx, slices.Values([]string{p + "k"})) {
		if err != nil {
			errs["GetStream"] = err
		}
	}
	_, errs["SetStream"] = c.SetStream(ctx, maps.All(map[string][]byte{p + "k": []byte("v")}))
	_, errs["DeleteStream"] = c.DeleteStream(ctx, slices.Values([]string{p + "k"}))
	return errs
}

func dialTo(t *testing.T, addr string, opts ...memgate.Option) *memgate.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := memgate.Dial(ctx, addr, opts...)
	if err != nil {
		t.Fatalf("Dial(%s): %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestBearerToken(t *testing.T) {
	token := randomToken(t)
	addr := startMemgate(t, []string{"--auth-token-file", tokenFile(t, token)})
	ctx := ctxT(t)

	for name, opts := range map[string][]memgate.Option{
		"no token":            nil,
		"wrong token":         {memgate.WithBearerToken(token + "x")},
		"another token":       {memgate.WithBearerToken(randomToken(t))},
		"token in upper case": {memgate.WithBearerToken(strings.ToUpper(token))},
	} {
		c := dialTo(t, addr, opts...)
		for method, err := range everyCacheCall(ctx, c, prefix(t)) {
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("%s: %s = %v, want Unauthenticated", name, method, err)
			}
		}
		// Health stays open, with or without a token.
		if st, err := c.Health(ctx, memgate.ServiceName); err != nil || st != "SERVING" {
			t.Errorf("%s: Health = %s, %v; want SERVING", name, st, err)
		}
	}

	c := dialTo(t, addr, memgate.WithBearerToken(token))
	p := prefix(t)
	if err := c.Set(ctx, p+"a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if v, found, err := c.Get(ctx, p+"a"); err != nil || !found || string(v) != "1" {
		t.Fatalf("Get with the token = %q, %v, %v", v, found, err)
	}
	if n, err := c.SetStream(ctx, maps.All(map[string][]byte{p + "b": []byte("2")})); err != nil || n != 1 {
		t.Fatalf("SetStream with the token = %d, %v", n, err)
	}
	for r, err := range c.GetStream(ctx, slices.Values([]string{p + "b"})) {
		if err != nil || !r.Found || string(r.Value) != "2" {
			t.Fatalf("GetStream with the token = %+v, %v", r, err)
		}
	}
	for method, err := range everyCacheCall(ctx, c, p) {
		if err != nil {
			t.Errorf("with the token: %s: %v", method, err)
		}
	}
	if st, err := c.Health(ctx, ""); err != nil || st != "SERVING" {
		t.Errorf("Health with the token = %s, %v", st, err)
	}
}

func TestBearerTokenOnAServerWithoutAuth(t *testing.T) {
	c, ctx, p := dial(t, memgate.WithBearerToken("not-checked-by-this-server")), ctxT(t), prefix(t)
	if err := c.Set(ctx, p+"k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, found, err := c.Get(ctx, p+"k"); err != nil || !found {
		t.Fatalf("Get = %v, %v", found, err)
	}
}

func TestBearerTokenValidation(t *testing.T) {
	for _, bad := range []string{"", " padded-token-value ", "line\nbreak-token-value", "non-ascii-tökén-value"} {
		_, err := memgate.Dial(context.Background(), target(t), memgate.WithBearerToken(bad), memgate.WithLazyConnect())
		wantCode(t, err, codes.InvalidArgument)
	}
}

// testPKI is a throwaway CA with a server and a client certificate.
type testPKI struct {
	dir        string
	roots      *x509.CertPool
	clientCert tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	serial := int64(1)
	template := func(cn string) *x509.Certificate {
		serial++
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
		}
	}
	writePEM := func(name, typ string, der []byte) []byte {
		b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return b
	}

	caKey := newKey()
	caTmpl := template("memgate-test-ca")
	caTmpl.IsCA, caTmpl.BasicConstraintsValid = true, true
	caTmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	writePEM("ca.pem", "CERTIFICATE", caDER)

	leaf := func(name string, tmpl *x509.Certificate) ([]byte, []byte) {
		key := newKey()
		tmpl.BasicConstraintsValid = true
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return writePEM(name+".pem", "CERTIFICATE", der), writePEM(name+".key", "PRIVATE KEY", keyDER)
	}
	server := template("localhost")
	server.DNSNames = []string{"localhost"}
	server.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	server.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	leaf("server", server)
	client := template("client")
	client.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	certPEM, keyPEM := leaf("client", client)
	clientCert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &testPKI{dir: dir, roots: roots, clientCert: clientCert}
}

func (p *testPKI) serverFlags() []string {
	return []string{"--tls-cert", filepath.Join(p.dir, "server.pem"), "--tls-key", filepath.Join(p.dir, "server.key")}
}

func (p *testPKI) creds(withClientCert bool) memgate.Option {
	cfg := &tls.Config{RootCAs: p.roots, MinVersion: tls.VersionTLS12}
	if withClientCert {
		cfg.Certificates = []tls.Certificate{p.clientCert}
	}
	return memgate.WithTransportCredentials(credentials.NewTLS(cfg))
}

func TestTLSWithToken(t *testing.T) {
	pki, token := newTestPKI(t), randomToken(t)
	addr := startMemgate(t, append(pki.serverFlags(), "--auth-token-file", tokenFile(t, token)), pki.creds(false))
	_, port, _ := net.SplitHostPort(addr)
	ctx, p := ctxT(t), prefix(t)

	// By IP address and by name: the certificate lists both.
	for _, a := range []string{addr, "localhost:" + port} {
		c := dialTo(t, a, pki.creds(false), memgate.WithBearerToken(token))
		if err := c.Set(ctx, p+"k", []byte(a)); err != nil {
			t.Fatalf("Set over TLS to %s: %v", a, err)
		}
		if v, found, err := c.Get(ctx, p+"k"); err != nil || !found || string(v) != a {
			t.Fatalf("Get over TLS to %s = %q, %v, %v", a, v, found, err)
		}
		for method, err := range everyCacheCall(ctx, c, p) {
			if err != nil {
				t.Errorf("over TLS to %s: %s: %v", a, method, err)
			}
		}
	}
	// TLS does not replace the token.
	c := dialTo(t, addr, pki.creds(false))
	_, _, err := c.Get(ctx, p+"k")
	wantCode(t, err, codes.Unauthenticated)

	// A plaintext client, or one that does not trust the CA, cannot connect.
	short, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err = memgate.Dial(short, addr, memgate.WithBearerToken(token))
	wantCode(t, err, codes.Unavailable)
	_, err = memgate.Dial(short, addr, memgate.WithBearerToken(token),
		memgate.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})))
	wantCode(t, err, codes.Unavailable)
}

func TestMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	addr := startMemgate(t, append(pki.serverFlags(), "--tls-client-ca", filepath.Join(pki.dir, "ca.pem")), pki.creds(true))
	ctx, p := ctxT(t), prefix(t)
	c := dialTo(t, addr, pki.creds(true))
	if err := c.Set(ctx, p+"k", []byte("mtls")); err != nil {
		t.Fatal(err)
	}
	if v, found, err := c.Get(ctx, p+"k"); err != nil || !found || string(v) != "mtls" {
		t.Fatalf("Get over mutual TLS = %q, %v, %v", v, found, err)
	}
	// Without a client certificate: TLS 1.3 lets the handshake finish on the
	// client's side, so the refusal shows on the first call (or on Dial).
	c2, err := memgate.Dial(ctx, addr, pki.creds(false), memgate.WithLazyConnect())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, _, err = c2.Get(ctx, p+"k")
	if code := status.Code(err); code != codes.Unavailable {
		t.Fatalf("Get without a client certificate: %v (code %v), want Unavailable", err, code)
	}
}
