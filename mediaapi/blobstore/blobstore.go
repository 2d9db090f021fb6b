// Package blobstore keeps the bytes of media files, addressed by their
// SHA-256, so identical uploads are stored once.
//
// The interface is what the media API needs from any storage (a local or
// shared file system today, an object store later); FS is the file-system
// implementation. A blob becomes visible only complete: Stage writes to a
// temporary file and syncs it, Commit renames it into place, so a failed
// or interrupted upload never leaves a half-written blob behind. The
// split lets the caller commit while it holds its database lock on the
// hash (see package storage), which keeps a concurrent delete of the same
// bytes from removing a file that a new row has just started to use.
package blobstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// ErrNotFound is returned by Open for a hash that is not stored.
var ErrNotFound = errors.New("blob not found")

// Store holds content-addressed blobs. Implementations are safe for
// concurrent use.
type Store interface {
	// Stage stores everything r yields out of sight and returns it with
	// its hash and length. If reading r fails (a client disconnecting, a
	// size limit) nothing is kept and r's error is returned.
	Stage(ctx context.Context, r io.Reader) (Staged, error)
	// Open returns the blob for reading and seeking, or ErrNotFound.
	Open(hash string) (Blob, error)
	// Delete removes a blob; deleting a missing blob is not an error.
	Delete(hash string) error
}

// Staged is a complete blob not yet visible under its hash.
type Staged interface {
	// Hash is the lowercase hex SHA-256 of the content.
	Hash() string
	Size() int64
	// Commit makes the blob readable under its hash, durably. Committing
	// bytes that are already stored is harmless.
	Commit() error
	// Discard drops an uncommitted blob; after Commit it does nothing.
	Discard()
}

// Put stages and commits r at once, for callers that need no lock
// between the two.
func Put(ctx context.Context, s Store, r io.Reader) (hash string, size int64, err error) {
	st, err := s.Stage(ctx, r)
	if err != nil {
		return "", 0, err
	}
	if err := st.Commit(); err != nil {
		st.Discard()
		return "", 0, err
	}
	return st.Hash(), st.Size(), nil
}

// Blob is an open stored file.
type Blob interface {
	io.ReadSeekCloser
	// Size is the blob's length in bytes.
	Size() int64
}

// FS stores blobs in a directory tree: ab/cd/abcd…(64 hex digits), with
// temporary files under tmp/ until they are complete.
type FS struct {
	dir string
}

// NewFS returns a store rooted at dir, creating it if needed. Temporary
// files left by a crash are removed.
func NewFS(dir string) (*FS, error) {
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("create media store %s: %w", dir, err)
	}
	// Only files older than a day go: another instance sharing the
	// directory may be writing the newer ones right now.
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", tmp, err)
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > 24*time.Hour {
			_ = os.Remove(filepath.Join(tmp, e.Name()))
		}
	}
	return &FS{dir: dir}, nil
}

// ValidHash reports whether h is 64 lowercase hex digits, the only names
// this store ever builds paths from.
func ValidHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (s *FS) path(hash string) string {
	return filepath.Join(s.dir, hash[0:2], hash[2:4], hash)
}

// Stage implements Store.
func (s *FS) Stage(ctx context.Context, r io.Reader) (Staged, error) {
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "upload-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file: %w", err)
	}
	fail := func(err error) (Staged, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, err
	}
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx, r})
	if err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(fmt.Errorf("sync %s: %w", tmp.Name(), err))
	}
	if err := tmp.Close(); err != nil {
		return fail(fmt.Errorf("close %s: %w", tmp.Name(), err))
	}
	return &staged{fs: s, tmp: tmp.Name(), hash: hex.EncodeToString(h.Sum(nil)), size: size}, nil
}

type staged struct {
	fs        *FS
	tmp       string
	hash      string
	size      int64
	committed bool
}

func (st *staged) Hash() string { return st.hash }
func (st *staged) Size() int64  { return st.size }

func (st *staged) Commit() error {
	if st.committed {
		return nil
	}
	final := st.fs.path(st.hash)
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return fmt.Errorf("create blob directory: %w", err)
	}
	// Renaming over an existing blob of the same hash is harmless: the
	// bytes are identical, and readers holding the old file keep it.
	if err := os.Rename(st.tmp, final); err != nil {
		return fmt.Errorf("move blob into place: %w", err)
	}
	st.committed = true
	return syncDir(filepath.Dir(final))
}

func (st *staged) Discard() {
	if !st.committed {
		os.Remove(st.tmp)
	}
}

// Open implements Store.
func (s *FS) Open(hash string) (Blob, error) {
	if !ValidHash(hash) {
		return nil, ErrNotFound
	}
	f, err := os.Open(s.path(hash))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fileBlob{File: f, size: info.Size()}, nil
}

// Delete implements Store.
func (s *FS) Delete(hash string) error {
	if !ValidHash(hash) {
		return nil
	}
	err := os.Remove(s.path(hash))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob %s: %w", hash, err)
	}
	return nil
}

type fileBlob struct {
	*os.File
	size int64
}

func (b *fileBlob) Size() int64 { return b.size }

// syncDir makes a rename durable: without it a crash can forget the new
// directory entry even though the file's data was synced.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// ctxReader stops a copy when the request's context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
