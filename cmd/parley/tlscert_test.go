package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA makes a self-signed CA and writes its certificate and key (in the
// given PEM encoding) to dir, returning the two paths.
func testCA(t *testing.T, dir string, key crypto.Signer, keyEncoding string, isCA bool) (certPath, keyPath string) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	switch keyEncoding {
	case "pkcs1":
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))}
	case "sec1":
		b, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
		if err != nil {
			t.Fatal(err)
		}
		block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: b}
	case "pkcs8":
		b, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: b}
	default:
		t.Fatalf("unknown key encoding %q", keyEncoding)
	}
	certPath, keyPath = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

func TestGenerateTLSCertIsSignedByTheCAForTheServerName(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc        string
		caKey       crypto.Signer
		keyEncoding string
		serverName  string
		wantDNS     string
		wantIP      string
	}{
		{"RSA CA in PKCS#1", rsaKey, "pkcs1", "hs1", "hs1", ""},
		{"RSA CA in PKCS#8, name with port", rsaKey, "pkcs8", "hs2:8448", "hs2", ""},
		{"EC CA in SEC 1, IPv4 name", ecKey, "sec1", "127.0.0.1", "", "127.0.0.1"},
		{"EC CA in PKCS#8", ecKey, "pkcs8", "matrix.example.org", "matrix.example.org", ""},
		{"Ed25519 CA, IPv6 name with port", edKey, "pkcs8", "[::1]:8448", "", "::1"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			dir := t.TempDir()
			caCertPath, caKeyPath := testCA(t, dir, tt.caKey, tt.keyEncoding, true)
			certOut, keyOut := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
			err := generateTLSCertCommand([]string{"--ca-cert", caCertPath, "--ca-key", caKeyPath,
				"--name", tt.serverName, "--cert-out", certOut, "--key-out", keyOut})
			if err != nil {
				t.Fatal(err)
			}

			pair, err := tls.LoadX509KeyPair(certOut, keyOut)
			if err != nil {
				t.Fatalf("certificate and key do not form a pair: %v", err)
			}
			leaf, err := x509.ParseCertificate(pair.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			caCert, err := readCACert(caCertPath)
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			roots.AddCert(caCert)
			host := tt.wantDNS + tt.wantIP
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
				t.Fatalf("chain does not verify for %q: %v", host, err)
			}
			if err := leaf.VerifyHostname("some-other-host"); err == nil {
				t.Error("certificate also verifies for an unrelated host")
			}
			if tt.wantDNS != "" && (len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != tt.wantDNS || len(leaf.IPAddresses) != 0) {
				t.Errorf("SANs = DNS %v IP %v, want DNS [%s]", leaf.DNSNames, leaf.IPAddresses, tt.wantDNS)
			}
			if tt.wantIP != "" && (len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP(tt.wantIP)) || len(leaf.DNSNames) != 0) {
				t.Errorf("SANs = DNS %v IP %v, want IP [%s]", leaf.DNSNames, leaf.IPAddresses, tt.wantIP)
			}
			if leaf.NotAfter.After(caCert.NotAfter) {
				t.Errorf("certificate outlives its CA: %v > %v", leaf.NotAfter, caCert.NotAfter)
			}
			info, err := os.Stat(keyOut)
			if err != nil {
				t.Fatal(err)
			}
			if info.Mode().Perm() != 0o600 {
				t.Errorf("key file mode = %v, want 0600", info.Mode().Perm())
			}
		})
	}
}

func TestGenerateTLSCertRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caCertPath, caKeyPath := testCA(t, dir, caKey, "sec1", true)

	otherDir := t.TempDir()
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKeyPath := testCA(t, otherDir, otherKey, "pkcs8", true)

	notCADir := t.TempDir()
	notCACertPath, notCAKeyPath := testCA(t, notCADir, caKey, "sec1", false)

	out := func(name string) string { return filepath.Join(dir, name) }
	tests := []struct {
		desc    string
		args    []string
		wantErr string
	}{
		{"missing name", []string{"--ca-cert", caCertPath, "--ca-key", caKeyPath, "--cert-out", out("c"), "--key-out", out("k")}, "--name is required"},
		{"key of another CA", []string{"--ca-cert", caCertPath, "--ca-key", otherKeyPath, "--name", "hs1", "--cert-out", out("c"), "--key-out", out("k")}, "does not belong"},
		{"certificate that is no CA", []string{"--ca-cert", notCACertPath, "--ca-key", notCAKeyPath, "--name", "hs1", "--cert-out", out("c"), "--key-out", out("k")}, "not marked as a CA"},
		{"bad server name", []string{"--ca-cert", caCertPath, "--ca-key", caKeyPath, "--name", "hs 1", "--cert-out", out("c"), "--key-out", out("k")}, "may only contain"},
		{"key file holds a certificate", []string{"--ca-cert", caCertPath, "--ca-key", caCertPath, "--name", "hs1", "--cert-out", out("c"), "--key-out", out("k")}, "no private key"},
		{"missing CA file", []string{"--ca-cert", out("nope"), "--ca-key", caKeyPath, "--name", "hs1", "--cert-out", out("c"), "--key-out", out("k")}, "read CA certificate"},
		{"stray argument", []string{"--ca-cert", caCertPath, "--ca-key", caKeyPath, "--name", "hs1", "--cert-out", out("c"), "--key-out", out("k"), "extra"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			err := generateTLSCertCommand(tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if _, statErr := os.Stat(out("c")); statErr == nil {
				t.Error("a certificate was written despite the error")
			}
		})
	}
}
