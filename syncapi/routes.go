package syncapi

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/parley-chat/parley/internal/httputil"
)

// Register adds the sync API's routes to r: the route table of this
// component, in the order of the client-server spec's sections. Every
// route needs an access token.
func (s *Service) Register(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(httputil.RequireAuth(s.users))

		// Spec: client-server §"Filtering".
		r.Post("/_matrix/client/v3/user/{userId}/filter", s.handlePostFilter)
		r.Get("/_matrix/client/v3/user/{userId}/filter/{filterId}", s.handleGetFilter)

		// Spec: client-server §"Syncing".
		r.Get("/_matrix/client/v3/sync", s.handleSync)

		// Spec: client-server §"Getting events for a room".
		r.Get("/_matrix/client/v3/rooms/{roomId}/messages", s.handleMessages)
		r.Get("/_matrix/client/v1/rooms/{roomId}/timestamp_to_event", s.handleTimestampToEvent)

		// Spec: client-server §"Relationships" (child events of an event).
		r.Get("/_matrix/client/v1/rooms/{roomId}/relations/{eventId}", s.handleRelations)
		r.Get("/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}", s.handleRelations)
		r.Get("/_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", s.handleRelations)

		// Spec: client-server §"Typing Notifications".
		r.Put("/_matrix/client/v3/rooms/{roomId}/typing/{userId}", s.handleTyping)

		// Spec: client-server §"Receipts".
		r.Post("/_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}", s.handleReceipt)

		// Spec: client-server §"Fully read markers".
		r.Post("/_matrix/client/v3/rooms/{roomId}/read_markers", s.handleReadMarkers)

		// Spec: client-server §"Server Side Search".
		r.Post("/_matrix/client/v3/search", s.handleSearch)

		// Spec: client-server §"Send-to-Device messaging".
		r.Put("/_matrix/client/v3/sendToDevice/{eventType}/{txnId}", s.handleSendToDevice)

		// Spec: client-server §"End-to-End Encryption" (device-list changes
		// between two sync tokens).
		r.Get("/_matrix/client/v3/keys/changes", s.handleKeyChanges)

		// Spec: client-server §"Event Context".
		r.Get("/_matrix/client/v3/rooms/{roomId}/context/{eventId}", s.handleContext)

		// Spec: client-server §"Room Tagging".
		r.Get("/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags", s.handleGetTags)
		r.Put("/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}", s.handlePutTag)
		r.Delete("/_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}", s.handleDeleteTag)

		// Spec: client-server §"Client Config" (account data).
		r.Get("/_matrix/client/v3/user/{userId}/account_data/{type}", s.handleGetAccountData)
		r.Put("/_matrix/client/v3/user/{userId}/account_data/{type}", s.handlePutAccountData)
		r.Get("/_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}", s.handleGetAccountData)
		r.Put("/_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}", s.handlePutAccountData)

		// Spec: client-server §"Threading".
		r.Get("/_matrix/client/v1/rooms/{roomId}/threads", s.handleThreads)

		// Spec: client-server §"User Directory".
		r.Post("/_matrix/client/v3/user_directory/search", s.handleUserDirectorySearch)

		// Spec: client-server §"Presence".
		r.Get("/_matrix/client/v3/presence/{userId}/status", s.handleGetPresence)
		r.Put("/_matrix/client/v3/presence/{userId}/status", s.handlePutPresence)

		// Spec: client-server §"Push Notifications": pushers, listing
		// notifications, push rules.
		r.Get("/_matrix/client/v3/pushers", s.handleGetPushers)
		r.Post("/_matrix/client/v3/pushers/set", s.handleSetPusher)
		r.Get("/_matrix/client/v3/notifications", s.handleNotifications)
		r.Get("/_matrix/client/v3/pushrules/", s.handleGetPushRules)
		r.Get("/_matrix/client/v3/pushrules/global/", s.handleGetPushRules)
		r.Get("/_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}", s.handleGetPushRule)
		r.Put("/_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}", s.handlePutPushRule)
		r.Delete("/_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}", s.handleDeletePushRule)
		r.Get("/_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/enabled", s.handleGetPushRuleEnabled)
		r.Put("/_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/enabled", s.handlePutPushRuleEnabled)
		r.Get("/_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/actions", s.handleGetPushRuleActions)
		r.Put("/_matrix/client/v3/pushrules/{scope}/{kind}/{ruleId}/actions", s.handlePutPushRuleActions)
	})
}

// pathParam returns a URL path parameter, percent-decoded: chi matches on
// the raw path when a client escapes characters such as '$' or ':'.
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if d, err := url.PathUnescape(v); err == nil {
		return d
	}
	return v
}

// ownUser checks that the {userId} in the path is the caller
// (client-server spec: "The access token must be authorized to make
// requests for this user ID").
func ownUser(r *http.Request) (httputil.Caller, error) {
	caller := httputil.CallerFrom(r.Context())
	if pathParam(r, "userId") != caller.UserID {
		return caller, httputil.Forbidden("Cannot access data of another user")
	}
	return caller, nil
}

// roomIDParam returns {roomId}, checked for the room ID sigil.
func roomIDParam(r *http.Request) (string, error) {
	id := pathParam(r, "roomId")
	if !strings.HasPrefix(id, "!") || !strings.Contains(id, ":") || len(id) > 255 {
		return "", httputil.InvalidParam("%q is not a room ID", id)
	}
	return id, nil
}

func (s *Service) maxBody() int64 {
	if s.cfg != nil && s.cfg.Client.MaxBodyBytes > 0 {
		return s.cfg.Client.MaxBodyBytes
	}
	return httputil.DefaultMaxBody
}
