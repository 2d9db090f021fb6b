package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestGeneratedFileRoundTripsAndDocumentsEveryKey(t *testing.T) {
	out, err := Generate(Default())
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(out)
	if err != nil {
		t.Fatalf("generated config does not load: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Fatalf("generated config loads as\n%+v\nwant\n%+v", got, Default())
	}
	var walk func(rt reflect.Type, path string)
	walk = func(rt reflect.Type, path string) {
		for i := 0; i < rt.NumField(); i++ {
			f := rt.Field(i)
			p := join(path, f.Tag.Get("yaml"))
			if f.Tag.Get("doc") == "" {
				t.Errorf("%s has no doc tag", p)
			}
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, p)
				continue
			}
			if !strings.Contains(string(out), EnvName(p)) {
				t.Errorf("generated file does not mention %s", EnvName(p))
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
}

func TestParseErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown top-level key", "colour: blue\n", "colour"},
		{"unknown nested key", "registration:\n  open: true\n", "registration.open"},
		{"wrong type", "accounts:\n  bcrypt_cost: lots\n", "accounts.bcrypt_cost"},
		{"bad bool", "registration:\n  enabled: perhaps\n", "registration.enabled"},
		{"mapping expected", "listen: 8008\n", "listen"},
		{"bad value", "accounts:\n  bcrypt_cost: 40\n", "accounts.bcrypt_cost"},
		{"bad server name", "server_name: 'bad name'\n", "server_name"},
		{"bad room version", "rooms:\n  default_version: '99'\n", "rooms.default_version"},
		{"bad db url", "database:\n  url: mysql://x\n", "database.url"},
		{"unknown component", "database:\n  components:\n    chat: sqlite:x.db\n", "database.components.chat"},
		{"tokens required but none", "registration:\n  enabled: true\n  require_token: true\n", "registration.tokens"},
		{"federation listener without tls", "listen:\n  federation: ':8448'\n", "tls"},
		{"not yaml", "a: [\n", "YAML"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error naming %q", err, c.want)
			}
		})
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	t.Setenv("PARLEY_SERVER_NAME", "example.org")
	t.Setenv("PARLEY_REGISTRATION_ENABLED", "true")
	t.Setenv("PARLEY_ACCOUNTS_BCRYPT_COST", "5")
	t.Setenv("PARLEY_FEDERATION_NOTARY_SERVERS", "a.org, b.org")
	t.Setenv("PARLEY_DATABASE_COMPONENTS_SYNCAPI", "postgres://x/y")
	cfg, err := Parse([]byte("server_name: other.org\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName != "example.org" || !cfg.Registration.Enabled || cfg.Accounts.BcryptCost != 5 ||
		!reflect.DeepEqual(cfg.Federation.NotaryServers, []string{"a.org", "b.org"}) ||
		cfg.DatabaseURL("syncapi", "/d") != "postgres://x/y" || cfg.DatabaseURL("userapi", "/d") != "sqlite:/d/parley.db" {
		t.Fatalf("overrides not applied: %+v", cfg)
	}
	t.Setenv("PARLEY_ACCOUNTS_BCRYPT_COST", "many")
	if _, err := Parse(nil); err == nil || !strings.Contains(err.Error(), "PARLEY_ACCOUNTS_BCRYPT_COST") {
		t.Fatalf("want error naming the variable, got %v", err)
	}
}

func TestValidateServerName(t *testing.T) {
	good := []string{"localhost", "localhost:8008", "matrix.org", "1.2.3.4:8448", "[::1]:8448", "[1234:5678::abcd]", "hs1"}
	bad := []string{"", "a b", "host:", ":80", "host:99999999", "[::1", "[zz]:80", "exa_mple.org", "host:8a"}
	for _, s := range good {
		if err := ValidateServerName(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range bad {
		if err := ValidateServerName(s); err == nil {
			t.Errorf("%q: want error", s)
		}
	}
}
