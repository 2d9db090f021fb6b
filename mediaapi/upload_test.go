package mediaapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/mediaapi/storage"
)

func TestUploadDownload(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		e := newEnv(t, dbURL, nil)
		data := pngImage(40, 30)
		id := e.upload("alice", data, "image/png", "cat.png")

		for _, path := range []string{
			"/_matrix/client/v1/media/download/" + testServer + "/" + id,
			"/_matrix/media/v3/download/" + testServer + "/" + id, // legacy, no token needed
			"/_matrix/media/r0/download/" + testServer + "/" + id,
		} {
			r := e.do("GET", path, "alice", nil, nil)
			if r.status != 200 || !bytes.Equal(r.body, data) {
				t.Fatalf("GET %s: %d, %d bytes", path, r.status, len(r.body))
			}
			for k, want := range map[string]string{
				"Content-Type":                 "image/png",
				"Content-Disposition":          `inline; filename="cat.png"`,
				"Content-Security-Policy":      contentSecurityPolicy,
				"X-Content-Type-Options":       "nosniff",
				"Cross-Origin-Resource-Policy": "cross-origin",
			} {
				if got := r.header.Get(k); got != want {
					t.Errorf("%s: %s = %q, want %q", path, k, got, want)
				}
			}
		}

		// The file name in the path overrides the stored one, encoded per
		// RFC 6266 when it is not plain ASCII.
		r := e.do("GET", "/_matrix/client/v1/media/download/"+testServer+"/"+id+"/"+url.PathEscape("chat noir é.png"), "alice", nil, nil)
		if got := r.header.Get("Content-Disposition"); got != `inline; filename="chat noir _.png"; filename*=UTF-8''chat%20noir%20%C3%A9.png` {
			t.Errorf("override Content-Disposition = %q", got)
		}

		// Anything that is not on the inline list is an attachment, and
		// a Content-Type that does not parse is served as octet-stream.
		htmlID := e.upload("alice", []byte("<script>alert(1)</script>"), "text/html", "")
		r = e.do("GET", "/_matrix/client/v1/media/download/"+testServer+"/"+htmlID, "bob", nil, nil)
		if r.header.Get("Content-Disposition") != "attachment" || r.header.Get("Content-Type") != "text/html" {
			t.Errorf("html served as %q / %q", r.header.Get("Content-Type"), r.header.Get("Content-Disposition"))
		}
		junkID := e.upload("alice", []byte("x"), "not a type", "")
		r = e.do("GET", "/_matrix/client/v1/media/download/"+testServer+"/"+junkID, "bob", nil, nil)
		if r.header.Get("Content-Type") != "application/octet-stream" || r.header.Get("Content-Disposition") != "attachment" {
			t.Errorf("junk type served as %q / %q", r.header.Get("Content-Type"), r.header.Get("Content-Disposition"))
		}

		// Zero-byte files are files too.
		emptyID := e.upload("alice", []byte{}, "text/plain", "empty.txt")
		r = e.do("GET", "/_matrix/client/v1/media/download/"+testServer+"/"+emptyID, "alice", nil, nil)
		if r.status != 200 || len(r.body) != 0 {
			t.Errorf("empty file: %d %q", r.status, r.body)
		}

		// Range requests work (seeking in audio and video).
		r = e.do("GET", "/_matrix/client/v1/media/download/"+testServer+"/"+id, "alice", nil, map[string]string{"Range": "bytes=0-9"})
		if r.status != http.StatusPartialContent || !bytes.Equal(r.body, data[:10]) {
			t.Errorf("range: %d %d bytes", r.status, len(r.body))
		}

		// The same bytes are stored once.
		before := len(e.storedFiles())
		e.upload("bob", data, "image/png", "")
		if after := len(e.storedFiles()); after != before {
			t.Errorf("duplicate upload stored another file: %d -> %d", before, after)
		}

		r = e.do("GET", "/_matrix/client/v1/media/config", "alice", nil, nil)
		if r.status != 200 || r.json()["m.upload.size"] != float64(50<<20) {
			t.Errorf("config: %d %s", r.status, r.body)
		}
	})
}

func TestAuthenticationRequired(t *testing.T) {
	e := newEnv(t, testdb.URL(t, "sqlite"), nil)
	id := e.upload("alice", []byte("hi"), "text/plain", "")
	for _, c := range []struct{ method, path string }{
		{"GET", "/_matrix/client/v1/media/download/" + testServer + "/" + id},
		{"GET", "/_matrix/client/v1/media/download/" + testServer + "/" + id + "/x.txt"},
		{"GET", "/_matrix/client/v1/media/thumbnail/" + testServer + "/" + id + "?width=32&height=32"},
		{"GET", "/_matrix/client/v1/media/config"},
		{"GET", "/_matrix/client/v1/media/preview_url?url=https://example.org/"},
		{"GET", "/_matrix/media/v3/config"},
		{"GET", "/_matrix/media/v3/preview_url?url=https://example.org/"},
		{"POST", "/_matrix/media/v3/upload"},
		{"POST", "/_matrix/media/v1/create"},
		{"PUT", "/_matrix/media/v3/upload/" + testServer + "/" + id},
		{"POST", "/_parley/admin/v1/media/" + testServer + "/" + id + "/quarantine"},
		{"DELETE", "/_parley/admin/v1/media/" + testServer + "/" + id},
	} {
		expectError(t, c.method+" "+c.path, e.do(c.method, c.path, "", nil, nil), 401, "M_MISSING_TOKEN")
	}
	expectError(t, "unknown token", e.do("GET", "/_matrix/client/v1/media/config", "nobody", nil, nil), 401, "M_UNKNOWN_TOKEN")
	if r := e.do("GET", "/_matrix/media/v3/download/"+testServer+"/"+id, "", nil, nil); r.status != 200 {
		t.Errorf("legacy download without token: %d", r.status)
	}
}

func TestBadMediaPaths(t *testing.T) {
	e := newEnv(t, testdb.URL(t, "sqlite"), nil)
	id := e.upload("alice", []byte("hi"), "text/plain", "")
	const dl = "/_matrix/client/v1/media/download/"
	for _, c := range []struct {
		path    string
		status  int
		errcode string
	}{
		{dl + testServer + "/..", 400, "M_INVALID_PARAM"},
		{dl + testServer + "/.%2E", 400, "M_INVALID_PARAM"},
		{dl + testServer + "/..%2F..%2Fetc%2Fpasswd", 400, "M_INVALID_PARAM"},
		{dl + testServer + "/abc%00", 400, "M_INVALID_PARAM"},
		{dl + testServer + "/ab.c", 400, "M_INVALID_PARAM"},
		{dl + testServer + "/%E2%80%AEabc", 400, "M_INVALID_PARAM"},
		{dl + testServer + "/" + strings.Repeat("a", 256), 400, "M_INVALID_PARAM"},
		{dl + "..%2F..%2Fsecret/" + id, 400, "M_INVALID_PARAM"},
		{dl + "bad_server!/" + id, 400, "M_INVALID_PARAM"},
		{dl + "host:99999999/" + id, 400, "M_INVALID_PARAM"},
		{dl + testServer + "/" + id + "/..%2F..%2Fx%0Ay", 400, "M_INVALID_PARAM"},
		{dl + testServer + "/unknownMedia", 404, "M_NOT_FOUND"},
		{dl + "other.example/" + id, 404, "M_NOT_FOUND"},
		{"/_matrix/client/v1/media/thumbnail/" + testServer + "/..?width=1&height=1", 400, "M_INVALID_PARAM"},
		{"/_matrix/client/v1/media/thumbnail/" + testServer + "/nope?width=1&height=1", 404, "M_NOT_FOUND"},
	} {
		expectError(t, c.path, e.do("GET", c.path, "alice", nil, nil), c.status, c.errcode)
	}
	r := e.do("GET", dl+"other.example/"+id, "alice", nil, nil)
	if !strings.Contains(string(r.body), "federation") {
		t.Errorf("remote media answer does not say why: %s", r.body)
	}
	expectError(t, "bad filename", e.do("POST", "/_matrix/media/v3/upload?filename=a%0Ab", "alice", []byte("x"), nil), 400, "M_INVALID_PARAM")
	expectError(t, "PUT traversal", e.do("PUT", "/_matrix/media/v3/upload/"+testServer+"/..%2Fx", "alice", []byte("x"), nil), 400, "M_INVALID_PARAM")
	if files := e.storedFiles(); len(files) != 1 {
		t.Errorf("store holds %v", files)
	}
}

func TestUploadLimits(t *testing.T) {
	e := newEnv(t, testdb.URL(t, "sqlite"), func(c *config.Config) { c.Media.MaxUploadBytes = 1000 })

	// A declared size over the limit is refused before the body is read.
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer alice\r\nContent-Length: 1099511627776\r\n\r\nxyz")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || !strings.Contains(string(body), "M_TOO_LARGE") {
		t.Errorf("huge Content-Length: %d %s", resp.StatusCode, body)
	}

	// A body that grows past the limit without declaring its size.
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write(bytes.Repeat([]byte("a"), 5000))
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", e.srv.URL+"/_matrix/media/v3/upload", pr)
	req.Header.Set("Authorization", "Bearer alice")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || !strings.Contains(string(body), "M_TOO_LARGE") {
		t.Errorf("streamed oversize body: %d %s", resp.StatusCode, body)
	}
	// Exactly the limit is fine.
	e.upload("alice", bytes.Repeat([]byte("b"), 1000), "text/plain", "")
	waitForNoTemp(t, e, 1)
}

// TestInterruptedUpload drops the connection half-way through a body.
func TestInterruptedUpload(t *testing.T) {
	e := newEnv(t, testdb.URL(t, "sqlite"), nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer alice\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n")
	_, _ = conn.Write(bytes.Repeat([]byte("z"), 50000))
	time.Sleep(50 * time.Millisecond)
	conn.Close()
	waitForNoTemp(t, e, 0)
}

// waitForNoTemp waits for the handlers to finish and checks the store
// holds exactly want complete blobs and no temporary files.
func waitForNoTemp(t *testing.T, e *env, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		files := e.storedFiles()
		if len(files) == want && !strings.Contains(strings.Join(files, " "), "/tmp/") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("store holds %v, want %d complete blobs and nothing else", files, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAsyncUpload(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		e := newEnv(t, dbURL, nil)
		r := e.do("POST", "/_matrix/media/v1/create", "alice", nil, nil)
		if r.status != 200 {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		server, id, err := ParseMXC(r.json()["content_uri"].(string))
		if err != nil || server != testServer {
			t.Fatalf("create returned %s", r.body)
		}
		expires := int64(r.json()["unused_expires_at"].(float64))
		if d := time.Until(time.UnixMilli(expires)); d < 23*time.Hour || d > 25*time.Hour {
			t.Errorf("unused_expires_at is %v away", d)
		}
		dl := "/_matrix/client/v1/media/download/" + testServer + "/" + id
		expectError(t, "download before upload", e.do("GET", dl+"?timeout_ms=0", "bob", nil, nil), 504, "M_NOT_YET_UPLOADED")
		expectError(t, "bad timeout", e.do("GET", dl+"?timeout_ms=-1", "bob", nil, nil), 400, "M_INVALID_PARAM")

		put := "/_matrix/media/v3/upload/" + testServer + "/" + id + "?filename=late.txt"
		expectError(t, "other user's upload", e.do("PUT", put, "bob", []byte("nope"), nil), 403, "M_FORBIDDEN")

		// A download waiting for the content gets it once it arrives.
		var wg sync.WaitGroup
		var waited *response
		wg.Add(1)
		go func() {
			defer wg.Done()
			waited = e.do("GET", dl+"?timeout_ms=10000", "bob", nil, nil)
		}()
		time.Sleep(100 * time.Millisecond)
		if r := e.do("PUT", put, "alice", []byte("finally"), map[string]string{"Content-Type": "text/plain"}); r.status != 200 || string(r.body) != "{}" {
			t.Fatalf("PUT upload: %d %s", r.status, r.body)
		}
		wg.Wait()
		if waited.status != 200 || string(waited.body) != "finally" || waited.header.Get("Content-Disposition") != `inline; filename="late.txt"` {
			t.Fatalf("waiting download: %d %q %q", waited.status, waited.body, waited.header.Get("Content-Disposition"))
		}
		expectError(t, "second PUT", e.do("PUT", put, "alice", []byte("again"), nil), 409, "M_CANNOT_OVERWRITE_MEDIA")
		expectError(t, "PUT unknown", e.do("PUT", "/_matrix/media/v3/upload/"+testServer+"/neverCreated", "alice", []byte("x"), nil), 404, "M_NOT_FOUND")
		expectError(t, "PUT remote", e.do("PUT", "/_matrix/media/v3/upload/other.example/"+id, "alice", []byte("x"), nil), 404, "M_NOT_FOUND")

		// An expired reservation takes no content and serves nothing.
		r = e.do("POST", "/_matrix/media/v1/create", "alice", nil, nil)
		_, id2, _ := ParseMXC(r.json()["content_uri"].(string))
		e.svc.now = func() time.Time { return time.Now().Add(25 * time.Hour) }
		expectError(t, "PUT expired", e.do("PUT", "/_matrix/media/v3/upload/"+testServer+"/"+id2, "alice", []byte("x"), nil), 404, "M_NOT_FOUND")
		expectError(t, "GET expired", e.do("GET", "/_matrix/client/v1/media/download/"+testServer+"/"+id2, "alice", nil, nil), 404, "M_NOT_FOUND")
		e.svc.now = time.Now

		// Pending reservations per user are limited.
		for i := 1; i < maxPendingUploads; i++ {
			if r := e.do("POST", "/_matrix/media/v1/create", "bob", nil, nil); r.status != 200 {
				t.Fatalf("create %d: %d", i, r.status)
			}
		}
		e.do("POST", "/_matrix/media/v1/create", "bob", nil, nil)
		expectError(t, "too many pending", e.do("POST", "/_matrix/media/v1/create", "bob", nil, nil), 429, "M_LIMIT_EXCEEDED")
	})
}

func TestQuarantineAndDelete(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		e := newEnv(t, dbURL, nil)
		data := pngImage(300, 200)
		id := e.upload("alice", data, "image/png", "")
		twin := e.upload("bob", data, "image/png", "")
		other := e.upload("alice", []byte("other"), "text/plain", "")
		admin := "/_parley/admin/v1/media/" + testServer + "/"
		if r := e.do("GET", "/_matrix/client/v1/media/thumbnail/"+testServer+"/"+id+"?width=32&height=32&method=crop", "alice", nil, nil); r.status != 200 {
			t.Fatalf("thumbnail: %d %s", r.status, r.body)
		}
		files := len(e.storedFiles()) // original, other, thumbnail

		expectError(t, "non-admin quarantine", e.do("POST", admin+id+"/quarantine", "alice", nil, nil), 403, "M_FORBIDDEN")
		expectError(t, "non-admin delete", e.do("DELETE", admin+id, "alice", nil, nil), 403, "M_FORBIDDEN")
		if r := e.do("POST", admin+other+"/quarantine", "admin", nil, nil); r.status != 200 {
			t.Fatalf("quarantine: %d %s", r.status, r.body)
		}
		expectError(t, "quarantined download", e.do("GET", "/_matrix/client/v1/media/download/"+testServer+"/"+other, "alice", nil, nil), 404, "M_NOT_FOUND")
		expectError(t, "quarantined legacy download", e.do("GET", "/_matrix/media/v3/download/"+testServer+"/"+other, "", nil, nil), 404, "M_NOT_FOUND")

		if r := e.do("DELETE", admin+id, "admin", nil, nil); r.status != 200 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
		expectError(t, "deleted download", e.do("GET", "/_matrix/client/v1/media/download/"+testServer+"/"+id, "alice", nil, nil), 404, "M_NOT_FOUND")
		expectError(t, "deleted thumbnail", e.do("GET", "/_matrix/client/v1/media/thumbnail/"+testServer+"/"+id+"?width=32&height=32&method=crop", "alice", nil, nil), 404, "M_NOT_FOUND")
		// The thumbnail's bytes went; the original's stay for the twin.
		if got := len(e.storedFiles()); got != files-1 {
			t.Errorf("after delete the store holds %d files, want %d", got, files-1)
		}
		if r := e.do("GET", "/_matrix/client/v1/media/download/"+testServer+"/"+twin, "bob", nil, nil); r.status != 200 || !bytes.Equal(r.body, data) {
			t.Errorf("twin lost its bytes: %d", r.status)
		}
		if err := e.svc.DeleteMedia(context.Background(), testServer, twin); err != nil {
			t.Fatal(err)
		}
		if got := len(e.storedFiles()); got != files-2 {
			t.Errorf("after deleting both the store holds %d files, want %d", got, files-2)
		}
		expectError(t, "delete unknown", e.do("DELETE", admin+"nope", "admin", nil, nil), 404, "M_NOT_FOUND")
		if err := e.svc.QuarantineMedia(context.Background(), testServer, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("QuarantineMedia(unknown) = %v", err)
		}
	})
}

func TestPurgeRemoteCache(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		e := newEnv(t, dbURL, nil)
		ctx := context.Background()
		local := e.upload("alice", []byte("local bytes"), "text/plain", "")
		old := time.Now().Add(-48 * time.Hour).UnixMilli()
		for i, content := range []string{"remote one", "remote two"} {
			st, err := e.svc.blobs.Stage(ctx, strings.NewReader(content))
			if err != nil {
				t.Fatal(err)
			}
			ts := old
			if i == 1 {
				ts = time.Now().UnixMilli()
			}
			m := &storage.Media{ServerName: "remote.example", MediaID: fmt.Sprint("r", i),
				ContentType: "text/plain", Size: st.Size(), SHA256: st.Hash(), CreatedTS: ts, UploadedTS: ts}
			if err := e.svc.storeBlob(ctx, st, func(tx *storage.BlobTx) error { return tx.InsertMedia(ctx, m) }); err != nil {
				t.Fatal(err)
			}
		}
		n, err := e.svc.PurgeRemoteCache(ctx, 24*time.Hour)
		if err != nil || n != 1 {
			t.Fatalf("PurgeRemoteCache = %d, %v", n, err)
		}
		if r := e.do("GET", "/_matrix/client/v1/media/download/remote.example/r1", "alice", nil, nil); r.status != 200 {
			t.Errorf("recent remote media purged: %d", r.status)
		}
		expectError(t, "purged", e.do("GET", "/_matrix/client/v1/media/download/remote.example/r0", "alice", nil, nil), 404, "M_NOT_FOUND")
		if r := e.do("GET", "/_matrix/client/v1/media/download/"+testServer+"/"+local, "alice", nil, nil); r.status != 200 {
			t.Errorf("local media purged: %d", r.status)
		}
		if got := len(e.storedFiles()); got != 2 {
			t.Errorf("store holds %d files after purge, want 2", got)
		}
	})
}

func TestLegacyFreeze(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		first := newEnv(t, dbURL, nil)
		before := first.upload("alice", []byte("old"), "text/plain", "")
		time.Sleep(5 * time.Millisecond)

		// The same database and store, now frozen.
		e := newEnvOn(t, first.db, first.dataDir, func(c *config.Config) { c.Media.LegacyUnauthenticatedFrozen = true })
		after := e.upload("alice", []byte("new"), "text/plain", "")
		if r := e.do("GET", "/_matrix/media/v3/download/"+testServer+"/"+before, "", nil, nil); r.status != 200 || string(r.body) != "old" {
			t.Errorf("pre-freeze media on legacy endpoint: %d", r.status)
		}
		expectError(t, "post-freeze media on legacy endpoint", e.do("GET", "/_matrix/media/v3/download/"+testServer+"/"+after, "", nil, nil), 404, "M_NOT_FOUND")
		if r := e.do("GET", "/_matrix/client/v1/media/download/"+testServer+"/"+after, "alice", nil, nil); r.status != 200 {
			t.Errorf("post-freeze media on authenticated endpoint: %d", r.status)
		}

		off := newEnvOn(t, first.db, first.dataDir, func(c *config.Config) { c.Media.AllowLegacyUnauthenticated = false })
		expectError(t, "legacy endpoints off", off.do("GET", "/_matrix/media/v3/download/"+testServer+"/"+before, "", nil, nil), 404, "M_UNRECOGNIZED")
	})
}
