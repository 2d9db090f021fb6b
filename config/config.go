// Package config is Parley's one YAML configuration file: its keys and
// defaults, environment overrides, and validation at start.
//
// Every key is a field below with a `doc` tag; the generated file, the
// environment variable names and the validation messages all come from these
// fields, so a new key needs exactly one edit here.
package config

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
)

// Config is the whole configuration of a Parley server.
type Config struct {
	ServerName   string       `yaml:"server_name" doc:"The server name: the part after the colon in user IDs (@alice:NAME) and room aliases. It cannot be changed once users exist."`
	Listen       Listen       `yaml:"listen" doc:"Network listeners."`
	TLS          TLS          `yaml:"tls" doc:"TLS for the federation listener (and the client listener when client_tls is true)."`
	SigningKey   string       `yaml:"signing_key" doc:"Path of the ed25519 signing key (relative paths are inside the data directory). 'parley generate-keys' makes a new one."`
	Database     Database     `yaml:"database" doc:"Where each component keeps its tables."`
	NATS         NATS         `yaml:"nats" doc:"The message bus between components."`
	Registration Registration `yaml:"registration" doc:"Who may create an account."`
	Accounts     Accounts     `yaml:"accounts" doc:"Account security."`
	RateLimits   RateLimits   `yaml:"rate_limits" doc:"Limits on login and registration attempts. When enabled, URL previews (1/s, bursts of 30) and mxc URI creation (5/s, bursts of 100) are also limited per user."`
	Client       Client       `yaml:"client" doc:"Client-server API behaviour."`
	Rooms        Rooms        `yaml:"rooms" doc:"Room defaults."`
	Federation   Federation   `yaml:"federation" doc:"Server-server API behaviour."`
	WellKnown    WellKnown    `yaml:"well_known" doc:"Answers for /.well-known/matrix/client and /.well-known/matrix/server; empty keys are left out."`
	Media        Media        `yaml:"media" doc:"The media repository: uploads, downloads, thumbnails and URL previews."`
	Logging      Logging      `yaml:"logging" doc:"Logs."`
	Presence     Presence     `yaml:"presence" doc:"Online/offline status shared with people in the same rooms."`
}

// Listen says where the server accepts connections.
type Listen struct {
	Client     string `yaml:"client" doc:"host:port of the client-server API (plain HTTP unless tls.client_tls; put a TLS proxy in front in production). Also serves /_matrix/federation for proxies that route it here."`
	Federation string `yaml:"federation" doc:"host:port of the HTTPS federation listener, e.g. ':8448'. Empty: no separate federation listener."`
	Metrics    string `yaml:"metrics" doc:"host:port serving /metrics for Prometheus. Empty: /metrics is served on the client listener."`
	Pprof      bool   `yaml:"pprof" doc:"Serve Go's runtime profiles (go tool pprof) at /debug/pprof/ on the client listener, for performance work. Off in production: anyone who reaches the listener can read them and make the server spend CPU."`
}

// TLS names the certificate served on TLS listeners.
type TLS struct {
	Certificate string `yaml:"certificate" doc:"PEM certificate chain file."`
	Key         string `yaml:"key" doc:"PEM private key file."`
	ClientTLS   bool   `yaml:"client_tls" doc:"Serve the client listener over TLS too."`
}

// Database holds connection URLs.
type Database struct {
	URL        string            `yaml:"url" doc:"Database for every component: 'sqlite:FILE' (relative to the data directory) or 'postgres://user:pass@host/db'."`
	Components map[string]string `yaml:"components" doc:"Optional per-component URLs overriding url, keyed by component name (userapi, roomserver, syncapi, federation, mediaapi)."`
}

// NATS configures the bus.
type NATS struct {
	URL            string `yaml:"url" doc:"nats:// URL of an external NATS JetStream cluster (comma-separated for several). Empty: run an embedded NATS server inside Parley."`
	StoreDir       string `yaml:"store_dir" doc:"JetStream storage directory of the embedded server (relative to the data directory)."`
	EmbeddedListen string `yaml:"embedded_listen" doc:"host:port on which the embedded server also accepts TCP clients. Empty: in-process only."`
	StreamPrefix   string `yaml:"stream_prefix" doc:"Prefix of stream and subject names, so several Parleys can share one NATS cluster."`
}

// Registration controls account creation.
type Registration struct {
	Enabled      bool     `yaml:"enabled" doc:"Allow anyone to register. Without tokens this needs no verification at all: for development and closed networks only."`
	RequireToken bool     `yaml:"require_token" doc:"With enabled: registration needs one of tokens (the m.login.registration_token stage)."`
	Tokens       []string `yaml:"tokens" doc:"Registration tokens accepted when require_token is set."`
	SharedSecret string   `yaml:"shared_secret" doc:"Secret for the Synapse-compatible admin registration API (/_synapse/admin/v1/register). Empty: that API is off."`
}

// Accounts holds password and token settings.
type Accounts struct {
	BcryptCost        int `yaml:"bcrypt_cost" doc:"bcrypt cost for stored passwords (4-31; each step doubles the work)."`
	MinPasswordLength int `yaml:"min_password_length" doc:"Shortest password accepted when registering or changing it."`
}

// RateLimits bounds login and registration attempts.
type RateLimits struct {
	Enabled   bool    `yaml:"enabled" doc:"Turn rate limiting on. Turn it off only for tests and load generation."`
	PerSecond float64 `yaml:"per_second" doc:"Sustained login/registration attempts per second, per client IP and per user."`
	Burst     int     `yaml:"burst" doc:"Attempts allowed in a burst before the per-second limit applies."`
}

// Client holds client-server API settings.
type Client struct {
	MaxBodyBytes int64 `yaml:"max_body_bytes" doc:"Largest JSON request body accepted, in bytes."`
}

// Rooms holds room defaults.
type Rooms struct {
	DefaultVersion string `yaml:"default_version" doc:"Room version of new rooms unless the creator asks for another (1-11)."`
}

// Federation holds server-server settings.
type Federation struct {
	Enabled            bool     `yaml:"enabled" doc:"Talk to other homeservers."`
	TrustedCAFile      string   `yaml:"trusted_ca_file" doc:"Extra CA certificate (PEM) trusted for outbound federation, for private test clusters."`
	InsecureSkipVerify bool     `yaml:"insecure_skip_verify" doc:"DANGEROUS, development only: do not check other servers' TLS certificates."`
	NotaryServers      []string `yaml:"notary_servers" doc:"Servers asked for other servers' keys when those cannot be fetched directly."`
}

// WellKnown holds discovery answers.
type WellKnown struct {
	ClientBaseURL string `yaml:"client_base_url" doc:"base_url in /.well-known/matrix/client, e.g. 'https://matrix.example.org'."`
	Server        string `yaml:"server" doc:"m.server in /.well-known/matrix/server, e.g. 'matrix.example.org:443'."`
}

// Media configures the media repository.
type Media struct {
	MaxUploadBytes              int64    `yaml:"max_upload_bytes" doc:"Largest file accepted for upload, in bytes; larger uploads get 413 M_TOO_LARGE."`
	StoreDir                    string   `yaml:"store_dir" doc:"Directory holding uploaded files and thumbnails, stored by SHA-256 (relative to the data directory). Every instance must see the same directory."`
	AllowLegacyUnauthenticated  bool     `yaml:"allow_legacy_unauthenticated" doc:"Serve the deprecated unauthenticated /_matrix/media/v3 download, thumbnail, config and preview_url endpoints beside the authenticated /_matrix/client/v1/media ones."`
	LegacyUnauthenticatedFrozen bool     `yaml:"legacy_unauthenticated_frozen" doc:"Freeze the unauthenticated endpoints (client-server spec 1.11): they keep serving media uploaded before the freeze was first switched on and answer 404 for anything newer."`
	MaxThumbnailPixels          int64    `yaml:"max_thumbnail_pixels" doc:"Images with more pixels than this (width x height) are never decoded for thumbnails, so a small file cannot expand into gigabytes of memory."`
	URLPreviewEnabled           bool     `yaml:"url_preview_enabled" doc:"Answer preview_url by fetching the page. Private, loopback, link-local and other internal addresses are never fetched."`
	URLPreviewAllowPrivate      []string `yaml:"url_preview_allow_private" doc:"CIDRs (e.g. '10.1.2.0/24') that URL previews may fetch even though they are internal addresses. For tests and trusted intranets only."`
}

// Presence controls presence (client-server spec §"Presence").
type Presence struct {
	Enabled bool `yaml:"enabled" doc:"Track and share presence. When off, presence updates are accepted and ignored, and everyone appears offline."`
}

// Logging controls log output.
type Logging struct {
	Level  string `yaml:"level" doc:"One of debug, info, warn, error."`
	Format string `yaml:"format" doc:"text or json."`
}

// Components lists the names accepted in database.components.
var Components = []string{"userapi", "roomserver", "syncapi", "federation", "mediaapi"}

// Default returns the configuration of a fresh single-binary server.
func Default() *Config {
	return &Config{
		ServerName:   "localhost:8008",
		Listen:       Listen{Client: "127.0.0.1:8008"},
		SigningKey:   "signing.key",
		Database:     Database{URL: "sqlite:parley.db", Components: map[string]string{}},
		NATS:         NATS{StoreDir: "nats", StreamPrefix: "parley"},
		Registration: Registration{Tokens: []string{}},
		Accounts:     Accounts{BcryptCost: 12, MinPasswordLength: 8},
		RateLimits:   RateLimits{Enabled: true, PerSecond: 0.5, Burst: 10},
		Client:       Client{MaxBodyBytes: 1 << 20},
		Rooms:        Rooms{DefaultVersion: "10"},
		Federation:   Federation{Enabled: true, NotaryServers: []string{}},
		Logging:      Logging{Level: "info", Format: "text"},
		Presence:     Presence{Enabled: true},
		Media: Media{
			MaxUploadBytes:             50 << 20,
			StoreDir:                   "media",
			AllowLegacyUnauthenticated: true,
			MaxThumbnailPixels:         32_000_000,
			URLPreviewEnabled:          true,
			URLPreviewAllowPrivate:     []string{},
		},
	}
}

// Validate checks values that parse but make no sense, naming the key.
func (c *Config) Validate() error {
	var errs []string
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Sprintf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if err := ValidateServerName(c.ServerName); err != nil {
		bad("server_name", "%v", err)
	}
	if _, _, err := net.SplitHostPort(c.Listen.Client); err != nil {
		bad("listen.client", "expected host:port, got %q", c.Listen.Client)
	}
	for key, v := range map[string]string{"listen.federation": c.Listen.Federation, "listen.metrics": c.Listen.Metrics, "nats.embedded_listen": c.NATS.EmbeddedListen} {
		if v == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad(key, "expected host:port or empty, got %q", v)
		}
	}
	if (c.Listen.Federation != "" || c.TLS.ClientTLS) && (c.TLS.Certificate == "" || c.TLS.Key == "") {
		bad("tls", "certificate and key are needed for the federation listener or client_tls")
	}
	if c.SigningKey == "" {
		bad("signing_key", "must name a file")
	}
	if !validDBURL(c.Database.URL) {
		bad("database.url", "expected sqlite:FILE or postgres://..., got %q", c.Database.URL)
	}
	for name, u := range c.Database.Components {
		if !contains(Components, name) {
			bad("database.components."+name, "unknown component; expected one of %s", strings.Join(Components, ", "))
		} else if u != "" && !validDBURL(u) {
			bad("database.components."+name, "expected sqlite:FILE or postgres://..., got %q", u)
		}
	}
	if c.NATS.URL != "" && !strings.HasPrefix(c.NATS.URL, "nats://") && !strings.HasPrefix(c.NATS.URL, "tls://") {
		bad("nats.url", "expected nats://host:port or empty, got %q", c.NATS.URL)
	}
	if c.NATS.StreamPrefix == "" || strings.ContainsAny(c.NATS.StreamPrefix, ". *>") {
		bad("nats.stream_prefix", "expected a non-empty name without dots, spaces or wildcards, got %q", c.NATS.StreamPrefix)
	}
	if c.Registration.RequireToken && len(c.Registration.Tokens) == 0 {
		bad("registration.tokens", "require_token is set but no tokens are listed")
	}
	for _, tok := range c.Registration.Tokens {
		if tok == "" || len(tok) > 64 || strings.Trim(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-") != "" {
			bad("registration.tokens", "tokens must be 1-64 characters of A-Z a-z 0-9 . _ ~ -")
			break
		}
	}
	if c.Accounts.BcryptCost < 4 || c.Accounts.BcryptCost > 31 {
		bad("accounts.bcrypt_cost", "expected 4 to 31, got %d", c.Accounts.BcryptCost)
	}
	if c.Accounts.MinPasswordLength < 0 || c.Accounts.MinPasswordLength > 512 {
		bad("accounts.min_password_length", "expected 0 to 512, got %d", c.Accounts.MinPasswordLength)
	}
	if c.RateLimits.Enabled && (c.RateLimits.PerSecond <= 0 || c.RateLimits.Burst < 1) {
		bad("rate_limits", "per_second must be > 0 and burst >= 1 when enabled")
	}
	if c.Client.MaxBodyBytes < 65536 || c.Client.MaxBodyBytes > 1<<30 {
		bad("client.max_body_bytes", "expected 65536 to 1073741824, got %d", c.Client.MaxBodyBytes)
	}
	if v := gomatrixserverlib.RoomVersion(c.Rooms.DefaultVersion); !gomatrixserverlib.StableRoomVersion(v) {
		bad("rooms.default_version", "expected a stable room version (1-11), got %q", c.Rooms.DefaultVersion)
	}
	if c.Media.MaxUploadBytes < 1 || c.Media.MaxUploadBytes > 1<<40 {
		bad("media.max_upload_bytes", "expected 1 to 1099511627776, got %d", c.Media.MaxUploadBytes)
	}
	if c.Media.StoreDir == "" {
		bad("media.store_dir", "must name a directory")
	}
	if c.Media.MaxThumbnailPixels < 1 {
		bad("media.max_thumbnail_pixels", "expected a positive number, got %d", c.Media.MaxThumbnailPixels)
	}
	for _, cidr := range c.Media.URLPreviewAllowPrivate {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			bad("media.url_preview_allow_private", "expected CIDRs like 10.0.0.0/8, got %q", cidr)
		}
	}
	if !contains([]string{"debug", "info", "warn", "error"}, c.Logging.Level) {
		bad("logging.level", "expected debug, info, warn or error, got %q", c.Logging.Level)
	}
	if c.Logging.Format != "text" && c.Logging.Format != "json" {
		bad("logging.format", "expected text or json, got %q", c.Logging.Format)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration:\n  %s", strings.Join(errs, "\n  "))
	}
	return nil
}

// DatabaseURL returns the database URL of a component, with a relative
// SQLite path resolved inside dataDir.
func (c *Config) DatabaseURL(component, dataDir string) string {
	u := c.Database.URL
	if v := c.Database.Components[component]; v != "" {
		u = v
	}
	if p, ok := strings.CutPrefix(u, "sqlite:"); ok && !filepath.IsAbs(p) {
		return "sqlite:" + filepath.Join(dataDir, p)
	}
	return u
}

// Path resolves a path from the config relative to dataDir.
func Path(dataDir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dataDir, p)
}

func validDBURL(u string) bool {
	for _, p := range []string{"sqlite:", "postgres://", "postgresql://"} {
		if strings.HasPrefix(u, p) && len(u) > len(p) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// ValidateServerName checks the server-name grammar (appendices §"Server
// Name"): a DNS name, IPv4 literal or bracketed IPv6 literal, optional port.
func ValidateServerName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("expected a host name with optional :port, got %q", name)
	}
	host, port := name, ""
	if strings.HasPrefix(name, "[") {
		end := strings.IndexByte(name, ']')
		if end < 0 || net.ParseIP(name[1:end]) == nil {
			return fmt.Errorf("bad IPv6 literal in %q", name)
		}
		host, port = name[:end+1], strings.TrimPrefix(name[end+1:], ":")
		if name[end+1:] != "" && !strings.HasPrefix(name[end+1:], ":") {
			return fmt.Errorf("unexpected text after IPv6 literal in %q", name)
		}
	} else if i := strings.LastIndexByte(name, ':'); i >= 0 {
		host, port = name[:i], name[i+1:]
		if host == "" {
			return fmt.Errorf("expected a host before the port in %q", name)
		}
	}
	if port != "" || strings.HasSuffix(name, ":") {
		if len(port) == 0 || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return fmt.Errorf("bad port in %q", name)
		}
	}
	if !strings.HasPrefix(host, "[") && strings.Trim(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") != "" {
		return fmt.Errorf("host %q may only contain letters, digits, '-' and '.'", host)
	}
	return nil
}
