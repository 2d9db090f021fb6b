package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/internal/testdb"
)

func open(t *testing.T, url string) *DB {
	t.Helper()
	sdb, err := sqlutil.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sdb.Close() })
	d, err := Open(context.Background(), sdb)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// withBlob adds rows naming hash through WithBlob, recording whether the
// file was placed.
func withBlob(t *testing.T, d *DB, hash string, fn func(tx *BlobTx) error) (placed bool, err error) {
	t.Helper()
	err = d.WithBlob(context.Background(), hash, 1, fn, func() error { placed = true; return nil })
	return placed, err
}

func TestMediaLifecycle(t *testing.T) {
	testdb.Run(t, func(t *testing.T, url string) {
		ctx := context.Background()
		d := open(t, url)
		hash := strings.Repeat("ab", 32)
		m := &Media{ServerName: "hs", MediaID: "m1", ContentType: "image/png", Filename: "a.png", Size: 10,
			SHA256: hash, Uploader: "@a:hs", CreatedTS: 100, UploadedTS: 100}
		if placed, err := withBlob(t, d, hash, func(tx *BlobTx) error { return tx.InsertMedia(ctx, m) }); err != nil || !placed {
			t.Fatalf("WithBlob = %v, placed %v", err, placed)
		}
		// A failing insert places no file and records nothing.
		if placed, err := withBlob(t, d, hash, func(tx *BlobTx) error { return tx.InsertMedia(ctx, m) }); !errors.Is(err, ErrExists) || placed {
			t.Fatalf("duplicate insert = %v, placed %v", err, placed)
		}
		got, err := d.GetMedia(ctx, "hs", "m1")
		if err != nil || *got != *m {
			t.Fatalf("GetMedia = %+v, %v", got, err)
		}
		if _, err := d.GetMedia(ctx, "hs", "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown media = %v", err)
		}

		// A reservation, then its upload, then a second upload.
		p := &Media{ServerName: "hs", MediaID: "p1", Uploader: "@a:hs", CreatedTS: 200, ExpiresTS: 1000}
		if err := d.InsertMedia(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := d.InsertMedia(ctx, p); !errors.Is(err, ErrExists) {
			t.Fatalf("duplicate reservation = %v", err)
		}
		if n, err := d.CountPending(ctx, "@a:hs", 500); err != nil || n != 1 {
			t.Fatalf("CountPending = %d, %v", n, err)
		}
		if n, _ := d.CountPending(ctx, "@a:hs", 1000); n != 0 {
			t.Fatalf("expired reservation counted: %d", n)
		}
		p.SHA256, p.Size, p.ContentType, p.UploadedTS = hash, 10, "text/plain", 300
		if _, err := withBlob(t, d, hash, func(tx *BlobTx) error { return tx.CompleteUpload(ctx, p) }); err != nil {
			t.Fatal(err)
		}
		if _, err := withBlob(t, d, hash, func(tx *BlobTx) error { return tx.CompleteUpload(ctx, p) }); !errors.Is(err, ErrAlreadyUploaded) {
			t.Fatalf("second CompleteUpload = %v", err)
		}

		th := &Thumbnail{ServerName: "hs", MediaID: "m1", Width: 32, Height: 32, Method: "crop",
			ContentType: "image/png", Size: 5, SHA256: strings.Repeat("cd", 32), CreatedTS: 400}
		if _, err := withBlob(t, d, th.SHA256, func(tx *BlobTx) error { return tx.InsertThumbnail(ctx, th) }); err != nil {
			t.Fatal(err)
		}
		if _, err := withBlob(t, d, th.SHA256, func(tx *BlobTx) error { return tx.InsertThumbnail(ctx, th) }); !errors.Is(err, ErrExists) {
			t.Fatalf("second InsertThumbnail = %v", err)
		}
		if got, err := d.GetThumbnail(ctx, "hs", "m1", 32, 32, "crop"); err != nil || *got != *th {
			t.Fatalf("GetThumbnail = %+v, %v", got, err)
		}
		if _, err := d.GetThumbnail(ctx, "hs", "m1", 32, 32, "scale"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("other method = %v", err)
		}
		if n, _ := d.CountThumbnails(ctx, "hs", "m1"); n != 1 {
			t.Fatalf("CountThumbnails = %d", n)
		}

		if err := d.SetQuarantined(ctx, "hs", "m1", true); err != nil {
			t.Fatal(err)
		}
		if got, _ := d.GetMedia(ctx, "hs", "m1"); !got.Quarantined {
			t.Fatal("not quarantined")
		}
		if err := d.SetQuarantined(ctx, "hs", "zzz", true); !errors.Is(err, ErrNotFound) {
			t.Fatalf("quarantine unknown = %v", err)
		}

		// p1 still uses the media's blob; nothing uses the thumbnail's.
		var removed []string
		remove := func(h string) error { removed = append(removed, h); return nil }
		if err := d.DeleteMedia(ctx, "hs", "m1", remove); err != nil || len(removed) != 1 || removed[0] != th.SHA256 {
			t.Fatalf("DeleteMedia removed %v, %v", removed, err)
		}
		if err := d.DeleteMedia(ctx, "hs", "m1", remove); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second DeleteMedia = %v", err)
		}
		if err := d.DeleteMedia(ctx, "hs", "p1", remove); err != nil || len(removed) != 2 || removed[1] != hash {
			t.Fatalf("DeleteMedia of the last user removed %v, %v", removed, err)
		}
		// A failing file removal keeps the rows.
		if _, err := withBlob(t, d, hash, func(tx *BlobTx) error { return tx.InsertMedia(ctx, m) }); err != nil {
			t.Fatal(err)
		}
		if err := d.DeleteMedia(ctx, "hs", "m1", func(string) error { return errors.New("disk on fire") }); err == nil {
			t.Fatal("DeleteMedia ignored the removal error")
		}
		if _, err := d.GetMedia(ctx, "hs", "m1"); err != nil {
			t.Fatalf("media gone after a failed delete: %v", err)
		}
	})
}

// TestConcurrentDeleteAndUpload races deleting the last media of a blob
// with adding new media of the same blob: whatever the order, a row that
// exists afterwards has its file.
func TestConcurrentDeleteAndUpload(t *testing.T) {
	testdb.Run(t, func(t *testing.T, url string) {
		ctx := context.Background()
		d := open(t, url)
		hash := strings.Repeat("ef", 32)
		var mu sync.Mutex
		fileThere := false
		place := func() error { mu.Lock(); fileThere = true; mu.Unlock(); return nil }
		remove := func(string) error { mu.Lock(); fileThere = false; mu.Unlock(); return nil }
		for i := 0; i < 20; i++ {
			old := &Media{ServerName: "hs", MediaID: fmt.Sprint("old", i), SHA256: hash, CreatedTS: 1, UploadedTS: 1}
			if err := d.WithBlob(ctx, hash, 1, func(tx *BlobTx) error { return tx.InsertMedia(ctx, old) }, place); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				if err := d.DeleteMedia(ctx, "hs", old.MediaID, remove); err != nil {
					t.Error(err)
				}
			}()
			fresh := &Media{ServerName: "hs", MediaID: fmt.Sprint("new", i), SHA256: hash, CreatedTS: 2, UploadedTS: 2}
			go func() {
				defer wg.Done()
				if err := d.WithBlob(ctx, hash, 2, func(tx *BlobTx) error { return tx.InsertMedia(ctx, fresh) }, place); err != nil {
					t.Error(err)
				}
			}()
			wg.Wait()
			mu.Lock()
			ok := fileThere
			mu.Unlock()
			if !ok {
				t.Fatalf("round %d: media %s exists but its file was removed", i, fresh.MediaID)
			}
			if err := d.DeleteMedia(ctx, "hs", fresh.MediaID, remove); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestRemoteExpiryPreviewsFreeze(t *testing.T) {
	testdb.Run(t, func(t *testing.T, url string) {
		ctx := context.Background()
		d := open(t, url)
		for i, m := range []*Media{
			{ServerName: "remote.example", MediaID: "old", CreatedTS: 10, UploadedTS: 10},
			{ServerName: "remote.example", MediaID: "new", CreatedTS: 1000, UploadedTS: 1000},
			{ServerName: "hs", MediaID: "local", CreatedTS: 10, UploadedTS: 10},
			{ServerName: "hs", MediaID: "pending", Uploader: "@a:hs", CreatedTS: 10, ExpiresTS: 50},
		} {
			if err := d.InsertMedia(ctx, m); err != nil {
				t.Fatal(i, err)
			}
		}
		ids, err := d.ListRemoteMediaBefore(ctx, "hs", 500, 10)
		if err != nil || len(ids) != 1 || ids[0] != [2]string{"remote.example", "old"} {
			t.Fatalf("ListRemoteMediaBefore = %v, %v", ids, err)
		}
		if n, err := d.DeleteExpiredPending(ctx, 60); err != nil || n != 1 {
			t.Fatalf("DeleteExpiredPending = %d, %v", n, err)
		}

		if _, err := d.GetPreview(ctx, "https://a.example/", 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetPreview empty = %v", err)
		}
		if err := d.PutPreview(ctx, "https://a.example/", 100, `{"og:title":"A"}`); err != nil {
			t.Fatal(err)
		}
		if err := d.PutPreview(ctx, "https://a.example/", 200, `{"og:title":"B"}`); err != nil {
			t.Fatal(err)
		}
		if p, err := d.GetPreview(ctx, "https://a.example/", 150); err != nil || p != `{"og:title":"B"}` {
			t.Fatalf("GetPreview = %q, %v", p, err)
		}
		if _, err := d.GetPreview(ctx, "https://a.example/", 250); !errors.Is(err, ErrNotFound) {
			t.Fatalf("stale preview served: %v", err)
		}
		if err := d.DeletePreviewsBefore(ctx, 300); err != nil {
			t.Fatal(err)
		}
		if _, err := d.GetPreview(ctx, "https://a.example/", 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("old preview kept: %v", err)
		}

		first, err := d.FreezeTime(ctx, 1234)
		if err != nil || first != 1234 {
			t.Fatalf("FreezeTime = %d, %v", first, err)
		}
		if again, _ := d.FreezeTime(ctx, 9999); again != 1234 {
			t.Fatalf("freeze time moved to %d", again)
		}
	})
}
