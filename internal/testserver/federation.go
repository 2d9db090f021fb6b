package testserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/signingkey"
)

// CA is a certificate authority made for one test, so that federating test
// servers can check each other's TLS certificates as in production.
type CA struct {
	// CertFile is the CA certificate in PEM, for federation.trusted_ca_file.
	CertFile string
	Pool     *x509.CertPool

	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

// NewCA makes a fresh CA whose files live in a temporary directory.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Parley test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{cert: cert, key: key, dir: t.TempDir(), Pool: x509.NewCertPool()}
	ca.Pool.AddCert(cert)
	ca.CertFile = filepath.Join(ca.dir, "ca.pem")
	writePEM(t, ca.CertFile, "CERTIFICATE", der)
	return ca
}

// Issue makes a server certificate for host (an IP literal gets an IP SAN,
// anything else a DNS SAN) and returns the PEM certificate and key files.
func (ca *CA) Issue(t testing.TB, host string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	return certFile, keyFile
}

// TLSConfig is a server TLS config with a certificate for host.
func (ca *CA) TLSConfig(t testing.TB, host string) *tls.Config {
	t.Helper()
	certFile, keyFile := ca.Issue(t, host)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// HTTPClient trusts only this CA.
func (ca *CA) HTTPClient() *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}},
	}
}

func writePEM(t testing.TB, path, blockType string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// FederatedServer is a Parley with a TLS federation listener whose server
// name is that listener's address, 127.0.0.1:PORT: an IP literal with a
// port resolves to itself (server-server spec §"Resolving server names",
// step 1), so servers find each other with no DNS.
type FederatedServer struct {
	*Server
	// FederationURL is https://SERVERNAME.
	FederationURL string
	CA            *CA
}

// StartFederated starts a server federating under ca. opts.ServerName is
// ignored (the name is the federation address); opts.Env is applied last,
// so a test may add federation settings such as notary servers.
func StartFederated(t testing.TB, ca *CA, opts Options) *FederatedServer {
	t.Helper()
	fedAddr := freeAddr(t)
	certFile, keyFile := ca.Issue(t, "127.0.0.1")
	env := map[string]string{
		"PARLEY_LISTEN_FEDERATION":          fedAddr,
		"PARLEY_TLS_CERTIFICATE":            certFile,
		"PARLEY_TLS_KEY":                    keyFile,
		"PARLEY_FEDERATION_ENABLED":         "true",
		"PARLEY_FEDERATION_TRUSTED_CA_FILE": ca.CertFile,
	}
	for k, v := range opts.Env {
		env[k] = v
	}
	opts.Env = env
	opts.ServerName = fedAddr
	s := Start(t, opts)
	return &FederatedServer{Server: s, FederationURL: "https://" + fedAddr, CA: ca}
}

// SigningKeys reads the server's signing key file (signing.key in its data
// directory, the default), so a test can sign as that server.
func (s *Server) SigningKeys(t testing.TB) *signingkey.Set {
	t.Helper()
	set, err := signingkey.Load(filepath.Join(s.DataDir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// RunCommand stops the server, runs "parley ARGS... --data-dir DATADIR"
// with the server's environment, and starts the server again. It returns
// the command's output.
func (s *Server) RunCommand(t testing.TB, args ...string) string {
	t.Helper()
	s.Stop()
	cmd := exec.Command(Binary(t), append(args, "--data-dir", s.DataDir)...)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("parley %v: %v\n%s", args, err, out)
	}
	s.start()
	return string(out)
}
