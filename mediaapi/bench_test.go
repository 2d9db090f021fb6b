package mediaapi

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/parley-chat/parley/internal/testdb"
)

// The benchmarks go through real HTTP to the media handlers, with SQLite
// and the file-system blob store (fsync included), so the numbers are
// what one instance can serve.

func benchPayload(b *testing.B, n int) []byte {
	data := make([]byte, n)
	_, _ = rand.Read(data)
	return data
}

// BenchmarkUpload uploads distinct 1 MiB files.
func BenchmarkUpload(b *testing.B) {
	e := newEnv(b, testdb.URL(b, "sqlite"), nil)
	data := benchPayload(b, 1<<20)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		data[0], data[1], data[2] = byte(i), byte(i>>8), byte(i>>16) // no dedup
		req, _ := http.NewRequest("POST", e.srv.URL+"/_matrix/media/v3/upload", bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer alice")
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("upload: %d", resp.StatusCode)
		}
	}
}

// BenchmarkDownload downloads a 1 MiB file, authenticated.
func BenchmarkDownload(b *testing.B) {
	e := newEnv(b, testdb.URL(b, "sqlite"), nil)
	data := benchPayload(b, 1<<20)
	id := e.upload("alice", data, "application/octet-stream", "")
	url := e.srv.URL + "/_matrix/client/v1/media/download/" + testServer + "/" + id
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer alice")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != int64(len(data)) {
			b.Fatalf("download: %d, %d bytes", resp.StatusCode, n)
		}
	}
}

// BenchmarkThumbnail measures making thumbnails (decode, resize, encode)
// from 1600x1200 JPEG and PNG originals, and serving a cached one.
func BenchmarkThumbnail(b *testing.B) {
	for _, src := range []struct {
		name string
		data []byte
	}{
		{"generate/jpeg-1600x1200-to-320x240", jpegImage(1600, 1200)},
		{"generate/png-1600x1200-to-320x240", pngImage(1600, 1200)},
	} {
		b.Run(src.name, func(b *testing.B) {
			info, err := probeImage(bytes.NewReader(src.data))
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := makeThumbnail(bytes.NewReader(src.data), info, 320, 240, "scale"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("cached/96x96-crop-over-http", func(b *testing.B) {
		e := newEnv(b, testdb.URL(b, "sqlite"), nil)
		id := e.upload("alice", jpegImage(1600, 1200), "image/jpeg", "")
		url := fmt.Sprintf("%s/_matrix/client/v1/media/thumbnail/%s/%s?width=96&height=96&method=crop", e.srv.URL, testServer, id)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Authorization", "Bearer alice")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("thumbnail: %d", resp.StatusCode)
			}
		}
	})
}
