package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/mediaapi"
)

const mediaUsage = `Usage:
  parley media delete [--data-dir DIR] [--config FILE] [--server-name S] --media-id ID
  parley media quarantine [--data-dir DIR] [--config FILE] [--server-name S] --media-id ID
  parley media purge-remote [--data-dir DIR] [--config FILE] --older-than DURATION (e.g. 720h)
`

// mediaCommand runs the media admin operations (the same as the admin
// HTTP API's) directly on the media API's database and blob store, so
// they work whether or not the server is running.
func mediaCommand(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, mediaUsage)
		return errors.New("media needs a subcommand")
	}
	sub, args := args[0], args[1:]
	flags := flag.NewFlagSet("media "+sub, flag.ContinueOnError)
	// Not c.register: --server-name names the media's server here, not
	// this server's name.
	var c commonFlags
	flags.StringVar(&c.configPath, "config", "", "config file (default: DATA-DIR/parley.yaml)")
	flags.StringVar(&c.dataDir, "data-dir", "./data", "data directory of the server")
	var serverName, mediaID *string
	var olderThan *time.Duration
	switch sub {
	case "delete", "quarantine":
		serverName = flags.String("server-name", "", "server part of the mxc:// URI (default: this server)")
		mediaID = flags.String("media-id", "", "media ID part of the mxc:// URI")
	case "purge-remote":
		olderThan = flags.Duration("older-than", 0, "purge remote media cached longer ago than this (e.g. 720h)")
	case "help", "--help", "-h":
		fmt.Print(mediaUsage)
		return nil
	default:
		fmt.Fprint(os.Stderr, mediaUsage)
		return fmt.Errorf("unknown media command %q", sub)
	}
	if err := flags.Parse(args); err != nil {
		return err
	}
	if mediaID != nil && *mediaID == "" {
		return fmt.Errorf("media %s needs --media-id", sub)
	}
	if olderThan != nil && *olderThan <= 0 {
		return errors.New("media purge-remote needs a positive --older-than")
	}
	if _, err := os.Stat(c.resolvedConfigPath()); err != nil {
		return fmt.Errorf("no config at %s: run 'parley run' once (or 'parley generate-config') with this --data-dir first", c.resolvedConfigPath())
	}
	cfg, _, err := c.loadOrCreateConfig()
	if err != nil {
		return err
	}
	db, err := sqlutil.Open(cfg.DatabaseURL("mediaapi", c.dataDir))
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := context.Background()
	media, err := mediaapi.Open(ctx, db, cfg, c.dataDir, nil)
	if err != nil {
		return err
	}
	defer media.Close()
	if serverName != nil && *serverName == "" {
		*serverName = cfg.ServerName
	}
	switch sub {
	case "delete":
		err = media.DeleteMedia(ctx, *serverName, *mediaID)
	case "quarantine":
		err = media.QuarantineMedia(ctx, *serverName, *mediaID)
	default:
		n, err := media.PurgeRemoteCache(ctx, *olderThan)
		if err != nil {
			return fmt.Errorf("purge remote media: %w (%d purged before the error)", err, n)
		}
		fmt.Printf("purged %d remote media files cached before %s\n", n, time.Now().Add(-*olderThan).UTC().Format(time.RFC3339))
		return nil
	}
	if errors.Is(err, mediaapi.ErrNotFound) {
		return fmt.Errorf("no media mxc://%s/%s here", *serverName, *mediaID)
	}
	if err != nil {
		return err
	}
	verb := "deleted"
	if sub == "quarantine" {
		verb = "quarantined"
	}
	fmt.Printf("%s mxc://%s/%s\n", verb, *serverName, *mediaID)
	return nil
}
