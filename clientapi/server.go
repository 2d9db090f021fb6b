// Package clientapi serves the client-server API routes that are not sync
// or media: accounts, devices, profiles, rooms. It holds no state of its
// own; it calls the user API and the roomserver through their api packages.
package clientapi

import (
	"github.com/parley-chat/parley/config"
	fedapi "github.com/parley-chat/parley/federation/api"
	rsapi "github.com/parley-chat/parley/roomserver/api"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Deps are the components the client API calls.
type Deps struct {
	Config *config.Config
	Users  userapi.UserAPI
	Rooms  rsapi.RoomserverAPI
	// Federation joins, leaves and invites across servers; nil when
	// federation is off (remote rooms and users are then refused).
	Federation fedapi.MembershipAPI
}

// Server serves the client API routes.
type Server struct {
	cfg   *config.Config
	users userapi.UserAPI
	rooms rsapi.RoomserverAPI
	// federation is nil when federation is off.
	federation fedapi.MembershipAPI
	// limits throttle login and registration attempts (routes_login.go).
	limits accountLimits
}

// New returns a client API server.
func New(d Deps) *Server {
	return &Server{cfg: d.Config, users: d.Users, rooms: d.Rooms, federation: d.Federation, limits: newAccountLimits(d.Config)}
}
