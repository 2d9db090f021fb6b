package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/httputil"
)

// XMatrix is one parsed "Authorization: X-Matrix ..." header
// (server-server spec §"Request Authentication").
type XMatrix struct {
	Origin spec.ServerName
	// Destination is empty when the sender left it out (servers before
	// spec v1.3).
	Destination spec.ServerName
	KeyID       gomatrixserverlib.KeyID
	Signature   string
}

// ParseXMatrix parses an Authorization header value with the X-Matrix
// scheme. Per the spec (after RFC 7235 §2.1): the scheme is followed by
// one or more spaces and comma-separated name=value parameters; names are
// case-insensitive; values are tokens or quoted strings with backslash
// escapes, and for older servers an unquoted value may contain colons.
// Unknown parameters are ignored; origin, key and sig are required.
func ParseXMatrix(header string) (XMatrix, error) {
	var x XMatrix
	scheme, rest, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "X-Matrix") {
		return x, errors.New("not an X-Matrix authorization")
	}
	seen := map[string]bool{}
	s := strings.TrimLeft(rest, " \t")
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return x, fmt.Errorf("expected name=value at %q", truncate(s))
		}
		name := strings.ToLower(strings.TrimRight(s[:eq], " \t"))
		if !isToken(name) {
			return x, fmt.Errorf("bad parameter name %q", truncate(name))
		}
		s = strings.TrimLeft(s[eq+1:], " \t")
		var value string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' {
					i++
					if i == len(s) {
						break
					}
				}
				b.WriteByte(s[i])
			}
			if i >= len(s) {
				return x, errors.New("unterminated quoted value")
			}
			value, s = b.String(), s[i+1:]
		} else {
			end := strings.IndexAny(s, ", \t")
			if end < 0 {
				end = len(s)
			}
			value, s = s[:end], s[end:]
			if value == "" || strings.ContainsAny(value, `"\`) {
				return x, fmt.Errorf("bad value for %s", name)
			}
		}
		s = strings.TrimLeft(s, " \t")
		if s != "" {
			if s[0] != ',' {
				return x, fmt.Errorf("expected ',' after %s", name)
			}
			s = strings.TrimLeft(s[1:], " \t")
		}
		if seen[name] {
			return x, fmt.Errorf("parameter %s given twice", name)
		}
		seen[name] = true
		switch name {
		case "origin":
			x.Origin = spec.ServerName(value)
		case "destination":
			x.Destination = spec.ServerName(value)
		case "key":
			x.KeyID = gomatrixserverlib.KeyID(value)
		case "sig":
			x.Signature = value
		}
	}
	if x.Origin == "" || x.KeyID == "" || x.Signature == "" {
		return x, errors.New("origin, key and sig are required")
	}
	return x, nil
}

// isToken reports whether s is an RFC 7230 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// MaxRequestBytes bounds an inbound federation request body: a full
// transaction is 50 PDUs of up to 64 KiB plus 100 EDUs.
const MaxRequestBytes = 8 << 20

type originKey struct{}

// OriginFrom returns the authenticated origin server of a federation
// request that went through RequireServerAuth.
func OriginFrom(ctx context.Context) spec.ServerName {
	o, _ := ctx.Value(originKey{}).(spec.ServerName)
	return o
}

func unauthorized(format string, args ...any) *httputil.Error {
	return httputil.NewError(http.StatusUnauthorized, "M_UNAUTHORIZED", format, args...)
}

// RequireServerAuth authenticates federation requests by their X-Matrix
// signatures (server-server spec §"Request Authentication"): the
// destination must be this server, and the signature over
// {method, uri, origin, destination, content} must verify with the
// origin's key, fetched through the key ring if not cached. Failures are
// 401 M_UNAUTHORIZED. Handlers behind it find the body re-readable and the
// origin in OriginFrom.
func RequireServerAuth(serverName spec.ServerName, verifier gomatrixserverlib.JSONVerifier) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			origin, body, err := authenticate(r, serverName, verifier, time.Now())
			if err != nil {
				var herr *httputil.Error
				if errors.As(err, &herr) {
					logrus.WithFields(logrus.Fields{"path": r.URL.Path, "origin": origin}).Debugf("federation auth: %s", herr.Message)
				}
				httputil.WriteError(w, r, err)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), originKey{}, origin)))
		})
	}
}

// signedRequest is the JSON whose signature the X-Matrix header carries.
type signedRequest struct {
	Content     json.RawMessage                                        `json:"content,omitempty"`
	Destination spec.ServerName                                        `json:"destination"`
	Method      string                                                 `json:"method"`
	Origin      spec.ServerName                                        `json:"origin"`
	URI         string                                                 `json:"uri"`
	Signatures  map[spec.ServerName]map[gomatrixserverlib.KeyID]string `json:"signatures"`
}

func authenticate(r *http.Request, serverName spec.ServerName, verifier gomatrixserverlib.JSONVerifier, now time.Time) (spec.ServerName, []byte, error) {
	var auths []XMatrix
	for _, h := range r.Header.Values("Authorization") {
		scheme, _, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "X-Matrix") {
			continue
		}
		x, err := ParseXMatrix(h)
		if err != nil {
			return "", nil, unauthorized("Malformed X-Matrix Authorization header: %v", err)
		}
		auths = append(auths, x)
	}
	if len(auths) == 0 {
		return "", nil, unauthorized("Missing X-Matrix Authorization header")
	}
	req := signedRequest{
		Method:      r.Method,
		URI:         requestURI(r),
		Origin:      auths[0].Origin,
		Destination: serverName,
		Signatures:  map[spec.ServerName]map[gomatrixserverlib.KeyID]string{auths[0].Origin: {}},
	}
	for _, x := range auths {
		if x.Origin != req.Origin {
			return req.Origin, nil, unauthorized("X-Matrix headers name different origins")
		}
		// §"Request Authentication": a destination that is not us is a 401.
		if x.Destination != "" && x.Destination != serverName {
			return req.Origin, nil, unauthorized("Request is for %q, not this server", x.Destination)
		}
		if !strings.HasPrefix(string(x.KeyID), "ed25519:") {
			return req.Origin, nil, unauthorized("Unsupported key algorithm in %q", x.KeyID)
		}
		req.Signatures[req.Origin][x.KeyID] = x.Signature
	}
	if _, _, ok := spec.ParseAndValidateServerName(req.Origin); !ok {
		return req.Origin, nil, unauthorized("Origin %q is not a valid server name", truncate(string(req.Origin)))
	}
	body, err := httputil.ReadBody(r, MaxRequestBytes)
	if err != nil {
		return req.Origin, nil, err
	}
	if len(bytes.TrimSpace(body)) > 0 {
		if !json.Valid(body) {
			return req.Origin, nil, httputil.NotJSON("Request body is not valid JSON")
		}
		req.Content = body
	}
	message, err := json.Marshal(req)
	if err != nil {
		return req.Origin, nil, fmt.Errorf("encode request for verification: %w", err)
	}
	results, err := verifier.VerifyJSONs(r.Context(), []gomatrixserverlib.VerifyJSONRequest{{
		ServerName:           req.Origin,
		AtTS:                 spec.AsTimestamp(now),
		Message:              message,
		ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
	}})
	if err != nil {
		return req.Origin, nil, fmt.Errorf("verify request signature: %w", err)
	}
	if results[0].Error != nil {
		return req.Origin, nil, unauthorized("Invalid request signature: %v", results[0].Error)
	}
	return req.Origin, body, nil
}

// requestURI is the target exactly as the sender wrote it, which is what
// it signed; the parsed URL would re-encode escapes.
func requestURI(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}
