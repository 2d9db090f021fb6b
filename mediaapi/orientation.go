package mediaapi

import (
	"bufio"
	"encoding/binary"
	"image"
	"io"
)

// Phone cameras store photos as the sensor saw them and record how to
// turn them in the EXIF Orientation tag; browsers apply it when showing
// the original, so a thumbnail must apply it too or it shows sideways.

// maxJPEGHeaderScan bounds the bytes read looking for the EXIF segment,
// which sits before the image data.
const maxJPEGHeaderScan = 256 << 10

// jpegOrientation returns the EXIF Orientation (1-8) of a JPEG, 1 when
// there is none or it cannot be read.
func jpegOrientation(r io.Reader) int {
	br := bufio.NewReader(io.LimitReader(r, maxJPEGHeaderScan))
	var soi [2]byte
	if _, err := io.ReadFull(br, soi[:]); err != nil || soi != [2]byte{0xff, 0xd8} {
		return 1
	}
	for {
		b, err := br.ReadByte()
		if err != nil || b != 0xff {
			return 1
		}
		marker, err := br.ReadByte()
		for err == nil && marker == 0xff { // fill bytes
			marker, err = br.ReadByte()
		}
		if err != nil || marker == 0xda || marker == 0xd9 { // image data or end: no EXIF before it
			return 1
		}
		if marker >= 0xd0 && marker <= 0xd7 || marker == 0x01 { // no length
			continue
		}
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return 1
		}
		n := int(binary.BigEndian.Uint16(l[:])) - 2
		if n < 0 {
			return 1
		}
		if marker != 0xe1 {
			if _, err := br.Discard(n); err != nil {
				return 1
			}
			continue
		}
		seg := make([]byte, n)
		if _, err := io.ReadFull(br, seg); err != nil {
			return 1
		}
		if len(seg) >= 6 && string(seg[:6]) == "Exif\x00\x00" {
			return tiffOrientation(seg[6:])
		}
	}
}

// tiffOrientation reads tag 0x0112 from the first IFD of a TIFF structure.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 1
	}
	var order binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		order = binary.LittleEndian
	case "MM":
		order = binary.BigEndian
	default:
		return 1
	}
	if order.Uint16(t[2:4]) != 42 {
		return 1
	}
	ifd := int(order.Uint32(t[4:8]))
	if ifd < 8 || ifd+2 > len(t) {
		return 1
	}
	count := int(order.Uint16(t[ifd : ifd+2]))
	for i := 0; i < count; i++ {
		e := ifd + 2 + 12*i
		if e+12 > len(t) {
			return 1
		}
		if order.Uint16(t[e:e+2]) != 0x0112 {
			continue
		}
		if order.Uint16(t[e+2:e+4]) != 3 { // SHORT
			return 1
		}
		if o := int(order.Uint16(t[e+8 : e+10])); o >= 1 && o <= 8 {
			return o
		}
		return 1
	}
	return 1
}

// swapsAxes says whether an orientation turns the image by 90 degrees.
func swapsAxes(orientation int) bool { return orientation >= 5 && orientation <= 8 }

// orient applies an EXIF orientation to an image.
func orient(src *image.RGBA, orientation int) *image.RGBA {
	if orientation <= 1 || orientation > 8 {
		return src
	}
	w, h := src.Bounds().Dx(), src.Bounds().Dy()
	dw, dh := w, h
	if swapsAxes(orientation) {
		dw, dh = h, w
	}
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for y := 0; y < dh; y++ {
		for x := 0; x < dw; x++ {
			var sx, sy int
			switch orientation {
			case 2: // mirrored
				sx, sy = w-1-x, y
			case 3: // upside down
				sx, sy = w-1-x, h-1-y
			case 4: // mirrored upside down
				sx, sy = x, h-1-y
			case 5: // mirrored, turned
				sx, sy = y, x
			case 6: // needs a quarter turn clockwise
				sx, sy = y, h-1-x
			case 7:
				sx, sy = w-1-y, h-1-x
			case 8: // needs a quarter turn anticlockwise
				sx, sy = w-1-y, x
			}
			si := src.PixOffset(src.Rect.Min.X+sx, src.Rect.Min.Y+sy)
			di := dst.PixOffset(x, y)
			copy(dst.Pix[di:di+4], src.Pix[si:si+4])
		}
	}
	return dst
}
