// Package testserver is the shared integration-test harness: it builds the
// real parley binary once per test process and runs it as a child process
// on a random loopback port, against SQLite or a fresh PostgreSQL database,
// so tests drive a complete server over real HTTP (with a real client
// library) and can stop, kill and restart it.
package testserver

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/parley-chat/parley/internal/testdb"
)

// Options choose how a test server runs.
type Options struct {
	// DB is "sqlite" (default) or "postgres".
	DB string
	// Env adds configuration overrides as PARLEY_* environment variables.
	Env map[string]string
	// ServerName defaults to localhost:<port>.
	ServerName string
	// ClosedRegistration starts without --open-registration.
	ClosedRegistration bool
}

// Server is one running Parley.
type Server struct {
	URL        string
	ServerName string
	DataDir    string
	Addr       string

	t    testing.TB
	args []string
	env  []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logs *lockedBuffer
}

// Start runs a new server and waits until it answers. It is stopped when
// the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Binary(t)
	addr := freeAddr(t)
	s := &Server{
		Addr:    addr,
		URL:     "http://" + addr,
		DataDir: t.TempDir(),
		t:       t,
		logs:    &lockedBuffer{},
	}
	s.ServerName = opts.ServerName
	if s.ServerName == "" {
		s.ServerName = "localhost:" + addr[strings.LastIndexByte(addr, ':')+1:]
	}
	s.args = []string{bin, "run", "--data-dir", s.DataDir, "--listen", addr, "--server-name", s.ServerName}
	if !opts.ClosedRegistration {
		s.args = append(s.args, "--open-registration")
	}
	env := map[string]string{
		"PARLEY_RATE_LIMITS_ENABLED":  "false",
		"PARLEY_ACCOUNTS_BCRYPT_COST": "4",
		"PARLEY_LOGGING_LEVEL":        "warn",
	}
	if opts.DB == "postgres" {
		env["PARLEY_DATABASE_URL"] = testdb.URL(t, "postgres")
	}
	for k, v := range opts.Env {
		env[k] = v
	}
	s.env = os.Environ()
	for k, v := range env {
		s.env = append(s.env, k+"="+v)
	}
	s.start()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("server %s log:\n%s", s.ServerName, s.logs.String())
		}
	})
	return s
}

func (s *Server) start() {
	s.t.Helper()
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Env = s.env
	cmd.Stdout = s.logs
	cmd.Stderr = s.logs
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start parley: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			s.t.Fatalf("parley exited during start:\n%s", s.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("parley did not answer within 60s:\n%s", s.logs.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Stop sends SIGTERM and waits for a clean exit.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

// Kill ends the process with SIGKILL, as a crash would.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(45 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		s.t.Errorf("parley did not exit within 45s of %v", sig)
	}
}

// Restart starts the server again on the same port and data directory.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Logs returns what the server has printed so far.
func (s *Server) Logs() string { return s.logs.String() }

// Client returns a mautrix client without credentials.
func (s *Server) Client(t testing.TB) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// Password is the password RegisterUser gives every account.
const Password = "correct horse battery staple"

// RegisterUser registers localpart through the client API (open
// registration, the m.login.dummy stage) and returns a logged-in client.
func (s *Server) RegisterUser(t testing.TB, localpart string) *mautrix.Client {
	t.Helper()
	cli := s.Client(t)
	resp, err := cli.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{
		Username: localpart, Password: Password, InitialDeviceDisplayName: "test device",
	})
	if err != nil {
		t.Fatalf("register %s: %v", localpart, err)
	}
	cli.SetCredentials(resp.UserID, resp.AccessToken)
	cli.DeviceID = resp.DeviceID
	return cli
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary returns the path of the parley binary, built from ./cmd/parley
// once per test process.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		dir, err := os.MkdirTemp("", "parley-testbin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "parley")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/parley")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/parley: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
