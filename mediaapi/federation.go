package mediaapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/mediaapi/blobstore"
	"github.com/parley-chat/parley/mediaapi/storage"
)

// FederationClient is what the media API needs from the federation
// component to fetch media from other servers.
type FederationClient interface {
	// DownloadMedia sends a signed GET
	// /_matrix/federation/v1/media/download/{mediaID} to destination; the
	// caller closes the response body.
	DownloadMedia(ctx context.Context, origin, destination spec.ServerName, mediaID string) (*http.Response, error)
}

// remoteFetchTimeout bounds fetching one remote file, redirect included.
const remoteFetchTimeout = 2 * time.Minute

// EnableFederation makes the service fetch other servers' media through
// client (caching it locally) and serve its own media to other servers at
// /_matrix/federation/v1/media/*, behind serverAuth, the X-Matrix
// request verification. Call it before Register.
func (s *Service) EnableFederation(client FederationClient, serverAuth func(http.Handler) http.Handler) {
	s.fed = client
	s.serverAuth = serverAuth
}

// registerFederation adds the server-server media routes. They are the
// media API's, not the federation component's, so that a split
// deployment routes all media traffic to media instances.
func (s *Service) registerFederation(r chi.Router) {
	if s.serverAuth == nil {
		return
	}
	r.Group(func(r chi.Router) {
		r.Use(s.serverAuth)
		// Spec: server-server §"Content Repository" (v1.11).
		r.Get("/_matrix/federation/v1/media/download/{mediaId}", s.handleFederationDownload)
		r.Get("/_matrix/federation/v1/media/thumbnail/{mediaId}", s.handleFederationThumbnail)
	})
}

// fetchRemote downloads media from its origin server and caches it.
// Concurrent requests for the same file share one download, which is not
// cut short when the first requester goes away.
func (s *Service) fetchRemote(ctx context.Context, serverName, mediaID string) (*storage.Media, error) {
	if s.fed == nil {
		return nil, httputil.NotFound("Media from other servers is not available: federation is disabled on this server")
	}
	v, err, _ := s.flights.Do("remote|"+serverName+"|"+mediaID, func() (any, error) {
		fetchCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), remoteFetchTimeout)
		defer cancel()
		return s.downloadRemote(fetchCtx, serverName, mediaID)
	})
	if err != nil {
		return nil, err
	}
	return v.(*storage.Media), nil
}

func remoteFailed(format string, args ...any) error {
	return httputil.NewError(http.StatusBadGateway, "M_UNKNOWN", format, args...)
}

func (s *Service) remoteTooLarge() error {
	return httputil.NewError(http.StatusBadGateway, "M_TOO_LARGE", "The remote file is larger than this server's limit of %d bytes", s.cfg.Media.MaxUploadBytes)
}

// downloadRemote does the fetch (server-server spec §"GET
// /_matrix/federation/v1/media/download/{mediaId}"): a multipart/mixed
// answer whose first part is JSON metadata and whose second part is the
// file or a Location to fetch it from.
func (s *Service) downloadRemote(ctx context.Context, serverName, mediaID string) (*storage.Media, error) {
	resp, err := s.fed.DownloadMedia(ctx, spec.ServerName(s.serverName), spec.ServerName(serverName), mediaID)
	if err != nil {
		logrus.WithError(err).WithField("server", serverName).Debug("mediaapi: remote download")
		return nil, remoteFailed("Could not fetch the media from %s", serverName)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, storage.ErrNotFound
	case http.StatusGatewayTimeout:
		return nil, notYetUploaded()
	default:
		var e struct {
			ErrCode string `json:"errcode"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&e)
		if e.ErrCode == "M_TOO_LARGE" {
			return nil, s.remoteTooLarge()
		}
		return nil, remoteFailed("%s answered HTTP %d for the media", serverName, resp.StatusCode)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, remoteFailed("%s sent media without a multipart/mixed body", serverName)
	}
	parts := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := parts.NextPart()
	if err != nil {
		return nil, remoteFailed("%s sent a broken multipart body", serverName)
	}
	if _, err := io.Copy(io.Discard, io.LimitReader(meta, 64<<10)); err != nil {
		return nil, remoteFailed("%s sent a broken multipart body", serverName)
	}
	part, err := parts.NextPart()
	if err != nil {
		return nil, remoteFailed("%s sent no media part", serverName)
	}
	var body io.Reader = part
	contentType, disposition := part.Header.Get("Content-Type"), part.Header.Get("Content-Disposition")
	if loc := part.Header.Get("Location"); loc != "" {
		u, err := url.Parse(loc)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, remoteFailed("%s redirected to an unusable location", serverName)
		}
		// Another server chooses this URL: it goes through the same
		// internal-address guard as URL previews.
		redirected, err := s.web.get(ctx, u, "*/*")
		if err != nil {
			logrus.WithError(err).WithField("server", serverName).Debug("mediaapi: remote media redirect")
			return nil, remoteFailed("Could not fetch the media %s redirected to", serverName)
		}
		defer redirected.Body.Close()
		body = redirected.Body
		contentType, disposition = redirected.Header.Get("Content-Type"), redirected.Header.Get("Content-Disposition")
	}
	st, err := s.blobs.Stage(ctx, &limitedReader{r: body, left: s.cfg.Media.MaxUploadBytes})
	if errors.Is(err, errRemoteTooLarge) {
		return nil, s.remoteTooLarge()
	}
	if err != nil {
		return nil, remoteFailed("Could not fetch the media from %s", serverName)
	}
	if mediaType(contentType) == "" || len(contentType) > 255 {
		contentType = "application/octet-stream"
	}
	now := s.now().UnixMilli()
	m := &storage.Media{
		ServerName: serverName, MediaID: mediaID, ContentType: contentType, Filename: dispositionFilename(disposition),
		Size: st.Size(), SHA256: st.Hash(), CreatedTS: now, UploadedTS: now,
	}
	err = s.storeBlob(ctx, st, func(tx *storage.BlobTx) error { return tx.InsertMedia(ctx, m) })
	if errors.Is(err, storage.ErrExists) {
		// Another instance cached it first; use its row.
		return s.db.GetMedia(ctx, serverName, mediaID)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// dispositionFilename takes the file name out of a Content-Disposition
// value (filename* decoded), or "" if there is none we would serve.
func dispositionFilename(v string) string {
	_, params, err := mime.ParseMediaType(v)
	if err != nil || !validFilename(params["filename"]) {
		return ""
	}
	return params["filename"]
}

var errRemoteTooLarge = errors.New("remote media exceeds the size limit")

// limitedReader fails, rather than stopping quietly, past its limit, so
// an oversized file is never stored cut short.
type limitedReader struct {
	r    io.Reader
	left int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, errRemoteTooLarge
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, errRemoteTooLarge
	}
	return n, err
}

// handleFederationDownload is GET /_matrix/federation/v1/media/download/{mediaId}:
// this server's own media for another server.
func (s *Service) handleFederationDownload(w http.ResponseWriter, r *http.Request) {
	m, err := s.findLocalForFederation(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	blob, err := s.blobs.Open(m.SHA256)
	if err != nil {
		httputil.WriteError(w, r, notFoundOr(err))
		return
	}
	defer blob.Close()
	contentType := servedContentType(m.ContentType)
	writeMultipartMedia(w, contentType, contentDisposition(inlineTypes[mediaType(contentType)], m.Filename), blob)
}

// handleFederationThumbnail is GET /_matrix/federation/v1/media/thumbnail/{mediaId}.
func (s *Service) handleFederationThumbnail(w http.ResponseWriter, r *http.Request) {
	req, err := parseThumbnailQuery(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	m, err := s.findLocalForFederation(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	th, err := s.thumbnailFor(r.Context(), m, req)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	defer th.Close()
	writeMultipartMedia(w, th.contentType, th.disposition(), th.content)
}

// findLocalForFederation looks up {mediaId} among this server's own
// media: servers fetch media from its origin, never from a cache.
func (s *Service) findLocalForFederation(r *http.Request) (*storage.Media, error) {
	mediaID := chi.URLParam(r, "mediaId")
	if !ValidMediaID(mediaID) {
		return nil, httputil.InvalidParam("Invalid media ID: only A-Z, a-z, 0-9, '_' and '-' are allowed")
	}
	wait, err := timeoutParam(r)
	if err != nil {
		return nil, err
	}
	return s.lookupMedia(r.Context(), s.serverName, mediaID, wait, false)
}

func notFoundOr(err error) error {
	if errors.Is(err, blobstore.ErrNotFound) {
		return notFound()
	}
	return err
}

// writeMultipartMedia writes the federation media answer: an empty JSON
// metadata part, then the content with its type and disposition.
func writeMultipartMedia(w http.ResponseWriter, contentType, disposition string, content io.Reader) {
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err == nil {
		_, err = io.WriteString(meta, "{}")
	}
	if err == nil {
		var part io.Writer
		part, err = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {contentType}, "Content-Disposition": {disposition}})
		if err == nil {
			_, err = io.Copy(part, content)
		}
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		// The status is sent; all that is left is to stop.
		logrus.WithError(err).Debug("mediaapi: federation media answer cut short")
	}
}
