// Package api is the sync API's boundary with the federation component:
// the bus streams that carry ephemeral data (typing, read receipts,
// send-to-device messages) between this server's users and other servers.
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
	FederationEDUStream    = "federation_edus"
	FederationTypingSubj   = "federation.edu.typing"
	FederationReceiptSubj  = "federation.edu.receipt"
	FederationToDeviceSubj = "federation.edu.to_device"
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
