package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/signingkey"
)

// Client is the outbound federation client: every request is signed with
// the server's current key (server-server spec §"Request Authentication"),
// server names are resolved per §"Resolving server names" (IP literal,
// explicit port, .well-known, SRV, port 8448) and TLS certificates are
// checked against the system roots plus an optional extra CA.
type Client struct {
	fclient.FederationClient
	// plain makes the unauthenticated requests the federation client
	// interface leaves out (GET /version).
	plain *fclient.Client
}

// ClientOptions configure NewClient.
type ClientOptions struct {
	ServerName spec.ServerName
	Keys       *signingkey.Set
	// TrustedCAFile is a PEM file of CA certificates trusted in addition
	// to the system's, for private federations and tests.
	TrustedCAFile string
	// InsecureSkipVerify turns off certificate checks: development only.
	InsecureSkipVerify bool
	// Timeout bounds one whole request; 0 means 30 seconds.
	Timeout time.Duration
	// Version goes into the User-Agent header.
	Version string
}

// NewClient builds the federation client.
func NewClient(opts ClientOptions) (*Client, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if opts.TrustedCAFile != "" {
		pem, err := os.ReadFile(opts.TrustedCAFile)
		if err != nil {
			return nil, fmt.Errorf("federation.trusted_ca_file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("federation.trusted_ca_file %s: no PEM certificates found", opts.TrustedCAFile)
		}
	}
	if opts.InsecureSkipVerify {
		logrus.Warn("federation.insecure_skip_verify is set: other servers' TLS certificates are NOT checked. " +
			"Anyone on the network path can impersonate any homeserver to this one. Never use this in production.")
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	tr := &resolvingTransport{
		base:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, InsecureSkipVerify: opts.InsecureSkipVerify}, //nolint:gosec // opt-in, warned above
		transports: map[string]*http.Transport{},
	}
	identity := &fclient.SigningIdentity{
		ServerName: opts.ServerName,
		KeyID:      gomatrixserverlib.KeyID(opts.Keys.Current.ID),
		PrivateKey: opts.Keys.Current.PrivateKey,
	}
	ua := fclient.WithUserAgent("Parley/" + opts.Version)
	return &Client{
		FederationClient: fclient.NewFederationClient([]*fclient.SigningIdentity{identity}, fclient.WithTransport(tr), fclient.WithTimeout(timeout), ua),
		plain:            fclient.NewClient(fclient.WithTransport(tr), fclient.WithTimeout(timeout), ua),
	}, nil
}

// GetVersion asks a server for its implementation name and version; it
// is the cheapest request there is, used to probe servers that were down.
func (c *Client) GetVersion(ctx context.Context, s spec.ServerName) (fclient.Version, error) {
	return c.plain.GetVersion(ctx, s)
}

// resolutionTTL is how long a resolved server name is reused; .well-known
// answers are to be cached for about a day (§"Resolving server names"),
// an hour keeps a moved server reachable sooner.
const resolutionTTL = time.Hour

// resolvingTransport sends matrix://SERVERNAME/... requests to the address
// the server name resolves to, over TLS checked for the name the spec
// says the certificate must carry.
type resolvingTransport struct {
	base *tls.Config

	mu         sync.Mutex
	transports map[string]*http.Transport // by TLS server name
	resolved   sync.Map                   // spec.ServerName → resolution
}

type resolution struct {
	results []fclient.ResolutionResult
	expires time.Time
}

var dialer = &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}

func (t *resolvingTransport) transport(tlsServerName string) *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr, ok := t.transports[tlsServerName]; ok {
		return tr
	}
	cfg := t.base.Clone()
	// For an IP literal crypto/tls checks the IP SANs and sends no SNI,
	// as §"TLS" asks.
	cfg.ServerName = tlsServerName
	tr := &http.Transport{
		DialContext:         dialer.DialContext,
		TLSClientConfig:     cfg,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     2 * time.Minute,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	t.transports[tlsServerName] = tr
	return tr
}

func (t *resolvingTransport) resolve(ctx context.Context, name spec.ServerName) ([]fclient.ResolutionResult, error) {
	if v, ok := t.resolved.Load(name); ok {
		if r := v.(resolution); time.Now().Before(r.expires) {
			return r.results, nil
		}
	}
	results, err := fclient.ResolveServer(ctx, name)
	if err != nil {
		return nil, err
	}
	if len(results) == 0 {
		return nil, fmt.Errorf("no address found for %s", name)
	}
	t.resolved.Store(name, resolution{results: results, expires: time.Now().Add(resolutionTTL)})
	return results, nil
}

// RoundTrip implements http.RoundTripper for matrix:// URLs.
func (t *resolvingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "matrix" {
		return nil, fmt.Errorf("federation transport: unsupported URL scheme %q", r.URL.Scheme)
	}
	name := spec.ServerName(r.URL.Host)
	results, err := t.resolve(r.Context(), name)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", name, err)
	}
	var errs []error
	for i, res := range results {
		req := r.Clone(r.Context())
		u := *r.URL
		u.Scheme, u.Host = "https", res.Destination
		req.URL, req.Host = &u, string(res.Host)
		if i > 0 && r.Body != nil {
			if r.GetBody == nil {
				break
			}
			if req.Body, err = r.GetBody(); err != nil {
				return nil, err
			}
		}
		resp, err := t.transport(res.TLSServerName).RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", res.Destination, err))
	}
	// Every address failed: resolve afresh next time, the server may have moved.
	t.resolved.Delete(name)
	return nil, errors.Join(errs...)
}
