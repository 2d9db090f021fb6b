// Package api is the user API's boundary: accounts, devices, access tokens
// and profiles, as other components may use them.
package api

import (
	"github.com/parley-chat/parley/internal/httputil"
)

// UserAPI is implemented by package userapi. Every component that serves
// authenticated HTTP routes uses it to resolve access tokens.
type UserAPI interface {
	httputil.TokenVerifier
}
