package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/federation/storage"
	"github.com/parley-chat/parley/internal/httputil"
	syncapi "github.com/parley-chat/parley/syncapi/api"
)

// EDU types this server acts on (server-server spec §"Typing
// Notifications", §"Receipts", §"Send-to-device messaging", §"Device
// Management", §"Presence"). Others are accepted and ignored, as the spec
// allows.
const (
	eduTyping           = "m.typing"
	eduReceipt          = "m.receipt"
	eduDirectToDevice   = "m.direct_to_device"
	eduDeviceListUpdate = "m.device_list_update"
	eduSigningKeyUpdate = "m.signing_key_update"
	eduPresence         = "m.presence"
)

// processEDUs handles the EDUs of a transaction from origin. An EDU that
// is malformed, or speaks for a user of another server, or for a user who
// is not in the room it names, is logged and dropped: the origin may only
// speak for its own users. An error means something could not be stored
// or published; the caller fails the transaction so the origin retries.
func (s *Service) processEDUs(ctx context.Context, origin spec.ServerName, raws []json.RawMessage) error {
	for _, raw := range raws {
		var edu struct {
			Type    string          `json:"edu_type"`
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(raw, &edu); err != nil {
			logrus.WithField("origin", origin).Debug("federation /send: malformed EDU dropped")
			continue
		}
		var err error
		switch edu.Type {
		case eduTyping:
			err = s.inboundTyping(ctx, origin, edu.Content)
		case eduReceipt:
			err = s.inboundReceipts(ctx, origin, edu.Content)
		case eduDirectToDevice:
			err = s.inboundToDevice(ctx, origin, edu.Content)
		case eduDeviceListUpdate:
			err = s.inboundDeviceListUpdate(ctx, origin, edu.Content)
		case eduSigningKeyUpdate:
			err = s.inboundSigningKeyUpdate(ctx, origin, edu.Content)
		case eduPresence:
			err = s.inboundPresence(ctx, origin, edu.Content)
		}
		if err != nil {
			var bad *droppedEDU
			if errors.As(err, &bad) {
				logrus.WithFields(logrus.Fields{"origin": origin, "edu_type": edu.Type}).Debugf("federation /send: EDU dropped: %s", bad.reason)
				continue
			}
			return fmt.Errorf("%s EDU from %s: %w", edu.Type, origin, err)
		}
	}
	return nil
}

// droppedEDU is an EDU refused for what it says, not for a failure here.
type droppedEDU struct{ reason string }

func (e *droppedEDU) Error() string { return e.reason }

func dropEDU(format string, args ...any) error {
	return &droppedEDU{reason: fmt.Sprintf(format, args...)}
}

// userOf checks that userID is a valid user ID of origin.
func userOf(origin spec.ServerName, userID string) error {
	u, err := spec.NewUserID(userID, true)
	if err != nil {
		return dropEDU("%q is not a user ID", userID)
	}
	if u.Domain() != origin {
		return dropEDU("%s does not belong to %s", userID, origin)
	}
	return nil
}

// memberOf checks that userID, a user of origin, is joined to roomID, and
// that the room's server ACL lets origin in (client-server spec §"Server
// Access Control Lists": typing and receipts are refused like events).
func (s *Service) memberOf(ctx context.Context, origin spec.ServerName, roomID, userID string) error {
	if err := userOf(origin, userID); err != nil {
		return err
	}
	if err := s.checkACL(ctx, roomID, origin); err != nil {
		var denied *httputil.Error
		if errors.As(err, &denied) {
			return dropEDU("%s: %s", roomID, denied.Message)
		}
		return err
	}
	joined, err := s.db.IsJoined(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if !joined {
		return dropEDU("%s is not joined to %s", userID, roomID)
	}
	return nil
}

func (s *Service) inboundTyping(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		RoomID string `json:"room_id"`
		UserID string `json:"user_id"`
		Typing bool   `json:"typing"`
	}
	if err := json.Unmarshal(content, &c); err != nil || c.RoomID == "" {
		return dropEDU("malformed m.typing")
	}
	if err := s.memberOf(ctx, origin, c.RoomID, c.UserID); err != nil {
		return err
	}
	return s.edus.publish(ctx, syncapi.FederationTypingSubj, syncapi.TypingUpdate{RoomID: c.RoomID, UserID: c.UserID, Typing: c.Typing}, "")
}

// receiptContent is m.receipt's content: room ID → receipt type → user ID
// → receipt.
type receiptContent map[string]map[string]map[string]struct {
	EventIDs []string `json:"event_ids"`
	Data     struct {
		TS       int64  `json:"ts"`
		ThreadID string `json:"thread_id"`
	} `json:"data"`
}

func (s *Service) inboundReceipts(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c receiptContent
	if err := json.Unmarshal(content, &c); err != nil {
		return dropEDU("malformed m.receipt")
	}
	for roomID, byType := range c {
		// Only public read receipts travel between servers.
		for userID, rc := range byType["m.read"] {
			if len(rc.EventIDs) == 0 {
				continue
			}
			if err := s.memberOf(ctx, origin, roomID, userID); err != nil {
				var bad *droppedEDU
				if errors.As(err, &bad) {
					logrus.WithFields(logrus.Fields{"origin": origin, "room_id": roomID}).Debugf("federation: receipt dropped: %v", err)
					continue
				}
				return err
			}
			// The receipt covers everything up to its last event.
			u := syncapi.ReceiptUpdate{RoomID: roomID, Type: "m.read", UserID: userID,
				EventID: rc.EventIDs[len(rc.EventIDs)-1], ThreadID: rc.Data.ThreadID, TS: rc.Data.TS}
			msgID := "receipt|" + roomID + "|" + userID + "|" + u.ThreadID + "|" + u.EventID
			if err := s.edus.publish(ctx, syncapi.FederationReceiptSubj, u, msgID); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Service) inboundToDevice(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var m syncapi.ToDeviceMessages
	if err := json.Unmarshal(content, &m); err != nil || m.Type == "" || m.MessageID == "" {
		return dropEDU("malformed m.direct_to_device")
	}
	if err := userOf(origin, m.Sender); err != nil {
		return err
	}
	local := map[string]map[string]json.RawMessage{}
	for userID, byDevice := range m.Messages {
		if u, err := spec.NewUserID(userID, true); err == nil && u.Domain() == s.serverName {
			local[userID] = byDevice
		}
	}
	if len(local) == 0 {
		return nil
	}
	m.Messages = local
	return s.edus.publish(ctx, syncapi.FederationToDeviceSubj, m, "to_device|"+m.Sender+"|"+m.MessageID)
}

// deviceListUpdateContent is m.device_list_update's content.
type deviceListUpdateContent struct {
	UserID            string          `json:"user_id"`
	DeviceID          string          `json:"device_id"`
	DeviceDisplayName string          `json:"device_display_name"`
	StreamID          int64           `json:"stream_id"`
	PrevID            []int64         `json:"prev_id"`
	Deleted           bool            `json:"deleted"`
	Keys              json.RawMessage `json:"keys"`
}

func (s *Service) inboundDeviceListUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c deviceListUpdateContent
	if err := json.Unmarshal(content, &c); err != nil || c.DeviceID == "" {
		return dropEDU("malformed m.device_list_update")
	}
	if err := userOf(origin, c.UserID); err != nil {
		return err
	}
	u := storage.RemoteDeviceUpdate{UserID: c.UserID, DeviceID: c.DeviceID, DisplayName: c.DeviceDisplayName,
		Deleted: c.Deleted, StreamID: c.StreamID, PrevIDs: c.PrevID}
	if !c.Deleted && len(c.Keys) > 0 && string(c.Keys) != "null" {
		if err := checkRemoteDeviceKeys(c.UserID, c.DeviceID, c.Keys); err != nil {
			return dropEDU("%v", err)
		}
		u.Keys = c.Keys
	}
	outcome, seq, err := s.db.ApplyRemoteDeviceUpdate(ctx, u)
	if err != nil {
		return err
	}
	if outcome == storage.UpdateGap {
		// Spec: server-server §"Device Management": a missed update means
		// the whole list must be fetched again.
		s.edus.resyncs.request(c.UserID)
	}
	if outcome == storage.UpdateDuplicate {
		return nil
	}
	return s.edus.notifyDeviceListChange(ctx, c.UserID, seq)
}

func (s *Service) inboundSigningKeyUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		UserID         string          `json:"user_id"`
		MasterKey      json.RawMessage `json:"master_key"`
		SelfSigningKey json.RawMessage `json:"self_signing_key"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return dropEDU("malformed m.signing_key_update")
	}
	if err := userOf(origin, c.UserID); err != nil {
		return err
	}
	master, err := checkRemoteCrossSigningKey(c.UserID, "master", c.MasterKey)
	if err != nil {
		return dropEDU("%v", err)
	}
	ssk, err := checkRemoteCrossSigningKey(c.UserID, "self_signing", c.SelfSigningKey)
	if err != nil {
		return dropEDU("%v", err)
	}
	if master == nil && ssk == nil {
		return nil
	}
	seq, err := s.db.SetRemoteCrossSigningKeys(ctx, c.UserID, master, ssk)
	if err != nil {
		return err
	}
	return s.edus.notifyDeviceListChange(ctx, c.UserID, seq)
}

// checkRemoteDeviceKeys checks that a remote DeviceKeys object is about
// the user and device it is filed under. Signatures are the clients'
// business: they verify every device key they use.
func checkRemoteDeviceKeys(userID, deviceID string, keys json.RawMessage) error {
	var k struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
	}
	if err := json.Unmarshal(keys, &k); err != nil {
		return fmt.Errorf("device keys of %s %s are not an object", userID, deviceID)
	}
	if k.UserID != userID || k.DeviceID != deviceID {
		return fmt.Errorf("device keys filed under %s %s are for %s %s", userID, deviceID, k.UserID, k.DeviceID)
	}
	return nil
}

// checkRemoteCrossSigningKey checks that a cross-signing key belongs to
// userID and has the usage it is given as; absent (nil) is fine.
func checkRemoteCrossSigningKey(userID, usage string, key json.RawMessage) ([]byte, error) {
	if len(key) == 0 || string(key) == "null" {
		return nil, nil
	}
	var k struct {
		UserID string   `json:"user_id"`
		Usage  []string `json:"usage"`
	}
	if err := json.Unmarshal(key, &k); err != nil {
		return nil, fmt.Errorf("%s key of %s is not an object", usage, userID)
	}
	if k.UserID != userID {
		return nil, fmt.Errorf("%s key filed under %s is for %s", usage, userID, k.UserID)
	}
	for _, u := range k.Usage {
		if u == usage {
			return key, nil
		}
	}
	return nil, fmt.Errorf("%s key of %s lacks usage %q", usage, userID, usage)
}

// Bounds of an inbound m.presence EDU.
const (
	maxInboundPresence = 1000
	maxStatusMsgLength = 1024
)

// inboundPresence passes on the presence of origin's users who share a
// room with this server (server-server spec §"Presence"); entries for
// other servers' users, for users in no room here, or with an unknown
// state are dropped one by one.
func (s *Service) inboundPresence(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c syncapi.PresenceUpdates
	if err := json.Unmarshal(content, &c); err != nil {
		return dropEDU("malformed m.presence")
	}
	if len(c.Push) > maxInboundPresence {
		return dropEDU("m.presence with %d entries", len(c.Push))
	}
	var keep []syncapi.PresenceUpdate
	for _, u := range c.Push {
		if userOf(origin, u.UserID) != nil {
			continue
		}
		switch u.Presence {
		case "online", "offline", "unavailable":
		default:
			continue
		}
		if u.StatusMsg != nil && len(*u.StatusMsg) > maxStatusMsgLength || u.LastActiveAgo < 0 {
			continue
		}
		shared, err := s.db.HasJoinedRoom(ctx, u.UserID)
		if err != nil {
			return err
		}
		if shared {
			keep = append(keep, u)
		}
	}
	if len(keep) == 0 {
		return dropEDU("no presence of a user of %s in a room here", origin)
	}
	return s.edus.publish(ctx, syncapi.FederationPresenceSubj, syncapi.PresenceUpdates{Push: keep}, "")
}
