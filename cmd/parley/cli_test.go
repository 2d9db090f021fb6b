package main_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/parley-chat/parley/internal/signingkey"
	"github.com/parley-chat/parley/internal/testserver"
)

func parley(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(testserver.Binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestFirstStartWritesConfigAndKey: the README's first command on an empty
// data directory creates the config and the key; a second start reuses both.
func TestFirstStartWritesConfigAndKey(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	for _, f := range []string{"parley.yaml", "signing.key", "parley.db", "nats"} {
		if _, err := os.Stat(filepath.Join(srv.DataDir, f)); err != nil {
			t.Errorf("first start did not create %s: %v", f, err)
		}
	}
	if !strings.Contains(srv.Logs(), "(created)") || !strings.Contains(srv.Logs(), "parley create-account") {
		t.Errorf("start banner should say what was created and how to add a user:\n%s", srv.Logs())
	}
	key1, err := signingkey.Load(filepath.Join(srv.DataDir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	cfg1, _ := os.ReadFile(filepath.Join(srv.DataDir, "parley.yaml"))
	srv.Restart()
	key2, err := signingkey.Load(filepath.Join(srv.DataDir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	cfg2, _ := os.ReadFile(filepath.Join(srv.DataDir, "parley.yaml"))
	if key1.Current.ID != key2.Current.ID || string(cfg1) != string(cfg2) {
		t.Fatal("second start must reuse the key and the config")
	}
}

// TestCreateAccountBesideRunningServer: create-account writes into the data
// directory of a live server, and the new user can log in at once.
func TestCreateAccountBesideRunningServer(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{ClosedRegistration: true})
	out, err := parley(t, []string{"PARLEY_ACCOUNTS_BCRYPT_COST=4"}, "create-account", "--data-dir", srv.DataDir,
		"--username", "carol", "--password", "a-long-password", "--admin")
	if err != nil {
		t.Fatalf("create-account: %v\n%s", err, out)
	}
	if !strings.Contains(out, "@carol:"+srv.ServerName) {
		t.Fatalf("output should name the user: %s", out)
	}
	cli := srv.Client(t)
	_, err = cli.Login(context.Background(), &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "carol"},
		Password:   "a-long-password",
	})
	if err != nil {
		t.Fatalf("login as created user: %v", err)
	}
	out, err = parley(t, nil, "create-account", "--data-dir", srv.DataDir, "--username", "carol", "--password", "a-long-password")
	if err == nil {
		t.Fatalf("creating the same user twice must fail: %s", out)
	}
	// Registration is closed by default.
	_, err = srv.Client(t).RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: "dave", Password: "a-long-password"})
	if err == nil {
		t.Fatal("registration should be closed without --open-registration")
	}
}

func TestGenerateKeysRotates(t *testing.T) {
	dir := t.TempDir()
	if out, err := parley(t, nil, "generate-keys", "--data-dir", dir); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	first, err := signingkey.Load(filepath.Join(dir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := parley(t, nil, "generate-keys", "--data-dir", dir); err != nil || !strings.Contains(out, "rotated") {
		t.Fatalf("%v: %s", err, out)
	}
	second, err := signingkey.Load(filepath.Join(dir, "signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	if second.Current.ID == first.Current.ID || len(second.Old) != 1 || second.Old[0].ID != first.Current.ID {
		t.Fatalf("rotation: %+v", second)
	}
}

func TestBadConfigStopsTheStart(t *testing.T) {
	cases := map[string]string{
		"unknown key": "server_name: localhost\nflavour: vanilla\n",
		"wrong type":  "accounts:\n  bcrypt_cost: high\n",
		"bad value":   "rate_limits:\n  enabled: true\n  per_second: -1\n",
	}
	for name, yaml := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "parley.yaml"), []byte(yaml), 0o600)
			out, err := parley(t, nil, "run", "--data-dir", dir, "--listen", "127.0.0.1:1")
			if err == nil {
				t.Fatalf("start should fail: %s", out)
			}
			for _, key := range []string{"flavour", "accounts.bcrypt_cost", "rate_limits"} {
				if strings.Contains(yaml, strings.Split(key, ".")[0]) && !strings.Contains(out, key) {
					t.Fatalf("message should name %s: %s", key, out)
				}
			}
		})
	}
}

func TestGenerateConfigAndUsage(t *testing.T) {
	out, err := parley(t, nil, "generate-config", "--out", "-", "--server-name", "example.org")
	if err != nil || !strings.Contains(out, "server_name: example.org") || !strings.Contains(out, "PARLEY_DATABASE_URL") {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := parley(t, nil, "frobnicate"); err == nil || !strings.Contains(out, "unknown command") {
		t.Fatalf("unknown command: %v %s", err, out)
	}
	if out, err := parley(t, nil, "version"); err != nil || !strings.HasPrefix(out, "parley ") {
		t.Fatalf("version: %v %s", err, out)
	}
}
