package mediaapi

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"testing"

	"github.com/parley-chat/parley/internal/testdb"
)

func thumbPath(id string, w, h int, method string) string {
	return fmt.Sprintf("/_matrix/client/v1/media/thumbnail/%s/%s?width=%d&height=%d&method=%s", testServer, id, w, h, method)
}

func TestThumbnailFormats(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		e := newEnv(t, dbURL, nil)
		for _, c := range []struct {
			name        string
			data        []byte
			contentType string
			srcW, srcH  int
			outType     string
		}{
			{"png", pngImage(640, 480), "image/png", 640, 480, "image/png"},
			{"jpeg", jpegImage(640, 480), "image/jpeg", 640, 480, "image/jpeg"},
			{"gif", gifImage(640, 480, 1), "image/gif", 640, 480, "image/png"},
			// Lying about the type does not matter: the bytes decide.
			{"png declared as jpeg", pngImage(640, 480), "image/jpeg", 640, 480, "image/png"},
		} {
			id := e.upload("alice", c.data, c.contentType, "")
			for _, s := range []struct {
				w, h       int
				method     string
				outW, outH int
			}{
				{32, 32, "crop", 32, 32},
				{96, 96, "crop", 96, 96},
				{320, 240, "scale", 320, 240},
				{100, 100, "scale", 100, 75},
				{100, 50, "crop", 100, 50},
				{640, 100, "crop", 640, 100},
			} {
				r := e.do("GET", thumbPath(id, s.w, s.h, s.method), "alice", nil, nil)
				if r.status != 200 {
					t.Fatalf("%s %dx%d %s: %d %s", c.name, s.w, s.h, s.method, r.status, r.body)
				}
				if r.header.Get("Content-Type") != c.outType || r.header.Get("Content-Disposition") != `inline; filename="thumbnail.`+c.outType[6:]+`"` {
					t.Errorf("%s: served as %q, %q", c.name, r.header.Get("Content-Type"), r.header.Get("Content-Disposition"))
				}
				if _, w, h := decodedSize(t, r.body); w != s.outW || h != s.outH {
					t.Errorf("%s %dx%d %s: got %dx%d, want %dx%d", c.name, s.w, s.h, s.method, w, h, s.outW, s.outH)
				}
				// The second request is served from the cache, identically.
				again := e.do("GET", thumbPath(id, s.w, s.h, s.method), "alice", nil, nil)
				if !bytes.Equal(again.body, r.body) {
					t.Errorf("%s: cached thumbnail differs", c.name)
				}
				if _, err := e.svc.db.GetThumbnail(context.Background(), testServer, id, s.w, s.h, s.method); err != nil {
					t.Errorf("%s %dx%d %s not cached: %v", c.name, s.w, s.h, s.method, err)
				}
			}
			// The legacy endpoint thumbnails too, without a token.
			if r := e.do("GET", "/_matrix/media/v3/thumbnail/"+testServer+"/"+id+"?width=32&height=32", "", nil, nil); r.status != 200 {
				t.Errorf("%s legacy thumbnail: %d", c.name, r.status)
			}
		}

		// WebP: lossless and lossy, 64x48.
		for name, data := range map[string][]byte{"lossless": stillWebP, "lossy": lossyWebP} {
			id := e.upload("alice", data, "image/webp", "")
			r := e.do("GET", thumbPath(id, 32, 32, "crop"), "alice", nil, nil)
			if r.status != 200 || r.header.Get("Content-Type") != "image/png" {
				t.Fatalf("webp %s crop: %d %s", name, r.status, r.body)
			}
			if _, w, h := decodedSize(t, r.body); w != 32 || h != 32 {
				t.Errorf("webp %s crop: %dx%d", name, w, h)
			}
			r = e.do("GET", thumbPath(id, 32, 32, "scale"), "alice", nil, nil)
			if _, w, h := decodedSize(t, r.body); w != 32 || h != 24 {
				t.Errorf("webp %s scale: %dx%d", name, w, h)
			}
			// Asking for more than the original has returns the original.
			r = e.do("GET", thumbPath(id, 800, 600, "scale"), "alice", nil, nil)
			if r.status != 200 || r.header.Get("Content-Type") != "image/webp" || !bytes.Equal(r.body, data) {
				t.Errorf("webp %s larger than original: %d %q", name, r.status, r.header.Get("Content-Type"))
			}
		}

		// Never upscaled: a crop of a thin image keeps what it has.
		id := e.upload("alice", pngImage(50, 400), "image/png", "")
		r := e.do("GET", thumbPath(id, 100, 100, "crop"), "alice", nil, nil)
		if _, w, h := decodedSize(t, r.body); w != 50 || h != 100 {
			t.Errorf("thin crop: %dx%d, want 50x100", w, h)
		}
		// Absurd sizes are clamped rather than refused.
		if r := e.do("GET", thumbPath(id, 1_000_000_000, 1_000_000_000, "scale"), "alice", nil, nil); r.status != 200 {
			t.Errorf("huge size: %d %s", r.status, r.body)
		}
	})
}

func TestAnimatedThumbnails(t *testing.T) {
	e := newEnv(t, testdb.URL(t, "sqlite"), nil)
	anim := gifImage(64, 48, 3)
	id := e.upload("alice", anim, "image/gif", "")
	r := e.do("GET", thumbPath(id, 32, 32, "scale")+"&animated=true", "alice", nil, nil)
	if r.status != 200 || r.header.Get("Content-Type") != "image/gif" || !bytes.Equal(r.body, anim) {
		t.Errorf("animated gif with animated=true: %d %q", r.status, r.header.Get("Content-Type"))
	}
	// Without animated=true an animation must not be returned, even when
	// the original is smaller than asked.
	for _, q := range []string{"", "&animated=false"} {
		r = e.do("GET", thumbPath(id, 800, 600, "scale")+q, "alice", nil, nil)
		if r.status != 200 || r.header.Get("Content-Type") != "image/png" {
			t.Fatalf("animated gif still %q: %d %q", q, r.status, r.header.Get("Content-Type"))
		}
		if _, w, h := decodedSize(t, r.body); w != 64 || h != 48 {
			t.Errorf("still of small animation: %dx%d", w, h)
		}
	}
	webpID := e.upload("alice", animWebP, "image/webp", "")
	r = e.do("GET", thumbPath(webpID, 32, 32, "scale")+"&animated=true", "alice", nil, nil)
	if r.status != 200 || r.header.Get("Content-Type") != "image/webp" || !bytes.Equal(r.body, animWebP) {
		t.Errorf("animated webp with animated=true: %d %q", r.status, r.header.Get("Content-Type"))
	}
	// animated=true on a still image is ignored.
	stillID := e.upload("alice", pngImage(100, 100), "image/png", "")
	r = e.do("GET", thumbPath(stillID, 50, 50, "scale")+"&animated=true", "alice", nil, nil)
	if _, w, h := decodedSize(t, r.body); r.status != 200 || w != 50 || h != 50 {
		t.Errorf("animated=true on a still: %d %dx%d", r.status, w, h)
	}
}

// pngHeaderClaiming returns a PNG signature and a valid IHDR chunk for an
// image of the given size, followed by nothing: the shape of a
// decompression bomb's header.
func pngHeaderClaiming(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	_ = binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	_ = binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

func TestThumbnailBadInput(t *testing.T) {
	e := newEnv(t, testdb.URL(t, "sqlite"), nil)
	good := pngImage(200, 200)
	goodID := e.upload("alice", good, "image/png", "")
	jpg := jpegImage(200, 200)
	for _, c := range []struct {
		name    string
		data    []byte
		ctype   string
		status  int
		errcode string
	}{
		{"text", []byte("just some text"), "text/plain", 400, "M_UNKNOWN"},
		{"garbage declared png", []byte("\x89PNG garbage garbage garbage"), "image/png", 400, "M_UNKNOWN"},
		{"truncated png", good[:len(good)/2], "image/png", 400, "M_UNKNOWN"},
		{"truncated jpeg", jpg[:len(jpg)/3], "image/jpeg", 400, "M_UNKNOWN"},
		{"header only", pngHeaderClaiming(300, 300), "image/png", 400, "M_UNKNOWN"},
		{"empty", []byte{}, "image/png", 400, "M_UNKNOWN"},
		{"bomb", pngHeaderClaiming(100_000, 100_000), "image/png", 413, "M_TOO_LARGE"},
		{"tall bomb", pngHeaderClaiming(1, 1<<30), "image/png", 413, "M_TOO_LARGE"},
		{"gif bomb", gifHeaderClaiming(65535, 65535), "image/gif", 413, "M_TOO_LARGE"},
		{"svg", []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`), "image/svg+xml", 400, "M_UNKNOWN"},
	} {
		id := e.upload("alice", c.data, c.ctype, "")
		expectError(t, c.name, e.do("GET", thumbPath(id, 32, 32, "crop"), "alice", nil, nil), c.status, c.errcode)
	}
	base := "/_matrix/client/v1/media/thumbnail/" + testServer + "/" + goodID
	for q, want := range map[string]string{
		"?height=32":                           "M_MISSING_PARAM",
		"?width=32":                            "M_MISSING_PARAM",
		"?width=0&height=32":                   "M_INVALID_PARAM",
		"?width=-5&height=32":                  "M_INVALID_PARAM",
		"?width=3.5&height=32":                 "M_INVALID_PARAM",
		"?width=abc&height=32":                 "M_INVALID_PARAM",
		"?width=99999999999999999999&height=1": "M_INVALID_PARAM",
		"?width=32&height=32&method=stretch":   "M_INVALID_PARAM",
		"?width=32&height=32&animated=yes":     "M_INVALID_PARAM",
	} {
		r := e.do("GET", base+q, "alice", nil, nil)
		if r.status != 400 || r.errcode() != want {
			t.Errorf("%s: %d %s, want 400 %s", q, r.status, r.body, want)
		}
	}
}

// gifHeaderClaiming is a GIF header for a huge logical screen.
func gifHeaderClaiming(w, h uint16) []byte {
	b := []byte("GIF89a")
	b = binary.LittleEndian.AppendUint16(b, w)
	b = binary.LittleEndian.AppendUint16(b, h)
	b = append(b, 0, 0, 0)
	b = append(b, 0x2c, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint16(b, w)
	b = binary.LittleEndian.AppendUint16(b, h)
	return append(b, 0, 2, 0, 0x3b)
}

func TestThumbnailCacheIsBounded(t *testing.T) {
	e := newEnv(t, testdb.URL(t, "sqlite"), nil)
	id := e.upload("alice", pngImage(120, 120), "image/png", "")
	for i := 0; i < maxCachedThumbnails+4; i++ {
		r := e.do("GET", thumbPath(id, 10+i, 10+i, "crop"), "alice", nil, nil)
		if _, w, h := decodedSize(t, r.body); r.status != 200 || w != 10+i || h != 10+i {
			t.Fatalf("size %d: %d %dx%d", 10+i, r.status, w, h)
		}
	}
	n, err := e.svc.db.CountThumbnails(context.Background(), testServer, id)
	if err != nil || n != maxCachedThumbnails {
		t.Errorf("cached %d thumbnails (%v), want %d", n, err, maxCachedThumbnails)
	}
}

func TestThumbnailSize(t *testing.T) {
	for _, c := range []struct {
		srcW, srcH, w, h int
		method           string
		outW, outH       int
	}{
		{640, 480, 320, 240, "scale", 320, 240},
		{640, 480, 100, 100, "scale", 100, 75},
		{480, 640, 100, 100, "scale", 75, 100},
		{640, 480, 96, 96, "crop", 96, 96},
		{640, 480, 1000, 1000, "scale", 640, 480},
		{640, 480, 1000, 100, "crop", 640, 100},
		{1, 10000, 32, 32, "scale", 1, 32},
		{10000, 1, 32, 32, "crop", 32, 1},
	} {
		_, _, w, h := thumbnailSize(c.srcW, c.srcH, c.w, c.h, c.method)
		if w != c.outW || h != c.outH {
			t.Errorf("%dx%d -> %dx%d %s = %dx%d, want %dx%d", c.srcW, c.srcH, c.w, c.h, c.method, w, h, c.outW, c.outH)
		}
	}
}

func FuzzProbeImage(f *testing.F) {
	for _, seed := range [][]byte{pngImage(4, 4), jpegImage(4, 4), gifImage(4, 4, 2), stillWebP, animWebP, alphaAnimWebP, pngHeaderClaiming(9, 9)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := probeImage(bytes.NewReader(data))
		if err != nil || int64(info.width)*int64(info.height) > 1<<20 {
			return
		}
		_, _, _ = makeThumbnail(bytes.NewReader(data), info, 8, 8, "crop")
	})
}

// jpegWithOrientation encodes a w x h JPEG, left half red and right half
// blue as stored, with an EXIF Orientation tag.
func jpegWithOrientation(t *testing.T, w, h, orientation int, bigEndian bool) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBA{220, 20, 20, 255}
			if x >= w/2 {
				c = color.RGBA{20, 20, 220, 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	var enc bytes.Buffer
	if err := jpeg.Encode(&enc, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	var order binary.AppendByteOrder = binary.LittleEndian
	tiff := []byte("II*\x00")
	if bigEndian {
		order = binary.BigEndian
		tiff = []byte("MM\x00*")
	}
	tiff = order.AppendUint32(tiff, 8)
	tiff = order.AppendUint16(tiff, 2) // two entries: something else, then Orientation
	tiff = order.AppendUint16(tiff, 0x010f)
	tiff = order.AppendUint16(tiff, 2)
	tiff = order.AppendUint32(tiff, 4)
	tiff = append(tiff, 'A', 'B', 'C', 0)
	tiff = order.AppendUint16(tiff, 0x0112)
	tiff = order.AppendUint16(tiff, 3)
	tiff = order.AppendUint32(tiff, 1)
	tiff = order.AppendUint16(tiff, uint16(orientation))
	tiff = append(tiff, 0, 0)
	tiff = order.AppendUint32(tiff, 0)
	app1 := append([]byte("Exif\x00\x00"), tiff...)
	out := []byte{0xff, 0xd8, 0xff, 0xe1}
	out = binary.BigEndian.AppendUint16(out, uint16(len(app1)+2))
	out = append(out, app1...)
	return append(out, enc.Bytes()[2:]...)
}

func TestThumbnailEXIFOrientation(t *testing.T) {
	e := newEnv(t, testdb.URL(t, "sqlite"), nil)
	isRed := func(c color.Color) bool { r, _, b, _ := c.RGBA(); return r > 2*b }
	isBlue := func(c color.Color) bool { r, _, b, _ := c.RGBA(); return b > 2*r }
	for _, c := range []struct {
		orientation int
		bigEndian   bool
		w, h        int
		// whether the stored left (red) half ends up at the top-left
		topLeftRed bool
	}{
		{1, false, 100, 50, true},
		{6, false, 50, 100, true}, // a quarter turn clockwise: the left half goes on top
		{6, true, 50, 100, true},
		{8, false, 50, 100, false}, // anticlockwise: the left half goes to the bottom
		{3, false, 100, 50, false}, // upside down: red on the right
	} {
		id := e.upload("alice", jpegWithOrientation(t, 400, 200, c.orientation, c.bigEndian), "image/jpeg", "")
		r := e.do("GET", thumbPath(id, 100, 100, "scale"), "alice", nil, nil)
		if r.status != 200 {
			t.Fatalf("orientation %d: %d %s", c.orientation, r.status, r.body)
		}
		img, _, err := image.Decode(bytes.NewReader(r.body))
		if err != nil {
			t.Fatal(err)
		}
		b := img.Bounds()
		if b.Dx() != c.w || b.Dy() != c.h {
			t.Errorf("orientation %d: %dx%d, want %dx%d", c.orientation, b.Dx(), b.Dy(), c.w, c.h)
			continue
		}
		probe := img.At(b.Dx()/4, b.Dy()/4)
		if c.topLeftRed && !isRed(probe) || !c.topLeftRed && !isBlue(probe) {
			t.Errorf("orientation %d: top-left is %v, want red=%v", c.orientation, probe, c.topLeftRed)
		}
	}
	if got := jpegOrientation(bytes.NewReader(jpegImage(10, 10))); got != 1 {
		t.Errorf("JPEG without EXIF has orientation %d", got)
	}
	for _, bad := range [][]byte{nil, []byte("\xff\xd8"), []byte("\xff\xd8\xff\xe1\x00\x01"), []byte("\xff\xd8\xff\xe1\xff\xffExif\x00\x00II")} {
		if got := jpegOrientation(bytes.NewReader(bad)); got != 1 {
			t.Errorf("jpegOrientation(%q) = %d", bad, got)
		}
	}
}

func TestOrient(t *testing.T) {
	// A 3x2 image with distinct pixels; each orientation must map the
	// stored top-left pixel to where EXIF says it is shown.
	src := image.NewRGBA(image.Rect(0, 0, 3, 2))
	for i := range src.Pix {
		src.Pix[i] = uint8(i)
	}
	at := func(img *image.RGBA, x, y int) uint8 { return img.Pix[img.PixOffset(x, y)] }
	topLeft := at(src, 0, 0)
	for o, want := range map[int][2]int{ // where the stored top-left lands
		1: {0, 0}, 2: {2, 0}, 3: {2, 1}, 4: {0, 1}, 5: {0, 0}, 6: {1, 0}, 7: {1, 2}, 8: {0, 2},
	} {
		dst := orient(src, o)
		if got := at(dst, want[0], want[1]); got != topLeft {
			t.Errorf("orientation %d: stored top-left not at %v", o, want)
		}
	}
}

func TestAnimatedWebPStill(t *testing.T) {
	e := newEnv(t, testdb.URL(t, "sqlite"), nil)
	id := e.upload("alice", animWebP, "image/webp", "")
	for _, c := range []struct {
		query      string
		outW, outH int
	}{
		{thumbPath(id, 32, 32, "crop"), 32, 32},
		{thumbPath(id, 800, 600, "scale"), 64, 48}, // small, but animated: a still of the first frame
	} {
		r := e.do("GET", c.query, "alice", nil, nil)
		if r.status != 200 || r.header.Get("Content-Type") != "image/png" {
			t.Fatalf("%s: %d %s", c.query, r.status, r.body)
		}
		if _, w, h := decodedSize(t, r.body); w != c.outW || h != c.outH {
			t.Errorf("%s: %dx%d, want %dx%d", c.query, w, h, c.outW, c.outH)
		}
	}
	// Translucent frames carry an ALPH chunk, which needs a VP8X header.
	alphaID := e.upload("alice", alphaAnimWebP, "image/webp", "")
	r := e.do("GET", thumbPath(alphaID, 20, 20, "crop"), "alice", nil, nil)
	if r.status != 200 {
		t.Fatalf("translucent animated webp: %d %s", r.status, r.body)
	}
	img, _, err := image.Decode(bytes.NewReader(r.body))
	if err != nil || img.Bounds().Dx() != 20 || img.Bounds().Dy() != 20 {
		t.Fatalf("translucent animated webp thumbnail: %v %v", err, img)
	}
	if _, _, _, a := img.At(10, 10).RGBA(); a == 0xffff || a == 0 {
		t.Errorf("translucent pixel has alpha %d", a)
	}
	for _, bad := range [][]byte{nil, []byte("RIFF\x00\x00\x00\x00WEBP"), []byte("RIFF\x00\x00\x00\x00WEBPANMF\xff\xff\xff\xff")} {
		if _, err := webpFirstFrame(bad); err == nil {
			t.Errorf("webpFirstFrame(%q) accepted", bad)
		}
	}
}

// animatedWebPAround wraps one still frame (a VP8L chunk with its header)
// in an animated WebP whose canvas and frame header claim the given size.
func animatedWebPAround(w, h int, frameChunk []byte) []byte {
	u24 := func(b []byte, v int) []byte { return append(b, byte(v), byte(v>>8), byte(v>>16)) }
	chunk := func(b []byte, id string, payload []byte) []byte {
		b = append(b, id...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
		b = append(b, payload...)
		if len(payload)%2 == 1 {
			b = append(b, 0)
		}
		return b
	}
	vp8x := u24(u24([]byte{0x02, 0, 0, 0}, w-1), h-1)
	anmf := u24(u24(u24(u24(u24(nil, 0), 0), w-1), h-1), 100)
	anmf = append(append(anmf, 0), frameChunk...)
	body := chunk(chunk(chunk(nil, "VP8X", vp8x), "ANIM", make([]byte, 6)), "ANMF", anmf)
	out := append([]byte("RIFF"), binary.LittleEndian.AppendUint32(nil, uint32(4+len(body)))...)
	return append(append(out, "WEBP"...), body...)
}

func TestAnimatedWebPFrameLargerThanCanvas(t *testing.T) {
	e := newEnv(t, testdb.URL(t, "sqlite"), nil)
	frame := stillWebP[12:] // the 64x48 VP8L chunk
	honest := e.upload("alice", animatedWebPAround(64, 48, frame), "image/webp", "")
	if r := e.do("GET", thumbPath(honest, 32, 32, "crop"), "alice", nil, nil); r.status != 200 {
		t.Fatalf("well-formed animation: %d %s", r.status, r.body)
	}
	// A small canvas around a bigger frame must not get past the pixel
	// limit by way of the frame.
	lying := e.upload("alice", animatedWebPAround(8, 8, frame), "image/webp", "")
	expectError(t, "frame larger than canvas", e.do("GET", thumbPath(lying, 4, 4, "crop"), "alice", nil, nil), 400, "M_UNKNOWN")
}
