package mediaapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/testdb"
)

func previewPath(u string) string {
	return "/_matrix/client/v1/media/preview_url?url=" + url.QueryEscape(u)
}

// site is a local web server for previews, counting page fetches.
func site(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	logo := pngImage(120, 60)
	mux := http.NewServeMux()
	mux.HandleFunc("/article", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "text/html; charset=iso-8859-1")
		// "Caf\xe9" is Latin-1 for Café.
		fmt.Fprint(w, "<html><head><title>Fallback title</title>"+
			`<meta property="og:title" content="Caf`+"\xe9"+` news">`+
			`<meta property="og:description" content="All about &lt;coffee&gt;">`+
			`<meta property="og:image" content="/logo.png">`+
			`<meta property="og:image:width" content="9999">`+
			`<meta property="og:site_name" content="Beans">`+
			"</head><body>"+strings.Repeat("<p>filler</p>", 1000)+"</body></html>")
	})
	mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<html><head><title> Just a title </title><meta name="description" content="desc"></head></html>`)
	})
	mux.HandleFunc("/huge", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<html><head><meta property="og:title" content="Big"></head><body>`)
		chunk := strings.Repeat("x", 64<<10)
		for i := 0; i < 64; i++ { // 4 MiB, more than is read
			if _, err := fmt.Fprint(w, chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/logo.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(logo)
	})
	mux.HandleFunc("/missing", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestURLPreview(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		web, hits := site(t)
		e := newEnv(t, dbURL, func(c *config.Config) { c.Media.URLPreviewAllowPrivate = []string{"127.0.0.1/32"} })

		r := e.do("GET", previewPath(web.URL+"/article#section"), "alice", nil, nil)
		if r.status != 200 {
			t.Fatalf("preview: %d %s", r.status, r.body)
		}
		og := r.json()
		for k, want := range map[string]any{
			"og:title":          "Café news",
			"og:description":    "All about <coffee>",
			"og:site_name":      "Beans",
			"og:image:type":     "image/png",
			"og:image:width":    float64(120),
			"og:image:height":   float64(60),
			"matrix:image:size": float64(len(pngImage(120, 60))),
		} {
			if og[k] != want {
				t.Errorf("%s = %v, want %v", k, og[k], want)
			}
		}
		server, id, err := ParseMXC(fmt.Sprint(og["og:image"]))
		if err != nil || server != testServer {
			t.Fatalf("og:image = %v", og["og:image"])
		}
		if d := e.do("GET", "/_matrix/client/v1/media/download/"+server+"/"+id, "alice", nil, nil); d.status != 200 || d.header.Get("Content-Type") != "image/png" {
			t.Errorf("preview image download: %d", d.status)
		}

		// Cached: the page is not fetched again (the fragment is not
		// part of the key).
		if r2 := e.do("GET", previewPath(web.URL+"/article"), "bob", nil, nil); string(r2.body) != string(r.body) || hits.Load() != 1 {
			t.Errorf("second preview fetched again (%d hits) or differs", hits.Load())
		}

		r = e.do("GET", previewPath(web.URL+"/plain"), "alice", nil, nil)
		if og := r.json(); og["og:title"] != "Just a title" || og["og:description"] != "desc" || og["og:image"] != nil {
			t.Errorf("fallbacks: %s", r.body)
		}
		r = e.do("GET", previewPath(web.URL+"/huge"), "alice", nil, nil)
		if r.status != 200 || r.json()["og:title"] != "Big" {
			t.Errorf("huge page: %d %s", r.status, r.body)
		}
		r = e.do("GET", previewPath(web.URL+"/logo.png"), "alice", nil, nil)
		if og := r.json(); r.status != 200 || og["og:image:width"] != float64(120) {
			t.Errorf("image URL: %d %s", r.status, r.body)
		}
		expectError(t, "404 page", e.do("GET", previewPath(web.URL+"/missing"), "alice", nil, nil), 502, "M_UNKNOWN")
		if r := e.do("GET", "/_matrix/media/v3/preview_url?url="+url.QueryEscape(web.URL+"/plain"), "alice", nil, nil); r.status != 200 {
			t.Errorf("legacy preview_url: %d", r.status)
		}
	})
}

func TestURLPreviewBlocksInternalAddresses(t *testing.T) {
	web, hits := site(t)
	port := web.URL[strings.LastIndexByte(web.URL, ':')+1:]
	e := newEnv(t, testdb.URL(t, "sqlite"), nil)
	for _, u := range []string{
		web.URL + "/article", // 127.0.0.1
		"http://localhost:" + port + "/article",
		"http://[::1]:" + port + "/article",
		"http://[::ffff:127.0.0.1]:" + port + "/article",
		"http://10.1.2.3/",
		"http://169.254.169.254/latest/meta-data/",
		"http://100.64.0.1/",
		"http://192.168.1.1/",
		"http://0.0.0.0:" + port + "/",
		"http://[fd00::1]/",
		"http://[fe80::1]/",
	} {
		expectError(t, u, e.do("GET", previewPath(u), "alice", nil, nil), 403, "M_FORBIDDEN")
	}
	if hits.Load() != 0 {
		t.Errorf("a blocked preview reached the server %d times", hits.Load())
	}

	// Allowing 127.0.0.1 exactly does not allow a redirect to 127.0.0.2.
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.2:"+port+"/article", http.StatusFound)
	}))
	defer redirector.Close()
	e2 := newEnv(t, testdb.URL(t, "sqlite"), func(c *config.Config) { c.Media.URLPreviewAllowPrivate = []string{"127.0.0.1/32"} })
	expectError(t, "redirect to internal", e2.do("GET", previewPath(redirector.URL+"/"), "alice", nil, nil), 403, "M_FORBIDDEN")
	if hits.Load() != 0 {
		t.Errorf("the redirect reached the internal server")
	}

	for q, want := range map[string]string{
		"":                                  "M_MISSING_PARAM",
		"?url=ftp%3A%2F%2Fexample.org%2F":   "M_INVALID_PARAM",
		"?url=file%3A%2F%2F%2Fetc%2Fpasswd": "M_INVALID_PARAM",
		"?url=http%3A%2F%2Fu%3Ap%40example.org%2F": "M_INVALID_PARAM",
		"?url=not+a+url": "M_INVALID_PARAM",
		"?url=https%3A%2F%2Fexample.org%2F&ts=yesterday": "M_INVALID_PARAM",
	} {
		r := e.do("GET", "/_matrix/client/v1/media/preview_url"+q, "alice", nil, nil)
		if r.status != 400 || r.errcode() != want {
			t.Errorf("%q: %d %s, want 400 %s", q, r.status, r.body, want)
		}
	}

	off := newEnv(t, testdb.URL(t, "sqlite"), func(c *config.Config) { c.Media.URLPreviewEnabled = false })
	expectError(t, "previews disabled", off.do("GET", previewPath("https://example.org/"), "alice", nil, nil), 403, "M_FORBIDDEN")
}

func TestIsInternal(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1": true, "127.255.0.9": true, "10.0.0.1": true, "172.16.5.4": true, "172.32.0.1": false,
		"192.168.0.1": true, "169.254.169.254": true, "100.64.0.1": true, "100.128.0.1": false,
		"0.0.0.0": true, "224.0.0.1": true, "255.255.255.255": true, "198.18.0.1": true,
		"::1": true, "::": true, "fd12:3456::1": true, "fc00::1": true, "fe80::1": true, "ff02::1": true,
		"::ffff:10.0.0.1": true, "::ffff:8.8.8.8": false, "64:ff9b::a00:1": true, "2002:a00:1::": true,
		"8.8.8.8": false, "1.1.1.1": false, "2606:4700::1111": false,
	} {
		if got := isInternal(netip.MustParseAddr(addr)); got != want {
			t.Errorf("isInternal(%s) = %v, want %v", addr, got, want)
		}
	}
	p, err := newWebFetcher([]string{"10.1.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	if !p.permitted(netip.MustParseAddr("10.1.2.3")) || p.permitted(netip.MustParseAddr("10.2.0.1")) {
		t.Error("allow list not applied exactly")
	}
}

func TestParseOpenGraphBounds(t *testing.T) {
	var b strings.Builder
	b.WriteString("<html><head>")
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&b, `<meta property="og:k%d" content="%s">`, i, strings.Repeat("v", 5000))
	}
	og := parseOpenGraph([]byte(b.String()), "text/html")
	if len(og) != maxPreviewKeys {
		t.Errorf("%d keys kept, want %d", len(og), maxPreviewKeys)
	}
	if v := og["og:k0"].(string); len(v) != maxPreviewValueBytes {
		t.Errorf("value of %d bytes kept", len(v))
	}
}

func TestMediaRateLimits(t *testing.T) {
	e := newEnv(t, testdb.URL(t, "sqlite"), func(c *config.Config) { c.RateLimits.Enabled = true })
	// Blocked addresses are refused after the rate check, with no
	// traffic. The bucket refills while the loop runs, so the limit may
	// bite a little after the burst.
	for i := 0; ; i++ {
		r := e.do("GET", previewPath(fmt.Sprintf("http://10.0.0.1/?n=%d", i)), "alice", nil, nil)
		if r.status == 429 {
			if r.errcode() != "M_LIMIT_EXCEEDED" || r.json()["retry_after_ms"] == nil || i < previewBurst {
				t.Errorf("preview %d: %s", i, r.body)
			}
			break
		}
		expectError(t, "preview within the burst", r, 403, "M_FORBIDDEN")
		if i > 2*previewBurst {
			t.Fatal("previews were never rate limited")
		}
	}
	// Another user has their own allowance.
	expectError(t, "other user", e.do("GET", previewPath("http://10.0.0.1/?n=bob"), "bob", nil, nil), 403, "M_FORBIDDEN")

	// Creating mxc URIs is rate limited too. Each URI is filled at once,
	// so the pending-upload limit does not get in first.
	for i := 0; ; i++ {
		r := e.do("POST", "/_matrix/media/v1/create", "admin", nil, nil)
		if r.status == 429 {
			if r.json()["retry_after_ms"] == nil || i < createBurst {
				t.Errorf("create %d: %s", i, r.body)
			}
			break
		}
		if i > 2*createBurst { // the bucket refills while the loop runs
			t.Fatal("create was never rate limited")
		}
		_, id, _ := ParseMXC(r.json()["content_uri"].(string))
		if r := e.do("PUT", "/_matrix/media/v3/upload/"+testServer+"/"+id, "admin", []byte("x"), nil); r.status != 200 {
			t.Fatalf("PUT %d: %d %s", i, r.status, r.body)
		}
	}

	off := newEnv(t, testdb.URL(t, "sqlite"), func(c *config.Config) { c.RateLimits.Enabled = false })
	for i := 0; i <= previewBurst; i++ {
		expectError(t, "previews without limits", off.do("GET", previewPath(fmt.Sprintf("http://10.0.0.1/?n=%d", i)), "alice", nil, nil), 403, "M_FORBIDDEN")
	}
}
