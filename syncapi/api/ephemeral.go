// Package api is the sync API's boundary with the federation component:
// the bus streams that carry ephemeral data (typing, read receipts,
// send-to-device messages, presence) between this server's users and other servers.
//
// Two streams, one per direction, with the same payload types:
//
//   - EphemeralStream is written by the sync API when a local user types,
//     sends a public receipt, or sends to-device messages to users of other
//     servers; the federation sender turns each message into EDUs.
//   - FederationEDUStream is written by the federation component for EDUs
//     received from other servers, after checking that the origin may
//     speak for the user; the sync API stores and delivers them.
package api

import "encoding/json"

// Stream and subject names (short forms; the bus adds its prefix).
const (
	EphemeralStream        = "syncapi_ephemeral"
	TypingSubject          = "syncapi.typing"
	ReceiptSubject         = "syncapi.receipt"
	RemoteToDeviceSubject  = "syncapi.to_device_remote"
	PresenceSubject        = "syncapi.presence"
	FederationEDUStream    = "federation_edus"
	FederationTypingSubj   = "federation.edu.typing"
	FederationReceiptSubj  = "federation.edu.receipt"
	FederationToDeviceSubj = "federation.edu.to_device"
	FederationPresenceSubj = "federation.edu.presence"
)

// EphemeralSubjects and FederationEDUSubjects are the subjects of the two
// streams; both components create the streams with these lists.
var (
	EphemeralSubjects     = []string{TypingSubject, ReceiptSubject, RemoteToDeviceSubject, PresenceSubject}
	FederationEDUSubjects = []string{FederationTypingSubj, FederationReceiptSubj, FederationToDeviceSubj, FederationPresenceSubj}
)

// TypingUpdate is a user starting or stopping typing in a room.
type TypingUpdate struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
	Typing bool   `json:"typing"`
	// TimeoutMS is how long the typing lasts unless renewed; 0 lets the
	// receiver choose (EDUs carry no timeout).
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// ReceiptUpdate is a user's public read receipt (m.read) moving in a room.
// Private receipts (m.read.private) never leave the server.
type ReceiptUpdate struct {
	RoomID   string `json:"room_id"`
	Type     string `json:"type"`
	UserID   string `json:"user_id"`
	EventID  string `json:"event_id"`
	ThreadID string `json:"thread_id,omitempty"`
	TS       int64  `json:"ts"`
}

// ToDeviceMessages are send-to-device messages from one sender, with the
// fields of the m.direct_to_device EDU (server-server spec §"Send-to-device
// messaging"). MessageID makes delivery idempotent per sender.
type ToDeviceMessages struct {
	Sender    string `json:"sender"`
	Type      string `json:"type"`
	MessageID string `json:"message_id"`
	// Messages maps user ID → device ID (or "*") → content.
	Messages map[string]map[string]json.RawMessage `json:"messages"`
}

// PresenceUpdates are users' presence changes, in the shape of the
// m.presence EDU's content (server-server spec §"Presence"): local users'
// on PresenceSubject, one message per batch of changes; remote users'
// (checked to belong to the origin) on FederationPresenceSubj.
type PresenceUpdates struct {
	Push []PresenceUpdate `json:"push"`
}

// PresenceUpdate is one user's presence.
type PresenceUpdate struct {
	UserID          string  `json:"user_id"`
	Presence        string  `json:"presence"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	LastActiveAgo   int64   `json:"last_active_ago"`
	CurrentlyActive bool    `json:"currently_active,omitempty"`
}
