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
	"slices"

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
	// One row per stored blob. Its row lock orders, across instances,
	// "add a row naming this blob and put the file in place" against
	// "delete the last row naming it and remove the file" (see WithBlob
	// and DeleteMedia).
	{Version: 2, SQL: `
CREATE TABLE mediaapi_blobs (
	sha256 TEXT PRIMARY KEY,
	created_ts BIGINT NOT NULL
);
INSERT INTO mediaapi_blobs (sha256, created_ts)
	SELECT DISTINCT sha256, 0 FROM mediaapi_media WHERE sha256 <> ''
	ON CONFLICT (sha256) DO NOTHING;
INSERT INTO mediaapi_blobs (sha256, created_ts)
	SELECT DISTINCT sha256, 0 FROM mediaapi_thumbnails WHERE TRUE
	ON CONFLICT (sha256) DO NOTHING;
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

// querier is what *sql.DB and *sql.Tx share.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// InsertMedia stores a new media row without content (a reservation for
// an asynchronous upload); ErrExists if the ID is taken. Rows with
// content are added through WithBlob.
func (d *DB) InsertMedia(ctx context.Context, m *Media) error {
	return insertMedia(ctx, d.db, m)
}

func insertMedia(ctx context.Context, q querier, m *Media) error {
	_, err := q.ExecContext(ctx, `INSERT INTO mediaapi_media (`+mediaColumns+`)
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

// BlobTx is a transaction that holds the lock on one blob's row; its
// methods add the rows that name the blob.
type BlobTx struct {
	tx *sql.Tx
}

// InsertMedia stores a new media row; ErrExists if the ID is taken.
func (t *BlobTx) InsertMedia(ctx context.Context, m *Media) error {
	return insertMedia(ctx, t.tx, m)
}

// CompleteUpload fills in the content of a pending mxc URI. It returns
// ErrAlreadyUploaded if content arrived first by another request.
func (t *BlobTx) CompleteUpload(ctx context.Context, m *Media) error {
	res, err := t.tx.ExecContext(ctx, `UPDATE mediaapi_media
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

// DeleteMedia removes a media row and its thumbnails and calls
// removeFile for each blob that no row names any more, inside the
// transaction and under the blob row's lock (see WithBlob); ErrNotFound if
// the media is unknown. Should the commit fail after a file went, the
// rows come back without their bytes: they were being deleted anyway.
func (d *DB) DeleteMedia(ctx context.Context, serverName, mediaID string, removeFile func(hash string) error) error {
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var hash string
		err := tx.QueryRowContext(ctx, `DELETE FROM mediaapi_media WHERE server_name = $1 AND media_id = $2
			RETURNING sha256`, serverName, mediaID).Scan(&hash)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		hashes := map[string]bool{}
		if hash != "" {
			hashes[hash] = true
		}
		rows, err := tx.QueryContext(ctx, `DELETE FROM mediaapi_thumbnails WHERE server_name = $1 AND media_id = $2
			RETURNING sha256`, serverName, mediaID)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := rows.Scan(&hash); err != nil {
				rows.Close()
				return err
			}
			hashes[hash] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// A fixed order, so two deletes sharing blobs cannot deadlock.
		sorted := make([]string, 0, len(hashes))
		for h := range hashes {
			sorted = append(sorted, h)
		}
		slices.Sort(sorted)
		for _, h := range sorted {
			if err := releaseBlob(ctx, tx, h, removeFile); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return err
	}
	if err != nil {
		return fmt.Errorf("delete media %s/%s: %w", serverName, mediaID, err)
	}
	return nil
}

// releaseBlob removes a blob no row names. The UPDATE takes the blob
// row's lock first (waiting for a WithBlob in progress to commit), so the
// count that follows, a new statement, sees that transaction's rows.
func releaseBlob(ctx context.Context, tx *sql.Tx, hash string, removeFile func(string) error) error {
	if _, err := tx.ExecContext(ctx, `UPDATE mediaapi_blobs SET created_ts = created_ts WHERE sha256 = $1`, hash); err != nil {
		return err
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM mediaapi_media WHERE sha256 = $1) +
		(SELECT COUNT(*) FROM mediaapi_thumbnails WHERE sha256 = $1)`, hash).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM mediaapi_blobs WHERE sha256 = $1`, hash); err != nil {
		return err
	}
	return removeFile(hash)
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
// one first, that one is kept and ErrExists returned.
func (t *BlobTx) InsertThumbnail(ctx context.Context, th *Thumbnail) error {
	res, err := t.tx.ExecContext(ctx, `INSERT INTO mediaapi_thumbnails
		(server_name, media_id, width, height, method, content_type, size_bytes, sha256, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (server_name, media_id, width, height, method) DO NOTHING`,
		th.ServerName, th.MediaID, th.Width, th.Height, th.Method, th.ContentType, th.Size, th.SHA256, th.CreatedTS)
	if err != nil {
		return fmt.Errorf("insert thumbnail: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return ErrExists
	}
	return nil
}

// WithBlob records the blob hash as stored and, in the same transaction
// while holding the lock on the blob's row, runs fn (which adds the rows
// naming it) and then placeFile (which makes the bytes readable). If
// either fails nothing is recorded. Because DeleteMedia removes a file
// only under the same lock, after checking that no row names it, a file
// placed here is never removed by a delete that raced with it, on this
// instance or another.
func (d *DB) WithBlob(ctx context.Context, hash string, now int64, fn func(tx *BlobTx) error, placeFile func() error) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		// ON CONFLICT DO UPDATE locks an existing row (PostgreSQL); SQLite
		// transactions here lock the whole database at BEGIN.
		if _, err := tx.ExecContext(ctx, `INSERT INTO mediaapi_blobs (sha256, created_ts) VALUES ($1, $2)
			ON CONFLICT (sha256) DO UPDATE SET created_ts = mediaapi_blobs.created_ts`, hash, now); err != nil {
			return fmt.Errorf("record blob %s: %w", hash, err)
		}
		if err := fn(&BlobTx{tx: tx}); err != nil {
			return err
		}
		return placeFile()
	})
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
