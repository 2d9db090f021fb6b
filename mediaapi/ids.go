package mediaapi

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/httputil"
)

// maxMediaIDLength bounds media IDs we accept; ours are 32 characters.
const maxMediaIDLength = 255

// ValidMediaID reports whether id may name media: 1-255 characters of
// A-Z a-z 0-9 _ - (client-server spec §"Security considerations" of the
// content repository). Nothing else is ever looked up or used in a path,
// which rules out traversal however it is encoded.
func ValidMediaID(id string) bool {
	if id == "" || len(id) > maxMediaIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ParseMXC splits an mxc://server/mediaID URI and validates both parts.
func ParseMXC(uri string) (serverName, mediaID string, err error) {
	rest, ok := strings.CutPrefix(uri, "mxc://")
	if !ok {
		return "", "", httputil.InvalidParam("Not an mxc:// URI")
	}
	serverName, mediaID, ok = strings.Cut(rest, "/")
	if !ok {
		return "", "", httputil.InvalidParam("mxc:// URI has no media ID")
	}
	if err := checkIDs(serverName, mediaID); err != nil {
		return "", "", err
	}
	return serverName, mediaID, nil
}

// checkIDs validates a server name and media ID taken from a request. The
// values are as they appeared in the URL path: a percent-escape is never
// valid in either, so an encoded '/' or '.' cannot slip through.
func checkIDs(serverName, mediaID string) error {
	if err := config.ValidateServerName(serverName); err != nil {
		return httputil.InvalidParam("Invalid server name in media URI")
	}
	if !ValidMediaID(mediaID) {
		return httputil.InvalidParam("Invalid media ID: only A-Z, a-z, 0-9, '_' and '-' are allowed")
	}
	return nil
}

// newMediaID returns a random media ID: 192 bits, URL-safe base64.
func newMediaID() string {
	var b [24]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func mxcURI(serverName, mediaID string) string {
	return "mxc://" + serverName + "/" + mediaID
}

// notFound is the answer for media that does not exist, was deleted, is
// quarantined or is hidden by the freeze: clients cannot tell these apart.
func notFound() error {
	return httputil.NotFound("Media not found")
}

func notYetUploaded() error {
	return httputil.NewError(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
}
