package mediaapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/internal/testserver"
)

// TestMediaThroughClient drives the real server with mautrix-go, on both
// databases: upload and download byte for byte, thumbnails, asynchronous
// upload, the media config, authentication, limits and URL-preview safety.
func TestMediaThroughClient(t *testing.T) {
	for _, db := range testdb.Dialects {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			srv := testserver.Start(t, testserver.Options{DB: db, Env: map[string]string{"PARLEY_MEDIA_MAX_UPLOAD_BYTES": "300000"}})
			alice := srv.RegisterUser(t, "alice")
			bob := srv.RegisterUser(t, "bob")

			data := make([]byte, 250_000)
			_, _ = rand.Read(data)
			up, err := alice.UploadBytesWithName(ctx, data, "application/pdf", "report.pdf")
			if err != nil {
				t.Fatal(err)
			}
			got, err := bob.DownloadBytes(ctx, up.ContentURI)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("download: %v (%d bytes, want %d)", err, len(got), len(data))
			}
			resp, err := bob.Download(ctx, up.ContentURI)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if cd := resp.Header.Get("Content-Disposition"); cd != `attachment; filename="report.pdf"` {
				t.Errorf("Content-Disposition = %q", cd)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Content-Security-Policy") == "" {
				t.Errorf("download lacks the safety headers: %v", resp.Header)
			}

			var img bytes.Buffer
			_ = png.Encode(&img, image.NewRGBA(image.Rect(0, 0, 400, 300)))
			pic, err := alice.UploadBytes(ctx, img.Bytes(), "image/png")
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				w, h, wantW, wantH int
				method             string
			}{{96, 96, 96, 96, "crop"}, {320, 240, 320, 240, "scale"}, {100, 100, 100, 75, "scale"}} {
				resp, err := bob.DownloadThumbnail(ctx, pic.ContentURI, c.h, c.w, mautrix.DownloadThumbnailExtra{Method: c.method})
				if err != nil {
					t.Fatal(err)
				}
				thumb, err := png.Decode(resp.Body)
				resp.Body.Close()
				if err != nil || thumb.Bounds().Dx() != c.wantW || thumb.Bounds().Dy() != c.wantH {
					t.Errorf("thumbnail %dx%d %s: %v %v", c.w, c.h, c.method, err, thumb)
				}
			}

			created, err := alice.CreateMXC(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte("later"), ContentType: "text/plain", MXC: created.ContentURI}); err != nil {
				t.Fatal(err)
			}
			if got, err := bob.DownloadBytes(ctx, created.ContentURI); err != nil || string(got) != "later" {
				t.Errorf("async upload download: %q %v", got, err)
			}

			if cfg, err := alice.GetMediaConfig(ctx); err != nil || cfg.UploadSize != 300000 {
				t.Errorf("media config: %+v %v", cfg, err)
			}

			anon := srv.Client(t)
			if _, err := anon.Download(ctx, up.ContentURI); !errors.Is(err, mautrix.MMissingToken) {
				t.Errorf("unauthenticated download: %v", err)
			}

			before := storeFiles(t, srv.DataDir)
			if _, err := alice.UploadBytes(ctx, make([]byte, 300_001), "application/octet-stream"); !errors.Is(err, mautrix.MTooLarge) {
				t.Errorf("oversized upload: %v", err)
			}
			if after := storeFiles(t, srv.DataDir); after != before {
				t.Errorf("oversized upload changed the store: %d -> %d files", before, after)
			}

			if _, err := alice.GetURLPreview(ctx, "http://127.0.0.1:1/"); !errors.Is(err, mautrix.MForbidden) {
				t.Errorf("preview of a loopback address: %v", err)
			}
		})
	}
}

// storeFiles counts the files in the server's media store.
func storeFiles(t *testing.T, dataDir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(dataDir, "media"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRemoteMediaOverFederation runs two federating servers: a user of B
// downloads and thumbnails media uploaded on A, which B fetches with a
// signed federation request and caches.
func TestRemoteMediaOverFederation(t *testing.T) {
	ctx := context.Background()
	ca := testserver.NewCA(t)
	a := testserver.StartFederated(t, ca, testserver.Options{})
	b := testserver.StartFederated(t, ca, testserver.Options{})
	alice := a.RegisterUser(t, "alice")
	bob := b.RegisterUser(t, "bob")

	data := make([]byte, 100_000)
	_, _ = rand.Read(data)
	up, err := alice.UploadBytesWithName(ctx, data, "application/octet-stream", "blob.bin")
	if err != nil {
		t.Fatal(err)
	}
	if up.ContentURI.Homeserver != a.ServerName {
		t.Fatalf("uploaded to %s", up.ContentURI)
	}
	got, err := bob.DownloadBytes(ctx, up.ContentURI)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download of A's media through B: %v (%d bytes)", err, len(got))
	}

	var img bytes.Buffer
	_ = png.Encode(&img, image.NewRGBA(image.Rect(0, 0, 300, 300)))
	pic, err := alice.UploadBytes(ctx, img.Bytes(), "image/png")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := bob.DownloadThumbnail(ctx, pic.ContentURI, 32, 32, mautrix.DownloadThumbnailExtra{Method: "crop"})
	if err != nil {
		t.Fatal(err)
	}
	thumb, err := png.Decode(resp.Body)
	resp.Body.Close()
	if err != nil || thumb.Bounds().Dx() != 32 || thumb.Bounds().Dy() != 32 {
		t.Errorf("thumbnail of A's media through B: %v %v", err, thumb)
	}

	missing := up.ContentURI
	missing.FileID = "doesNotExist"
	if _, err := bob.DownloadBytes(ctx, missing); !errors.Is(err, mautrix.MNotFound) {
		t.Errorf("unknown remote media: %v", err)
	}

	// A serves its media to servers only on a signed request.
	unsigned, err := ca.HTTPClient().Get(a.FederationURL + "/_matrix/federation/v1/media/download/" + up.ContentURI.FileID)
	if err != nil {
		t.Fatal(err)
	}
	unsigned.Body.Close()
	if unsigned.StatusCode != 401 {
		t.Errorf("unsigned federation media request: %d", unsigned.StatusCode)
	}
}
