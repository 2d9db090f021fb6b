package clientapi

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/httputil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// Spec: client-server §"Sending events to a room" (PUT
// /rooms/{roomId}/send/{eventType}/{txnId}) and §"Redactions" (PUT
// /rooms/{roomId}/redact/{eventId}/{txnId}).

type eventIDResponse struct {
	EventID string `json:"event_id"`
}

// txnParam returns the {txnId} path parameter as the roomserver's
// transaction ID: transactions are scoped to the caller's device
// (client-server spec §"Transaction identifiers").
func txnParam(r *http.Request) (*rsapi.TransactionID, error) {
	txn, err := pathParam(r, "txnId")
	if err != nil {
		return nil, err
	}
	if txn == "" {
		return nil, httputil.InvalidParam("Empty transaction ID")
	}
	return &rsapi.TransactionID{DeviceID: httputil.CallerFrom(r.Context()).DeviceID, TxnID: txn}, nil
}

// PUT /rooms/{roomId}/send/{eventType}/{txnId}
func (s *Server) handleSendEvent(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	evType, err := eventTypeParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	txn, err := txnParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	body, err := httputil.ReadBody(r, s.cfg.Client.MaxBodyBytes)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	content, err := jsonObject(body)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	caller := httputil.CallerFrom(r.Context()).UserID
	eventID, err := s.send(r.Context(), roomID, rsapi.EventTemplate{Sender: caller, Type: evType, Content: content}, txn, errUnknownRoom())
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, eventIDResponse{EventID: eventID})
}

// PUT /rooms/{roomId}/redact/{eventId}/{txnId}
func (s *Server) handleRedact(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	redacts, err := pathParam(r, "eventId")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if len(redacts) < 2 || redacts[0] != '$' {
		httputil.WriteError(w, r, httputil.InvalidParam("Invalid event ID %q", redacts))
		return
	}
	txn, err := txnParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	var body struct {
		Reason *string `json:"reason"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ctx := r.Context()
	caller := httputil.CallerFrom(ctx).UserID
	content := map[string]any{}
	if body.Reason != nil {
		content["reason"] = *body.Reason
	}
	// The roomserver puts redacts where the room version wants it (content
	// from v11) and refuses redactions of others' events without the
	// redact power level.
	eventID, err := s.send(ctx, roomID, rsapi.EventTemplate{
		Sender: caller, Type: spec.MRoomRedaction, Content: mustJSON(content), Redacts: redacts,
	}, txn, errUnknownRoom())
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, eventIDResponse{EventID: eventID})
}
