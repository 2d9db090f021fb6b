package storage

import (
	"context"
	"encoding/json"
	"slices"
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

// PresenceOf answers from memory what PresenceSince answers from the
// table, for the users asked about; a copy loaded at Open has the rows
// written before.
func TestPresenceInMemoryMatchesTable(t *testing.T) {
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
		reopened, err := Open(ctx, sdb)
		if err != nil {
			t.Fatal(err)
		}
		upto := d.LatestPositions().Presence
		for _, users := range [][]string{{"@a:x", "@b:x", "@c:x"}, {"@b:x"}, {"@nobody:x"}} {
			for after := int64(0); after <= upto; after++ {
				for _, skip := range []bool{false, true} {
					tab, err := d.PresenceSince(ctx, after, upto, skip, 10)
					if err != nil {
						t.Fatal(err)
					}
					tab = slices.DeleteFunc(tab, func(p Presence) bool { return !slices.Contains(users, p.UserID) })
					for _, db := range []*DB{d, reopened} {
						mem, ok := db.PresenceOf(users, after, upto, skip)
						jm, _ := json.Marshal(mem)
						jt, _ := json.Marshal(tab)
						if !ok || (string(jm) != string(jt) && len(mem)+len(tab) > 0) {
							t.Fatalf("%v since %d skipOffline %v: memory %s (%v), table %s", users, after, skip, jm, ok, jt)
						}
					}
				}
			}
		}
	})
}
