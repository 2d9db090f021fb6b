package mediaapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/testdb"
)

const remoteServer = "remote.example"

// fakeFederation sends "federation" requests as plain HTTP to base, or
// answers with a canned response for the media IDs in canned.
type fakeFederation struct {
	base   string
	canned map[string]func() *http.Response
	calls  atomic.Int32
}

func (f *fakeFederation) DownloadMedia(ctx context.Context, origin, destination spec.ServerName, mediaID string) (*http.Response, error) {
	f.calls.Add(1)
	if destination != remoteServer {
		return nil, fmt.Errorf("no route to %s", destination)
	}
	if c := f.canned[mediaID]; c != nil {
		return c(), nil
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", f.base+"/_matrix/federation/v1/media/download/"+url.PathEscape(mediaID), nil)
	return http.DefaultClient.Do(req)
}

// noServerAuth stands in for X-Matrix verification (tested in package
// federation and end to end).
func noServerAuth(next http.Handler) http.Handler { return next }

// multipartAnswer builds a federation media answer by hand.
func multipartAnswer(second textproto.MIMEHeader, body []byte) *http.Response {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	meta, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	_, _ = meta.Write([]byte("{}"))
	part, _ := mw.CreatePart(second)
	_, _ = part.Write(body)
	_ = mw.Close()
	return &http.Response{
		StatusCode: 200,
		Header:     http.Header{"Content-Type": {"multipart/mixed; boundary=" + mw.Boundary()}},
		Body:       io.NopCloser(&buf),
	}
}

// readMultipart parses a federation media answer into its second part.
func readMultipart(t *testing.T, r *response) (textproto.MIMEHeader, []byte) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(r.header.Get("Content-Type"))
	if r.status != 200 || err != nil || mt != "multipart/mixed" {
		t.Fatalf("not a multipart answer: %d %q %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	mr := multipart.NewReader(bytes.NewReader(r.body), params["boundary"])
	meta, err := mr.NextPart()
	if err != nil || meta.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("first part: %v %v", err, meta)
	}
	if b, _ := io.ReadAll(meta); string(b) != "{}" {
		t.Errorf("metadata = %q", b)
	}
	part, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(part)
	if _, err := mr.NextPart(); err != io.EOF {
		t.Errorf("more than two parts: %v", err)
	}
	return part.Header, body
}

func TestRemoteMedia(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		remote := newEnv(t, dbURL, func(c *config.Config) { c.ServerName = remoteServer },
			func(s *Service) { s.EnableFederation(nil, noServerAuth) })
		web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Disposition", `attachment; filename="cdn.txt"`)
			fmt.Fprint(w, "from the CDN")
		}))
		defer web.Close()
		// A second server on another loopback address, outside the
		// allow list: were the guard missing, fetching from it would work.
		ln, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Skipf("cannot listen on 127.0.0.2: %v", err)
		}
		inside := &httptest.Server{Listener: ln, Config: &http.Server{Handler: web.Config.Handler}}
		inside.Start()
		defer inside.Close()
		fed := &fakeFederation{base: remote.srv.URL, canned: map[string]func() *http.Response{
			"redirected": func() *http.Response {
				return multipartAnswer(textproto.MIMEHeader{"Location": {web.URL + "/file"}}, nil)
			},
			"redirectedInside": func() *http.Response {
				return multipartAnswer(textproto.MIMEHeader{"Location": {inside.URL + "/file"}}, nil)
			},
			"notMultipart": func() *http.Response {
				return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"image/png"}}, Body: io.NopCloser(strings.NewReader("png"))}
			},
			"truncated": func() *http.Response {
				r := multipartAnswer(textproto.MIMEHeader{"Content-Type": {"text/plain"}}, []byte("cut"))
				b, _ := io.ReadAll(r.Body)
				r.Body = io.NopCloser(bytes.NewReader(b[:len(b)-20]))
				return r
			},
		}}
		// The local server may reach the test CDN on 127.0.0.1 only.
		local := newEnv(t, testdb.URL(t, "sqlite"), func(c *config.Config) {
			c.Media.URLPreviewAllowPrivate = []string{"127.0.0.1/32"}
			c.Media.MaxUploadBytes = 100_000
		}, func(s *Service) { s.EnableFederation(fed, noServerAuth) })

		data := pngImage(300, 200)
		id := remote.upload("alice", data, "image/png", url.QueryEscape("plage été.png"))
		dl := "/_matrix/client/v1/media/download/" + remoteServer + "/"
		r := local.do("GET", dl+id, "bob", nil, nil)
		if r.status != 200 || !bytes.Equal(r.body, data) {
			t.Fatalf("remote download: %d %s", r.status, r.body)
		}
		if r.header.Get("Content-Type") != "image/png" || !strings.Contains(r.header.Get("Content-Disposition"), "filename*=UTF-8''plage%20%C3%A9t%C3%A9.png") {
			t.Errorf("remote media served as %q, %q", r.header.Get("Content-Type"), r.header.Get("Content-Disposition"))
		}
		// Cached: neither a second download nor a thumbnail asks again.
		calls := fed.calls.Load()
		if r := local.do("GET", dl+id, "alice", nil, nil); r.status != 200 {
			t.Errorf("cached download: %d", r.status)
		}
		r = local.do("GET", "/_matrix/client/v1/media/thumbnail/"+remoteServer+"/"+id+"?width=96&height=96&method=crop", "bob", nil, nil)
		if _, w, h := decodedSize(t, r.body); w != 96 || h != 96 {
			t.Errorf("thumbnail of remote media: %dx%d", w, h)
		}
		if fed.calls.Load() != calls {
			t.Errorf("cached remote media fetched again")
		}

		r = local.do("GET", dl+"redirected", "bob", nil, nil)
		if r.status != 200 || string(r.body) != "from the CDN" || r.header.Get("Content-Disposition") != `inline; filename="cdn.txt"` {
			t.Errorf("redirected remote media: %d %q %q", r.status, r.body, r.header.Get("Content-Disposition"))
		}
		expectError(t, "redirect to an internal address", local.do("GET", dl+"redirectedInside", "bob", nil, nil), 502, "M_UNKNOWN")
		expectError(t, "not multipart", local.do("GET", dl+"notMultipart", "bob", nil, nil), 502, "M_UNKNOWN")
		expectError(t, "truncated", local.do("GET", dl+"truncated", "bob", nil, nil), 502, "M_UNKNOWN")
		expectError(t, "unknown remote media", local.do("GET", dl+"nothingHere", "bob", nil, nil), 404, "M_NOT_FOUND")
		expectError(t, "unreachable server", local.do("GET", "/_matrix/client/v1/media/download/elsewhere.example/x", "bob", nil, nil), 502, "M_UNKNOWN")

		files := len(local.storedFiles())
		big := remote.upload("alice", bytes.Repeat([]byte("b"), 150_000), "text/plain", "")
		expectError(t, "remote media over the limit", local.do("GET", dl+big, "bob", nil, nil), 502, "M_TOO_LARGE")
		if got := len(local.storedFiles()); got != files {
			t.Errorf("oversized remote media left %d files", got-files)
		}

		// allow_remote=false keeps the legacy endpoint from fetching.
		other := remote.upload("alice", []byte("other"), "text/plain", "")
		calls = fed.calls.Load()
		expectError(t, "allow_remote=false", local.do("GET", "/_matrix/media/v3/download/"+remoteServer+"/"+other+"?allow_remote=false", "", nil, nil), 404, "M_NOT_FOUND")
		if fed.calls.Load() != calls {
			t.Error("allow_remote=false fetched anyway")
		}

		// Purged remote media comes back on the next request.
		local.svc.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
		if n, err := local.svc.PurgeRemoteCache(context.Background(), time.Hour); err != nil || n != 2 {
			t.Errorf("PurgeRemoteCache = %d, %v", n, err)
		}
		local.svc.now = time.Now
		if r := local.do("GET", dl+id, "bob", nil, nil); r.status != 200 || !bytes.Equal(r.body, data) {
			t.Errorf("download after purge: %d", r.status)
		}
	})
}

func TestFederationMediaEndpoints(t *testing.T) {
	e := newEnv(t, testdb.URL(t, "sqlite"), nil, func(s *Service) { s.EnableFederation(nil, noServerAuth) })
	data := pngImage(200, 100)
	id := e.upload("alice", data, "image/png", "pic.png")
	base := "/_matrix/federation/v1/media/"

	header, body := readMultipart(t, e.do("GET", base+"download/"+id, "", nil, nil))
	if !bytes.Equal(body, data) || header.Get("Content-Type") != "image/png" || header.Get("Content-Disposition") != `inline; filename="pic.png"` {
		t.Errorf("federation download: %d bytes, %v", len(body), header)
	}
	header, body = readMultipart(t, e.do("GET", base+"thumbnail/"+id+"?width=50&height=50&method=scale", "", nil, nil))
	if _, w, h := decodedSize(t, body); w != 50 || h != 25 || header.Get("Content-Type") != "image/png" {
		t.Errorf("federation thumbnail: %dx%d %v", w, h, header)
	}
	expectError(t, "bad id", e.do("GET", base+"download/..", "", nil, nil), 400, "M_INVALID_PARAM")
	expectError(t, "unknown id", e.do("GET", base+"download/unknown", "", nil, nil), 404, "M_NOT_FOUND")
	expectError(t, "thumbnail without size", e.do("GET", base+"thumbnail/"+id, "", nil, nil), 400, "M_MISSING_PARAM")

	r := e.do("POST", "/_matrix/media/v1/create", "alice", nil, nil)
	_, pending, _ := ParseMXC(r.json()["content_uri"].(string))
	expectError(t, "pending", e.do("GET", base+"download/"+pending+"?timeout_ms=0", "", nil, nil), 504, "M_NOT_YET_UPLOADED")

	if err := e.svc.QuarantineMedia(context.Background(), testServer, id); err != nil {
		t.Fatal(err)
	}
	expectError(t, "quarantined", e.do("GET", base+"download/"+id, "", nil, nil), 404, "M_NOT_FOUND")

	// Without federation the routes do not exist.
	off := newEnv(t, testdb.URL(t, "sqlite"), nil)
	expectError(t, "no federation", off.do("GET", base+"download/"+id, "", nil, nil), 404, "M_UNRECOGNIZED")
}
