package httputil

import (
	"context"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// Caller is the authenticated user and device behind a client request.
type Caller struct {
	UserID   string
	DeviceID string
	Admin    bool
}

// TokenVerifier resolves an access token to its caller. It returns a *Error
// (M_UNKNOWN_TOKEN) for tokens it does not know.
type TokenVerifier interface {
	VerifyAccessToken(ctx context.Context, token string) (Caller, error)
}

type callerKey struct{}

// CallerFrom returns the caller stored by RequireAuth.
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// WithCaller returns ctx carrying c, as RequireAuth does.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// AccessToken extracts the access token from the Authorization header or,
// for older clients, the access_token query parameter (client-server spec
// §"Using access tokens").
func AccessToken(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		if t, ok := strings.CutPrefix(h, "Bearer "); ok && t != "" {
			return t, true
		}
		return "", false
	}
	if t := r.URL.Query().Get("access_token"); t != "" {
		return t, true
	}
	return "", false
}

// RequireAuth rejects requests without a valid access token (401
// M_MISSING_TOKEN / M_UNKNOWN_TOKEN) and stores the caller in the context.
func RequireAuth(v TokenVerifier) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			token, ok := AccessToken(r)
			if !ok {
				WriteError(w, r, NewError(http.StatusUnauthorized, "M_MISSING_TOKEN", "Missing access token"))
				return
			}
			caller, err := v.VerifyAccessToken(r.Context(), token)
			if err != nil {
				WriteError(w, r, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(WithCaller(r.Context(), caller)))
		})
	}
}

// CORS adds the headers web clients need (client-server spec §"Web Browser
// Clients") and answers preflight requests.
func CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Recover turns a handler panic into a logged 500 so one bad request cannot
// take the server down. A panic is still a bug; the log says where.
func Recover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				logrus.WithField("panic", v).WithField("path", r.URL.Path).Error("handler panicked")
				WriteJSON(w, http.StatusInternalServerError, Unknown("Internal server error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += n
	return n, err
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// LogRequests logs one structured line per request. The query string is left
// out because it may carry an access token.
func LogRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		entry := logrus.WithFields(logrus.Fields{
			"method":  r.Method,
			"path":    r.URL.Path,
			"status":  rec.status,
			"bytes":   rec.bytes,
			"ms":      time.Since(start).Milliseconds(),
			"remote":  ClientIP(r),
			"user_id": CallerFrom(r.Context()).UserID,
		})
		if rec.status >= 500 {
			entry.Warn("request")
		} else {
			entry.Debug("request")
		}
	})
}

// ClientIP is the remote address without its port.
func ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// NotFoundHandler answers unknown endpoints with 404 M_UNRECOGNIZED.
func NotFoundHandler(w http.ResponseWriter, r *http.Request) {
	WriteError(w, r, Unrecognized(http.StatusNotFound, "Unrecognized request"))
}

// MethodNotAllowedHandler answers a known path with the wrong method with
// 405 M_UNRECOGNIZED.
func MethodNotAllowedHandler(w http.ResponseWriter, r *http.Request) {
	WriteError(w, r, Unrecognized(http.StatusMethodNotAllowed, "Unrecognized request method"))
}

// R0Alias serves the deprecated /_matrix/client/r0/ prefix with the v3
// handlers: the spec made v3 a rename of r0, and some clients and test
// suites still use the old paths.
func R0Alias(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/_matrix/client/r0/"); ok {
			r.URL.Path = "/_matrix/client/v3/" + rest
			if r.URL.RawPath != "" {
				r.URL.RawPath = "/_matrix/client/v3/" + strings.TrimPrefix(r.URL.RawPath, "/_matrix/client/r0/")
			}
		}
		next.ServeHTTP(w, r)
	})
}
