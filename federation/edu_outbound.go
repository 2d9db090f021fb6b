package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/bus"
	syncapi "github.com/parley-chat/parley/syncapi/api"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Durable consumers of the streams whose local changes become EDUs.
const (
	ephemeralConsumer   = "federation_ephemeral"
	deviceListsConsumer = "federation_device_lists"
)

// eduState is the federation component's part in ephemeral data: the bus
// for inbound EDUs and device-list notifications, the consumers turning
// local changes into outbound EDUs, and the device-list resync worker.
type eduState struct {
	s    *Service
	bus  *bus.Bus
	subs []*bus.Subscription

	resyncs *resyncQueue
}

// startEDUs creates the streams involved and starts the consumers.
func (s *Service) startEDUs(ctx context.Context, b *bus.Bus) error {
	e := &eduState{s: s, bus: b}
	s.edus = e
	e.resyncs = newResyncQueue(s)
	for _, st := range []struct {
		name     string
		subjects []string
	}{
		{syncapi.EphemeralStream, syncapi.EphemeralSubjects},
		{syncapi.FederationEDUStream, syncapi.FederationEDUSubjects},
		{userapi.DeviceListStream, []string{userapi.DeviceListSubject}},
	} {
		if err := b.EnsureStream(ctx, st.name, st.subjects...); err != nil {
			return err
		}
	}
	sub, err := b.Subscribe(ctx, syncapi.EphemeralStream, ephemeralConsumer, "", e.handleLocalEphemeral)
	if err != nil {
		return err
	}
	e.subs = append(e.subs, sub)
	sub, err = b.Subscribe(ctx, userapi.DeviceListStream, deviceListsConsumer, userapi.DeviceListSubject, e.handleLocalDeviceList)
	if err != nil {
		e.stop()
		return err
	}
	e.subs = append(e.subs, sub)
	return nil
}

func (e *eduState) stop() {
	for _, sub := range e.subs {
		sub.Stop()
	}
	e.resyncs.stop()
}

func (e *eduState) publish(ctx context.Context, subject string, v any, msgID string) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return e.bus.Publish(ctx, subject, data, msgID)
}

// notifyDeviceListChange tells the sync API that a remote user's devices
// or cross-signing keys changed, on the user API's device-list stream, so
// local users sharing a room see the user in device_lists.changed. The
// stream ID is this server's change number for the user, which grows with
// every change applied here.
func (e *eduState) notifyDeviceListChange(ctx context.Context, userID string, changeSeq int64) error {
	u := userapi.DeviceListUpdate{UserID: userID, StreamID: changeSeq, PrevID: []int64{}}
	return e.publish(ctx, userapi.DeviceListSubject, u, fmt.Sprintf("federation|%s|%d", userID, changeSeq))
}

func (e *eduState) isLocal(userID string) bool {
	u, err := spec.NewUserID(userID, true)
	return err == nil && u.Domain() == e.s.serverName
}

// handleLocalEphemeral turns a local typing change, public receipt or
// to-device batch into EDUs for the servers concerned. What cannot be
// parsed is logged and skipped so it does not hold up the stream.
func (e *eduState) handleLocalEphemeral(ctx context.Context, msg bus.Message) error {
	log := logrus.WithFields(logrus.Fields{"subject": msg.Subject, "seq": msg.Sequence})
	switch msg.Subject {
	case syncapi.TypingSubject:
		var u syncapi.TypingUpdate
		if err := json.Unmarshal(msg.Data, &u); err != nil || !e.isLocal(u.UserID) {
			log.WithError(err).Debug("federation: typing update skipped")
			return nil
		}
		// Spec: server-server §"Typing Notifications".
		return e.queueToRoom(ctx, u.RoomID, eduTyping, map[string]any{"room_id": u.RoomID, "user_id": u.UserID, "typing": u.Typing})
	case syncapi.ReceiptSubject:
		var u syncapi.ReceiptUpdate
		if err := json.Unmarshal(msg.Data, &u); err != nil || !e.isLocal(u.UserID) || u.Type != "m.read" {
			log.WithError(err).Debug("federation: receipt update skipped")
			return nil
		}
		// Spec: server-server §"Receipts".
		data := map[string]any{"ts": u.TS}
		if u.ThreadID != "" {
			data["thread_id"] = u.ThreadID
		}
		content := map[string]any{u.RoomID: map[string]any{"m.read": map[string]any{
			u.UserID: map[string]any{"event_ids": []string{u.EventID}, "data": data},
		}}}
		return e.queueToRoom(ctx, u.RoomID, eduReceipt, content)
	case syncapi.RemoteToDeviceSubject:
		var m syncapi.ToDeviceMessages
		if err := json.Unmarshal(msg.Data, &m); err != nil || !e.isLocal(m.Sender) {
			log.WithError(err).Debug("federation: to-device batch skipped")
			return nil
		}
		return e.queueToDevice(ctx, &m)
	case syncapi.PresenceSubject:
		var u syncapi.PresenceUpdates
		if err := json.Unmarshal(msg.Data, &u); err != nil {
			log.WithError(err).Debug("federation: presence update skipped")
			return nil
		}
		return e.queuePresence(ctx, u.Push)
	}
	log.Warn("federation: unknown ephemeral subject; skipped")
	return nil
}

// queueToRoom queues an EDU for every other server joined to roomID.
func (e *eduState) queueToRoom(ctx context.Context, roomID, eduType string, content any) error {
	dests, err := e.s.db.JoinedServers(ctx, roomID)
	if err != nil {
		return err
	}
	return e.queue(ctx, dests, eduType, content)
}

func (e *eduState) queue(ctx context.Context, dests []string, eduType string, content any) error {
	if len(dests) == 0 {
		return nil
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return err
	}
	return e.s.sender.QueueEDU(ctx, dests, gomatrixserverlib.EDU{Type: eduType, Content: raw})
}

// queueToDevice sends each server the messages for its own users, in one
// m.direct_to_device EDU per server (server-server spec §"Send-to-device
// messaging"); the message ID lets the receiver drop a repeat.
func (e *eduState) queueToDevice(ctx context.Context, m *syncapi.ToDeviceMessages) error {
	byServer := map[string]map[string]map[string]json.RawMessage{}
	for userID, devices := range m.Messages {
		u, err := spec.NewUserID(userID, true)
		if err != nil || u.Domain() == e.s.serverName {
			continue
		}
		server := string(u.Domain())
		if byServer[server] == nil {
			byServer[server] = map[string]map[string]json.RawMessage{}
		}
		byServer[server][userID] = devices
	}
	servers := make([]string, 0, len(byServer))
	for s := range byServer {
		servers = append(servers, s)
	}
	sort.Strings(servers)
	for _, server := range servers {
		content := syncapi.ToDeviceMessages{Sender: m.Sender, Type: m.Type, MessageID: m.MessageID, Messages: byServer[server]}
		if err := e.queue(ctx, []string{server}, eduDirectToDevice, content); err != nil {
			return err
		}
	}
	return nil
}

// handleLocalDeviceList sends a local user's device or cross-signing key
// change to every server sharing a room with the user (server-server spec
// §"Device Management"). Updates of remote users on the same stream (the
// notifications for the sync API) are skipped.
//
// prev_id is the stream ID of the last m.device_list_update sent for the
// user, not the user API's previous stream ID: cross-signing changes share
// that numbering but travel as m.signing_key_update, and a receiver must
// not see a gap where there is none.
func (e *eduState) handleLocalDeviceList(ctx context.Context, msg bus.Message) error {
	var u userapi.DeviceListUpdate
	if err := json.Unmarshal(msg.Data, &u); err != nil || !e.isLocal(u.UserID) {
		return nil
	}
	dests, err := e.s.db.ServersSharingRoomWith(ctx, u.UserID)
	if err != nil {
		return err
	}
	if u.DeviceID == "" {
		if u.MasterKey == nil && u.SelfSigningKey == nil {
			return nil
		}
		content := map[string]any{"user_id": u.UserID}
		if u.MasterKey != nil {
			content["master_key"] = u.MasterKey
		}
		if u.SelfSigningKey != nil {
			content["self_signing_key"] = u.SelfSigningKey
		}
		return e.queue(ctx, dests, eduSigningKeyUpdate, content)
	}
	last, err := e.s.db.DeviceListSent(ctx, u.UserID)
	if err != nil {
		return err
	}
	if u.StreamID <= last {
		return nil // redelivered
	}
	prev := []int64{}
	if last > 0 {
		prev = []int64{last}
	}
	content := map[string]any{
		"user_id":   u.UserID,
		"device_id": u.DeviceID,
		"stream_id": u.StreamID,
		"prev_id":   prev,
		"deleted":   u.Deleted,
	}
	if u.DeviceDisplayName != "" {
		content["device_display_name"] = u.DeviceDisplayName
	}
	if !u.Deleted && len(u.Keys) > 0 {
		content["keys"] = u.Keys
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return err
	}
	edu, err := json.Marshal(gomatrixserverlib.EDU{Type: eduDeviceListUpdate, Origin: string(e.s.serverName), Content: raw})
	if err != nil {
		return err
	}
	others := make([]string, 0, len(dests))
	for _, d := range dests {
		if d != string(e.s.serverName) {
			others = append(others, d)
		}
	}
	if err := e.s.db.EnqueueDeviceListEDU(ctx, others, edu, u.UserID, u.StreamID); err != nil {
		return err
	}
	e.s.sender.Notify(others)
	return nil
}

// maxPresencePerEDU bounds the users of one outbound m.presence EDU.
const maxPresencePerEDU = 100

// queuePresence sends local users' presence to every server sharing a
// room with them (server-server spec §"Presence"), one m.presence EDU per
// server carrying all of that server's users (in chunks).
func (e *eduState) queuePresence(ctx context.Context, updates []syncapi.PresenceUpdate) error {
	byServer := map[string][]syncapi.PresenceUpdate{}
	for _, u := range updates {
		if !e.isLocal(u.UserID) {
			continue
		}
		dests, err := e.s.db.ServersSharingRoomWith(ctx, u.UserID)
		if err != nil {
			return err
		}
		for _, d := range dests {
			if d != string(e.s.serverName) {
				byServer[d] = append(byServer[d], u)
			}
		}
	}
	servers := make([]string, 0, len(byServer))
	for s := range byServer {
		servers = append(servers, s)
	}
	sort.Strings(servers)
	for _, server := range servers {
		push := byServer[server]
		for start := 0; start < len(push); start += maxPresencePerEDU {
			content := syncapi.PresenceUpdates{Push: push[start:min(start+maxPresencePerEDU, len(push))]}
			if err := e.queue(ctx, []string{server}, eduPresence, content); err != nil {
				return err
			}
		}
	}
	return nil
}
