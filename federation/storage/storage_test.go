package storage

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/internal/testdb"
)

func open(t *testing.T, url string) *Database {
	t.Helper()
	db, err := sqlutil.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	d, err := Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestServerKeys(t *testing.T) {
	testdb.Run(t, func(t *testing.T, url string) {
		ctx := context.Background()
		d := open(t, url)
		req := gomatrixserverlib.PublicKeyLookupRequest{ServerName: "b.example", KeyID: "ed25519:1"}
		other := gomatrixserverlib.PublicKeyLookupRequest{ServerName: "b.example", KeyID: "ed25519:2"}
		current := gomatrixserverlib.PublicKeyLookupResult{VerifyKey: gomatrixserverlib.VerifyKey{Key: []byte("0123456789abcdef0123456789abcdef")}, ValidUntilTS: 2000}
		if err := d.StoreKeys(ctx, map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{req: current}); err != nil {
			t.Fatal(err)
		}
		got, err := d.FetchKeys(ctx, map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{req: 0, other: 0})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || !reflect.DeepEqual(got[req], current) {
			t.Fatalf("FetchKeys = %+v, want only %+v", got, current)
		}
		// An older answer does not shorten validity; a newer one extends it;
		// retirement sticks.
		older := current
		older.ValidUntilTS = 1000
		newer := current
		newer.ValidUntilTS = 3000
		retired := current
		retired.ValidUntilTS, retired.ExpiredTS = 0, 2500
		for _, step := range []struct {
			store gomatrixserverlib.PublicKeyLookupResult
			want  gomatrixserverlib.PublicKeyLookupResult
		}{{older, current}, {newer, newer}, {retired, retired}, {newer, retired}} {
			if err := d.StoreKeys(ctx, map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{req: step.store}); err != nil {
				t.Fatal(err)
			}
			got, err := d.FetchKeys(ctx, map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{req: 0})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got[req], step.want) {
				t.Fatalf("after storing %+v: got %+v, want %+v", step.store, got[req], step.want)
			}
		}

		if _, _, err := d.KeyResponse(ctx, "b.example"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("KeyResponse of unknown server: %v", err)
		}
		if err := d.StoreKeyResponse(ctx, "b.example", []byte(`{"v":2}`), 2000); err != nil {
			t.Fatal(err)
		}
		if err := d.StoreKeyResponse(ctx, "b.example", []byte(`{"v":1}`), 1000); err != nil {
			t.Fatal(err)
		}
		raw, until, err := d.KeyResponse(ctx, "b.example")
		if err != nil || string(raw) != `{"v":2}` || until != 2000 {
			t.Fatalf("KeyResponse = %s %d %v, want the longer-valid response", raw, until, err)
		}
	})
}

func TestRoomUpdatesAndQueue(t *testing.T) {
	testdb.Run(t, func(t *testing.T, url string) {
		ctx := context.Background()
		d := open(t, url)
		const room = "!r:a.example"
		apply := func(u RoomUpdate) ([]string, bool) {
			t.Helper()
			u.RoomID, u.LocalServer = room, "a.example"
			dests, applied, err := d.ApplyRoomUpdate(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			return dests, applied
		}
		apply(RoomUpdate{Position: 1, AddedJoins: []JoinedMember{{"$j1", "@alice:a.example", "a.example"}}})
		apply(RoomUpdate{Position: 2, AddedJoins: []JoinedMember{{"$j2", "@bob:b.example", "b.example"}}})
		apply(RoomUpdate{Position: 3, AddedJoins: []JoinedMember{{"$j3", "@carol:c.example", "c.example"}}})
		if s, _ := d.JoinedServers(ctx, room); !reflect.DeepEqual(s, []string{"a.example", "b.example", "c.example"}) {
			t.Fatalf("joined servers = %v", s)
		}
		// A message goes to every other server.
		dests, applied := apply(RoomUpdate{Position: 4, PDU: []byte(`{"n":4}`)})
		if !applied || !reflect.DeepEqual(dests, []string{"b.example", "c.example"}) {
			t.Fatalf("destinations = %v applied=%v", dests, applied)
		}
		// Redelivery changes nothing and queues nothing.
		if dests, applied := apply(RoomUpdate{Position: 4, PDU: []byte(`{"n":4}`)}); applied || dests != nil {
			t.Fatalf("redelivery: %v %v", dests, applied)
		}
		// Kicking carol's only member still tells c.example.
		dests, _ = apply(RoomUpdate{Position: 5, RemovedEventIDs: []string{"$j3"}, PDU: []byte(`{"n":5}`)})
		if !reflect.DeepEqual(dests, []string{"b.example", "c.example"}) {
			t.Fatalf("kick destinations = %v", dests)
		}
		dests, _ = apply(RoomUpdate{Position: 6, PDU: []byte(`{"n":6}`)})
		if !reflect.DeepEqual(dests, []string{"b.example"}) {
			t.Fatalf("after kick destinations = %v", dests)
		}
		if err := d.EnqueueEDU(ctx, []string{"c.example"}, []byte(`{"edu_type":"m.typing"}`)); err != nil {
			t.Fatal(err)
		}
		pending, err := d.PendingDestinations(ctx)
		if err != nil || !reflect.DeepEqual(pending, []string{"b.example", "c.example"}) && !reflect.DeepEqual(pending, []string{"c.example", "b.example"}) {
			t.Fatalf("pending = %v %v", pending, err)
		}
		b, err := d.PendingBatch(ctx, "b.example", 2, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.PDUs) != 2 || string(b.PDUs[0].JSON) != `{"n":4}` || string(b.PDUs[1].JSON) != `{"n":5}` || len(b.EDUs) != 0 {
			t.Fatalf("batch = %+v", b)
		}
		if err := d.DeleteBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
		b, _ = d.PendingBatch(ctx, "b.example", 50, 100)
		if len(b.PDUs) != 1 || string(b.PDUs[0].JSON) != `{"n":6}` {
			t.Fatalf("after delete, batch = %+v", b)
		}
		// c.example still needs PDUs 4 and 5: their JSON must survive b's delete.
		c, _ := d.PendingBatch(ctx, "c.example", 50, 100)
		if len(c.PDUs) != 2 || string(c.PDUs[1].JSON) != `{"n":5}` || len(c.EDUs) != 1 {
			t.Fatalf("c batch = %+v", c)
		}
		if err := d.DeleteBatch(ctx, c); err != nil {
			t.Fatal(err)
		}
		if err := d.DeleteBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM federation_queue_json`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("orphaned queue json rows: %d %v", n, err)
		}
		if pending, _ := d.PendingDestinations(ctx); len(pending) != 0 {
			t.Fatalf("pending after delivery = %v", pending)
		}
	})
}

func TestDestinationsAndTxns(t *testing.T) {
	testdb.Run(t, func(t *testing.T, url string) {
		ctx := context.Background()
		d := open(t, url)
		if s, err := d.Destination(ctx, "x.example"); err != nil || s != (DestinationState{}) {
			t.Fatalf("unknown destination = %+v %v", s, err)
		}
		if err := d.RecordFailure(ctx, "x.example", 3, 12345); err != nil {
			t.Fatal(err)
		}
		if s, _ := d.Destination(ctx, "x.example"); s.FailureCount != 3 || s.RetryAtMS != 12345 {
			t.Fatalf("after failure = %+v", s)
		}
		if err := d.RecordSuccess(ctx, "x.example", 99); err != nil {
			t.Fatal(err)
		}
		if s, _ := d.Destination(ctx, "x.example"); s != (DestinationState{LastSuccessMS: 99}) {
			t.Fatalf("after success = %+v", s)
		}

		if _, err := d.InboundTxn(ctx, "x.example", "t1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown txn: %v", err)
		}
		if err := d.StoreInboundTxn(ctx, "x.example", "t1", []byte(`{"pdus":{}}`), 10); err != nil {
			t.Fatal(err)
		}
		if err := d.StoreInboundTxn(ctx, "x.example", "t1", []byte(`{"other":1}`), 11); err != nil {
			t.Fatal(err)
		}
		if r, err := d.InboundTxn(ctx, "x.example", "t1"); err != nil || string(r) != `{"pdus":{}}` {
			t.Fatalf("stored txn = %s %v", r, err)
		}
		if err := d.PruneInboundTxns(ctx, 11); err != nil {
			t.Fatal(err)
		}
		if _, err := d.InboundTxn(ctx, "x.example", "t1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("pruned txn still there: %v", err)
		}
	})
}
