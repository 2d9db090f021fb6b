package blobstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestPutOpenDelete(t *testing.T) {
	dir := t.TempDir()
	s, err := NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("hello, media")
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	hash, size, err := Put(context.Background(), s, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if hash != want || size != int64(len(data)) {
		t.Fatalf("Put = %s, %d; want %s, %d", hash, size, want, len(data))
	}
	// The same bytes again dedupe to the same blob.
	if h2, _, err := Put(context.Background(), s, bytes.NewReader(data)); err != nil || h2 != hash {
		t.Fatalf("second Put = %s, %v", h2, err)
	}
	b, err := s.Open(hash)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(b)
	b.Close()
	if !bytes.Equal(got, data) || b.Size() != int64(len(data)) {
		t.Fatalf("Open read %q (size %d)", got, b.Size())
	}
	if err := s.Delete(hash); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(hash); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open after Delete: %v", err)
	}
	if err := s.Delete(hash); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	// Names that are not hashes never reach the file system.
	for _, bad := range []string{"", "../../etc/passwd", hash[:63], hash + "0"} {
		if _, err := s.Open(bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open(%q) = %v", bad, err)
		}
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

func TestFailedPutLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	s, err := NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stage(context.Background(), &failingReader{n: 100_000}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Put = %v, want the reader's error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Stage(ctx, bytes.NewReader([]byte("x"))); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with cancelled context = %v", err)
	}
	// A staged blob that is discarded leaves nothing either, and is not
	// visible before it is committed.
	st, err := s.Stage(context.Background(), bytes.NewReader([]byte("staged")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(st.Hash()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("staged blob visible before Commit: %v", err)
	}
	st.Discard()
	if files := listFiles(t, dir); len(files) != 0 {
		t.Fatalf("files left after failed uploads: %v", files)
	}
}

func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
