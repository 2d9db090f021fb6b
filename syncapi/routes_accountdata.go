package syncapi

import (
	"encoding/json"
	"net/http"

	"github.com/parley-chat/parley/internal/httputil"
)

// maxAccountDataBytes bounds one account data entry.
const maxAccountDataBytes = 64 << 10

// accountDataTarget resolves the user (must be the caller), the room ("" for
// global data) and the type of an account data route.
func accountDataTarget(r *http.Request) (userID, roomID, dataType string, err error) {
	caller, err := ownUser(r)
	if err != nil {
		return "", "", "", err
	}
	if pathParam(r, "roomId") != "" {
		if roomID, err = roomIDParam(r); err != nil {
			return "", "", "", err
		}
	}
	dataType = pathParam(r, "type")
	if dataType == "" || len(dataType) > 255 {
		return "", "", "", httputil.InvalidParam("Bad account data type")
	}
	return caller.UserID, roomID, dataType, nil
}

// handleGetAccountData serves GET /user/{userId}[/rooms/{roomId}]/account_data/{type}
// (client-server spec §"Client Config").
func (s *Service) handleGetAccountData(w http.ResponseWriter, r *http.Request) {
	userID, roomID, dataType, err := accountDataTarget(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	content, err := s.db.GetAccountData(r.Context(), userID, roomID, dataType)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if content == nil {
		httputil.WriteError(w, r, httputil.NotFound("No account data of type %q", dataType))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, json.RawMessage(content))
}

// handlePutAccountData serves PUT /user/{userId}[/rooms/{roomId}]/account_data/{type}.
func (s *Service) handlePutAccountData(w http.ResponseWriter, r *http.Request) {
	userID, roomID, dataType, err := accountDataTarget(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	// Spec: the read marker is set through read_markers / receipts only.
	if roomID != "" && dataType == "m.fully_read" {
		httputil.WriteError(w, r, httputil.NewError(http.StatusMethodNotAllowed, "M_BAD_JSON", "m.fully_read is set through /read_markers"))
		return
	}
	var content map[string]json.RawMessage
	body, err := httputil.ReadBody(r, maxAccountDataBytes)
	if err == nil {
		err = httputil.UnmarshalJSONObject(body, &content)
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.putAccountData(r.Context(), userID, roomID, dataType, body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// tagContent is the content of m.tag room account data (client-server spec
// §"Room Tagging").
type tagContent struct {
	Tags map[string]json.RawMessage `json:"tags"`
}

func (s *Service) loadTags(r *http.Request) (userID, roomID string, tags tagContent, err error) {
	caller, err := ownUser(r)
	if err != nil {
		return "", "", tags, err
	}
	if roomID, err = roomIDParam(r); err != nil {
		return "", "", tags, err
	}
	content, err := s.db.GetAccountData(r.Context(), caller.UserID, roomID, "m.tag")
	if err != nil {
		return "", "", tags, err
	}
	if content != nil {
		_ = json.Unmarshal(content, &tags)
	}
	if tags.Tags == nil {
		tags.Tags = map[string]json.RawMessage{}
	}
	return caller.UserID, roomID, tags, nil
}

// handleGetTags serves GET /user/{userId}/rooms/{roomId}/tags.
func (s *Service) handleGetTags(w http.ResponseWriter, r *http.Request) {
	_, _, tags, err := s.loadTags(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, tags)
}

// handlePutTag serves PUT /user/{userId}/rooms/{roomId}/tags/{tag}.
func (s *Service) handlePutTag(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		tag := pathParam(r, "tag")
		if tag == "" || len(tag) > 255 {
			return httputil.InvalidParam("Bad tag name")
		}
		var body struct {
			Order *float64 `json:"order"`
		}
		raw, err := httputil.ReadBody(r, maxAccountDataBytes)
		if err != nil {
			return err
		}
		if err := httputil.UnmarshalJSONObject(raw, &body); err != nil {
			return err
		}
		userID, roomID, tags, err := s.loadTags(r)
		if err != nil {
			return err
		}
		tags.Tags[tag] = json.RawMessage(raw)
		content, _ := json.Marshal(tags)
		if len(content) > maxAccountDataBytes {
			return httputil.TooLarge("Too many tags")
		}
		return s.putAccountData(r.Context(), userID, roomID, "m.tag", content)
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// handleDeleteTag serves DELETE /user/{userId}/rooms/{roomId}/tags/{tag}.
func (s *Service) handleDeleteTag(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		userID, roomID, tags, err := s.loadTags(r)
		if err != nil {
			return err
		}
		tag := pathParam(r, "tag")
		if _, ok := tags.Tags[tag]; !ok {
			return nil
		}
		delete(tags.Tags, tag)
		content, _ := json.Marshal(tags)
		return s.putAccountData(r.Context(), userID, roomID, "m.tag", content)
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}
