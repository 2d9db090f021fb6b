package syncapi

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/syncapi/api"
	"github.com/parley-chat/parley/syncapi/storage"
)

// Presence over federation (server-server spec §"Presence"): local users'
// presence changes go out on api.PresenceSubject for the federation
// sender, which sends them to the servers sharing a room with each user;
// other servers' users' presence arrives on api.FederationPresenceSubj
// (already checked to come from their own server) and is stored like a
// local change, so /sync delivers it to local users sharing a room.

// maxPresencePerMessage bounds one bus message of presence changes.
const maxPresencePerMessage = 500

// publishPresence announces local users' presence changes. Presence is
// ephemeral: a bus failure is logged, not reported.
func (s *Service) publishPresence(ctx context.Context, changes []storage.Presence) {
	now := time.Now()
	var push []api.PresenceUpdate
	for i := range changes {
		p := &changes[i]
		if !s.isLocalUser(p.UserID) {
			continue
		}
		c := presenceContentOf(p, now)
		push = append(push, api.PresenceUpdate{UserID: p.UserID, Presence: p.Presence, StatusMsg: p.StatusMsg,
			LastActiveAgo: *c.LastActiveAgo, CurrentlyActive: c.CurrentlyActive != nil && *c.CurrentlyActive})
	}
	for start := 0; start < len(push); start += maxPresencePerMessage {
		batch := api.PresenceUpdates{Push: push[start:min(start+maxPresencePerMessage, len(push))]}
		if err := s.publishEphemeral(ctx, api.PresenceSubject, batch, ""); err != nil {
			logrus.WithError(err).Warn("syncapi: publish presence for federation")
			return
		}
	}
}

// storeRemotePresence stores other servers' users' presence and wakes the
// local users sharing a room with them.
func (s *Service) storeRemotePresence(ctx context.Context, push []api.PresenceUpdate) error {
	if !s.presence.enabled {
		return nil
	}
	now := time.Now().UnixMilli()
	ps := make([]storage.Presence, 0, len(push))
	users := make([]string, 0, len(push))
	for _, u := range push {
		if !validUserID(u.UserID) || s.isLocalUser(u.UserID) || !presenceStates[u.Presence] ||
			(u.StatusMsg != nil && len(*u.StatusMsg) > maxStatusMsgLength) {
			continue
		}
		ps = append(ps, storage.Presence{UserID: u.UserID, Presence: u.Presence, StatusMsg: u.StatusMsg,
			LastActiveTS: max(now-max(u.LastActiveAgo, 0), 0), CurrentlyActive: u.CurrentlyActive && u.Presence == "online"})
		users = append(users, u.UserID)
	}
	if len(ps) == 0 {
		return nil
	}
	if _, err := s.db.PutPresences(ctx, ps); err != nil {
		return err
	}
	s.presence.wake(ctx, users)
	return nil
}
