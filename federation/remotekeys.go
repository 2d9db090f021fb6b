package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/federation/storage"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// RemoteKeys is the user API's way to other servers' end-to-end keys
// (server-server spec §"End-to-End Encryption"); pass it to
// (*userapi.Service).SetRemoteKeys.
func (s *Service) RemoteKeys() userapi.RemoteKeys { return remoteKeys{s} }

type remoteKeys struct{ s *Service }

// signedRequest makes an X-Matrix signed request to dest and decodes the
// JSON answer into out. Key material is decoded as raw JSON, never through
// typed structs, so that signed objects reach clients byte for byte
// equivalent (a dropped unknown field would break their signatures).
func (s *Service) signedRequest(ctx context.Context, method string, dest spec.ServerName, path string, body, out any) error {
	fr := fclient.NewFederationRequest(method, s.serverName, dest, path)
	if body != nil {
		if err := fr.SetContent(body); err != nil {
			return err
		}
	}
	key := s.keys.own.Current
	if err := fr.Sign(s.serverName, gomatrixserverlib.KeyID(key.ID), key.PrivateKey); err != nil {
		return err
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		return err
	}
	return s.client.DoRequestAndParseResponse(ctx, req, out)
}

// QueryRemoteKeys answers from the device-list cache for users whose list
// is complete and kept current by their server's EDUs, and asks the server
// (POST /user/keys/query) for the rest. Users asked for who share a room
// with this server get their whole list fetched in the background, so the
// next query is answered here.
func (r remoteKeys) QueryRemoteKeys(ctx context.Context, server string, deviceKeys map[string][]string) (*userapi.QueryKeysResponse, error) {
	s := r.s
	resp := &userapi.QueryKeysResponse{
		DeviceKeys:      map[string]map[string]json.RawMessage{},
		MasterKeys:      map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{},
	}
	ask := map[string][]string{}
	for userID, devices := range deviceKeys {
		l, err := s.db.RemoteDeviceList(ctx, userID)
		if err != nil {
			return nil, err
		}
		if l == nil || l.Stale {
			ask[userID] = devices
			continue
		}
		want := map[string]bool{}
		for _, d := range devices {
			want[d] = true
		}
		devs := map[string]json.RawMessage{}
		for _, d := range l.Devices {
			if d.Keys != nil && (len(want) == 0 || want[d.DeviceID]) {
				devs[d.DeviceID] = d.Keys
			}
		}
		resp.DeviceKeys[userID] = devs
		if l.MasterKey != nil {
			resp.MasterKeys[userID] = l.MasterKey
		}
		if l.SelfSigningKey != nil {
			resp.SelfSigningKeys[userID] = l.SelfSigningKey
		}
	}
	if len(ask) == 0 {
		return resp, nil
	}
	var got struct {
		DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
		MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
		SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	}
	if err := s.signedRequest(ctx, "POST", spec.ServerName(server), "/_matrix/federation/v1/user/keys/query",
		map[string]any{"device_keys": ask}, &got); err != nil {
		return nil, err
	}
	for userID := range ask {
		if devs, ok := got.DeviceKeys[userID]; ok {
			resp.DeviceKeys[userID] = devs
		}
		if k, ok := got.MasterKeys[userID]; ok {
			resp.MasterKeys[userID] = k
		}
		if k, ok := got.SelfSigningKeys[userID]; ok {
			resp.SelfSigningKeys[userID] = k
		}
		if tracked, err := s.db.HasJoinedRoom(ctx, userID); err == nil && tracked {
			s.edus.resyncs.request(userID)
		}
	}
	return resp, nil
}

// ClaimRemoteKeys claims one-time keys through POST /user/keys/claim.
func (r remoteKeys) ClaimRemoteKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	var got struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	if err := r.s.signedRequest(ctx, "POST", spec.ServerName(server), "/_matrix/federation/v1/user/keys/claim",
		map[string]any{"one_time_keys": oneTimeKeys}, &got); err != nil {
		return nil, err
	}
	return got.OneTimeKeys, nil
}

// Resyncs fetch a remote user's whole device list (GET /user/devices)
// after a gap in its updates or when it is first asked for, in the
// background: a transaction's intake never waits for another server.
const (
	resyncWorkers = 4
	resyncBacklog = 1024
	resyncTimeout = 30 * time.Second
)

type resyncQueue struct {
	s       *Service
	ch      chan string
	mu      sync.Mutex
	pending map[string]bool
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func newResyncQueue(s *Service) *resyncQueue {
	ctx, cancel := context.WithCancel(context.Background())
	q := &resyncQueue{s: s, ch: make(chan string, resyncBacklog), pending: map[string]bool{}, ctx: ctx, cancel: cancel}
	for range resyncWorkers {
		q.wg.Add(1)
		go q.run()
	}
	return q
}

// request queues a resync of userID unless one is queued already. A full
// backlog drops the request: the list stays stale and queries go to the
// user's server, which is correct, only slower.
func (q *resyncQueue) request(userID string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pending[userID] || q.ctx.Err() != nil {
		return
	}
	select {
	case q.ch <- userID:
		q.pending[userID] = true
	default:
	}
}

func (q *resyncQueue) stop() {
	q.cancel()
	q.wg.Wait()
}

func (q *resyncQueue) run() {
	defer q.wg.Done()
	for {
		select {
		case <-q.ctx.Done():
			return
		case userID := <-q.ch:
			q.mu.Lock()
			delete(q.pending, userID)
			q.mu.Unlock()
			ctx, cancel := context.WithTimeout(q.ctx, resyncTimeout)
			if err := q.s.resyncDeviceList(ctx, userID); err != nil && q.ctx.Err() == nil {
				logrus.WithError(err).WithField("user_id", userID).Warn("federation: device list resync failed; list stays stale")
			}
			cancel()
		}
	}
}

// userDevicesJSON is the answer of GET /user/devices/{userId}.
type userDevicesJSON struct {
	UserID   string `json:"user_id"`
	StreamID int64  `json:"stream_id"`
	Devices  []struct {
		DeviceID    string          `json:"device_id"`
		DisplayName string          `json:"device_display_name,omitempty"`
		Keys        json.RawMessage `json:"keys,omitempty"`
	} `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// resyncDeviceList replaces the cached list of userID with what its server
// says now, and tells the sync API.
func (s *Service) resyncDeviceList(ctx context.Context, userID string) error {
	u, err := spec.NewUserID(userID, true)
	if err != nil {
		return err
	}
	var got userDevicesJSON
	if err := s.signedRequest(ctx, "GET", u.Domain(), "/_matrix/federation/v1/user/devices/"+url.PathEscape(userID), nil, &got); err != nil {
		return err
	}
	if got.UserID != userID {
		return fmt.Errorf("answer is about %q", got.UserID)
	}
	l := storage.RemoteDeviceList{UserID: userID, StreamID: got.StreamID}
	if l.MasterKey, err = checkRemoteCrossSigningKey(userID, "master", got.MasterKey); err != nil {
		return err
	}
	if l.SelfSigningKey, err = checkRemoteCrossSigningKey(userID, "self_signing", got.SelfSigningKey); err != nil {
		return err
	}
	for _, d := range got.Devices {
		if d.DeviceID == "" {
			continue
		}
		dev := storage.RemoteDevice{DeviceID: d.DeviceID, DisplayName: d.DisplayName}
		if len(d.Keys) > 0 && string(d.Keys) != "null" {
			if err := checkRemoteDeviceKeys(userID, d.DeviceID, d.Keys); err != nil {
				logrus.WithError(err).WithField("user_id", userID).Debug("federation: device keys dropped from resync")
			} else {
				dev.Keys = d.Keys
			}
		}
		l.Devices = append(l.Devices, dev)
	}
	seq, err := s.db.ReplaceRemoteDeviceList(ctx, l)
	if err != nil {
		return err
	}
	return s.edus.notifyDeviceListChange(ctx, userID, seq)
}
