package syncapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sort"
	"strings"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/syncapi/storage"
)

// maxToDeviceMessages bounds one sendToDevice request.
const maxToDeviceMessages = 10000

// handleSendToDevice serves PUT /sendToDevice/{eventType}/{txnId}
// (client-server spec §"Send-to-Device messaging"). A repeated transaction
// ID from the same device is accepted and not delivered again.
func (s *Service) handleSendToDevice(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		ctx := r.Context()
		caller := httputil.CallerFrom(ctx)
		eventType, txnID := pathParam(r, "eventType"), pathParam(r, "txnId")
		if eventType == "" || len(eventType) > 255 || txnID == "" || len(txnID) > 255 {
			return httputil.InvalidParam("Bad event type or transaction ID")
		}
		var body struct {
			Messages map[string]map[string]json.RawMessage `json:"messages"`
		}
		if err := httputil.DecodeJSON(r, s.maxBody(), &body); err != nil {
			return err
		}
		if body.Messages == nil {
			return httputil.BadJSON("messages is required")
		}
		serverSuffix := ":" + s.serverName()
		var msgs []storage.ToDeviceMessage
		var recipients []string
		remote := map[string]map[string]json.RawMessage{}
		users := make([]string, 0, len(body.Messages))
		for u := range body.Messages {
			users = append(users, u)
		}
		sort.Strings(users) // deliver in a stable order
		for _, userID := range users {
			if !strings.HasPrefix(userID, "@") || !strings.Contains(userID, ":") {
				return httputil.InvalidParam("%q is not a user ID", userID)
			}
			if !strings.HasSuffix(userID, serverSuffix) {
				// Remote users are reached through the federation sender.
				if err := checkRemoteToDevice(userID, body.Messages[userID]); err != nil {
					return err
				}
				remote[userID] = body.Messages[userID]
				continue
			}
			byDevice := body.Messages[userID]
			devices := make([]string, 0, len(byDevice))
			for d := range byDevice {
				devices = append(devices, d)
			}
			sort.Strings(devices)
			for _, deviceID := range devices {
				content := bytes.TrimSpace(byDevice[deviceID])
				if len(content) == 0 || content[0] != '{' {
					return httputil.BadJSON("Message content for %s/%s must be an object", userID, deviceID)
				}
				targets := []string{deviceID}
				if deviceID == "*" {
					devs, err := s.users.ListDevices(ctx, userID)
					if err != nil {
						return err
					}
					targets = targets[:0]
					for _, d := range devs {
						targets = append(targets, d.DeviceID)
					}
				}
				for _, d := range targets {
					msgs = append(msgs, storage.ToDeviceMessage{UserID: userID, DeviceID: d, Type: eventType, Content: content})
				}
			}
			recipients = append(recipients, userID)
			if len(msgs) > maxToDeviceMessages {
				return httputil.TooLarge("Too many messages in one request")
			}
		}
		_, duplicate, err := s.db.QueueToDevice(ctx, caller.UserID, caller.DeviceID, txnID, msgs)
		if err != nil {
			return err
		}
		if !duplicate {
			s.notifier.WakeUsers(recipients...)
		}
		// Published even for a repeated transaction: the first attempt
		// may have failed here, and the bus drops true repeats.
		return s.publishRemoteToDevice(ctx, caller.UserID, caller.DeviceID, eventType, txnID, remote)
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

func (s *Service) serverName() string {
	if s.cfg == nil {
		return ""
	}
	return s.cfg.ServerName
}
