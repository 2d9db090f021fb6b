package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/userapi"
)

// createAccountCommand creates a local account directly in the user API's
// database. It works whether or not the server is running: SQLite's WAL and
// busy timeout let it write beside a live server, and PostgreSQL is shared.
func createAccountCommand(args []string) error {
	flags := flag.NewFlagSet("create-account", flag.ContinueOnError)
	var c commonFlags
	c.register(flags)
	username := flags.String("username", "", "localpart of the new user (e.g. alice for @alice:SERVER)")
	password := flags.String("password", "", "password of the new user")
	admin := flags.Bool("admin", false, "make the user a server admin")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *username == "" || *password == "" {
		return errors.New("create-account needs --username and --password")
	}
	if _, err := os.Stat(c.resolvedConfigPath()); err != nil {
		return fmt.Errorf("no config at %s: run 'parley run' once (or 'parley generate-config') with this --data-dir first", c.resolvedConfigPath())
	}
	cfg, _, err := c.loadOrCreateConfig()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Clean(c.dataDir), 0o700); err != nil {
		return err
	}
	db, err := sqlutil.Open(cfg.DatabaseURL("userapi", c.dataDir))
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := context.Background()
	users, err := userapi.Open(ctx, db, cfg)
	if err != nil {
		return err
	}
	userID, err := users.CreateAccount(ctx, *username, *password, *admin)
	if err != nil {
		return err
	}
	role := "user"
	if *admin {
		role = "admin"
	}
	fmt.Printf("created %s %s\n", role, userID)
	return nil
}
