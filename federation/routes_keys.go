package federation

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/httputil"
)

// maxKeyQueryBytes bounds a POST /_matrix/key/v2/query body.
const maxKeyQueryBytes = 64 << 10

// handleVersion serves GET /_matrix/federation/v1/version.
func (s *Service) handleVersion(w http.ResponseWriter, r *http.Request) {
	httputil.WriteJSON(w, http.StatusOK, map[string]any{
		"server": map[string]string{"name": "Parley", "version": s.version},
	})
}

// handleOwnKeys serves GET /_matrix/key/v2/server.
func (s *Service) handleOwnKeys(w http.ResponseWriter, r *http.Request) {
	raw, err := s.keys.OwnKeyResponse(time.Now())
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, json.RawMessage(raw))
}

// handleQueryKeys serves GET /_matrix/key/v2/query/{serverName}.
func (s *Service) handleQueryKeys(w http.ResponseWriter, r *http.Request) {
	server := spec.ServerName(chi.URLParam(r, "serverName"))
	var minValid spec.Timestamp
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		n, err := strconv.ParseUint(v, 10, 63)
		if err != nil {
			httputil.WriteError(w, r, httputil.InvalidParam("minimum_valid_until_ts must be a timestamp in milliseconds"))
			return
		}
		minValid = spec.Timestamp(n)
	}
	criteria := map[gomatrixserverlib.KeyID]spec.Timestamp{}
	if id := chi.URLParam(r, "keyID"); id != "" {
		criteria[gomatrixserverlib.KeyID(id)] = minValid
	} else if minValid != 0 {
		// No key ID: the time applies to the response as a whole.
		criteria[""] = minValid
	}
	s.answerKeyQuery(w, r, map[spec.ServerName]map[gomatrixserverlib.KeyID]spec.Timestamp{server: criteria})
}

// handleBulkQueryKeys serves POST /_matrix/key/v2/query.
func (s *Service) handleBulkQueryKeys(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ServerKeys map[spec.ServerName]map[gomatrixserverlib.KeyID]struct {
			MinimumValidUntilTS spec.Timestamp `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := httputil.DecodeJSON(r, maxKeyQueryBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if body.ServerKeys == nil {
		httputil.WriteError(w, r, httputil.MissingParam("server_keys is required"))
		return
	}
	criteria := map[spec.ServerName]map[gomatrixserverlib.KeyID]spec.Timestamp{}
	for server, ids := range body.ServerKeys {
		c := map[gomatrixserverlib.KeyID]spec.Timestamp{}
		for id, crit := range ids {
			c[id] = crit.MinimumValidUntilTS
		}
		criteria[server] = c
	}
	s.answerKeyQuery(w, r, criteria)
}

func (s *Service) answerKeyQuery(w http.ResponseWriter, r *http.Request, criteria map[spec.ServerName]map[gomatrixserverlib.KeyID]spec.Timestamp) {
	responses, err := s.keys.NotaryQuery(r.Context(), criteria)
	if errors.Is(err, errTooManyServers) {
		httputil.WriteError(w, r, httputil.InvalidParam("At most %d servers may be queried at once", maxNotaryServers))
		return
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"server_keys": responses})
}
