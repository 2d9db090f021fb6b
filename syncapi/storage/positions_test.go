package storage

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/internal/testdb"
)

// The in-memory positions follow every writer, and a reopened database
// starts from what is stored.
func TestLatestPositionsFollowWriters(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		d := openTest(t, dbURL)
		if err := d.MigrateDeviceLists(ctx); err != nil {
			t.Fatal(err)
		}
		if got := d.LatestPositions(); got != (AllPositions{}) {
			t.Fatalf("fresh positions = %+v", got)
		}
		b := &roomBuilder{roomID: "!r:x"}
		res := mustStore(t, d, b.ev("@a:x", "m.room.create", sk(""), map[string]any{}))
		if got := d.LatestPositions().Events; got != 0 {
			t.Fatalf("events position %d before PublishEvents", got)
		}
		d.PublishEvents(res.Position)
		d.PublishEvents(res.Position - 1) // out of order: never backwards
		adPos, err := d.PutAccountData(ctx, "@a:x", "", "m.x", []byte(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.PutPushRules(ctx, "@a:x", 0, []byte(`{}`), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		rcPos, err := d.PutReceipt(ctx, Receipt{RoomID: "!r:x", Type: "m.read", UserID: "@a:x", EventID: "$e", TS: 1})
		if err != nil {
			t.Fatal(err)
		}
		tdPos, _, err := d.QueueToDevice(ctx, "@a:x", "D", "t1", []ToDeviceMessage{{UserID: "@b:x", DeviceID: "E", Type: "m.x", Content: []byte(`{}`)}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.RecordDeviceListChange(ctx, "@a:x", 1); err != nil {
			t.Fatal(err)
		}
		prPos, err := d.PutPresences(ctx, []Presence{{UserID: "@a:x", Presence: "online"}})
		if err != nil {
			t.Fatal(err)
		}
		want := AllPositions{Positions: Positions{Events: res.Position, AccountData: adPos + 1, Receipts: rcPos, ToDevice: tdPos}, DeviceLists: 1, Presence: prPos}
		if got := d.LatestPositions(); got != want {
			t.Fatalf("positions = %+v, want %+v", got, want)
		}
		stored, err := d.CurrentPositions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if stored != want.Positions {
			t.Fatalf("stored positions %+v, in memory %+v", stored, want.Positions)
		}

		sdb, err := sqlutil.Open(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer sdb.Close()
		again, err := Open(ctx, sdb)
		if err != nil {
			t.Fatal(err)
		}
		if got := again.LatestPositions(); got != want {
			t.Fatalf("reloaded positions = %+v, want %+v", got, want)
		}
	})
}

// PresenceSince answers from the in-memory log exactly as from the table.
func TestPresenceLogMatchesTable(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		d := openTest(t, dbURL)
		if _, err := d.PutPresences(ctx, []Presence{{UserID: "@a:x", Presence: "online", LastActiveTS: 1}}); err != nil {
			t.Fatal(err)
		}
		msg := "away"
		for _, batch := range [][]Presence{
			{{UserID: "@b:x", Presence: "online", LastActiveTS: 2}, {UserID: "@c:x", Presence: "offline", LastActiveTS: 3}},
			{{UserID: "@a:x", Presence: "unavailable", StatusMsg: &msg, LastActiveTS: 4}},
			{{UserID: "@b:x", Presence: "offline", LastActiveTS: 5}},
		} {
			if _, err := d.PutPresences(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.TouchPresence(ctx, []string{"@a:x"}, 99); err != nil {
			t.Fatal(err)
		}
		sdb, err := sqlutil.Open(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer sdb.Close()
		fromTable, err := Open(ctx, sdb) // its log starts empty, at the current position
		if err != nil {
			t.Fatal(err)
		}
		upto := d.LatestPositions().Presence
		for after := int64(0); after <= upto; after++ {
			for _, skip := range []bool{false, true} {
				mem, err := d.PresenceSince(ctx, after, upto, skip, 10)
				if err != nil {
					t.Fatal(err)
				}
				tab, err := fromTable.PresenceSince(ctx, after, upto, skip, 10)
				if err != nil {
					t.Fatal(err)
				}
				jm, _ := json.Marshal(mem)
				jt, _ := json.Marshal(tab)
				if string(jm) != string(jt) {
					t.Fatalf("since %d skipOffline %v: log %s, table %s", after, skip, jm, jt)
				}
			}
		}
		if got, _ := d.PresenceSince(ctx, 0, upto, false, 1); len(got) != 1 {
			t.Fatalf("limit 1: %+v", got)
		}
	})
}
