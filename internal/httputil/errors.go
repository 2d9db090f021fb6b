// Package httputil holds what every Parley HTTP handler shares: Matrix error
// bodies, bounded JSON decoding, access-token authentication, CORS, rate
// limits and request logging.
package httputil

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/sirupsen/logrus"
)

// Error is a Matrix error (client-server spec §"Standard error response"):
// an HTTP status with a body {"errcode": "M_...", "error": "..."} plus any
// extra fields the errcode calls for (retry_after_ms, soft_logout, ...).
type Error struct {
	Status  int
	Code    string
	Message string
	Extra   map[string]any
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// MarshalJSON writes the spec's error body.
func (e *Error) MarshalJSON() ([]byte, error) {
	body := make(map[string]any, 2+len(e.Extra))
	for k, v := range e.Extra {
		body[k] = v
	}
	body["errcode"] = e.Code
	body["error"] = e.Message
	return json.Marshal(body)
}

// NewError builds a Matrix error.
func NewError(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// The errors every component needs, by errcode.
func BadJSON(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, "M_BAD_JSON", format, args...)
}
func NotJSON(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, "M_NOT_JSON", format, args...)
}
func InvalidParam(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, "M_INVALID_PARAM", format, args...)
}
func MissingParam(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, "M_MISSING_PARAM", format, args...)
}
func Forbidden(format string, args ...any) *Error {
	return NewError(http.StatusForbidden, "M_FORBIDDEN", format, args...)
}
func NotFound(format string, args ...any) *Error {
	return NewError(http.StatusNotFound, "M_NOT_FOUND", format, args...)
}
func Unrecognized(status int, format string, args ...any) *Error {
	return NewError(status, "M_UNRECOGNIZED", format, args...)
}
func TooLarge(format string, args ...any) *Error {
	return NewError(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", format, args...)
}
func Unknown(format string, args ...any) *Error {
	return NewError(http.StatusInternalServerError, "M_UNKNOWN", format, args...)
}

// LimitExceeded is M_LIMIT_EXCEEDED with the wait the client should observe.
func LimitExceeded(retryAfterMS int64) *Error {
	e := NewError(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "Too many requests")
	e.Extra = map[string]any{"retry_after_ms": retryAfterMS}
	return e
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		logrus.WithError(err).Error("marshal response")
		status = http.StatusInternalServerError
		body = []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// WriteError converts err to a Matrix error response. This is the one place
// where internal errors become HTTP answers: a *Error is sent as it is;
// anything else is logged and answered with a bare 500, never leaking detail.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var me *Error
	if errors.As(err, &me) {
		WriteJSON(w, me.Status, me)
		return
	}
	logrus.WithError(err).WithField("path", r.URL.Path).Error("internal error")
	WriteJSON(w, http.StatusInternalServerError, Unknown("Internal server error"))
}
