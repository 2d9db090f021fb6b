package storage

import (
	"context"
	"database/sql"
	"errors"

	"github.com/parley-chat/parley/internal/sqlutil"
)

var inList = sqlutil.InList

// InsertAlias maps alias to roomID; ErrAliasExists if it is taken.
func (d *Database) InsertAlias(ctx context.Context, alias, roomID, creator string) error {
	_, err := d.DB.ExecContext(ctx, `INSERT INTO roomserver_aliases (alias, room_id, creator) VALUES ($1, $2, $3)`, alias, roomID, creator)
	if sqlutil.IsUniqueViolation(err) {
		return ErrAliasExists
	}
	return err
}

// SelectAlias returns the room and creator of an alias; found is false if
// there is no such alias.
func (d *Database) SelectAlias(ctx context.Context, alias string) (roomID, creator string, found bool, err error) {
	err = d.DB.QueryRowContext(ctx, `SELECT room_id, creator FROM roomserver_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", false, nil
	}
	return roomID, creator, err == nil, err
}

// DeleteAlias removes an alias; it reports whether one was removed.
func (d *Database) DeleteAlias(ctx context.Context, alias string) (bool, error) {
	res, err := d.DB.ExecContext(ctx, `DELETE FROM roomserver_aliases WHERE alias = $1`, alias)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// SelectAliasesForRoom lists a room's aliases in order.
func (d *Database) SelectAliasesForRoom(ctx context.Context, roomID string) ([]string, error) {
	rows, err := d.DB.QueryContext(ctx, `SELECT alias FROM roomserver_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}
