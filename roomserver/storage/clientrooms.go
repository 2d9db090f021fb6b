package storage

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// Tables behind the client API's room directory, event reports and
// forgotten rooms. They have their own migration list ("roomserver_client")
// so that they evolve apart from the room DAG's tables.
var clientMigrations = []sqlutil.Migration{
	{Version: 1, SQL: `
CREATE TABLE roomserver_published_rooms (
	room_id TEXT PRIMARY KEY,
	-- The room's current state snapshot the summary below was taken at;
	-- the summary is refreshed when the room's state_snapshot moves on.
	snapshot BIGINT NOT NULL,
	room_type TEXT NOT NULL,
	name TEXT NOT NULL,
	topic TEXT NOT NULL,
	canonical_alias TEXT NOT NULL,
	avatar_url TEXT NOT NULL,
	join_rule TEXT NOT NULL,
	history_visibility TEXT NOT NULL,
	guest_can_join BOOLEAN NOT NULL,
	joined_members INTEGER NOT NULL,
	-- Lower-cased name, topic and aliases, for the directory's search.
	search_text TEXT NOT NULL
);
CREATE INDEX roomserver_published_rooms_order ON roomserver_published_rooms (joined_members DESC, room_id);

CREATE TABLE roomserver_event_reports (
	report_id BIGSERIAL PRIMARY KEY,
	room_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	reporter TEXT NOT NULL,
	reason TEXT NOT NULL,
	score INTEGER,
	received_ts BIGINT NOT NULL
);

CREATE TABLE roomserver_forgotten_rooms (
	user_id TEXT NOT NULL,
	room_nid BIGINT NOT NULL,
	-- The membership event (leave or ban) the room was forgotten at; once
	-- the user's membership changes the row no longer applies.
	event_nid BIGINT NOT NULL,
	PRIMARY KEY (user_id, room_nid)
);
`},
}

// OpenClientTables runs the migrations of the client-facing tables.
func (d *Database) OpenClientTables(ctx context.Context) error {
	return d.DB.Migrate(ctx, "roomserver_client", clientMigrations)
}

// PublishedRoom is one row of the published room directory.
type PublishedRoom struct {
	RoomID            string
	Snapshot          int64
	RoomType          string
	Name              string
	Topic             string
	CanonicalAlias    string
	AvatarURL         string
	JoinRule          string
	HistoryVisibility string
	GuestCanJoin      bool
	JoinedMembers     int
	SearchText        string
}

const publishedColumns = `room_id, snapshot, room_type, name, topic, canonical_alias, avatar_url, join_rule, history_visibility, guest_can_join, joined_members, search_text`

// UpsertPublishedRoom adds a room to the directory or replaces its summary.
func (d *Database) UpsertPublishedRoom(ctx context.Context, p *PublishedRoom) error {
	_, err := d.DB.ExecContext(ctx, `INSERT INTO roomserver_published_rooms (`+publishedColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		ON CONFLICT (room_id) DO UPDATE SET snapshot = excluded.snapshot, room_type = excluded.room_type,
			name = excluded.name, topic = excluded.topic, canonical_alias = excluded.canonical_alias,
			avatar_url = excluded.avatar_url, join_rule = excluded.join_rule,
			history_visibility = excluded.history_visibility, guest_can_join = excluded.guest_can_join,
			joined_members = excluded.joined_members, search_text = excluded.search_text`,
		p.RoomID, p.Snapshot, p.RoomType, p.Name, p.Topic, p.CanonicalAlias, p.AvatarURL, p.JoinRule,
		p.HistoryVisibility, p.GuestCanJoin, p.JoinedMembers, p.SearchText)
	return err
}

// UpdatePublishedRoom replaces the summary of a room that is still in the
// directory; a room taken out in the meantime stays out.
func (d *Database) UpdatePublishedRoom(ctx context.Context, p *PublishedRoom) error {
	_, err := d.DB.ExecContext(ctx, `UPDATE roomserver_published_rooms SET snapshot = $2, room_type = $3,
		name = $4, topic = $5, canonical_alias = $6, avatar_url = $7, join_rule = $8, history_visibility = $9,
		guest_can_join = $10, joined_members = $11, search_text = $12 WHERE room_id = $1`,
		p.RoomID, p.Snapshot, p.RoomType, p.Name, p.Topic, p.CanonicalAlias, p.AvatarURL, p.JoinRule,
		p.HistoryVisibility, p.GuestCanJoin, p.JoinedMembers, p.SearchText)
	return err
}

// DeletePublishedRoom takes a room out of the directory.
func (d *Database) DeletePublishedRoom(ctx context.Context, roomID string) error {
	_, err := d.DB.ExecContext(ctx, `DELETE FROM roomserver_published_rooms WHERE room_id = $1`, roomID)
	return err
}

// SelectRoomPublished says whether a room is in the directory.
func (d *Database) SelectRoomPublished(ctx context.Context, roomID string) (bool, error) {
	var n int
	err := d.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM roomserver_published_rooms WHERE room_id = $1`, roomID).Scan(&n)
	return n > 0, err
}

// StaleRoom is a published room whose summary predates its current state.
type StaleRoom struct {
	RoomID   string
	Snapshot int64
}

// SelectStalePublishedRooms lists published rooms whose current state
// snapshot differs from the one their summary was taken at.
func (d *Database) SelectStalePublishedRooms(ctx context.Context) ([]StaleRoom, error) {
	rows, err := d.DB.QueryContext(ctx, `SELECT p.room_id, r.state_snapshot FROM roomserver_published_rooms p
		JOIN roomserver_rooms r ON r.room_id = p.room_id WHERE r.state_snapshot <> p.snapshot`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []StaleRoom
	for rows.Next() {
		var s StaleRoom
		if err := rows.Scan(&s.RoomID, &s.Snapshot); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// PublishedRoomsFilter selects directory rows.
type PublishedRoomsFilter struct {
	// Search is matched as a substring of search_text; it must already be
	// lower-cased.
	Search string
	// FilterTypes keeps only rooms whose room_type is in Types.
	FilterTypes bool
	Types       []string
}

func (f *PublishedRoomsFilter) where(args []any) (string, []any) {
	var conds []string
	if f.Search != "" {
		args = append(args, "%"+escapeLike(f.Search)+"%")
		conds = append(conds, `search_text LIKE $`+strconv.Itoa(len(args))+` ESCAPE '\'`)
	}
	if f.FilterTypes {
		if len(f.Types) == 0 {
			conds = append(conds, `1 = 0`)
		} else {
			start := len(args) + 1
			for _, t := range f.Types {
				args = append(args, t)
			}
			conds = append(conds, `room_type IN (`+sqlutil.InList(start, len(f.Types))+`)`)
		}
	}
	if len(conds) == 0 {
		return "", args
	}
	return ` WHERE ` + strings.Join(conds, ` AND `), args
}

// SelectPublishedRooms returns a page of matching rooms, largest first
// (ties by room ID), and how many rooms match in all.
func (d *Database) SelectPublishedRooms(ctx context.Context, f *PublishedRoomsFilter, offset, limit int) ([]PublishedRoom, int, error) {
	where, args := f.where(nil)
	var total int
	if err := d.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM roomserver_published_rooms`+where, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	args = append(args, limit, offset)
	rows, err := d.DB.QueryContext(ctx, `SELECT `+publishedColumns+` FROM roomserver_published_rooms`+where+
		` ORDER BY joined_members DESC, room_id LIMIT $`+strconv.Itoa(len(args)-1)+` OFFSET $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []PublishedRoom
	for rows.Next() {
		var p PublishedRoom
		if err := rows.Scan(&p.RoomID, &p.Snapshot, &p.RoomType, &p.Name, &p.Topic, &p.CanonicalAlias, &p.AvatarURL,
			&p.JoinRule, &p.HistoryVisibility, &p.GuestCanJoin, &p.JoinedMembers, &p.SearchText); err != nil {
			return nil, 0, err
		}
		out = append(out, p)
	}
	return out, total, rows.Err()
}

// escapeLike escapes LIKE's wildcards (and the escape character '\').
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// CountJoinedMembers counts a room's joined members.
func (d *Database) CountJoinedMembers(ctx context.Context, roomNID int64) (int, error) {
	var n int
	err := d.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM roomserver_memberships WHERE room_nid = $1 AND membership = 'join'`, roomNID).Scan(&n)
	return n, err
}

// MoveAliases points every alias of one room at another and returns them.
func (d *Database) MoveAliases(ctx context.Context, fromRoomID, toRoomID string) ([]string, error) {
	var moved []string
	err := d.DB.WithTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT alias FROM roomserver_aliases WHERE room_id = $1 ORDER BY alias`, fromRoomID)
		if err != nil {
			return err
		}
		for rows.Next() {
			var a string
			if err := rows.Scan(&a); err != nil {
				rows.Close()
				return err
			}
			moved = append(moved, a)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE roomserver_aliases SET room_id = $2 WHERE room_id = $1`, fromRoomID, toRoomID)
		return err
	})
	return moved, err
}

// EventReport is one row of roomserver_event_reports.
type EventReport struct {
	ID         int64
	RoomID     string
	EventID    string
	Reporter   string
	Reason     string
	Score      *int
	ReceivedAt time.Time
}

// InsertEventReport stores a report and returns its ID.
func (d *Database) InsertEventReport(ctx context.Context, r *EventReport) (int64, error) {
	var score sql.NullInt64
	if r.Score != nil {
		score = sql.NullInt64{Int64: int64(*r.Score), Valid: true}
	}
	var id int64
	err := d.DB.QueryRowContext(ctx, `INSERT INTO roomserver_event_reports (room_id, event_id, reporter, reason, score, received_ts)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING report_id`,
		r.RoomID, r.EventID, r.Reporter, r.Reason, score, r.ReceivedAt.UnixMilli()).Scan(&id)
	return id, err
}

// SelectEventReports returns up to limit reports with IDs above afterID, oldest first.
func (d *Database) SelectEventReports(ctx context.Context, afterID int64, limit int) ([]EventReport, error) {
	rows, err := d.DB.QueryContext(ctx, `SELECT report_id, room_id, event_id, reporter, reason, score, received_ts
		FROM roomserver_event_reports WHERE report_id > $1 ORDER BY report_id LIMIT $2`, afterID, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []EventReport
	for rows.Next() {
		var r EventReport
		var score sql.NullInt64
		var ts int64
		if err := rows.Scan(&r.ID, &r.RoomID, &r.EventID, &r.Reporter, &r.Reason, &score, &ts); err != nil {
			return nil, err
		}
		if score.Valid {
			v := int(score.Int64)
			r.Score = &v
		}
		r.ReceivedAt = time.UnixMilli(ts)
		out = append(out, r)
	}
	return out, rows.Err()
}

// InsertForgotten records that a user forgot a room at their current
// membership event, if that membership is leave or ban; it reports
// whether it did.
func (d *Database) InsertForgotten(ctx context.Context, roomNID int64, userID string) (bool, error) {
	res, err := d.DB.ExecContext(ctx, `INSERT INTO roomserver_forgotten_rooms (user_id, room_nid, event_nid)
		SELECT user_id, room_nid, event_nid FROM roomserver_memberships
			WHERE room_nid = $1 AND user_id = $2 AND membership IN ('leave', 'ban')
		ON CONFLICT (user_id, room_nid) DO UPDATE SET event_nid = excluded.event_nid`, roomNID, userID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// SelectForgotten returns which of roomIDs (all with none) a user has
// forgotten at their current membership, in room ID order.
func (d *Database) SelectForgotten(ctx context.Context, userID string, roomIDs []string) ([]string, error) {
	args := []any{userID}
	query := `SELECT r.room_id FROM roomserver_forgotten_rooms f
		JOIN roomserver_memberships m ON m.room_nid = f.room_nid AND m.user_id = f.user_id AND m.event_nid = f.event_nid
		JOIN roomserver_rooms r ON r.room_nid = f.room_nid
		WHERE f.user_id = $1`
	if len(roomIDs) > 0 {
		for _, id := range roomIDs {
			args = append(args, id)
		}
		query += ` AND r.room_id IN (` + sqlutil.InList(2, len(roomIDs)) + `)`
	}
	rows, err := d.DB.QueryContext(ctx, query+` ORDER BY r.room_id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}
