//go:build complementdeps

// Package complement holds Parley's Complement harness: scripts/complement
// runs the test packages of github.com/matrix-org/complement from this
// module, so that the server's own go.mod never depends on Complement.
//
// This file only records the dependency (the tests are run with
// `go test github.com/matrix-org/complement/tests/...`, which imports
// nothing from here); the build tag keeps it out of every normal build.
package complement

import _ "github.com/matrix-org/complement"
