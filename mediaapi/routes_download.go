package mediaapi

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/mediaapi/blobstore"
	"github.com/parley-chat/parley/mediaapi/storage"
)

// pollInterval is how often a download of pending media checks whether
// the content arrived (on any instance).
const pollInterval = 200 * time.Millisecond

// findMedia returns servable media for a client request's
// {serverName}/{mediaId}, waiting up to timeout_ms for a pending upload and
// fetching other servers' media over federation. legacy applies the
// freeze of the unauthenticated endpoints and their allow_remote flag.
func (s *Service) findMedia(r *http.Request, legacy bool) (*storage.Media, error) {
	serverName, mediaID := chi.URLParam(r, "serverName"), chi.URLParam(r, "mediaId")
	if err := checkIDs(serverName, mediaID); err != nil {
		return nil, err
	}
	wait, err := timeoutParam(r)
	if err != nil {
		return nil, err
	}
	// Spec: allow_remote=false on the legacy endpoints prevents a server
	// asking itself in a loop.
	allowRemote := !legacy || r.URL.Query().Get("allow_remote") != "false"
	m, err := s.lookupMedia(r.Context(), serverName, mediaID, wait, allowRemote)
	if err != nil {
		return nil, err
	}
	if legacy && s.frozenTS != 0 && m.UploadedTS >= s.frozenTS {
		return nil, httputil.NotFound("Media uploaded after unauthenticated media was frozen is only available from /_matrix/client/v1/media")
	}
	return m, nil
}

// lookupMedia returns media whose content is here: local media (after
// waiting up to wait for a pending upload), or remote media from the
// cache or, with allowRemote and federation, fetched from its server.
// Quarantined, deleted and expired media are not found.
func (s *Service) lookupMedia(ctx context.Context, serverName, mediaID string, wait time.Duration, allowRemote bool) (*storage.Media, error) {
	deadline := time.Now().Add(wait)
	for {
		m, err := s.db.GetMedia(ctx, serverName, mediaID)
		if errors.Is(err, storage.ErrNotFound) && serverName != s.serverName {
			if !allowRemote {
				return nil, notFound()
			}
			m, err = s.fetchRemote(ctx, serverName, mediaID)
		}
		if errors.Is(err, storage.ErrNotFound) {
			return nil, notFound()
		}
		if err != nil {
			return nil, err
		}
		if m.Quarantined {
			return nil, notFound()
		}
		if m.Uploaded() {
			return m, nil
		}
		if m.ExpiresTS <= s.now().UnixMilli() {
			return nil, notFound()
		}
		if !time.Now().Before(deadline) {
			return nil, notYetUploaded()
		}
		select {
		case <-ctx.Done():
			// The client gave up waiting; nobody reads this answer.
			return nil, notYetUploaded()
		case <-time.After(min(pollInterval, time.Until(deadline))):
		}
	}
}

// timeoutParam reads timeout_ms (client-server spec, default 20 s),
// capped at maxWaitForUpload.
func timeoutParam(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("timeout_ms")
	if v == "" {
		return 20 * time.Second, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, httputil.InvalidParam("timeout_ms must be a non-negative integer")
	}
	return min(time.Duration(min(ms, 1<<40))*time.Millisecond, maxWaitForUpload), nil
}

// fileNameParam returns the {fileName} path segment, decoded. chi hands
// over the raw segment when the path had escapes, the decoded one
// otherwise.
func fileNameParam(r *http.Request) (string, bool, error) {
	name := chi.URLParam(r, "fileName")
	if name == "" {
		return "", false, nil
	}
	if r.URL.RawPath != "" {
		decoded, err := url.PathUnescape(name)
		if err != nil {
			return "", false, httputil.InvalidParam("Bad escape in file name")
		}
		name = decoded
	}
	if !validFilename(name) {
		return "", false, httputil.InvalidParam("Invalid file name")
	}
	return name, true, nil
}

// handleDownload is GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}].
func (s *Service) handleDownload(w http.ResponseWriter, r *http.Request) {
	s.serveDownload(w, r, false)
}

// handleLegacyDownload is the deprecated, unauthenticated
// GET /_matrix/media/v3/download/{serverName}/{mediaId}[/{fileName}].
func (s *Service) handleLegacyDownload(w http.ResponseWriter, r *http.Request) {
	s.serveDownload(w, r, true)
}

func (s *Service) serveDownload(w http.ResponseWriter, r *http.Request, legacy bool) {
	fileName, override, err := fileNameParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	m, err := s.findMedia(r, legacy)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if !override {
		fileName = m.Filename
	}
	blob, err := s.blobs.Open(m.SHA256)
	if errors.Is(err, blobstore.ErrNotFound) {
		httputil.WriteError(w, r, notFound())
		return
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	defer blob.Close()
	contentType := servedContentType(m.ContentType)
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Disposition", contentDisposition(inlineTypes[mediaType(contentType)], fileName))
	// ServeContent answers Range requests (seeking in audio and video)
	// and conditional requests.
	http.ServeContent(w, r, "", time.UnixMilli(m.UploadedTS), blob)
}

// requireAdmin lets only server admins through.
func requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !httputil.CallerFrom(r.Context()).Admin {
			httputil.WriteError(w, r, httputil.Forbidden("Only server admins may do this"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// handleAdminQuarantine is POST /_parley/admin/v1/media/{serverName}/{mediaId}/quarantine.
func (s *Service) handleAdminQuarantine(w http.ResponseWriter, r *http.Request) {
	s.adminAction(w, r, s.QuarantineMedia)
}

// handleAdminDelete is DELETE /_parley/admin/v1/media/{serverName}/{mediaId}.
func (s *Service) handleAdminDelete(w http.ResponseWriter, r *http.Request) {
	s.adminAction(w, r, s.DeleteMedia)
}

func (s *Service) adminAction(w http.ResponseWriter, r *http.Request, action func(ctx context.Context, serverName, mediaID string) error) {
	serverName, mediaID := chi.URLParam(r, "serverName"), chi.URLParam(r, "mediaId")
	if err := checkIDs(serverName, mediaID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	err := action(r.Context(), serverName, mediaID)
	if errors.Is(err, ErrNotFound) {
		err = notFound()
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}
