package syncapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/syncapi/api"
	"github.com/parley-chat/parley/syncapi/storage"
)

// Ephemeral data crossing servers (server-server spec §"Typing
// Notifications", §"Receipts", §"Send-to-device messaging"): local typing,
// public receipts and to-device messages for remote users are published on
// api.EphemeralStream for the federation sender; EDUs other servers sent
// arrive on api.FederationEDUStream (durable consumer
// "syncapi_federation_edus") and are stored and delivered like local ones.

// remoteTypingTimeout is how long a remote user's typing lasts: the EDU
// carries no timeout, and senders repeat it while the user keeps typing.
const remoteTypingTimeout = 60 * time.Second

// eduBridge is the sync API's end of the federation EDU streams.
type eduBridge struct {
	bus *bus.Bus
	sub *bus.Subscription
}

// startEDUs creates both streams and consumes inbound EDUs.
func (s *Service) startEDUs(ctx context.Context, b *bus.Bus) error {
	if err := b.EnsureStream(ctx, api.EphemeralStream, api.EphemeralSubjects...); err != nil {
		return err
	}
	if err := b.EnsureStream(ctx, api.FederationEDUStream, api.FederationEDUSubjects...); err != nil {
		return err
	}
	s.edus = &eduBridge{bus: b}
	sub, err := b.Subscribe(ctx, api.FederationEDUStream, "syncapi_federation_edus", "", s.handleFederationEDU)
	if err != nil {
		return err
	}
	s.edus.sub = sub
	return nil
}

func (s *Service) stopEDUs() {
	if s.edus != nil && s.edus.sub != nil {
		s.edus.sub.Stop()
	}
}

func (s *Service) isLocalUser(userID string) bool {
	return strings.HasSuffix(userID, ":"+s.serverName())
}

func (s *Service) publishEphemeral(ctx context.Context, subject string, v any, msgID string) error {
	if s.edus == nil {
		return nil
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.edus.bus.Publish(ctx, subject, data, msgID)
}

// publishTyping announces a local user's typing change to other servers.
// Typing is ephemeral: a bus failure is logged, not reported to the client.
func (s *Service) publishTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) {
	u := api.TypingUpdate{RoomID: roomID, UserID: userID, Typing: typing, TimeoutMS: timeout.Milliseconds()}
	if err := s.publishEphemeral(ctx, api.TypingSubject, u, ""); err != nil {
		logrus.WithError(err).WithField("room_id", roomID).Warn("syncapi: publish typing for federation")
	}
}

// publishReceipt announces a local user's public receipt to other servers.
func (s *Service) publishReceipt(ctx context.Context, rc storage.Receipt) error {
	if rc.Type != "m.read" || !s.isLocalUser(rc.UserID) {
		return nil
	}
	u := api.ReceiptUpdate{RoomID: rc.RoomID, Type: rc.Type, UserID: rc.UserID, EventID: rc.EventID, ThreadID: rc.ThreadID, TS: rc.TS}
	return s.publishEphemeral(ctx, api.ReceiptSubject, u, strings.Join([]string{"receipt", rc.RoomID, rc.UserID, rc.ThreadID, rc.EventID}, "|"))
}

// checkRemoteToDevice checks the contents of a sendToDevice request meant
// for a user of another server.
func checkRemoteToDevice(userID string, byDevice map[string]json.RawMessage) error {
	for deviceID, content := range byDevice {
		content = bytes.TrimSpace(content)
		if len(content) == 0 || content[0] != '{' {
			return httputil.BadJSON("Message content for %s/%s must be an object", userID, deviceID)
		}
	}
	return nil
}

// publishRemoteToDevice hands the remote part of a sendToDevice request to
// the federation sender. The message ID is derived from the sending device
// and transaction ID, so a client's retry of the same transaction is
// recognised by the bus and by the receiving server.
func (s *Service) publishRemoteToDevice(ctx context.Context, sender, senderDevice, eventType, txnID string, remote map[string]map[string]json.RawMessage) error {
	if len(remote) == 0 {
		return nil
	}
	sum := sha256.Sum256([]byte(sender + "\x00" + senderDevice + "\x00" + txnID))
	msg := api.ToDeviceMessages{
		Sender:    sender,
		Type:      eventType,
		MessageID: base64.RawURLEncoding.EncodeToString(sum[:18]),
		Messages:  remote,
	}
	return s.publishEphemeral(ctx, api.RemoteToDeviceSubject, msg, "to_device|"+msg.MessageID)
}

// handleFederationEDU stores one EDU received from another server. The
// federation component has already checked that the origin speaks for
// the user; what cannot be parsed is logged and skipped.
func (s *Service) handleFederationEDU(ctx context.Context, msg bus.Message) error {
	log := logrus.WithFields(logrus.Fields{"subject": msg.Subject, "seq": msg.Sequence})
	switch msg.Subject {
	case api.FederationTypingSubj:
		var u api.TypingUpdate
		if err := json.Unmarshal(msg.Data, &u); err != nil || u.RoomID == "" || u.UserID == "" {
			log.WithError(err).Error("syncapi: malformed federation typing; skipped")
			return nil
		}
		timeout := remoteTypingTimeout
		if u.TimeoutMS > 0 {
			timeout = time.Duration(u.TimeoutMS) * time.Millisecond
		}
		s.typing.Set(u.RoomID, u.UserID, u.Typing, timeout)
		return nil
	case api.FederationReceiptSubj:
		var u api.ReceiptUpdate
		if err := json.Unmarshal(msg.Data, &u); err != nil || u.RoomID == "" || u.UserID == "" || u.EventID == "" {
			log.WithError(err).Error("syncapi: malformed federation receipt; skipped")
			return nil
		}
		// A remote user's receipt changes no local user's notification
		// counts, so only the receipt itself is stored.
		if _, err := s.db.PutReceipt(ctx, storage.Receipt{RoomID: u.RoomID, Type: u.Type, UserID: u.UserID, ThreadID: u.ThreadID, EventID: u.EventID, TS: u.TS}); err != nil {
			return err
		}
		s.notifier.WakeRoom(u.RoomID)
		return nil
	case api.FederationPresenceSubj:
		var u api.PresenceUpdates
		if err := json.Unmarshal(msg.Data, &u); err != nil {
			log.WithError(err).Error("syncapi: malformed federation presence; skipped")
			return nil
		}
		return s.storeRemotePresence(ctx, u.Push)
	case api.FederationToDeviceSubj:
		var m api.ToDeviceMessages
		if err := json.Unmarshal(msg.Data, &m); err != nil || m.Sender == "" || m.MessageID == "" || m.Type == "" {
			log.WithError(err).Error("syncapi: malformed federation to-device; skipped")
			return nil
		}
		return s.deliverRemoteToDevice(ctx, &m)
	}
	log.Warn("syncapi: unknown federation EDU subject; skipped")
	return nil
}

// deliverRemoteToDevice puts a remote sender's messages in local devices'
// inboxes, once per (sender, message ID).
func (s *Service) deliverRemoteToDevice(ctx context.Context, m *api.ToDeviceMessages) error {
	users := make([]string, 0, len(m.Messages))
	for u := range m.Messages {
		if s.isLocalUser(u) {
			users = append(users, u)
		}
	}
	sort.Strings(users)
	var msgs []storage.ToDeviceMessage
	for _, userID := range users {
		byDevice := m.Messages[userID]
		devices := make([]string, 0, len(byDevice))
		for d := range byDevice {
			devices = append(devices, d)
		}
		sort.Strings(devices)
		for _, deviceID := range devices {
			content := bytes.TrimSpace(byDevice[deviceID])
			if len(content) == 0 || content[0] != '{' {
				continue
			}
			targets := []string{deviceID}
			if deviceID == "*" {
				devs, err := s.users.ListDevices(ctx, userID)
				if err != nil {
					return fmt.Errorf("devices of %s: %w", userID, err)
				}
				targets = targets[:0]
				for _, d := range devs {
					targets = append(targets, d.DeviceID)
				}
			}
			for _, d := range targets {
				msgs = append(msgs, storage.ToDeviceMessage{UserID: userID, DeviceID: d, Type: m.Type, Content: content})
			}
		}
	}
	if len(msgs) > maxToDeviceMessages {
		logrus.WithField("sender", m.Sender).Warn("syncapi: federation to-device batch too large; skipped")
		return nil
	}
	// The remote sender has no device here: "" keeps its message IDs apart
	// from local devices' transaction IDs.
	_, duplicate, err := s.db.QueueToDevice(ctx, m.Sender, "", m.MessageID, msgs)
	if err != nil {
		return err
	}
	if !duplicate {
		s.notifier.WakeUsers(users...)
	}
	return nil
}
