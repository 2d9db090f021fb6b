// Package signingkey reads and writes the server's ed25519 signing key.
//
// The file holds one line per key, "ed25519 <version> <unpadded base64
// seed>", the format other homeservers use, so a key can move between
// implementations. The first line is the current key; further lines, if
// any, are retired keys still published as old_verify_keys.
package signingkey

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Key is one signing key.
type Key struct {
	ID         string // "ed25519:<version>"
	PrivateKey ed25519.PrivateKey
	// ExpiredAt is set on retired keys: when they stopped being used.
	ExpiredAt time.Time
}

// Set is the current key and any retired ones.
type Set struct {
	Current Key
	Old     []Key
}

// Generate returns a new random key with a random version.
func Generate() (Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, err
	}
	var v [4]byte
	if _, err := rand.Read(v[:]); err != nil {
		return Key{}, err
	}
	version := strings.NewReplacer("+", "a", "/", "b").Replace(base64.RawStdEncoding.EncodeToString(v[:]))
	return Key{ID: "ed25519:" + version, PrivateKey: priv}, nil
}

// Load reads the key file at path.
func Load(path string) (*Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var set Set
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) < 3 || fields[0] != "ed25519" {
			return nil, fmt.Errorf("%s line %d: expected \"ed25519 <version> <base64 seed> [expired_ts_ms]\"", path, line)
		}
		seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(fields[2], "="))
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("%s line %d: the seed must be %d bytes of base64", path, line, ed25519.SeedSize)
		}
		k := Key{ID: "ed25519:" + fields[1], PrivateKey: ed25519.NewKeyFromSeed(seed)}
		if len(fields) > 3 {
			var ms int64
			if _, err := fmt.Sscanf(fields[3], "%d", &ms); err != nil {
				return nil, fmt.Errorf("%s line %d: bad expiry timestamp", path, line)
			}
			k.ExpiredAt = time.UnixMilli(ms)
		}
		if set.Current.PrivateKey == nil {
			set.Current = k
		} else {
			set.Old = append(set.Old, k)
		}
	}
	if set.Current.PrivateKey == nil {
		return nil, fmt.Errorf("%s holds no key", path)
	}
	return &set, nil
}

// Save writes set to path atomically (temp file, fsync, rename), mode 0600.
func Save(path string, set *Set) error {
	var b strings.Builder
	write := func(k Key, expired bool) {
		version := strings.TrimPrefix(k.ID, "ed25519:")
		fmt.Fprintf(&b, "ed25519 %s %s", version, base64.RawStdEncoding.EncodeToString(k.PrivateKey.Seed()))
		if expired {
			fmt.Fprintf(&b, " %d", k.ExpiredAt.UnixMilli())
		}
		b.WriteString("\n")
	}
	write(set.Current, false)
	for _, k := range set.Old {
		write(k, true)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".signing-key-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(b.String()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// LoadOrCreate loads the key file, creating it with a new key if it does
// not exist. created says whether a new file was written.
func LoadOrCreate(path string) (set *Set, created bool, err error) {
	set, err = Load(path)
	if err == nil {
		return set, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	k, err := Generate()
	if err != nil {
		return nil, false, err
	}
	set = &Set{Current: k}
	if err := Save(path, set); err != nil {
		return nil, false, fmt.Errorf("write signing key: %w", err)
	}
	return set, true, nil
}

// Rotate makes a new current key; the previous one is kept as retired so
// other servers can still verify what it signed.
func Rotate(path string) (*Set, error) {
	set, err := Load(path)
	if err != nil {
		return nil, err
	}
	k, err := Generate()
	if err != nil {
		return nil, err
	}
	old := set.Current
	old.ExpiredAt = time.Now()
	set.Old = append([]Key{old}, set.Old...)
	set.Current = k
	return set, Save(path, set)
}
