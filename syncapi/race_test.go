//go:build race

package syncapi

// raceEnabled: the race detector slows the pure-Go SQLite driver several
// times over, so tests that drive thousands of queries allow more time.
const raceEnabled = true
