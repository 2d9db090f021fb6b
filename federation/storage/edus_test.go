package storage

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/parley-chat/parley/internal/testdb"
)

func TestJoinedQueriesForEDUs(t *testing.T) {
	testdb.Run(t, func(t *testing.T, url string) {
		ctx := context.Background()
		d := open(t, url)
		for i, u := range []RoomUpdate{
			{RoomID: "!a:x", Position: 1, AddedJoins: []JoinedMember{{EventID: "$1", UserID: "@u:x", ServerName: "x"}, {EventID: "$2", UserID: "@v:y", ServerName: "y"}}},
			{RoomID: "!b:x", Position: 1, AddedJoins: []JoinedMember{{EventID: "$3", UserID: "@u:x", ServerName: "x"}, {EventID: "$4", UserID: "@w:z", ServerName: "z"}}},
			{RoomID: "!c:x", Position: 1, AddedJoins: []JoinedMember{{EventID: "$5", UserID: "@q:q", ServerName: "q"}}},
		} {
			if _, _, err := d.ApplyRoomUpdate(ctx, u); err != nil {
				t.Fatalf("update %d: %v", i, err)
			}
		}
		servers, err := d.ServersSharingRoomWith(ctx, "@u:x")
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"x", "y", "z"}; !reflect.DeepEqual(servers, want) {
			t.Fatalf("servers sharing with @u:x = %v, want %v", servers, want)
		}
		for _, c := range []struct {
			room, user string
			want       bool
		}{{"!a:x", "@v:y", true}, {"!b:x", "@v:y", false}, {"!a:x", "@nobody:y", false}} {
			got, err := d.IsJoined(ctx, c.room, c.user)
			if err != nil || got != c.want {
				t.Fatalf("IsJoined(%s, %s) = %v, %v; want %v", c.room, c.user, got, err, c.want)
			}
		}
		if ok, err := d.HasJoinedRoom(ctx, "@w:z"); err != nil || !ok {
			t.Fatalf("HasJoinedRoom(@w:z) = %v, %v", ok, err)
		}
		if ok, err := d.HasJoinedRoom(ctx, "@nobody:z"); err != nil || ok {
			t.Fatalf("HasJoinedRoom(@nobody:z) = %v, %v", ok, err)
		}

		if id, err := d.DeviceListSent(ctx, "@u:x"); err != nil || id != 0 {
			t.Fatalf("DeviceListSent before any = %d, %v", id, err)
		}
		for _, id := range []int64{3, 7} {
			if err := d.EnqueueDeviceListEDU(ctx, []string{"y", "z"}, []byte(`{"edu_type":"m.device_list_update"}`), "@u:x", id); err != nil {
				t.Fatal(err)
			}
		}
		if id, err := d.DeviceListSent(ctx, "@u:x"); err != nil || id != 7 {
			t.Fatalf("DeviceListSent = %d, %v; want 7", id, err)
		}
		for _, dest := range []string{"y", "z"} {
			if b, err := d.PendingBatch(ctx, dest, 50, 100); err != nil || len(b.EDUs) != 2 {
				t.Fatalf("queued for %s: %+v, %v", dest, b, err)
			}
		}
	})
}

func TestRemoteDeviceListCache(t *testing.T) {
	testdb.Run(t, func(t *testing.T, url string) {
		ctx := context.Background()
		d := open(t, url)
		const user = "@bob:remote"
		apply := func(u RemoteDeviceUpdate, wantOutcome DeviceUpdateOutcome) int64 {
			t.Helper()
			u.UserID = user
			got, seq, err := d.ApplyRemoteDeviceUpdate(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			if got != wantOutcome {
				t.Fatalf("update %+v: outcome %d, want %d", u, got, wantOutcome)
			}
			return seq
		}
		// An uncached user: one update is not the whole list.
		if seq := apply(RemoteDeviceUpdate{DeviceID: "D1", Keys: []byte(`{"k":1}`), StreamID: 5, PrevIDs: []int64{4}}, UpdateGap); seq != 1 {
			t.Fatalf("first change seq %d", seq)
		}
		l, err := d.RemoteDeviceList(ctx, user)
		if err != nil || l == nil || !l.Stale {
			t.Fatalf("after first update: %+v, %v; want a stale entry", l, err)
		}

		// A resync makes it whole.
		seq, err := d.ReplaceRemoteDeviceList(ctx, RemoteDeviceList{UserID: user, StreamID: 5,
			MasterKey: []byte(`{"m":1}`), Devices: []RemoteDevice{{DeviceID: "D1", DisplayName: "phone", Keys: []byte(`{"k":1}`)}, {DeviceID: "D2"}}})
		if err != nil || seq != 2 {
			t.Fatalf("replace: seq %d, %v", seq, err)
		}
		// In-order updates apply; repeats are duplicates; a gap goes stale.
		apply(RemoteDeviceUpdate{DeviceID: "D3", Keys: []byte(`{"k":3}`), StreamID: 6, PrevIDs: []int64{5}}, UpdateApplied)
		apply(RemoteDeviceUpdate{DeviceID: "D3", Keys: []byte(`{"k":3}`), StreamID: 6, PrevIDs: []int64{5}}, UpdateDuplicate)
		apply(RemoteDeviceUpdate{DeviceID: "D1", Deleted: true, StreamID: 7, PrevIDs: []int64{6}}, UpdateApplied)
		l, err = d.RemoteDeviceList(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		want := &RemoteDeviceList{UserID: user, StreamID: 7, MasterKey: []byte(`{"m":1}`), ChangeSeq: 4,
			Devices: []RemoteDevice{{DeviceID: "D2"}, {DeviceID: "D3", Keys: []byte(`{"k":3}`)}}}
		if !reflect.DeepEqual(l, want) {
			t.Fatalf("list = %+v\nwant %+v", l, want)
		}
		// A fetched list older than what was applied is refused.
		if _, err := d.ReplaceRemoteDeviceList(ctx, RemoteDeviceList{UserID: user, StreamID: 6}); !errors.Is(err, ErrOlderThanCache) {
			t.Fatalf("replacing with an older list: %v", err)
		}
		if seq, err := d.SetRemoteCrossSigningKeys(ctx, user, nil, []byte(`{"s":1}`)); err != nil || seq != 5 {
			t.Fatalf("cross-signing: seq %d, %v", seq, err)
		}
		apply(RemoteDeviceUpdate{DeviceID: "D4", StreamID: 10, PrevIDs: []int64{9}}, UpdateGap)
		if l, err = d.RemoteDeviceList(ctx, user); err != nil || !l.Stale || string(l.MasterKey) != `{"m":1}` || string(l.SelfSigningKey) != `{"s":1}` {
			t.Fatalf("after gap: %+v, %v", l, err)
		}
		if l, err := d.RemoteDeviceList(ctx, "@nobody:remote"); err != nil || l != nil {
			t.Fatalf("unknown user: %+v, %v", l, err)
		}
	})
}
