package httputil

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
)

// DefaultMaxBody bounds a JSON request body unless a route sets its own.
const DefaultMaxBody = 1 << 20

// DecodeJSON reads a JSON object body of at most maxBytes into v. It returns
// M_TOO_LARGE, M_NOT_JSON or M_BAD_JSON (wrong field types) as a *Error.
// An empty body decodes as {} so endpoints whose fields are all optional
// accept it.
func DecodeJSON(r *http.Request, maxBytes int64, v any) error {
	body, err := ReadBody(r, maxBytes)
	if err != nil {
		return err
	}
	return UnmarshalJSONObject(body, v)
}

// ReadBody reads the whole request body, failing with M_TOO_LARGE past maxBytes.
func ReadBody(r *http.Request, maxBytes int64) ([]byte, error) {
	if r.ContentLength > maxBytes {
		return nil, TooLarge("Request body is larger than %d bytes", maxBytes)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBytes+1))
	if err != nil {
		return nil, BadJSON("Could not read request body")
	}
	if int64(len(body)) > maxBytes {
		return nil, TooLarge("Request body is larger than %d bytes", maxBytes)
	}
	return body, nil
}

// UnmarshalJSONObject decodes body, which must be a JSON object, into v.
func UnmarshalJSONObject(body []byte, v any) error {
	trimmed := strings.TrimSpace(string(body))
	if trimmed == "" {
		trimmed = "{}"
	}
	if !json.Valid([]byte(trimmed)) {
		return NotJSON("Request body is not valid JSON")
	}
	if trimmed[0] != '{' {
		return BadJSON("Request body must be a JSON object")
	}
	if err := json.Unmarshal([]byte(trimmed), v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return BadJSON("Field %q has the wrong type: expected %s", typeErr.Field, typeErr.Type)
		}
		return BadJSON("Request body does not match the expected shape: %v", err)
	}
	return nil
}
