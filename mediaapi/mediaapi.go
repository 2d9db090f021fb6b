// Package mediaapi is Parley's media repository (client-server spec
// §"Content repository"): uploads, authenticated and legacy downloads,
// thumbnails, URL previews, and the admin operations to delete and
// quarantine media.
//
// Metadata lives in this component's tables; the bytes live in a
// content-addressed blob store (package blobstore), so identical files are
// stored once and any number of instances can serve one shared directory.
package mediaapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/singleflight"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/mediaapi/blobstore"
	"github.com/parley-chat/parley/mediaapi/storage"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// ErrNotFound is returned by the admin methods for unknown media.
var ErrNotFound = storage.ErrNotFound

const (
	// pendingUploadLifetime is how long an mxc URI from POST
	// /_matrix/media/v1/create waits for its content: the spec's
	// recommended 24 hours.
	pendingUploadLifetime = 24 * time.Hour
	// maxPendingUploads bounds a user's unexpired, still empty mxc URIs
	// (client-server spec §"POST /_matrix/media/v1/create" asks servers to
	// limit them).
	maxPendingUploads = 50
	// maxWaitForUpload caps timeout_ms on downloads of pending media.
	maxWaitForUpload = 60 * time.Second
	// Per-user rates of URL previews that need a fetch, and of
	// POST /_matrix/media/v1/create, with their bursts.
	previewsPerSecond, previewBurst = 1, 30
	createsPerSecond, createBurst   = 5, 100
	// janitorInterval is how often expired reservations and stale
	// previews are removed.
	janitorInterval = time.Hour
)

// Service is the media repository.
type Service struct {
	cfg        *config.Config
	serverName string
	db         *storage.DB
	blobs      blobstore.Store
	users      userapi.UserAPI
	web        *webFetcher
	// fed fetches other servers' media; nil without federation.
	fed FederationClient
	// serverAuth verifies X-Matrix signatures on the federation routes.
	serverAuth func(http.Handler) http.Handler
	// frozenTS is when unauthenticated media was frozen (0: not frozen);
	// the legacy endpoints serve only media uploaded before it.
	frozenTS int64

	// previewLimit and createLimit bound, per user, the two requests that
	// cost the server more than the client: fetching pages on the user's
	// behalf and reserving mxc URIs (which the spec asks to rate-limit).
	// nil, no limit, when rate_limits.enabled is off.
	previewLimit *httputil.RateLimiter
	createLimit  *httputil.RateLimiter

	// thumbSlots bounds concurrent thumbnail decodes (CPU and memory).
	thumbSlots chan struct{}
	flights    singleflight.Group

	now  func() time.Time
	stop chan struct{}
	wg   sync.WaitGroup
}

// Open migrates the media tables, opens the blob store under dataDir and
// starts the janitor that expires unused reservations.
func Open(ctx context.Context, db *sqlutil.DB, cfg *config.Config, dataDir string, users userapi.UserAPI) (*Service, error) {
	store, err := storage.Open(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("mediaapi storage: %w", err)
	}
	blobs, err := blobstore.NewFS(config.Path(dataDir, cfg.Media.StoreDir))
	if err != nil {
		return nil, err
	}
	web, err := newWebFetcher(cfg.Media.URLPreviewAllowPrivate)
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg:        cfg,
		serverName: cfg.ServerName,
		db:         store,
		blobs:      blobs,
		users:      users,
		web:        web,
		thumbSlots: make(chan struct{}, runtime.NumCPU()),
		now:        time.Now,
		stop:       make(chan struct{}),
	}
	if cfg.RateLimits.Enabled {
		s.previewLimit = httputil.NewRateLimiter(previewsPerSecond, previewBurst)
		s.createLimit = httputil.NewRateLimiter(createsPerSecond, createBurst)
	}
	if cfg.Media.LegacyUnauthenticatedFrozen {
		if s.frozenTS, err = store.FreezeTime(ctx, s.now().UnixMilli()); err != nil {
			return nil, err
		}
	}
	s.wg.Add(1)
	go s.janitor()
	return s, nil
}

// Close stops the janitor.
func (s *Service) Close() {
	close(s.stop)
	s.wg.Wait()
}

// Register adds the media routes. Spec: client-server §"Content
// repository"; upload and create keep their /_matrix/media paths, the
// downloads moved under /_matrix/client/v1/media in v1.11.
func (s *Service) Register(r chi.Router) {
	auth := httputil.RequireAuth(s.users)
	legacy := s.cfg.Media.AllowLegacyUnauthenticated
	r.Group(func(r chi.Router) {
		r.Use(safeHeaders)
		r.Group(func(r chi.Router) {
			r.Use(auth)
			r.Get("/_matrix/client/v1/media/download/{serverName}/{mediaId}", s.handleDownload)
			r.Get("/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}", s.handleDownload)
			r.Get("/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}", s.handleThumbnail)
			r.Get("/_matrix/client/v1/media/preview_url", s.handlePreviewURL)
			r.Get("/_matrix/client/v1/media/config", s.handleConfig)
			r.Post("/_matrix/media/v3/upload", s.handleUpload)
			r.Put("/_matrix/media/v3/upload/{serverName}/{mediaId}", s.handleUploadTo)
			r.Post("/_matrix/media/v1/create", s.handleCreate)
			if legacy {
				// Deprecated in v1.11; these two always needed a token.
				// r0 is the pre-v1.1 name of v3, still used by old clients.
				for _, v := range []string{"v3", "r0"} {
					r.Get("/_matrix/media/"+v+"/preview_url", s.handlePreviewURL)
					r.Get("/_matrix/media/"+v+"/config", s.handleConfig)
				}
				r.Post("/_matrix/media/r0/upload", s.handleUpload)
			}
			r.Group(func(r chi.Router) {
				r.Use(requireAdmin)
				r.Post("/_parley/admin/v1/media/{serverName}/{mediaId}/quarantine", s.handleAdminQuarantine)
				r.Delete("/_parley/admin/v1/media/{serverName}/{mediaId}", s.handleAdminDelete)
			})
		})
		if legacy {
			// Deprecated, unauthenticated, subject to the freeze.
			for _, v := range []string{"v3", "r0"} {
				r.Get("/_matrix/media/"+v+"/download/{serverName}/{mediaId}", s.handleLegacyDownload)
				r.Get("/_matrix/media/"+v+"/download/{serverName}/{mediaId}/{fileName}", s.handleLegacyDownload)
				r.Get("/_matrix/media/"+v+"/thumbnail/{serverName}/{mediaId}", s.handleLegacyThumbnail)
			}
		}
		s.registerFederation(r)
	})
}

// QuarantineMedia hides media from every download and thumbnail endpoint
// without deleting it; ErrNotFound if unknown.
func (s *Service) QuarantineMedia(ctx context.Context, serverName, mediaID string) error {
	return s.db.SetQuarantined(ctx, serverName, mediaID, true)
}

// DeleteMedia removes media, its thumbnails, and their bytes unless other
// media share them; ErrNotFound if unknown.
func (s *Service) DeleteMedia(ctx context.Context, serverName, mediaID string) error {
	return s.db.DeleteMedia(ctx, serverName, mediaID, s.blobs.Delete)
}

// PurgeRemoteCache deletes media cached from other servers longer ago than
// olderThan, with their thumbnails and unshared bytes, and returns how
// many files went. A later request fetches them again.
func (s *Service) PurgeRemoteCache(ctx context.Context, olderThan time.Duration) (int, error) {
	before := s.now().Add(-olderThan).UnixMilli()
	purged := 0
	for {
		ids, err := s.db.ListRemoteMediaBefore(ctx, s.serverName, before, 500)
		if err != nil {
			return purged, err
		}
		if len(ids) == 0 {
			return purged, nil
		}
		for _, id := range ids {
			err := s.DeleteMedia(ctx, id[0], id[1])
			if errors.Is(err, storage.ErrNotFound) {
				continue // deleted by someone else meanwhile
			}
			if err != nil {
				return purged, err
			}
			purged++
		}
	}
}

// storeBlob records a staged blob and the rows naming it (added by fn)
// and puts the file in place, all under the blob's database lock; on
// failure the staged file is dropped.
func (s *Service) storeBlob(ctx context.Context, st blobstore.Staged, fn func(tx *storage.BlobTx) error) error {
	err := s.db.WithBlob(ctx, st.Hash(), s.now().UnixMilli(), fn, st.Commit)
	if err != nil {
		st.Discard()
	}
	return err
}

// janitor removes expired reservations and stale URL previews.
func (s *Service) janitor() {
	defer s.wg.Done()
	t := time.NewTicker(janitorInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		now := s.now()
		if _, err := s.db.DeleteExpiredPending(ctx, now.UnixMilli()); err != nil {
			logrus.WithError(err).Warn("mediaapi: expire reservations")
		}
		if err := s.db.DeletePreviewsBefore(ctx, now.Add(-previewCacheTTL).UnixMilli()); err != nil {
			logrus.WithError(err).Warn("mediaapi: expire URL previews")
		}
		cancel()
	}
}
