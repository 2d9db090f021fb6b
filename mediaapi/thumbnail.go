package mediaapi

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/draw"
	_ "image/gif" // registers GIF with image.Decode
	"image/jpeg"
	"image/png"
	"io"

	xdraw "golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // registers WebP with image.Decode
)

// Thumbnail sizes are clamped to this many pixels per side: enough for
// any screen, small enough that a thumbnail stays cheap.
const maxThumbnailSide = 2048

// errNotImage means the content cannot be thumbnailed: not an image of a
// supported format, or one whose bytes do not decode.
var errNotImage = errors.New("content cannot be thumbnailed")

// imageInfo is what the header of an image says, read without decoding
// its pixels.
type imageInfo struct {
	format string // "jpeg", "png", "gif" or "webp"
	// width and height are as stored, before orientation.
	width, height int
	animated      bool
	// orientation is the EXIF orientation of a JPEG (1: as stored).
	orientation int
}

// displaySize is the size the image is shown at, after orientation.
func (i imageInfo) displaySize() (int, int) {
	if swapsAxes(i.orientation) {
		return i.height, i.width
	}
	return i.width, i.height
}

// contentType is the MIME type of the image's real format, whatever the
// uploader declared.
func (i imageInfo) contentType() string { return "image/" + i.format }

// probeImage reads only the image header: format and dimensions (and
// whether a GIF or WebP is animated), so that a decompression bomb is
// recognised before any pixel memory is allocated.
func probeImage(r io.ReadSeeker) (imageInfo, error) {
	cfg, format, err := image.DecodeConfig(bufio.NewReader(r))
	if err != nil {
		return imageInfo{}, errNotImage
	}
	info := imageInfo{format: format, width: cfg.Width, height: cfg.Height, orientation: 1}
	switch format {
	case "png":
	case "jpeg":
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return imageInfo{}, err
		}
		info.orientation = jpegOrientation(r)
	case "gif":
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return imageInfo{}, err
		}
		n, err := gifFrames(bufio.NewReader(r), 2)
		if err != nil {
			return imageInfo{}, errNotImage
		}
		info.animated = n > 1
	case "webp":
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return imageInfo{}, err
		}
		info.animated = webpAnimated(r)
	default:
		return imageInfo{}, errNotImage
	}
	if info.width <= 0 || info.height <= 0 {
		return imageInfo{}, errNotImage
	}
	return info, nil
}

// gifFrames counts image descriptors in a GIF, stopping at limit, by
// walking the block structure without decompressing anything.
func gifFrames(r *bufio.Reader, limit int) (int, error) {
	var hdr [13]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	if flags := hdr[10]; flags&0x80 != 0 {
		if _, err := r.Discard(3 << ((flags & 7) + 1)); err != nil {
			return 0, err
		}
	}
	frames := 0
	for frames < limit {
		b, err := r.ReadByte()
		if err != nil {
			return frames, err
		}
		switch b {
		case 0x21: // extension: label, then data sub-blocks
			if _, err := r.ReadByte(); err != nil {
				return frames, err
			}
		case 0x2c: // image descriptor, optional local colour table, LZW size
			var desc [9]byte
			if _, err := io.ReadFull(r, desc[:]); err != nil {
				return frames, err
			}
			if flags := desc[8]; flags&0x80 != 0 {
				if _, err := r.Discard(3 << ((flags & 7) + 1)); err != nil {
					return frames, err
				}
			}
			if _, err := r.ReadByte(); err != nil {
				return frames, err
			}
			frames++
		case 0x3b: // trailer
			return frames, nil
		default:
			return frames, fmt.Errorf("gif: unknown block 0x%02x", b)
		}
		if err := skipSubBlocks(r); err != nil {
			return frames, err
		}
	}
	return frames, nil
}

func skipSubBlocks(r *bufio.Reader) error {
	for {
		n, err := r.ReadByte()
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if _, err := r.Discard(int(n)); err != nil {
			return err
		}
	}
}

// webpAnimated reads the animation flag of an extended (VP8X) WebP.
func webpAnimated(r io.Reader) bool {
	var hdr [21]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return false
	}
	return string(hdr[0:4]) == "RIFF" && string(hdr[8:12]) == "WEBP" &&
		string(hdr[12:16]) == "VP8X" && binary.LittleEndian.Uint32(hdr[16:20]) >= 10 && hdr[20]&0x02 != 0
}

// thumbnailSize computes the output size (client-server spec
// §"Thumbnails"). scale fits the image inside width x height keeping its
// aspect; crop fills width x height and cuts what sticks out. Neither
// ever upscales: a source smaller than asked stays at its own size.
func thumbnailSize(srcW, srcH, width, height int, method string) (scaledW, scaledH, outW, outH int) {
	fw := float64(width) / float64(srcW)
	fh := float64(height) / float64(srcH)
	f := min(fw, fh)
	if method == "crop" {
		f = max(fw, fh)
	}
	f = min(f, 1)
	scaledW = max(1, int(float64(srcW)*f+0.5))
	scaledH = max(1, int(float64(srcH)*f+0.5))
	outW, outH = scaledW, scaledH
	if method == "crop" {
		outW, outH = min(width, scaledW), min(height, scaledH)
	}
	return scaledW, scaledH, outW, outH
}

// makeThumbnail decodes the image (first frame of an animation), resizes
// it, turns it upright and encodes JPEG for JPEG sources and PNG for
// everything else, which keeps transparency. width and height are in the
// upright image's terms. The caller has checked the pixel count.
func makeThumbnail(r io.Reader, info imageInfo, width, height int, method string) (data []byte, contentType string, err error) {
	defer func() {
		// The decoders are fuzzed upstream, but a panic on one hostile
		// file must still only fail that request.
		if v := recover(); v != nil {
			data, contentType, err = nil, "", errNotImage
		}
	}()
	if info.format == "webp" && info.animated {
		// x/image/webp reads still images only: decode the first frame.
		data, err := io.ReadAll(r)
		if err != nil {
			return nil, "", err
		}
		frame, err := webpFirstFrame(data)
		if err != nil {
			return nil, "", err
		}
		// The pixel limit was checked on the canvas; a frame must fit
		// inside it, or it could be a bomb of its own.
		cfg, _, err := image.DecodeConfig(bytes.NewReader(frame))
		if err != nil || cfg.Width > info.width || cfg.Height > info.height {
			return nil, "", errNotImage
		}
		r = bytes.NewReader(frame)
	}
	src, _, err := image.Decode(bufio.NewReader(r))
	if err != nil {
		return nil, "", errNotImage
	}
	b := src.Bounds()
	// Resize as stored, turning the request with the image, and turn
	// only the small result upright.
	if swapsAxes(info.orientation) {
		width, height = height, width
	}
	scaledW, scaledH, outW, outH := thumbnailSize(b.Dx(), b.Dy(), width, height, method)
	// Scale the whole image into a canvas of the scaled size, offset so
	// the crop (if any) is centred; the canvas is only the output size.
	dst := image.NewRGBA(image.Rect(0, 0, outW, outH))
	offX, offY := (scaledW-outW)/2, (scaledH-outH)/2
	if b.Dx() > 4*scaledW && b.Dy() > 4*scaledH {
		// A large reduction: a cheap sampling pass down to twice the
		// target first, then the filtering pass, which costs in
		// proportion to its input, runs on a small image. This halves
		// the time for photo-sized originals at no visible cost.
		mid := image.NewRGBA(image.Rect(0, 0, 2*scaledW, 2*scaledH))
		xdraw.ApproxBiLinear.Scale(mid, mid.Bounds(), src, b, draw.Src, nil)
		src, b = mid, mid.Bounds()
	}
	xdraw.BiLinear.Scale(dst, image.Rect(-offX, -offY, scaledW-offX, scaledH-offY), src, b, draw.Src, nil)

	dst = orient(dst, info.orientation)

	var buf bytes.Buffer
	if info.format == "jpeg" {
		err = jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 85})
		contentType = "image/jpeg"
	} else {
		err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, dst)
		contentType = "image/png"
	}
	if err != nil {
		return nil, "", fmt.Errorf("encode thumbnail: %w", err)
	}
	return buf.Bytes(), contentType, nil
}

// webpFirstFrame rewrites an animated WebP as a still WebP holding only
// its first frame (the frame's ALPH/VP8/VP8L chunks, behind a VP8X header
// when there is an alpha chunk), which the still-image decoder reads.
func webpFirstFrame(data []byte) ([]byte, error) {
	if len(data) < 12 || string(data[0:4]) != "RIFF" || string(data[8:12]) != "WEBP" {
		return nil, errNotImage
	}
	chunks := data[12:]
	for len(chunks) >= 8 {
		size := int64(binary.LittleEndian.Uint32(chunks[4:8]))
		if size > int64(len(chunks)-8) {
			return nil, errNotImage
		}
		payload := chunks[8 : 8+size]
		if string(chunks[0:4]) == "ANMF" {
			if len(payload) < 16 {
				return nil, errNotImage
			}
			frame := payload[16:]
			var body []byte
			if bytes.Contains(frame, []byte("ALPH")) {
				// Frame width-1 and height-1 are 24-bit fields at 6 and 9.
				vp8x := make([]byte, 10)
				vp8x[0] = 0x10 // alpha
				copy(vp8x[4:10], payload[6:12])
				body = append(body, "VP8X"...)
				body = binary.LittleEndian.AppendUint32(body, uint32(len(vp8x)))
				body = append(body, vp8x...)
			}
			body = append(body, frame...)
			out := append([]byte("RIFF"), binary.LittleEndian.AppendUint32(nil, uint32(4+len(body)))...)
			out = append(out, "WEBP"...)
			return append(out, body...), nil
		}
		step := 8 + size + size&1 // chunks are padded to even sizes
		if step > int64(len(chunks)) {
			break
		}
		chunks = chunks[step:]
	}
	return nil, errNotImage
}
