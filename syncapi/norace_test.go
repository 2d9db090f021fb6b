//go:build !race

package syncapi

const raceEnabled = false
