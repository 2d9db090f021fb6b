package federation

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/federation/storage"
	"github.com/parley-chat/parley/internal/httputil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// Transaction limits of server-server spec §"Transactions".
const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
)

// handleSend serves PUT /_matrix/federation/v1/send/{txnId}. Each PDU is
// checked as §"Checks performed on receipt of a PDU" asks before it
// reaches the roomserver: it must parse for its room's version (else it is
// dropped), carry valid signatures (else it is dropped), and match its
// content hash (else it is redacted, which parsing does). The auth checks
// are the roomserver's. The answer is stored, so a retried transaction
// gets it again without anything being processed twice.
func (s *Service) handleSend(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	origin := OriginFrom(ctx)
	txnID := chi.URLParam(r, "txnID")
	if stored, err := s.db.InboundTxn(ctx, string(origin), txnID); err == nil {
		httputil.WriteJSON(w, http.StatusOK, json.RawMessage(stored))
		return
	} else if !errors.Is(err, storage.ErrNotFound) {
		httputil.WriteError(w, r, err)
		return
	}
	var txn struct {
		PDUs []json.RawMessage `json:"pdus"`
		EDUs []json.RawMessage `json:"edus"`
	}
	if err := httputil.DecodeJSON(r, MaxRequestBytes, &txn); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if txn.PDUs == nil {
		httputil.WriteError(w, r, httputil.BadJSON("pdus is required"))
		return
	}
	if len(txn.PDUs) > maxTxnPDUs || len(txn.EDUs) > maxTxnEDUs {
		httputil.WriteError(w, r, httputil.BadJSON("A transaction holds at most %d PDUs and %d EDUs", maxTxnPDUs, maxTxnEDUs))
		return
	}
	results, err := s.processPDUs(r, origin, txn.PDUs)
	if err != nil {
		// Nothing is stored: the sender retries and the roomserver skips
		// what it already has.
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.processEDUs(ctx, origin, txn.EDUs); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	resp, err := json.Marshal(fclient.RespSend{PDUs: results})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.db.StoreInboundTxn(ctx, string(origin), txnID, resp, time.Now().UnixMilli()); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, json.RawMessage(resp))
}

// userIDForSender maps a sender to its user ID in room versions where
// they are the same thing (every stable version).
func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// processPDUs checks the PDUs of a transaction and gives the good ones to
// the roomserver, one call per room in transaction order. PDUs that
// cannot even be identified (unknown room, unparseable) are logged and
// left out of the answer, as their event ID cannot be computed.
func (s *Service) processPDUs(r *http.Request, origin spec.ServerName, raws []json.RawMessage) (map[string]fclient.PDUResult, error) {
	ctx := r.Context()
	log := logrus.WithField("origin", origin)
	results := map[string]fclient.PDUResult{}
	versions := map[string]gomatrixserverlib.IRoomVersion{}
	denied := map[string]bool{}
	var roomOrder []string
	byRoom := map[string][]gomatrixserverlib.PDU{}
	for _, raw := range raws {
		var head struct {
			RoomID string `json:"room_id"`
		}
		if err := json.Unmarshal(raw, &head); err != nil || head.RoomID == "" {
			log.Debug("federation /send: PDU without a room_id dropped")
			continue
		}
		verImpl, known := versions[head.RoomID]
		if !known {
			info, err := s.rooms.QueryRoomInfo(ctx, head.RoomID)
			if err != nil && !errors.Is(err, rsapi.ErrRoomNotFound) {
				return nil, err
			}
			// A stub room (an invite only) has no DAG to add to.
			if info != nil && !info.Stub {
				if v, err := gomatrixserverlib.GetRoomVersion(info.RoomVersion); err == nil {
					verImpl = v
				}
			}
			if verImpl != nil {
				if err := s.checkACL(ctx, head.RoomID, origin); err != nil {
					var herr *httputil.Error
					if !errors.As(err, &herr) {
						return nil, err
					}
					denied[head.RoomID] = true
				}
			}
			versions[head.RoomID] = verImpl
		}
		if verImpl == nil {
			log.WithField("room_id", head.RoomID).Debug("federation /send: PDU for a room not known here dropped")
			continue
		}
		pdu, err := verImpl.NewEventFromUntrustedJSON(raw)
		if err != nil {
			log.WithError(err).Debug("federation /send: invalid PDU dropped")
			continue
		}
		if denied[head.RoomID] {
			// Spec: client-server §"Server Access Control Lists": events
			// from a denied server are dropped.
			results[pdu.EventID()] = fclient.PDUResult{Error: "denied by the room's server ACL"}
			continue
		}
		if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, s.keys.KeyRing(), userIDForSender); err != nil {
			results[pdu.EventID()] = fclient.PDUResult{Error: "signature check failed: " + err.Error()}
			continue
		}
		if _, ok := byRoom[head.RoomID]; !ok {
			roomOrder = append(roomOrder, head.RoomID)
		}
		byRoom[head.RoomID] = append(byRoom[head.RoomID], pdu)
	}
	for _, roomID := range roomOrder {
		res, err := s.inputWithGaps(ctx, origin, roomID, versions[roomID].Version(), byRoom[roomID])
		if err != nil {
			return nil, err
		}
		for _, ev := range res {
			switch {
			case ev.Error != "":
				results[ev.EventID] = fclient.PDUResult{Error: ev.Error}
			case ev.Rejected:
				results[ev.EventID] = fclient.PDUResult{Error: "rejected by the authorization rules"}
			default:
				results[ev.EventID] = fclient.PDUResult{}
			}
		}
	}
	return results, nil
}
