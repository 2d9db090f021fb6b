package federation

import (
	"github.com/go-chi/chi/v5"
)

// routes is THE route table of the server-server API, in spec order.
// Everything under /_matrix/federation needs X-Matrix authentication
// except /version, which the spec leaves open, and /openid/userinfo,
// which third parties call with a token.
func (s *Service) routes(r chi.Router) {
	// Spec: server-server §"Server implementation".
	r.Get("/_matrix/federation/v1/version", s.handleVersion)
	// Spec: server-server §"OpenID": the token is the credential.
	r.Get("/_matrix/federation/v1/openid/userinfo", s.handleOpenIDUserInfo)

	// Spec: server-server §"Publishing Keys" (the {keyId} form is deprecated
	// and answered the same way).
	r.Get("/_matrix/key/v2/server", s.handleOwnKeys)
	r.Get("/_matrix/key/v2/server/{keyID}", s.handleOwnKeys)
	// Spec: server-server §"Querying Keys Through Another Server".
	r.Get("/_matrix/key/v2/query/{serverName}", s.handleQueryKeys)
	r.Get("/_matrix/key/v2/query/{serverName}/{keyID}", s.handleQueryKeys)
	r.Post("/_matrix/key/v2/query", s.handleBulkQueryKeys)

	r.Group(func(r chi.Router) {
		r.Use(RequireServerAuth(s.serverName, s.keys.KeyRing()))
		// Spec: server-server §"Transactions".
		r.Put("/_matrix/federation/v1/send/{txnID}", s.handleSend)
		// Spec: server-server §"Retrieving events".
		r.Get("/_matrix/federation/v1/event_auth/{roomID}/{eventID}", s.handleGetEventAuth)
		r.Get("/_matrix/federation/v1/state/{roomID}", s.handleGetState)
		r.Get("/_matrix/federation/v1/state_ids/{roomID}", s.handleGetStateIDs)
		r.Get("/_matrix/federation/v1/event/{eventID}", s.handleGetEvent)
		// Spec: server-server §"Backfilling and retrieving missing events".
		r.Get("/_matrix/federation/v1/backfill/{roomID}", s.handleBackfill)
		r.Post("/_matrix/federation/v1/get_missing_events/{roomID}", s.handleGetMissingEvents)
		// Spec: server-server §"Joining Rooms".
		r.Get("/_matrix/federation/v1/make_join/{roomID}/{userID}", s.handleMakeJoin)
		r.Put("/_matrix/federation/v2/send_join/{roomID}/{eventID}", s.handleSendJoin)
		// Spec: server-server §"Knocking upon a room".
		r.Get("/_matrix/federation/v1/make_knock/{roomID}/{userID}", s.handleMakeKnock)
		r.Put("/_matrix/federation/v1/send_knock/{roomID}/{eventID}", s.handleSendKnock)
		// Spec: server-server §"Inviting to a room".
		r.Put("/_matrix/federation/v2/invite/{roomID}/{eventID}", s.handleInvite)
		// Spec: server-server §"Leaving Rooms (Rejecting Invites)".
		r.Get("/_matrix/federation/v1/make_leave/{roomID}/{userID}", s.handleMakeLeave)
		r.Put("/_matrix/federation/v2/send_leave/{roomID}/{eventID}", s.handleSendLeave)
		// Spec: server-server §"Querying for information".
		r.Get("/_matrix/federation/v1/query/directory", s.handleQueryDirectory)
		r.Get("/_matrix/federation/v1/query/profile", s.handleQueryProfile)
		// Spec: server-server §"Public Room Directory".
		r.Get("/_matrix/federation/v1/publicRooms", s.handleGetPublicRooms)
		r.Post("/_matrix/federation/v1/publicRooms", s.handlePostPublicRooms)
		// Spec: server-server §"End-to-End Encryption" and §"Device Management".
		r.Get("/_matrix/federation/v1/user/devices/{userID}", s.handleUserDevices)
		r.Post("/_matrix/federation/v1/user/keys/claim", s.handleUserKeysClaim)
		r.Post("/_matrix/federation/v1/user/keys/query", s.handleUserKeysQuery)
	})
}
