package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/mediaapi/blobstore"
	"github.com/parley-chat/parley/mediaapi/storage"
)

// maxCachedThumbnails bounds the thumbnails stored per media file: sizes
// are free-form, so beyond this they are made on demand and not kept,
// and nobody can fill the disk by asking for every size.
const maxCachedThumbnails = 16

// thumbnailRequest holds the parsed query of a thumbnail request.
type thumbnailRequest struct {
	width, height int
	method        string
	animated      bool
}

// parseThumbnailQuery reads width, height, method and animated (client-
// server spec §"GET /_matrix/client/v1/media/thumbnail"). Sizes above
// maxThumbnailSide are clamped.
func parseThumbnailQuery(r *http.Request) (thumbnailRequest, error) {
	q := r.URL.Query()
	var t thumbnailRequest
	for _, p := range []struct {
		name string
		dst  *int
	}{{"width", &t.width}, {"height", &t.height}} {
		v := q.Get(p.name)
		if v == "" {
			return t, httputil.MissingParam("%s is required", p.name)
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return t, httputil.InvalidParam("%s must be a positive integer", p.name)
		}
		*p.dst = int(min(n, maxThumbnailSide))
	}
	switch t.method = q.Get("method"); t.method {
	case "":
		t.method = "scale"
	case "crop", "scale":
	default:
		return t, httputil.InvalidParam("method must be crop or scale")
	}
	switch v := q.Get("animated"); v {
	case "", "false":
	case "true":
		t.animated = true
	default:
		return t, httputil.InvalidParam("animated must be true or false")
	}
	return t, nil
}

// handleThumbnail is GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}.
func (s *Service) handleThumbnail(w http.ResponseWriter, r *http.Request) {
	s.serveThumbnail(w, r, false)
}

// handleLegacyThumbnail is the deprecated, unauthenticated
// GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}.
func (s *Service) handleLegacyThumbnail(w http.ResponseWriter, r *http.Request) {
	s.serveThumbnail(w, r, true)
}

func (s *Service) serveThumbnail(w http.ResponseWriter, r *http.Request, legacy bool) {
	req, err := parseThumbnailQuery(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	m, err := s.findMedia(r, legacy)
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
	h := w.Header()
	h.Set("Content-Type", th.contentType)
	h.Set("Content-Disposition", th.disposition())
	http.ServeContent(w, r, "", th.modified, th.content)
}

// thumbnailContent is a thumbnail ready to send.
type thumbnailContent struct {
	contentType string
	modified    time.Time
	content     io.ReadSeeker
	closer      io.Closer
}

func (t *thumbnailContent) Close() {
	if t.closer != nil {
		t.closer.Close()
	}
}

// disposition is always inline with a file name (client-server spec
// v1.12: thumbnails MUST be inline and SHOULD carry a file name).
func (t *thumbnailContent) disposition() string {
	return contentDisposition(true, "thumbnail."+strings.TrimPrefix(t.contentType, "image/"))
}

// thumbnailFor answers from the cache, with the original (when it is no
// larger than asked, or animated and animation was asked for), or by
// making one. The caller closes the result.
func (s *Service) thumbnailFor(ctx context.Context, m *storage.Media, req thumbnailRequest) (*thumbnailContent, error) {
	if th, err := s.db.GetThumbnail(ctx, m.ServerName, m.MediaID, req.width, req.height, req.method); err == nil {
		blob, err := s.blobs.Open(th.SHA256)
		if err == nil {
			return &thumbnailContent{contentType: th.ContentType, modified: time.UnixMilli(th.CreatedTS), content: blob, closer: blob}, nil
		}
		if !errors.Is(err, blobstore.ErrNotFound) {
			return nil, err
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}

	blob, err := s.blobs.Open(m.SHA256)
	if errors.Is(err, blobstore.ErrNotFound) {
		return nil, notFound()
	}
	if err != nil {
		return nil, err
	}
	keep := false
	defer func() {
		if !keep {
			blob.Close()
		}
	}()
	info, err := probeImage(blob)
	if errors.Is(err, errNotImage) {
		return nil, cannotThumbnail()
	}
	if err != nil {
		return nil, err
	}
	if int64(info.width)*int64(info.height) > s.cfg.Media.MaxThumbnailPixels {
		if m.ServerName != s.serverName {
			// Spec: remote content too large to thumbnail is a 502.
			return nil, httputil.NewError(http.StatusBadGateway, "M_TOO_LARGE", "The remote image is too large to thumbnail")
		}
		return nil, httputil.TooLarge("The image is too large to thumbnail")
	}
	modified := time.UnixMilli(m.UploadedTS)
	w, h := info.displaySize()
	small := w <= req.width && h <= req.height
	// Spec: the original goes out when it is no larger than asked, and an
	// animated original when animation was asked for; an animated image
	// must never go out when it was not asked for.
	if (req.animated && info.animated) || (small && !info.animated) {
		if _, err := blob.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		keep = true
		return &thumbnailContent{contentType: info.contentType(), modified: modified, content: blob, closer: blob}, nil
	}

	key := fmt.Sprintf("thumb|%s|%s|%d|%d|%s", m.ServerName, m.MediaID, req.width, req.height, req.method)
	// Concurrent requests for the same thumbnail share one decode, which
	// therefore must not die with the first requester's connection.
	v, err, _ := s.flights.Do(key, func() (any, error) {
		genCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		return s.generateThumbnail(genCtx, m, info, req)
	})
	if err != nil {
		return nil, err
	}
	th := v.(*generatedThumbnail)
	return &thumbnailContent{contentType: th.contentType, modified: modified, content: bytes.NewReader(th.data)}, nil
}

type generatedThumbnail struct {
	data        []byte
	contentType string
}

// generateThumbnail decodes and resizes the original, at most one decode
// per CPU at a time, and caches the result unless the media already has
// maxCachedThumbnails.
func (s *Service) generateThumbnail(ctx context.Context, m *storage.Media, info imageInfo, req thumbnailRequest) (*generatedThumbnail, error) {
	select {
	case s.thumbSlots <- struct{}{}:
		defer func() { <-s.thumbSlots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	blob, err := s.blobs.Open(m.SHA256)
	if err != nil {
		return nil, err
	}
	defer blob.Close()
	data, contentType, err := makeThumbnail(blob, info, req.width, req.height, req.method)
	if errors.Is(err, errNotImage) {
		return nil, cannotThumbnail()
	}
	if err != nil {
		return nil, err
	}
	th := &generatedThumbnail{data: data, contentType: contentType}
	if n, err := s.db.CountThumbnails(ctx, m.ServerName, m.MediaID); err != nil || n >= maxCachedThumbnails {
		return th, err
	}
	if err := s.cacheThumbnail(ctx, m, req, th); err != nil {
		// The thumbnail is still good to send; it is made again next time.
		logrus.WithError(err).Warn("mediaapi: cache thumbnail")
	}
	return th, nil
}

func (s *Service) cacheThumbnail(ctx context.Context, m *storage.Media, req thumbnailRequest, th *generatedThumbnail) error {
	st, err := s.blobs.Stage(ctx, bytes.NewReader(th.data))
	if err != nil {
		return err
	}
	row := &storage.Thumbnail{
		ServerName: m.ServerName, MediaID: m.MediaID, Width: req.width, Height: req.height, Method: req.method,
		ContentType: th.contentType, Size: st.Size(), SHA256: st.Hash(), CreatedTS: s.now().UnixMilli(),
	}
	err = s.storeBlob(ctx, st, func(tx *storage.BlobTx) error { return tx.InsertThumbnail(ctx, row) })
	if errors.Is(err, storage.ErrExists) {
		return nil // another request cached it first
	}
	return err
}

func cannotThumbnail() error {
	return httputil.NewError(http.StatusBadRequest, "M_UNKNOWN", "Cannot generate thumbnails for the requested content")
}
