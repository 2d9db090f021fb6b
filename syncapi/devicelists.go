package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/syncapi/storage"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: client-server §"Tracking the device list for a user" and
// §"Extensions to /sync" of End-to-End Encryption.

// startDeviceLists migrates the device-list tables and consumes the user
// API's device-list stream through the durable consumer
// "syncapi_device_lists".
func (s *Service) startDeviceLists(ctx context.Context, b *bus.Bus) error {
	if err := s.db.MigrateDeviceLists(ctx); err != nil {
		return err
	}
	if err := b.EnsureStream(ctx, userapi.DeviceListStream, userapi.DeviceListSubject); err != nil {
		return err
	}
	sub, err := b.Subscribe(ctx, userapi.DeviceListStream, "syncapi_device_lists", userapi.DeviceListSubject, s.handleDeviceListUpdate)
	if err != nil {
		return err
	}
	s.deviceListSub = sub
	return nil
}

// handleDeviceListUpdate records that a user's keys changed and wakes the
// user and everyone joined to a room with them. A redelivered update is
// recognised by its per-user stream ID and does nothing.
func (s *Service) handleDeviceListUpdate(ctx context.Context, msg bus.Message) error {
	var u userapi.DeviceListUpdate
	if err := json.Unmarshal(msg.Data, &u); err != nil || u.UserID == "" {
		logrus.WithError(err).WithField("seq", msg.Sequence).Error("syncapi: malformed device-list update; skipping")
		return nil
	}
	applied, err := s.db.RecordDeviceListChange(ctx, u.UserID, u.StreamID)
	if err != nil || !applied {
		return err
	}
	rooms, err := s.roomsForUser(ctx, u.UserID)
	if err != nil {
		return err
	}
	for _, m := range rooms {
		if m.Membership == "join" {
			s.notifier.WakeRoom(m.RoomID)
		}
	}
	s.notifier.WakeUsers(u.UserID)
	return nil
}

// deviceListChanges computes device_lists for userID between two
// positions: "changed" holds users sharing a room with userID whose keys
// changed, or who started sharing a room with userID (so their keys must
// be fetched); "left" holds users who shared a room and share none now.
func (s *Service) deviceListChanges(ctx context.Context, userID string, memberships []storage.RoomMembership, since, cur StreamToken) (changed, left []string, err error) {
	changedSet := map[string]bool{}
	if cur.DeviceLists > since.DeviceLists {
		users, err := s.db.DeviceListChangesSharing(ctx, userID, since.DeviceLists, cur.DeviceLists)
		if err != nil {
			return nil, nil, err
		}
		for _, u := range users {
			changedSet[u] = true
		}
	}
	if cur.Events > since.Events {
		joined, leftCandidates, err := s.membershipDeviceListCandidates(ctx, userID, memberships, since.Events, cur.Events)
		if err != nil {
			return nil, nil, err
		}
		all := append(slices.Clone(joined), leftCandidates...)
		sharing, err := s.db.UsersSharingRoom(ctx, userID, all)
		if err != nil {
			return nil, nil, err
		}
		for _, u := range joined {
			if sharing[u] {
				changedSet[u] = true
			}
		}
		leftSet := map[string]bool{}
		for _, u := range leftCandidates {
			if !sharing[u] && u != userID {
				leftSet[u] = true
			}
		}
		left = sortedSet(leftSet)
	}
	return sortedSet(changedSet), left, nil
}

// membershipDeviceListCandidates looks at membership changes in
// (after, upto]: in rooms userID joined, every member is newly shared
// with; in rooms userID left, every member may no longer be; in the
// user's other joined rooms, members who joined are newly shared with
// and members who left may no longer be.
func (s *Service) membershipDeviceListCandidates(ctx context.Context, userID string, memberships []storage.RoomMembership, after, upto int64) (joined, left []string, err error) {
	var stable []string
	for _, m := range memberships {
		if m.ChangedAt > after && m.ChangedAt <= upto {
			members, err := s.db.JoinedUsers(ctx, m.RoomID)
			if err != nil {
				return nil, nil, err
			}
			if m.Membership == "join" {
				joined = append(joined, members...)
			} else {
				left = append(left, members...)
			}
			continue
		}
		if m.Membership == "join" && s.caches.stateMayHaveChanged(m.RoomID, after, upto) {
			stable = append(stable, m.RoomID)
		}
	}
	changes, err := s.db.MembershipChangesIn(ctx, stable, after, upto)
	if err != nil {
		return nil, nil, err
	}
	// The last change of each user in each room decides.
	last := map[[2]string]string{}
	for _, c := range changes {
		last[[2]string{c.RoomID, c.UserID}] = c.Membership
	}
	for k, membership := range last {
		if k[1] == userID {
			continue
		}
		if membership == "join" {
			joined = append(joined, k[1])
		} else {
			left = append(left, k[1])
		}
	}
	return joined, left, nil
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for u := range m {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// addEncryptionData fills the E2EE parts of a sync response: device_lists
// (incremental syncs only), and the syncing device's one-time key counts
// and unused fallback key types.
func (s *Service) addEncryptionData(ctx context.Context, req *syncRequest, memberships []storage.RoomMembership, since, cur StreamToken, resp *syncResponse) error {
	if req.since != nil {
		changed, left, err := s.deviceListChanges(ctx, req.userID, memberships, since, cur)
		if err != nil {
			return err
		}
		resp.DeviceLists.Changed = append(resp.DeviceLists.Changed, changed...)
		resp.DeviceLists.Left = append(resp.DeviceLists.Left, left...)
	}
	if req.deviceID == "" {
		return nil
	}
	counts, err := s.users.OneTimeKeyCounts(ctx, req.userID, req.deviceID)
	if err != nil {
		return fmt.Errorf("one-time key counts: %w", err)
	}
	resp.DeviceOneTimeKeysCount = counts.Counts
	resp.DeviceUnusedFallbackKeyTypes = counts.UnusedFallbackAlgorithms
	return nil
}

// handleKeyChanges serves GET /keys/changes (client-server spec §"GET
// /_matrix/client/v3/keys/changes"): the device-list changes between two
// sync tokens.
func (s *Service) handleKeyChanges(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		ctx := r.Context()
		q := r.URL.Query()
		if q.Get("from") == "" || q.Get("to") == "" {
			return httputil.MissingParam("from and to are required")
		}
		from, err1 := ParseStreamToken(q.Get("from"))
		to, err2 := ParseStreamToken(q.Get("to"))
		if err1 != nil || err2 != nil {
			return httputil.InvalidParam("from and to must be sync tokens")
		}
		cur, err := s.currentToken(ctx)
		if err != nil {
			return err
		}
		to = to.clampTo(cur)
		from = from.clampTo(to)
		caller := httputil.CallerFrom(ctx)
		memberships, err := s.roomsForUser(ctx, caller.UserID)
		if err != nil {
			return err
		}
		changed, left, err := s.deviceListChanges(ctx, caller.UserID, memberships, from, to)
		if err != nil {
			return err
		}
		if left == nil {
			left = []string{}
		}
		httputil.WriteJSON(w, http.StatusOK, map[string][]string{"changed": changed, "left": left})
		return nil
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
	}
}
