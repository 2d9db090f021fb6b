package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"time"

	"github.com/parley-chat/parley/config"
)

// generateTLSCertCommand issues a TLS server certificate for a server name,
// signed by a given CA. It exists for private test clusters (Complement
// mounts its CA into each homeserver container and expects every server to
// present a certificate from it on the federation port); production servers
// get their certificates from a public CA or an ACME client instead.
func generateTLSCertCommand(args []string) error {
	flags := flag.NewFlagSet("generate-tls-cert", flag.ContinueOnError)
	caCertPath := flags.String("ca-cert", "", "PEM certificate of the signing CA")
	caKeyPath := flags.String("ca-key", "", "PEM private key of the signing CA (PKCS#1, PKCS#8 or SEC 1)")
	name := flags.String("name", "", "server name the certificate is for (host or host:port; a DNS name or an IP literal)")
	certOut := flags.String("cert-out", "", "where to write the PEM certificate")
	keyOut := flags.String("key-out", "", "where to write the PEM private key (PKCS#8, mode 0600)")
	validity := flags.Duration("validity", 365*24*time.Hour, "how long the certificate is valid")
	if err := flags.Parse(args); err != nil {
		return err
	}
	for flagName, v := range map[string]string{"ca-cert": *caCertPath, "ca-key": *caKeyPath, "name": *name, "cert-out": *certOut, "key-out": *keyOut} {
		if v == "" {
			return fmt.Errorf("generate-tls-cert: --%s is required", flagName)
		}
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("generate-tls-cert: unexpected argument %q", flags.Arg(0))
	}
	if *validity <= 0 {
		return fmt.Errorf("generate-tls-cert: --validity must be positive")
	}
	caCert, err := readCACert(*caCertPath)
	if err != nil {
		return err
	}
	caKey, err := readPrivateKey(*caKeyPath)
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := issueServerCert(caCert, caKey, *name, time.Now(), *validity)
	if err != nil {
		return err
	}
	// The key first: a certificate on disk without its key is useless, the
	// reverse at least lets a rerun finish the job.
	if err := os.WriteFile(*keyOut, keyPEM, 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if err := os.WriteFile(*certOut, certPEM, 0o644); err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	return nil
}

// issueServerCert makes a fresh ECDSA P-256 key and a certificate for the
// host part of serverName signed by the CA, valid from an hour before now
// (for clocks that disagree a little) until now+validity, capped at the CA's
// own expiry. It returns both PEM-encoded.
func issueServerCert(caCert *x509.Certificate, caKey crypto.Signer, serverName string, now time.Time, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	host, err := certHost(serverName)
	if err != nil {
		return nil, nil, err
	}
	if !caCert.IsCA {
		return nil, nil, errors.New("the CA certificate is not marked as a CA (basicConstraints CA:TRUE)")
	}
	if !publicKeysEqual(caCert.PublicKey, caKey.Public()) {
		return nil, nil, errors.New("the CA key does not belong to the CA certificate")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(validity)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		// ClientAuth too: a homeserver may present the same certificate when
		// it connects out to peers that ask for one.
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// certHost returns the host a certificate for a server name must cover: the
// server name without its port and without the brackets of an IPv6 literal
// (server-server API §"Server discovery": certificates are checked against
// the host, never the port).
func certHost(serverName string) (string, error) {
	if err := config.ValidateServerName(serverName); err != nil {
		return "", err
	}
	host := serverName
	if strings.HasPrefix(host, "[") {
		return host[1:strings.IndexByte(host, ']')], nil
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	return host, nil
}

func readCACert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("no CERTIFICATE block in %s", path)
		}
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse CA certificate %s: %w", path, err)
			}
			return cert, nil
		}
	}
}

// readPrivateKey reads the first private key in a PEM file, whichever of the
// usual encodings it is in: PKCS#1 (RSA PRIVATE KEY), SEC 1 (EC PRIVATE KEY)
// or PKCS#8 (PRIVATE KEY, holding RSA, ECDSA or Ed25519).
func readPrivateKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("no private key block in %s", path)
		}
		var key any
		switch block.Type {
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		default:
			// EC PARAMETERS blocks and the like precede the key in some files.
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s in %s: %w", block.Type, path, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported key type %T in %s", key, path)
		}
		return signer, nil
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	switch k := a.(type) {
	case *rsa.PublicKey:
		return k.Equal(b)
	case *ecdsa.PublicKey:
		return k.Equal(b)
	case ed25519.PublicKey:
		return k.Equal(b)
	}
	return false
}
