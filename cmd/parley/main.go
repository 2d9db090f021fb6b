// Command parley is the Parley homeserver: one binary that runs every
// component in one process (the default) or any subset of them, plus the
// admin subcommands that work on a server's data directory.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

const usage = `parley — a Matrix homeserver

Usage:
  parley run [--config FILE] [--data-dir DIR] [--listen HOST:PORT] [--server-name NAME] [--open-registration]
  parley generate-config [--data-dir DIR] [--server-name NAME] [--out FILE]
  parley generate-keys [--data-dir DIR] [--config FILE]
  parley create-account [--data-dir DIR] [--config FILE] --username U --password P [--admin]
  parley media delete|quarantine [--data-dir DIR] [--server-name S] --media-id ID
  parley media purge-remote [--data-dir DIR] --older-than DURATION
  parley generate-tls-cert --ca-cert FILE --ca-key FILE --name NAME --cert-out FILE --key-out FILE
  parley version

Run 'parley COMMAND --help' for the flags of a command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "run":
		err = runCommand(args)
	case "generate-config":
		err = generateConfigCommand(args)
	case "generate-keys":
		err = generateKeysCommand(args)
	case "create-account":
		err = createAccountCommand(args)
	case "media":
		err = mediaCommand(args)
	case "generate-tls-cert":
		err = generateTLSCertCommand(args)
	case "version", "--version":
		fmt.Println("parley", version)
	case "help", "--help", "-h":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "parley: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley:", err)
		os.Exit(1)
	}
}
