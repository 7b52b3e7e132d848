package epsync_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/epsync/epsync/clients/go/epsync"
)

// testCA makes certificates for the tests: a CA, and leaf certificates it signs.
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	dir  string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "epsync test CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{key: key, cert: cert, dir: t.TempDir()}
	ca.write(t, "ca.crt", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(t *testing.T, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue writes a certificate and key named name: a server one for 127.0.0.1, or a client one
// with the URI SAN uri. It returns their paths.
func (ca *testCA) issue(t *testing.T, name string, server bool, uri string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		template.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		template.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	if uri != "" {
		parsed, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		template.URIs = []*url.URL{parsed}
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return ca.write(t, name+".crt", "CERTIFICATE", der), ca.write(t, name+".key", "PRIVATE KEY", keyDER)
}

// A server with mutual TLS: a client with WithTLS and a certificate from the server's CA works, as
// the identity the certificate names; without a certificate, or in plaintext, it is refused;
// unreadable files fail at Dial.
func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	serverCert, serverKey := ca.issue(t, "server", true, "")
	clientCert, clientKey := ca.issue(t, "cni", false, "spiffe://epsync/orchestrator/cni")
	nodeCert, nodeKey := ca.issue(t, "node1", false, "spiffe://epsync/node/node1")
	caFile := filepath.Join(ca.dir, "ca.crt")
	srv := startServer(t, "--workers", "1", "--tls-cert-file", serverCert, "--tls-key-file", serverKey, "--client-ca-file", caFile)
	ctx := testContext(t, 30*time.Second)

	dialTLS := func(files epsync.TLSFiles) *epsync.Client {
		c, err := epsync.Dial(ctx, []string{srv.addr()}, epsync.WithTLS(files))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	good := dialTLS(epsync.TLSFiles{CAFile: caFile, CertFile: clientCert, KeyFile: clientKey})
	created, err := good.CreateEndpoint(ctx, endpoint("default", "node1", "tls", nil))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := good.GetEndpoint(ctx, "default", created.GetMetadata().GetName(), epsync.GetOptions{}); err != nil || got.GetMetadata().GetUid() != created.GetMetadata().GetUid() {
		t.Fatalf("get over mutual TLS: %v %v", got, err)
	}

	// The certificate is an identity: a node reads its own node's endpoints and writes nothing.
	node := dialTLS(epsync.TLSFiles{CAFile: caFile, CertFile: nodeCert, KeyFile: nodeKey})
	if _, err := node.GetEndpoint(ctx, "default", created.GetMetadata().GetName(), epsync.GetOptions{}); err != nil {
		t.Errorf("node1 reading its own endpoint: %v", err)
	}
	if _, err := node.CreateEndpoint(ctx, endpoint("default", "node1", "by-node", nil)); !errors.Is(err, epsync.ErrPermissionDenied) {
		t.Errorf("node1 creating an endpoint: %v, want PERMISSION_DENIED", err)
	}

	short := testContext(t, 3*time.Second)
	if _, err := dialTLS(epsync.TLSFiles{CAFile: caFile}).GetEndpoint(short, "default", "x", epsync.GetOptions{}); !errors.Is(err, epsync.ErrUnavailable) {
		t.Errorf("without a client certificate: %v, want UNAVAILABLE", err)
	}
	if _, err := dial(t, srv.addr()).GetEndpoint(short, "default", "x", epsync.GetOptions{}); !errors.Is(err, epsync.ErrUnavailable) {
		t.Errorf("plaintext to a TLS server: %v, want UNAVAILABLE", err)
	}
	if _, err := epsync.Dial(ctx, []string{srv.addr()}, epsync.WithTLS(epsync.TLSFiles{CAFile: filepath.Join(ca.dir, "missing")})); err == nil {
		t.Error("Dial with a missing CA file succeeded")
	}
	if _, err := epsync.Dial(ctx, []string{srv.addr()}, epsync.WithTLS(epsync.TLSFiles{CertFile: clientCert})); err == nil {
		t.Error("Dial with a certificate and no key succeeded")
	}
}
