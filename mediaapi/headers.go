package mediaapi

import (
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"
)

// contentSecurityPolicy is the policy the spec recommends for served media
// (client-server spec §"Content repository"), plus media-src 'self' so
// that audio and video opened directly still play.
const contentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

// safeHeaders marks every media response so that a browser opening it
// cannot run it as a page of the server's origin, nor guess a more
// dangerous type than the one sent.
func safeHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		// Spec: client-server §"Content repository" (added in v1.4).
		h.Set("Cross-Origin-Resource-Policy", "cross-origin")
		next.ServeHTTP(w, r)
	})
}

// inlineTypes are the content types that may be served with
// Content-Disposition: inline (client-server spec §"Serving inline
// content"); everything else is sent as an attachment.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true,
	"application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true,
	"audio/flac": true, "audio/x-flac": true,
}

// mediaType returns the lowercased type/subtype of a Content-Type value,
// or "" if it does not parse.
func mediaType(contentType string) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return ""
	}
	return mt
}

// servedContentType is the Content-Type a download is sent with: what the
// uploader declared, or application/octet-stream when that was nothing
// usable (client-server spec, the download's Content-Type header).
func servedContentType(declared string) string {
	if mediaType(declared) == "" {
		return "application/octet-stream"
	}
	return declared
}

// contentDisposition builds the header value per RFC 6266: a plain quoted
// filename when the name is simple ASCII, otherwise an ASCII fallback plus
// the exact name UTF-8 percent-encoded in filename* (RFC 8187).
func contentDisposition(inline bool, filename string) string {
	kind := "attachment"
	if inline {
		kind = "inline"
	}
	if filename == "" {
		return kind
	}
	simple := true
	for i := 0; i < len(filename); i++ {
		c := filename[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '%' {
			simple = false
			break
		}
	}
	if simple {
		return kind + `; filename="` + filename + `"`
	}
	var fallback, encoded strings.Builder
	for _, r := range filename {
		if r >= 0x20 && r < 0x7f && r != '"' && r != '\\' && r != '%' {
			fallback.WriteRune(r)
		} else {
			fallback.WriteByte('_')
		}
	}
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(filename); i++ {
		c := filename[i]
		if isAttrChar(c) {
			encoded.WriteByte(c)
		} else {
			encoded.WriteByte('%')
			encoded.WriteByte(hex[c>>4])
			encoded.WriteByte(hex[c&15])
		}
	}
	return kind + `; filename="` + fallback.String() + `"; filename*=UTF-8''` + encoded.String()
}

// isAttrChar is RFC 8187's attr-char: what may appear unencoded in an
// extended parameter value.
func isAttrChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$&+-.^_`|~", c) >= 0
}

// maxFilenameBytes bounds stored and requested file names.
const maxFilenameBytes = 255

// validFilename accepts names a client may attach to an upload or ask for
// in a download: valid UTF-8, at most 255 bytes, no control characters.
func validFilename(name string) bool {
	if len(name) > maxFilenameBytes || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}
