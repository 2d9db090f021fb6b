package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/signingkey"
)

// commonFlags are the flags every subcommand that works on a data
// directory shares.
type commonFlags struct {
	configPath string
	dataDir    string
	serverName string
}

func (c *commonFlags) register(flags *flag.FlagSet) {
	flags.StringVar(&c.configPath, "config", "", "config file (default: DATA-DIR/parley.yaml)")
	flags.StringVar(&c.dataDir, "data-dir", "./data", "data directory: config, signing key, SQLite database, NATS store, media")
	flags.StringVar(&c.serverName, "server-name", "", "server name, e.g. example.org (overrides the config file)")
}

func (c *commonFlags) resolvedConfigPath() string {
	if c.configPath != "" {
		return c.configPath
	}
	return filepath.Join(c.dataDir, "parley.yaml")
}

// loadOrCreateConfig loads the config file, writing a commented default one
// first when it does not exist. created says whether it was written.
func (c *commonFlags) loadOrCreateConfig() (cfg *config.Config, created bool, err error) {
	path := c.resolvedConfigPath()
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		def := config.Default()
		if c.serverName != "" {
			def.ServerName = c.serverName
		}
		if err := writeConfig(path, def); err != nil {
			return nil, false, err
		}
		created = true
	}
	cfg, err = config.Load(path)
	if err != nil {
		return nil, false, err
	}
	if c.serverName != "" {
		cfg.ServerName = c.serverName
		if err := cfg.Validate(); err != nil {
			return nil, false, err
		}
	}
	return cfg, created, nil
}

func writeConfig(path string, cfg *config.Config) error {
	data, err := config.Generate(cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	// O_EXCL: never overwrite an admin's config.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func setupLogging(cfg *config.Config) {
	level, err := logrus.ParseLevel(cfg.Logging.Level)
	if err != nil {
		level = logrus.InfoLevel
	}
	logrus.SetLevel(level)
	if cfg.Logging.Format == "json" {
		logrus.SetFormatter(&logrus.JSONFormatter{})
	} else {
		logrus.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	}
}

func generateConfigCommand(args []string) error {
	flags := flag.NewFlagSet("generate-config", flag.ContinueOnError)
	var c commonFlags
	c.register(flags)
	out := flags.String("out", "", "write here instead of DATA-DIR/parley.yaml ('-' for standard output)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	cfg := config.Default()
	if c.serverName != "" {
		cfg.ServerName = c.serverName
	}
	if *out == "-" {
		data, err := config.Generate(cfg)
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(data)
		return err
	}
	path := *out
	if path == "" {
		path = c.resolvedConfigPath()
	}
	if err := writeConfig(path, cfg); err != nil {
		return err
	}
	fmt.Println("wrote", path)
	return nil
}

func generateKeysCommand(args []string) error {
	flags := flag.NewFlagSet("generate-keys", flag.ContinueOnError)
	var c commonFlags
	c.register(flags)
	if err := flags.Parse(args); err != nil {
		return err
	}
	cfg, _, err := c.loadOrCreateConfig()
	if err != nil {
		return err
	}
	path := config.Path(c.dataDir, cfg.SigningKey)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		set, _, err := signingkey.LoadOrCreate(path)
		if err != nil {
			return err
		}
		fmt.Printf("wrote new signing key %s to %s\n", set.Current.ID, path)
		return nil
	}
	set, err := signingkey.Rotate(path)
	if err != nil {
		return err
	}
	fmt.Printf("rotated signing key in %s: now %s; %s is kept as an old verify key. Restart the server to use it.\n",
		path, set.Current.ID, set.Old[0].ID)
	return nil
}
