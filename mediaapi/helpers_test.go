package mediaapi

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/sqlutil"
	userapi "github.com/parley-chat/parley/userapi/api"
)

const testServer = "test.local"

// fakeUsers resolves the test tokens; the rest of the user API is never
// called by the media API.
type fakeUsers struct {
	userapi.UserAPI
}

var testCallers = map[string]httputil.Caller{
	"alice": {UserID: "@alice:" + testServer, DeviceID: "A"},
	"bob":   {UserID: "@bob:" + testServer, DeviceID: "B"},
	"admin": {UserID: "@admin:" + testServer, DeviceID: "C", Admin: true},
}

func (fakeUsers) VerifyAccessToken(_ context.Context, token string) (httputil.Caller, error) {
	c, ok := testCallers[token]
	if !ok {
		return httputil.Caller{}, httputil.NewError(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Unknown access token")
	}
	return c, nil
}

// env is a media API on its own HTTP server.
type env struct {
	t       testing.TB
	svc     *Service
	srv     *httptest.Server
	dataDir string
	cfg     *config.Config
	db      *sqlutil.DB
}

func newEnv(t testing.TB, dbURL string, mutate func(*config.Config), setup ...func(*Service)) *env {
	t.Helper()
	dataDir := t.TempDir()
	db, err := sqlutil.Open(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return newEnvOn(t, db, dataDir, mutate, setup...)
}

// newEnvOn starts a media API on an open database; setup runs before the
// routes are registered.
func newEnvOn(t testing.TB, db *sqlutil.DB, dataDir string, mutate func(*config.Config), setup ...func(*Service)) *env {
	t.Helper()
	cfg := config.Default()
	cfg.ServerName = testServer
	if mutate != nil {
		mutate(cfg)
	}
	svc, err := Open(context.Background(), db, cfg, dataDir, fakeUsers{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(svc)
	}
	r := chi.NewRouter()
	r.NotFound(httputil.NotFoundHandler)
	r.MethodNotAllowed(httputil.MethodNotAllowedHandler)
	svc.Register(r)
	srv := httptest.NewServer(r)
	t.Cleanup(func() {
		srv.Close()
		svc.Close()
	})
	return &env{t: t, svc: svc, srv: srv, dataDir: dataDir, cfg: cfg, db: db}
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) json() map[string]any {
	var m map[string]any
	_ = json.Unmarshal(r.body, &m)
	return m
}

func (r *response) errcode() string {
	code, _ := r.json()["errcode"].(string)
	return code
}

func (e *env) do(method, path, token string, body []byte, header map[string]string) *response {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: data}
}

// upload posts data and returns the media ID.
func (e *env) upload(token string, data []byte, contentType, filename string) string {
	e.t.Helper()
	path := "/_matrix/media/v3/upload"
	if filename != "" {
		path += "?filename=" + filename
	}
	resp := e.do("POST", path, token, data, map[string]string{"Content-Type": contentType})
	if resp.status != 200 {
		e.t.Fatalf("upload: %d %s", resp.status, resp.body)
	}
	uri, _ := resp.json()["content_uri"].(string)
	server, id, err := ParseMXC(uri)
	if err != nil || server != e.cfg.ServerName {
		e.t.Fatalf("upload returned %q", uri)
	}
	return id
}

// storedFiles lists every file under the blob store directory.
func (e *env) storedFiles() []string {
	e.t.Helper()
	var files []string
	root := filepath.Join(e.dataDir, e.cfg.Media.StoreDir)
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			files = append(files, strings.TrimPrefix(p, root))
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return files
}

func expectError(t testing.TB, what string, r *response, status int, errcode string) {
	t.Helper()
	if r.status != status || r.errcode() != errcode {
		t.Errorf("%s: got %d %s, want %d %s", what, r.status, r.body, status, errcode)
	}
}

// Test images, made in code.

func checkerboard(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBA{uint8(x), uint8(y), 200, 255}
			if (x/16+y/16)%2 == 0 {
				c = color.RGBA{255, 255, 255, 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

func pngImage(w, h int) []byte {
	var buf bytes.Buffer
	_ = png.Encode(&buf, checkerboard(w, h))
	return buf.Bytes()
}

func jpegImage(w, h int) []byte {
	var buf bytes.Buffer
	_ = jpeg.Encode(&buf, checkerboard(w, h), &jpeg.Options{Quality: 80})
	return buf.Bytes()
}

func gifImage(w, h, frames int) []byte {
	anim := &gif.GIF{}
	for i := 0; i < frames; i++ {
		p := image.NewPaletted(image.Rect(0, 0, w, h), palette.Plan9)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				p.SetColorIndex(x, y, uint8((x/8+y/8+i)%200))
			}
		}
		anim.Image = append(anim.Image, p)
		anim.Delay = append(anim.Delay, 10)
	}
	var buf bytes.Buffer
	_ = gif.EncodeAll(&buf, anim)
	return buf.Bytes()
}

// WebP images (64x48) made with libwebp's cwebp and img2webp: lossless,
// lossy, and a two-frame animation; and a 40x30 lossy two-frame animation
// with translucent pixels (ALPH chunks).
var (
	alphaAnimWebP = mustHex("524946461a01000057454250565038580a000000120000002700001d0000414e494d06000000ffffffff0000414e4d46740000000000000000002700001d000064000002414c50481700000001990a44f43f4026603154d53f88db113101d9b1c20d0100565038203c0000005003009d012a28001e003f1186bb572c292623a568018022096700c45280002bf7c37000fee50affb5304919007fa1364b2952773ae7be9d09ec0000414e4d46720000000000000000002700001d000064000002414c50481700000001990a44f43f4026603154d53f88db113101d9b1c20d0100565038203a0000003003009d012a28001e003f1186bb572c28a623a568018022096700c9100f3136ef0000fede127f6dbbf5d1567fd554f5f35291887359c00f8000")
	stillWebP     = mustHex("5249464636000000574542505650384c2a0000002f3fc00b000ff08fff27ffffe37ffee3016ada3660ca9f740074bd11fd271ba028ecde40ee15eebdff1b")
	lossyWebP     = mustHex("524946468a00000057454250565038207e0000009005009d012a4000300003805a25a0163f8f3ff3407e01fc03f0025f364ff807e486c37f00de7aee3667e066b9669f4ad03e97ed0000fee7f10fb6dba23649a54727db14e2e9e0b1b249a55c17d977f76dd47ab5f27f8a5c8e4078c87df564134af4ffb8b076f576c141e93f45f7d5f64ba73725b30a1db7fee3b3480000")
	animWebP      = mustHex("52494646b600000057454250565038580a000000120000003f00002f0000414e494d06000000ffffffff0000414e4d46420000000000000000003f00002f0000640000025650384c2a0000002f3fc00b000ff08fff27ffffe37ffee3016ada3660ca9f740074bd11fd271ba028ecde40ee15eebdff1b414e4d46400000000000000000003f00002f0000640000005650384c280000002f3fc00b100f301ee331c8f31ff050d3b60153fea403a0eb8de83fd9004561f70672af70effddf00")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// decodedSize decodes an image and returns its format and size.
func decodedSize(t testing.TB, data []byte) (string, int, int) {
	t.Helper()
	img, format, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("thumbnail does not decode: %v", err)
	}
	return format, img.Bounds().Dx(), img.Bounds().Dy()
}
