package storage

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// maxKeysPerQuery bounds the parameters of one SELECT; a KeyRing asks for a
// handful of keys at a time, a notary query for at most a few hundred.
const maxKeysPerQuery = 200

// FetcherName implements gomatrixserverlib.KeyFetcher.
func (d *Database) FetcherName() string { return "federation_server_keys" }

// FetchKeys implements gomatrixserverlib.KeyFetcher (as the KeyRing's
// KeyDatabase): it returns the stored keys among those asked for, whatever
// their validity; the KeyRing decides whether they are fresh enough.
func (d *Database) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	results := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	reqs := make([]gomatrixserverlib.PublicKeyLookupRequest, 0, len(requests))
	for r := range requests {
		reqs = append(reqs, r)
	}
	for len(reqs) > 0 {
		n := min(len(reqs), maxKeysPerQuery)
		chunk := reqs[:n]
		reqs = reqs[n:]
		// (server_name, key_id) pairs as "server_name = $i AND key_id = $i+1"
		// alternatives: row-value IN lists are not in SQLite's older releases.
		var conds []string
		args := make([]any, 0, 2*len(chunk))
		for i, r := range chunk {
			conds = append(conds, fmt.Sprintf("(server_name = $%d AND key_id = $%d)", 2*i+1, 2*i+2))
			args = append(args, string(r.ServerName), string(r.KeyID))
		}
		rows, err := d.db.QueryContext(ctx, `SELECT server_name, key_id, public_key, valid_until_ts, expired_ts
			FROM federation_server_keys WHERE `+strings.Join(conds, " OR "), args...)
		if err != nil {
			return nil, fmt.Errorf("select server keys: %w", err)
		}
		for rows.Next() {
			var server, keyID, pub string
			var validUntil, expired int64
			if err := rows.Scan(&server, &keyID, &pub, &validUntil, &expired); err != nil {
				rows.Close()
				return nil, err
			}
			key, err := base64.RawStdEncoding.DecodeString(pub)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("stored key %s %s: %w", server, keyID, err)
			}
			results[gomatrixserverlib.PublicKeyLookupRequest{ServerName: spec.ServerName(server), KeyID: gomatrixserverlib.KeyID(keyID)}] =
				gomatrixserverlib.PublicKeyLookupResult{
					VerifyKey:    gomatrixserverlib.VerifyKey{Key: key},
					ValidUntilTS: spec.Timestamp(validUntil),
					ExpiredTS:    spec.Timestamp(expired),
				}
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return results, nil
}

// StoreKeys implements gomatrixserverlib.KeyDatabase. A stored key is only
// replaced by a result that tells more: a later valid_until_ts, or that it
// has been retired. A stale answer (say, from a notary's old cache) never
// shortens what is known.
func (d *Database) StoreKeys(ctx context.Context, results map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult) error {
	if len(results) == 0 {
		return nil
	}
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO federation_server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (server_name, key_id) DO UPDATE SET
				public_key = excluded.public_key,
				valid_until_ts = excluded.valid_until_ts,
				expired_ts = excluded.expired_ts
			WHERE (federation_server_keys.expired_ts = 0 AND excluded.expired_ts <> 0)
				OR (excluded.expired_ts = 0 AND federation_server_keys.expired_ts = 0
					AND excluded.valid_until_ts > federation_server_keys.valid_until_ts)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for req, res := range results {
			if _, err := stmt.ExecContext(ctx, string(req.ServerName), string(req.KeyID),
				base64.RawStdEncoding.EncodeToString(res.Key), int64(res.ValidUntilTS), int64(res.ExpiredTS)); err != nil {
				return fmt.Errorf("store key %s %s: %w", req.ServerName, req.KeyID, err)
			}
		}
		return nil
	})
}

// StoreKeyResponse keeps a server's self-signed key response unless one
// valid for longer is already stored.
func (d *Database) StoreKeyResponse(ctx context.Context, serverName spec.ServerName, raw []byte, validUntil spec.Timestamp) error {
	_, err := d.db.ExecContext(ctx, `INSERT INTO federation_server_key_responses (server_name, response_json, valid_until_ts)
		VALUES ($1, $2, $3)
		ON CONFLICT (server_name) DO UPDATE SET response_json = excluded.response_json, valid_until_ts = excluded.valid_until_ts
		WHERE excluded.valid_until_ts >= federation_server_key_responses.valid_until_ts`,
		string(serverName), string(raw), int64(validUntil))
	if err != nil {
		return fmt.Errorf("store key response of %s: %w", serverName, err)
	}
	return nil
}

// KeyResponse returns the stored key response of a server, or ErrNotFound.
func (d *Database) KeyResponse(ctx context.Context, serverName spec.ServerName) ([]byte, spec.Timestamp, error) {
	var raw string
	var validUntil int64
	err := d.db.QueryRowContext(ctx, `SELECT response_json, valid_until_ts FROM federation_server_key_responses WHERE server_name = $1`,
		string(serverName)).Scan(&raw, &validUntil)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("select key response of %s: %w", serverName, err)
	}
	return []byte(raw), spec.Timestamp(validUntil), nil
}

var _ gomatrixserverlib.KeyDatabase = (*Database)(nil)
