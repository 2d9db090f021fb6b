package storage

import (
	"context"
	"errors"
	"strings"
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

func TestMediaLifecycle(t *testing.T) {
	testdb.Run(t, func(t *testing.T, url string) {
		ctx := context.Background()
		d := open(t, url)
		hash := strings.Repeat("ab", 32)
		m := &Media{ServerName: "hs", MediaID: "m1", ContentType: "image/png", Filename: "a.png", Size: 10,
			SHA256: hash, Uploader: "@a:hs", CreatedTS: 100, UploadedTS: 100}
		if err := d.InsertMedia(ctx, m); err != nil {
			t.Fatal(err)
		}
		if err := d.InsertMedia(ctx, m); !errors.Is(err, ErrExists) {
			t.Fatalf("duplicate insert = %v", err)
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
		if n, err := d.CountPending(ctx, "@a:hs", 500); err != nil || n != 1 {
			t.Fatalf("CountPending = %d, %v", n, err)
		}
		if n, _ := d.CountPending(ctx, "@a:hs", 1000); n != 0 {
			t.Fatalf("expired reservation counted: %d", n)
		}
		p.SHA256, p.Size, p.ContentType, p.UploadedTS = hash, 10, "text/plain", 300
		if err := d.CompleteUpload(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := d.CompleteUpload(ctx, p); !errors.Is(err, ErrAlreadyUploaded) {
			t.Fatalf("second CompleteUpload = %v", err)
		}

		th := &Thumbnail{ServerName: "hs", MediaID: "m1", Width: 32, Height: 32, Method: "crop",
			ContentType: "image/png", Size: 5, SHA256: strings.Repeat("cd", 32), CreatedTS: 400}
		if err := d.InsertThumbnail(ctx, th); err != nil {
			t.Fatal(err)
		}
		if err := d.InsertThumbnail(ctx, th); err != nil {
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

		hashes, err := d.DeleteMedia(ctx, "hs", "m1")
		if err != nil || len(hashes) != 2 {
			t.Fatalf("DeleteMedia = %v, %v", hashes, err)
		}
		// p1 still uses the media hash; nobody uses the thumbnail's.
		if used, _ := d.BlobInUse(ctx, hash); !used {
			t.Fatal("shared blob reported unused")
		}
		if used, _ := d.BlobInUse(ctx, th.SHA256); used {
			t.Fatal("thumbnail blob still reported in use")
		}
		if _, err := d.DeleteMedia(ctx, "hs", "m1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second DeleteMedia = %v", err)
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
