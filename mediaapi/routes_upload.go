package mediaapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/mediaapi/blobstore"
	"github.com/parley-chat/parley/mediaapi/storage"
)

// uploadMeta is what an upload request says about its file.
type uploadMeta struct {
	contentType string
	filename    string
}

// readUploadMeta takes the Content-Type header and ?filename= of an upload
// (client-server spec §"POST /_matrix/media/v3/upload"). A Content-Type
// that does not parse is stored as application/octet-stream; a bad file
// name is refused, since it would be echoed in Content-Disposition.
func (s *Service) readUploadMeta(r *http.Request) (uploadMeta, error) {
	m := uploadMeta{contentType: r.Header.Get("Content-Type"), filename: r.URL.Query().Get("filename")}
	if mediaType(m.contentType) == "" || len(m.contentType) > 255 {
		m.contentType = "application/octet-stream"
	}
	if !validFilename(m.filename) {
		return m, httputil.InvalidParam("filename must be valid UTF-8 of at most %d bytes without control characters", maxFilenameBytes)
	}
	if r.ContentLength > s.cfg.Media.MaxUploadBytes {
		return m, s.tooLarge()
	}
	return m, nil
}

func (s *Service) tooLarge() error {
	return httputil.TooLarge("Uploads are limited to %d bytes", s.cfg.Media.MaxUploadBytes)
}

// bodyError marks a failure to read the request body (the client went
// away or sent a broken body), as opposed to a failure to store it.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "read upload body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

type bodyReader struct{ r io.Reader }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = &bodyError{err}
	}
	return n, err
}

// stageBody streams the request body into the blob store, at most the
// configured maximum. Nothing is left in the store if it fails.
func (s *Service) stageBody(w http.ResponseWriter, r *http.Request) (blobstore.Staged, error) {
	body := http.MaxBytesReader(w, r.Body, s.cfg.Media.MaxUploadBytes)
	st, err := s.blobs.Stage(r.Context(), bodyReader{body})
	var tooBig *http.MaxBytesError
	var bodyErr *bodyError
	switch {
	case errors.As(err, &tooBig):
		return nil, s.tooLarge()
	case errors.As(err, &bodyErr), errors.Is(err, context.Canceled):
		// The client went away or sent a broken body.
		return nil, httputil.NewError(http.StatusBadRequest, "M_UNKNOWN", "The upload did not arrive completely")
	case err != nil:
		return nil, fmt.Errorf("store upload: %w", err)
	}
	return st, nil
}

// handleUpload is POST /_matrix/media/v3/upload.
func (s *Service) handleUpload(w http.ResponseWriter, r *http.Request) {
	meta, err := s.readUploadMeta(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	st, err := s.stageBody(w, r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	now := s.now().UnixMilli()
	m := &storage.Media{
		ServerName: s.serverName, MediaID: newMediaID(),
		ContentType: meta.contentType, Filename: meta.filename, Size: st.Size(), SHA256: st.Hash(),
		Uploader: httputil.CallerFrom(r.Context()).UserID, CreatedTS: now, UploadedTS: now,
	}
	if err := s.storeBlob(r.Context(), st, func(tx *storage.BlobTx) error { return tx.InsertMedia(r.Context(), m) }); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]string{"content_uri": mxcURI(m.ServerName, m.MediaID)})
}

// handleCreate is POST /_matrix/media/v1/create: reserve an mxc URI whose
// content comes later.
func (s *Service) handleCreate(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := httputil.CallerFrom(ctx).UserID
	if err := s.createLimit.Allow(user); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	now := s.now()
	n, err := s.db.CountPending(ctx, user, now.UnixMilli())
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if n >= maxPendingUploads {
		httputil.WriteError(w, r, httputil.NewError(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED",
			"Too many pending uploads: upload content to the mxc URIs already created first"))
		return
	}
	m := &storage.Media{
		ServerName: s.serverName, MediaID: newMediaID(), Uploader: user,
		CreatedTS: now.UnixMilli(), ExpiresTS: now.Add(pendingUploadLifetime).UnixMilli(),
	}
	if err := s.db.InsertMedia(ctx, m); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{
		"content_uri":       mxcURI(m.ServerName, m.MediaID),
		"unused_expires_at": m.ExpiresTS,
	})
}

// handleUploadTo is PUT /_matrix/media/v3/upload/{serverName}/{mediaId}:
// the content of a URI made by handleCreate, once, by its creator.
func (s *Service) handleUploadTo(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	serverName, mediaID := chi.URLParam(r, "serverName"), chi.URLParam(r, "mediaId")
	if err := checkIDs(serverName, mediaID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	meta, err := s.readUploadMeta(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.checkUploadTarget(ctx, serverName, mediaID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	st, err := s.stageBody(w, r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	m := &storage.Media{
		ServerName: serverName, MediaID: mediaID, ContentType: meta.contentType, Filename: meta.filename,
		Size: st.Size(), SHA256: st.Hash(), UploadedTS: s.now().UnixMilli(),
	}
	err = s.storeBlob(ctx, st, func(tx *storage.BlobTx) error { return tx.CompleteUpload(ctx, m) })
	if errors.Is(err, storage.ErrAlreadyUploaded) {
		// Another request won the race.
		err = httputil.NewError(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// checkUploadTarget answers the spec's errors for PUT upload: 404 for URIs
// not created here or expired, 403 for another user's URI, 409 when the
// content is already there.
func (s *Service) checkUploadTarget(ctx context.Context, serverName, mediaID string) error {
	if serverName != s.serverName {
		return httputil.NotFound("Media can only be uploaded to this server's own mxc URIs")
	}
	m, err := s.db.GetMedia(ctx, serverName, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return httputil.NotFound("Unknown media ID: create it with POST /_matrix/media/v1/create")
	}
	if err != nil {
		return err
	}
	if m.Uploader != httputil.CallerFrom(ctx).UserID {
		return httputil.Forbidden("Only the user who created this mxc URI may upload to it")
	}
	if m.Uploaded() {
		return httputil.NewError(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
	}
	if m.ExpiresTS <= s.now().UnixMilli() {
		return httputil.NotFound("This mxc URI expired before content was uploaded")
	}
	return nil
}

// handleConfig is GET /_matrix/client/v1/media/config.
func (s *Service) handleConfig(w http.ResponseWriter, r *http.Request) {
	httputil.WriteJSON(w, http.StatusOK, map[string]int64{"m.upload.size": s.cfg.Media.MaxUploadBytes})
}
