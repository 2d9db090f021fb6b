package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/clientapi"
	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/federation"
	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/signingkey"
	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/mediaapi"
	"github.com/parley-chat/parley/roomserver"
	"github.com/parley-chat/parley/syncapi"
	"github.com/parley-chat/parley/userapi"
)

func runCommand(args []string) error {
	flags := flag.NewFlagSet("run", flag.ContinueOnError)
	var c commonFlags
	c.register(flags)
	listen := flags.String("listen", "", "host:port of the client API (overrides listen.client)")
	openReg := flags.Bool("open-registration", false, "let anyone register without verification (development and tests only)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	cfg, cfgCreated, err := c.loadOrCreateConfig()
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Listen.Client = *listen
	}
	if *openReg {
		cfg.Registration.Enabled = true
		cfg.Registration.RequireToken = false
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	setupLogging(cfg)
	if *openReg {
		logrus.Warn("--open-registration: anyone who can reach this server can create an account without any verification")
	}
	keyPath := config.Path(c.dataDir, cfg.SigningKey)
	keys, keyCreated, err := signingkey.LoadOrCreate(keyPath)
	if err != nil {
		return fmt.Errorf("signing key %s: %w", keyPath, err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	app, err := startApp(ctx, cfg, c.dataDir, keys)
	if err != nil {
		return err
	}
	defer app.close()

	servers, err := app.listen(cfg)
	if err != nil {
		return err
	}
	printStartBanner(cfg, &c, cfgCreated, keyCreated, keyPath, keys)

	<-ctx.Done()
	logrus.Info("shutting down: finishing in-flight requests")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(shutdownCtx); err != nil {
			logrus.WithError(err).Warn("http shutdown")
		}
	}
	return nil
}

// app is every component of a single-binary server, wired together.
type app struct {
	dbs     map[string]*sqlutil.DB
	bus     *bus.Bus
	users   *userapi.Service
	rooms   *roomserver.Service
	sync    *syncapi.Service
	fed     *federation.Service
	media   *mediaapi.Service
	handler http.Handler
}

// startApp opens the databases and the bus and starts every component. This
// is the one place where implementations are chosen and wired.
func startApp(ctx context.Context, cfg *config.Config, dataDir string, keys *signingkey.Set) (a *app, err error) {
	a = &app{dbs: map[string]*sqlutil.DB{}}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	a.bus, err = bus.Open(ctx, bus.Options{
		URL:      cfg.NATS.URL,
		StoreDir: config.Path(dataDir, cfg.NATS.StoreDir),
		Listen:   cfg.NATS.EmbeddedListen,
		Prefix:   cfg.NATS.StreamPrefix,
	})
	if err != nil {
		return nil, err
	}
	userDB, err := a.db(cfg, dataDir, "userapi")
	if err != nil {
		return nil, err
	}
	users, err := userapi.Open(ctx, userDB, cfg)
	if err != nil {
		return nil, fmt.Errorf("start userapi: %w", err)
	}
	a.users = users
	if err := users.StartDeviceListPublisher(ctx, a.bus); err != nil {
		return nil, fmt.Errorf("start userapi device-list publisher: %w", err)
	}
	roomDB, err := a.db(cfg, dataDir, "roomserver")
	if err != nil {
		return nil, err
	}
	if a.rooms, err = roomserver.Open(ctx, roomDB, a.bus, cfg, keys); err != nil {
		return nil, fmt.Errorf("start roomserver: %w", err)
	}
	syncDB, err := a.db(cfg, dataDir, "syncapi")
	if err != nil {
		return nil, err
	}
	if a.sync, err = syncapi.Open(ctx, syncDB, a.bus, cfg, users, a.rooms); err != nil {
		return nil, fmt.Errorf("start syncapi: %w", err)
	}
	mediaDB, err := a.db(cfg, dataDir, "mediaapi")
	if err != nil {
		return nil, err
	}
	if a.media, err = mediaapi.Open(ctx, mediaDB, cfg, dataDir, users); err != nil {
		return nil, fmt.Errorf("start mediaapi: %w", err)
	}
	if cfg.Federation.Enabled {
		fedDB, err := a.db(cfg, dataDir, "federation")
		if err != nil {
			return nil, err
		}
		if a.fed, err = federation.Open(ctx, federation.Deps{
			Config: cfg, Keys: keys, DB: fedDB, Bus: a.bus, Rooms: a.rooms, Users: users, Version: version,
		}); err != nil {
			return nil, fmt.Errorf("start federation: %w", err)
		}
		a.media.EnableFederation(a.fed.Client(), federation.RequireServerAuth(spec.ServerName(cfg.ServerName), a.fed.Keys().KeyRing()))
		users.SetRemoteKeys(a.fed.RemoteKeys())
		if err := a.sync.EnableBackfill(ctx, a.fed); err != nil {
			return nil, err
		}
	}
	clientDeps := clientapi.Deps{Config: cfg, Users: users, Rooms: a.rooms}
	if a.fed != nil {
		clientDeps.Federation = a.fed
	}
	client := clientapi.New(clientDeps)

	r := chi.NewRouter()
	r.Use(httputil.Recover, httputil.LogRequests, httputil.Metrics, httputil.CORS, httputil.R0Alias)
	r.NotFound(httputil.NotFoundHandler)
	r.MethodNotAllowed(httputil.MethodNotAllowedHandler)
	registerServerRoutes(r, cfg)
	client.Register(r)
	a.sync.Register(r)
	if a.fed != nil {
		a.fed.Register(r)
	}
	a.media.Register(r)
	a.handler = r
	return a, nil
}

// db opens (once per distinct URL) the database of a component.
func (a *app) db(cfg *config.Config, dataDir, component string) (*sqlutil.DB, error) {
	url := cfg.DatabaseURL(component, dataDir)
	if db, ok := a.dbs[url]; ok {
		return db, nil
	}
	db, err := sqlutil.Open(url)
	if err != nil {
		return nil, fmt.Errorf("%s database: %w", component, err)
	}
	a.dbs[url] = db
	return db, nil
}

// close stops consumers first, then the bus (draining what is in flight),
// then the databases.
func (a *app) close() {
	if a.media != nil {
		a.media.Close()
	}
	if a.sync != nil {
		a.sync.Close()
	}
	if a.fed != nil {
		a.fed.Close()
	}
	if a.rooms != nil {
		a.rooms.Close()
	}
	if a.users != nil {
		a.users.Close()
	}
	if a.bus != nil {
		a.bus.Close()
	}
	for _, db := range a.dbs {
		db.Close()
	}
}

// listen starts the HTTP listeners and returns their servers.
func (a *app) listen(cfg *config.Config) ([]*http.Server, error) {
	var servers []*http.Server
	start := func(name, addr string, h http.Handler, useTLS bool) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s listener on %s: %w", name, addr, err)
		}
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       5 * time.Minute,
			MaxHeaderBytes:    64 << 10,
		}
		if useTLS {
			cert, err := tls.LoadX509KeyPair(cfg.TLS.Certificate, cfg.TLS.Key)
			if err != nil {
				ln.Close()
				return fmt.Errorf("load TLS certificate: %w", err)
			}
			srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
			ln = tls.NewListener(ln, srv.TLSConfig)
		}
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logrus.WithError(err).Errorf("%s listener stopped", name)
			}
		}()
		logrus.Infof("%s listening on %s", name, ln.Addr())
		return nil
	}
	if err := start("client API", cfg.Listen.Client, a.handler, cfg.TLS.ClientTLS); err != nil {
		return nil, err
	}
	if cfg.Listen.Federation != "" {
		if err := start("federation API", cfg.Listen.Federation, a.handler, true); err != nil {
			return nil, err
		}
	}
	if cfg.Listen.Metrics != "" {
		if err := start("metrics", cfg.Listen.Metrics, metricsHandler(), false); err != nil {
			return nil, err
		}
	}
	return servers, nil
}

func printStartBanner(cfg *config.Config, c *commonFlags, cfgCreated, keyCreated bool, keyPath string, keys *signingkey.Set) {
	scheme := "http"
	if cfg.TLS.ClientTLS {
		scheme = "https"
	}
	note := func(created bool) string {
		if created {
			return " (created)"
		}
		return ""
	}
	bus := "embedded NATS JetStream in " + config.Path(c.dataDir, cfg.NATS.StoreDir)
	if cfg.NATS.URL != "" {
		bus = "NATS at " + cfg.NATS.URL
	}
	fmt.Printf(`Parley %s is running.
  server name:  %s
  client API:   %s://%s
  config:       %s%s
  signing key:  %s %s%s
  database:     %s
  bus:          %s
Create a user:  parley create-account --data-dir %s --username alice --password 'a-long-password'
`, version, cfg.ServerName, scheme, cfg.Listen.Client, c.resolvedConfigPath(), note(cfgCreated),
		keyPath, keys.Current.ID, note(keyCreated), redactURL(cfg.DatabaseURL("userapi", c.dataDir)), bus, c.dataDir)
}
