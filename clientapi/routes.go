package clientapi

import (
	"github.com/go-chi/chi/v5"

	"github.com/parley-chat/parley/internal/httputil"
)

// Register adds every client API route to r: the route table of this
// component, in the order of the client-server spec's sections.
func (s *Server) Register(r chi.Router) {
	auth := httputil.RequireAuth(s.users)

	// Spec: client-server §2 "API Standards" (versions).
	r.Get("/_matrix/client/versions", s.handleVersions)

	// Spec: client-server §5 "Client authentication" (login, register, logout, accounts).
	r.Get("/_matrix/client/v3/login", s.handleGetLogin)
	r.Post("/_matrix/client/v3/login", s.handleLogin)
	r.Post("/_matrix/client/v3/register", s.handleRegister)
	r.Get("/_matrix/client/v3/register/available", s.handleRegisterAvailable)
	r.Get("/_matrix/client/v1/register/m.login.registration_token/validity", s.handleRegistrationTokenValidity)
	r.Group(func(r chi.Router) {
		r.Use(auth)
		r.Post("/_matrix/client/v3/logout", s.handleLogout)
		r.Post("/_matrix/client/v3/logout/all", s.handleLogoutAll)
		r.Get("/_matrix/client/v3/account/whoami", s.handleWhoami)
		r.Post("/_matrix/client/v3/account/password", s.handleChangePassword)
		r.Post("/_matrix/client/v3/account/deactivate", s.handleDeactivate)
	})
	// Synapse's shared-secret admin registration, for admin tools and Complement.
	r.Get("/_synapse/admin/v1/register", s.handleSharedSecretNonce)
	r.Post("/_synapse/admin/v1/register", s.handleSharedSecretRegister)
	r.With(auth).Get("/_synapse/admin/v1/event_reports", s.handleListEventReports)

	// Spec: client-server §7 "Capabilities".
	r.With(auth).Get("/_matrix/client/v3/capabilities", s.handleCapabilities)

	// Spec: client-server §9 "Rooms" (creation, aliases, membership, events, state).
	r.Get("/_matrix/client/v3/directory/room/{roomAlias}", s.handleGetAlias)
	r.Get("/_matrix/client/v3/directory/list/room/{roomId}", s.handleGetRoomVisibility)
	r.Get("/_matrix/client/v3/publicRooms", s.handleGetPublicRooms)
	r.Group(func(r chi.Router) {
		r.Use(auth)
		r.Post("/_matrix/client/v3/createRoom", s.handleCreateRoom)
		r.Put("/_matrix/client/v3/directory/room/{roomAlias}", s.handleSetAlias)
		r.Delete("/_matrix/client/v3/directory/room/{roomAlias}", s.handleDeleteAlias)
		r.Get("/_matrix/client/v3/rooms/{roomId}/aliases", s.handleGetRoomAliases)
		r.Put("/_matrix/client/v3/directory/list/room/{roomId}", s.handleSetRoomVisibility)
		r.Post("/_matrix/client/v3/publicRooms", s.handlePostPublicRooms)
		r.Get("/_matrix/client/v3/joined_rooms", s.handleJoinedRooms)
		r.Post("/_matrix/client/v3/rooms/{roomId}/invite", s.handleInvite)
		r.Post("/_matrix/client/v3/join/{roomIdOrAlias}", s.handleJoinRoomByIDOrAlias)
		r.Post("/_matrix/client/v3/rooms/{roomId}/join", s.handleJoinRoom)
		r.Post("/_matrix/client/v3/knock/{roomIdOrAlias}", s.handleKnock)
		r.Post("/_matrix/client/v3/rooms/{roomId}/leave", s.handleLeave)
		r.Post("/_matrix/client/v3/rooms/{roomId}/forget", s.handleForgetRoom)
		r.Post("/_matrix/client/v3/rooms/{roomId}/kick", s.handleKick)
		r.Post("/_matrix/client/v3/rooms/{roomId}/ban", s.handleBan)
		r.Post("/_matrix/client/v3/rooms/{roomId}/unban", s.handleUnban)
		r.Get("/_matrix/client/v3/rooms/{roomId}/event/{eventId}", s.handleGetEvent)
		r.Get("/_matrix/client/v3/rooms/{roomId}/state", s.handleGetState)
		r.Get("/_matrix/client/v3/rooms/{roomId}/state/{eventType}", s.handleGetStateEvent)
		r.Get("/_matrix/client/v3/rooms/{roomId}/state/{eventType}/", s.handleGetStateEvent)
		r.Get("/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}", s.handleGetStateEvent)
		r.Get("/_matrix/client/v3/rooms/{roomId}/members", s.handleGetMembers)
		r.Get("/_matrix/client/v3/rooms/{roomId}/joined_members", s.handleGetJoinedMembers)
		r.Put("/_matrix/client/v3/rooms/{roomId}/state/{eventType}", s.handleSetState)
		r.Put("/_matrix/client/v3/rooms/{roomId}/state/{eventType}/", s.handleSetState)
		r.Put("/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}", s.handleSetState)
		r.Put("/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}", s.handleSendEvent)
		r.Put("/_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}", s.handleRedact)
	})

	// Spec: client-server §10 "User data" (profiles).
	r.Get("/_matrix/client/v3/profile/{userId}", s.handleGetProfile)
	r.Get("/_matrix/client/v3/profile/{userId}/displayname", s.handleGetDisplayName)
	r.Get("/_matrix/client/v3/profile/{userId}/avatar_url", s.handleGetAvatarURL)
	r.With(auth).Put("/_matrix/client/v3/profile/{userId}/displayname", s.handleSetDisplayName)
	r.With(auth).Put("/_matrix/client/v3/profile/{userId}/avatar_url", s.handleSetAvatarURL)

	// Spec: client-server §14 "Modules" (devices, openid, ...).
	r.Group(func(r chi.Router) {
		r.Use(auth)
		r.Get("/_matrix/client/v3/devices", s.handleListDevices)
		r.Get("/_matrix/client/v3/devices/{deviceId}", s.handleGetDevice)
		r.Put("/_matrix/client/v3/devices/{deviceId}", s.handleUpdateDevice)
		r.Delete("/_matrix/client/v3/devices/{deviceId}", s.handleDeleteDevice)
		r.Post("/_matrix/client/v3/delete_devices", s.handleDeleteDevices)
		r.Post("/_matrix/client/v3/user/{userId}/openid/request_token", s.handleRequestOpenIDToken)
		r.Post("/_matrix/client/v3/rooms/{roomId}/upgrade", s.handleUpgradeRoom)
		r.Post("/_matrix/client/v3/rooms/{roomId}/report/{eventId}", s.handleReportEvent)
		r.Get("/_matrix/client/v1/rooms/{roomId}/hierarchy", s.handleGetHierarchy)
	})

	// Spec: client-server §"End-to-End Encryption" (keys, cross-signing,
	// server-side key backups; /keys/changes is the sync API's).
	r.Group(func(r chi.Router) {
		r.Use(auth)
		r.Post("/_matrix/client/v3/keys/upload", s.handleUploadKeys)
		r.Post("/_matrix/client/v3/keys/query", s.handleQueryKeys)
		r.Post("/_matrix/client/v3/keys/claim", s.handleClaimKeys)
		r.Post("/_matrix/client/v3/keys/device_signing/upload", s.handleUploadCrossSigningKeys)
		r.Post("/_matrix/client/v3/keys/signatures/upload", s.handleUploadSignatures)
		r.Post("/_matrix/client/v3/room_keys/version", s.handleCreateKeyBackup)
		r.Get("/_matrix/client/v3/room_keys/version", s.handleGetKeyBackup)
		r.Get("/_matrix/client/v3/room_keys/version/{version}", s.handleGetKeyBackup)
		r.Put("/_matrix/client/v3/room_keys/version/{version}", s.handleUpdateKeyBackup)
		r.Delete("/_matrix/client/v3/room_keys/version/{version}", s.handleDeleteKeyBackup)
		for _, p := range []string{"/_matrix/client/v3/room_keys/keys", "/_matrix/client/v3/room_keys/keys/{roomId}",
			"/_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}"} {
			r.Get(p, s.handleGetBackupKeys)
			r.Put(p, s.handlePutBackupKeys)
			r.Delete(p, s.handleDeleteBackupKeys)
		}
	})
}
