package storage

import (
	"context"
	"fmt"
	"sync/atomic"
)

// streamPositions keeps the newest committed position of every stream in
// memory, so that a /sync wake-up reads its token without a query. It is
// loaded once at Open; each writer advances its stream after its
// transaction commits. Positions only grow, so advancing is a max: two
// writers finishing out of order cannot move a stream backwards, and a
// counter stream's row lock (nextPosition) means position N commits after
// every position below it, so a reader given N can read every row up to N.
//
// The events stream is the exception: StoreEvent does not advance it,
// because the sync API's in-memory views of rooms (room lists, timeline
// tails) must be updated before a reader may act on the new position. The
// consumer calls PublishEvents once it has done so.
//
// The positions are per process: a row written by another process is not
// seen until this one writes a later position of the same stream (see
// docs/ARCHITECTURE.md, "Sync API").
type streamPositions struct {
	events, accountData, receipts, toDevice, deviceLists, presence atomic.Int64
}

func advance(p *atomic.Int64, pos int64) {
	for {
		cur := p.Load()
		if pos <= cur || p.CompareAndSwap(cur, pos) {
			return
		}
	}
}

func (p *streamPositions) forStream(stream string) *atomic.Int64 {
	switch stream {
	case StreamAccountData:
		return &p.accountData
	case StreamReceipts:
		return &p.receipts
	case StreamToDevice:
		return &p.toDevice
	case StreamDeviceLists:
		return &p.deviceLists
	case StreamPresence:
		return &p.presence
	}
	panic("storage: unknown stream " + stream)
}

// loadPositions reads every stream's newest position from the database.
func (d *DB) loadPositions(ctx context.Context) error {
	var events int64
	if err := d.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(position), 0) FROM syncapi_events`).Scan(&events); err != nil {
		return fmt.Errorf("events position: %w", err)
	}
	advance(&d.pos.events, events)
	rows, err := d.db.QueryContext(ctx, `SELECT stream, position FROM syncapi_stream_positions`)
	if err != nil {
		return fmt.Errorf("stream positions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var stream string
		var pos int64
		if err := rows.Scan(&stream, &pos); err != nil {
			return err
		}
		switch stream {
		case StreamAccountData, StreamReceipts, StreamToDevice, StreamDeviceLists, StreamPresence:
			advance(d.pos.forStream(stream), pos)
		}
	}
	return rows.Err()
}

// AllPositions are the newest position of every stream the database numbers.
type AllPositions struct {
	Positions
	DeviceLists int64
	Presence    int64
}

// LatestPositions returns the newest committed position of every stream,
// from memory.
func (d *DB) LatestPositions() AllPositions {
	return AllPositions{
		Positions: Positions{
			Events:      d.pos.events.Load(),
			AccountData: d.pos.accountData.Load(),
			Receipts:    d.pos.receipts.Load(),
			ToDevice:    d.pos.toDevice.Load(),
		},
		DeviceLists: d.pos.deviceLists.Load(),
		Presence:    d.pos.presence.Load(),
	}
}

// PublishEvents makes events up to pos visible to LatestPositions. The
// caller must have committed them (StoreEvent returned).
func (d *DB) PublishEvents(pos int64) { advance(&d.pos.events, pos) }
