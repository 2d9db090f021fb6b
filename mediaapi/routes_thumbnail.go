package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
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
	if err := s.thumbnail(w, r, m, req); err != nil {
		httputil.WriteError(w, r, err)
	}
}

// thumbnail answers from the cache, with the original (when it is small
// enough, or animated and animation was asked for), or by making one.
func (s *Service) thumbnail(w http.ResponseWriter, r *http.Request, m *storage.Media, req thumbnailRequest) error {
	ctx := r.Context()
	if th, err := s.db.GetThumbnail(ctx, m.ServerName, m.MediaID, req.width, req.height, req.method); err == nil {
		blob, err := s.blobs.Open(th.SHA256)
		if err == nil {
			defer blob.Close()
			serveThumbnailBytes(w, r, th.ContentType, time.UnixMilli(th.CreatedTS), blob)
			return nil
		}
		if !errors.Is(err, blobstore.ErrNotFound) {
			return err
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}

	blob, err := s.blobs.Open(m.SHA256)
	if errors.Is(err, blobstore.ErrNotFound) {
		return notFound()
	}
	if err != nil {
		return err
	}
	defer blob.Close()
	info, err := probeImage(blob)
	if errors.Is(err, errNotImage) {
		return cannotThumbnail()
	}
	if err != nil {
		return err
	}
	if int64(info.width)*int64(info.height) > s.cfg.Media.MaxThumbnailPixels {
		return httputil.TooLarge("The image is too large to thumbnail")
	}
	modified := time.UnixMilli(m.UploadedTS)
	small := info.width <= req.width && info.height <= req.height
	// Spec: the original goes out when it is no larger than asked, and an
	// animated original when animation was asked for; an animated image
	// must never go out when it was not asked for.
	if (req.animated && info.animated) || (small && !info.animated) {
		if _, err := blob.Seek(0, io.SeekStart); err != nil {
			return err
		}
		serveThumbnailBytes(w, r, info.contentType(), modified, blob)
		return nil
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
		return err
	}
	th := v.(*generatedThumbnail)
	serveThumbnailBytes(w, r, th.contentType, modified, bytes.NewReader(th.data))
	return nil
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
	hash, size, err := s.blobs.Put(ctx, bytes.NewReader(th.data))
	if err != nil {
		return err
	}
	row := &storage.Thumbnail{
		ServerName: m.ServerName, MediaID: m.MediaID, Width: req.width, Height: req.height, Method: req.method,
		ContentType: th.contentType, Size: size, SHA256: hash, CreatedTS: s.now().UnixMilli(),
	}
	return s.useBlob(hash, func() error { return s.db.InsertThumbnail(ctx, row) })
}

func cannotThumbnail() error {
	return httputil.NewError(http.StatusBadRequest, "M_UNKNOWN", "Cannot generate thumbnails for the requested content")
}

// serveThumbnailBytes sends a thumbnail inline (client-server spec v1.12:
// thumbnails MUST be inline and SHOULD carry a file name).
func serveThumbnailBytes(w http.ResponseWriter, r *http.Request, contentType string, modified time.Time, content io.ReadSeeker) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	ext := contentType[len("image/"):]
	h.Set("Content-Disposition", contentDisposition(true, "thumbnail."+ext))
	http.ServeContent(w, r, "", modified, content)
}
