// Package storage holds the media API's tables: media metadata (the bytes
// live in the blob store, addressed by SHA-256), cached thumbnails, cached
// URL previews and the moment unauthenticated media was frozen. One SQL
// text serves both SQLite and PostgreSQL.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// Component is the name under which the tables are migrated.
const Component = "mediaapi"

// ErrNotFound is returned for unknown media or cache entries.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when inserting a media ID that is taken.
var ErrExists = errors.New("media ID already exists")

// ErrAlreadyUploaded is returned when content is uploaded to an mxc URI
// that already has content (client-server spec §"PUT
// /_matrix/media/v3/upload/{serverName}/{mediaId}", 409).
var ErrAlreadyUploaded = errors.New("media already uploaded")

// migrations of the media API's schema.
//
// A row of mediaapi_media with uploaded_ts = 0 is an mxc URI reserved by
// POST /_matrix/media/v1/create whose content has not arrived yet; it is
// usable until expires_ts. Blobs are shared between rows with the same
// sha256 (uploads of the same bytes, and thumbnails), so a blob may only go
// when no row names it: both sha256 columns are indexed for that check.
var migrations = []sqlutil.Migration{
	{Version: 1, SQL: `
CREATE TABLE mediaapi_media (
	server_name TEXT NOT NULL,
	media_id TEXT NOT NULL,
	content_type TEXT NOT NULL DEFAULT '',
	filename TEXT NOT NULL DEFAULT '',
	size_bytes BIGINT NOT NULL DEFAULT 0,
	sha256 TEXT NOT NULL DEFAULT '',
	uploader TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL,
	uploaded_ts BIGINT NOT NULL DEFAULT 0,
	expires_ts BIGINT NOT NULL DEFAULT 0,
	quarantined BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (server_name, media_id)
);
CREATE INDEX mediaapi_media_sha256_idx ON mediaapi_media (sha256);
CREATE INDEX mediaapi_media_pending_idx ON mediaapi_media (uploader, uploaded_ts, expires_ts);
CREATE INDEX mediaapi_media_server_created_idx ON mediaapi_media (server_name, created_ts);
CREATE TABLE mediaapi_thumbnails (
	server_name TEXT NOT NULL,
	media_id TEXT NOT NULL,
	width INTEGER NOT NULL,
	height INTEGER NOT NULL,
	method TEXT NOT NULL,
	content_type TEXT NOT NULL,
	size_bytes BIGINT NOT NULL,
	sha256 TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (server_name, media_id, width, height, method)
);
CREATE INDEX mediaapi_thumbnails_sha256_idx ON mediaapi_thumbnails (sha256);
CREATE TABLE mediaapi_url_previews (
	url TEXT PRIMARY KEY,
	fetched_ts BIGINT NOT NULL,
	preview TEXT NOT NULL
);
CREATE INDEX mediaapi_url_previews_fetched_idx ON mediaapi_url_previews (fetched_ts);
CREATE TABLE mediaapi_settings (
	name TEXT PRIMARY KEY,
	value BIGINT NOT NULL
);
`},
}

// DB is the media API's storage.
type DB struct {
	db *sqlutil.DB
}

// Open migrates the tables and returns the storage.
func Open(ctx context.Context, db *sqlutil.DB) (*DB, error) {
	if err := db.Migrate(ctx, Component, migrations); err != nil {
		return nil, fmt.Errorf("migrate %s: %w", Component, err)
	}
	return &DB{db: db}, nil
}

// Media is one mxc:// URI and what is known about its content.
type Media struct {
	ServerName  string
	MediaID     string
	ContentType string
	Filename    string
	Size        int64
	SHA256      string
	// Uploader is the local user who uploaded it; empty for remote media
	// and for files the server fetched itself (URL preview images).
	Uploader string
	// CreatedTS is when the URI was made (or a remote file was cached),
	// in milliseconds since the epoch.
	CreatedTS int64
	// UploadedTS is when the content arrived; 0 while an asynchronous
	// upload is pending.
	UploadedTS int64
	// ExpiresTS ends a pending upload's reservation.
	ExpiresTS   int64
	Quarantined bool
}

// Uploaded says whether the content is there.
func (m *Media) Uploaded() bool { return m.UploadedTS != 0 }

const mediaColumns = `server_name, media_id, content_type, filename, size_bytes, sha256, uploader, created_ts, uploaded_ts, expires_ts, quarantined`

// InsertMedia stores a new media row; ErrExists if the ID is taken.
func (d *DB) InsertMedia(ctx context.Context, m *Media) error {
	_, err := d.db.ExecContext(ctx, `INSERT INTO mediaapi_media (`+mediaColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		m.ServerName, m.MediaID, m.ContentType, m.Filename, m.Size, m.SHA256, m.Uploader,
		m.CreatedTS, m.UploadedTS, m.ExpiresTS, m.Quarantined)
	if sqlutil.IsUniqueViolation(err) {
		return ErrExists
	}
	if err != nil {
		return fmt.Errorf("insert media %s/%s: %w", m.ServerName, m.MediaID, err)
	}
	return nil
}

// GetMedia returns one media row or ErrNotFound.
func (d *DB) GetMedia(ctx context.Context, serverName, mediaID string) (*Media, error) {
	var m Media
	err := d.db.QueryRowContext(ctx, `SELECT `+mediaColumns+` FROM mediaapi_media
		WHERE server_name = $1 AND media_id = $2`, serverName, mediaID).
		Scan(&m.ServerName, &m.MediaID, &m.ContentType, &m.Filename, &m.Size, &m.SHA256, &m.Uploader,
			&m.CreatedTS, &m.UploadedTS, &m.ExpiresTS, &m.Quarantined)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get media %s/%s: %w", serverName, mediaID, err)
	}
	return &m, nil
}

// CountPending counts the user's reserved, not yet uploaded, unexpired
// mxc URIs.
func (d *DB) CountPending(ctx context.Context, uploader string, now int64) (int, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM mediaapi_media
		WHERE uploader = $1 AND uploaded_ts = 0 AND expires_ts > $2`, uploader, now).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count pending uploads: %w", err)
	}
	return n, nil
}

// CompleteUpload fills in the content of a pending mxc URI. It returns
// ErrAlreadyUploaded if content arrived first by another request.
func (d *DB) CompleteUpload(ctx context.Context, m *Media) error {
	res, err := d.db.ExecContext(ctx, `UPDATE mediaapi_media
		SET content_type = $3, filename = $4, size_bytes = $5, sha256 = $6, uploaded_ts = $7
		WHERE server_name = $1 AND media_id = $2 AND uploaded_ts = 0`,
		m.ServerName, m.MediaID, m.ContentType, m.Filename, m.Size, m.SHA256, m.UploadedTS)
	if err != nil {
		return fmt.Errorf("complete upload %s/%s: %w", m.ServerName, m.MediaID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return ErrAlreadyUploaded
	}
	return nil
}

// SetQuarantined marks media as quarantined (or not); ErrNotFound if unknown.
func (d *DB) SetQuarantined(ctx context.Context, serverName, mediaID string, quarantined bool) error {
	res, err := d.db.ExecContext(ctx, `UPDATE mediaapi_media SET quarantined = $3
		WHERE server_name = $1 AND media_id = $2`, serverName, mediaID, quarantined)
	if err != nil {
		return fmt.Errorf("quarantine %s/%s: %w", serverName, mediaID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteMedia removes a media row and its thumbnails and returns the blob
// hashes they named (which may now be unused); ErrNotFound if unknown.
func (d *DB) DeleteMedia(ctx context.Context, serverName, mediaID string) ([]string, error) {
	var hashes []string
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		hashes = nil
		var hash string
		err := tx.QueryRowContext(ctx, `DELETE FROM mediaapi_media WHERE server_name = $1 AND media_id = $2
			RETURNING sha256`, serverName, mediaID).Scan(&hash)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if hash != "" {
			hashes = append(hashes, hash)
		}
		rows, err := tx.QueryContext(ctx, `DELETE FROM mediaapi_thumbnails WHERE server_name = $1 AND media_id = $2
			RETURNING sha256`, serverName, mediaID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if err := rows.Scan(&hash); err != nil {
				return err
			}
			hashes = append(hashes, hash)
		}
		return rows.Err()
	})
	if errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("delete media %s/%s: %w", serverName, mediaID, err)
	}
	return hashes, nil
}

// BlobInUse says whether any media or thumbnail row names the hash.
func (d *DB) BlobInUse(ctx context.Context, hash string) (bool, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM mediaapi_media WHERE sha256 = $1) +
		(SELECT COUNT(*) FROM mediaapi_thumbnails WHERE sha256 = $1)`, hash).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("check blob %s: %w", hash, err)
	}
	return n > 0, nil
}

// ListRemoteMediaBefore returns up to limit IDs of media from servers other
// than localServer cached before the given time, oldest first.
func (d *DB) ListRemoteMediaBefore(ctx context.Context, localServer string, before int64, limit int) ([][2]string, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT server_name, media_id FROM mediaapi_media
		WHERE server_name <> $1 AND created_ts < $2 ORDER BY created_ts LIMIT $3`, localServer, before, limit)
	if err != nil {
		return nil, fmt.Errorf("list remote media: %w", err)
	}
	defer rows.Close()
	var ids [][2]string
	for rows.Next() {
		var id [2]string
		if err := rows.Scan(&id[0], &id[1]); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// DeleteExpiredPending removes reservations whose upload never came.
func (d *DB) DeleteExpiredPending(ctx context.Context, now int64) (int64, error) {
	res, err := d.db.ExecContext(ctx, `DELETE FROM mediaapi_media WHERE uploaded_ts = 0 AND expires_ts <= $1`, now)
	if err != nil {
		return 0, fmt.Errorf("delete expired reservations: %w", err)
	}
	return res.RowsAffected()
}

// Thumbnail is a cached thumbnail of one media file at one requested size
// and method.
type Thumbnail struct {
	ServerName  string
	MediaID     string
	Width       int
	Height      int
	Method      string
	ContentType string
	Size        int64
	SHA256      string
	CreatedTS   int64
}

// GetThumbnail returns a cached thumbnail or ErrNotFound.
func (d *DB) GetThumbnail(ctx context.Context, serverName, mediaID string, width, height int, method string) (*Thumbnail, error) {
	t := Thumbnail{ServerName: serverName, MediaID: mediaID, Width: width, Height: height, Method: method}
	err := d.db.QueryRowContext(ctx, `SELECT content_type, size_bytes, sha256, created_ts FROM mediaapi_thumbnails
		WHERE server_name = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5`,
		serverName, mediaID, width, height, method).Scan(&t.ContentType, &t.Size, &t.SHA256, &t.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get thumbnail: %w", err)
	}
	return &t, nil
}

// InsertThumbnail caches a thumbnail. If another request cached the same
// one first, that one is kept.
func (d *DB) InsertThumbnail(ctx context.Context, t *Thumbnail) error {
	_, err := d.db.ExecContext(ctx, `INSERT INTO mediaapi_thumbnails
		(server_name, media_id, width, height, method, content_type, size_bytes, sha256, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (server_name, media_id, width, height, method) DO NOTHING`,
		t.ServerName, t.MediaID, t.Width, t.Height, t.Method, t.ContentType, t.Size, t.SHA256, t.CreatedTS)
	if err != nil {
		return fmt.Errorf("insert thumbnail: %w", err)
	}
	return nil
}

// CountThumbnails counts the cached thumbnails of one media file.
func (d *DB) CountThumbnails(ctx context.Context, serverName, mediaID string) (int, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM mediaapi_thumbnails WHERE server_name = $1 AND media_id = $2`,
		serverName, mediaID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count thumbnails: %w", err)
	}
	return n, nil
}

// GetPreview returns a cached URL preview (JSON) fetched at or after
// notBefore, or ErrNotFound.
func (d *DB) GetPreview(ctx context.Context, url string, notBefore int64) (string, error) {
	var preview string
	err := d.db.QueryRowContext(ctx, `SELECT preview FROM mediaapi_url_previews WHERE url = $1 AND fetched_ts >= $2`,
		url, notBefore).Scan(&preview)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("get preview: %w", err)
	}
	return preview, nil
}

// PutPreview caches a URL preview, replacing an older one.
func (d *DB) PutPreview(ctx context.Context, url string, fetchedTS int64, preview string) error {
	_, err := d.db.ExecContext(ctx, `INSERT INTO mediaapi_url_previews (url, fetched_ts, preview) VALUES ($1, $2, $3)
		ON CONFLICT (url) DO UPDATE SET fetched_ts = excluded.fetched_ts, preview = excluded.preview`,
		url, fetchedTS, preview)
	if err != nil {
		return fmt.Errorf("put preview: %w", err)
	}
	return nil
}

// DeletePreviewsBefore drops cached previews fetched before the time.
func (d *DB) DeletePreviewsBefore(ctx context.Context, before int64) error {
	if _, err := d.db.ExecContext(ctx, `DELETE FROM mediaapi_url_previews WHERE fetched_ts < $1`, before); err != nil {
		return fmt.Errorf("delete old previews: %w", err)
	}
	return nil
}

// FreezeTime returns when unauthenticated media was first frozen,
// recording now if this is the first time. Every instance sharing the
// database sees the same moment.
func (d *DB) FreezeTime(ctx context.Context, now int64) (int64, error) {
	if _, err := d.db.ExecContext(ctx, `INSERT INTO mediaapi_settings (name, value) VALUES ('legacy_frozen_ts', $1)
		ON CONFLICT (name) DO NOTHING`, now); err != nil {
		return 0, fmt.Errorf("record freeze time: %w", err)
	}
	var ts int64
	if err := d.db.QueryRowContext(ctx, `SELECT value FROM mediaapi_settings WHERE name = 'legacy_frozen_ts'`).Scan(&ts); err != nil {
		return 0, fmt.Errorf("read freeze time: %w", err)
	}
	return ts, nil
}
