package syncapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	uapi "github.com/parley-chat/parley/userapi/api"
)

// deviceListsResp is the E2EE part of a /sync answer.
type deviceListsResp struct {
	NextBatch   string `json:"next_batch"`
	DeviceLists struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	} `json:"device_lists"`
	OTKCount map[string]int `json:"device_one_time_keys_count"`
	Fallback []string       `json:"device_unused_fallback_key_types"`
}

func (e *env) syncDeviceLists(token, since string, timeoutMS int) deviceListsResp {
	e.t.Helper()
	var out deviceListsResp
	status, raw := e.do("GET", fmt.Sprintf("/_matrix/client/v3/sync?since=%s&timeout=%d", url.QueryEscape(since), timeoutMS), token, nil, &out)
	if status != 200 {
		e.t.Fatalf("sync: %d %s", status, raw)
	}
	return out
}

// uploadDeviceKeys uploads new signed device keys for the user's DEV_ device.
func (e *env) uploadDeviceKeys(userID, deviceID string) {
	e.t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	raw, _ := json.Marshal(map[string]any{
		"user_id": userID, "device_id": deviceID, "algorithms": []string{"m.megolm.v1.aes-sha2"},
		"keys": map[string]string{"ed25519:" + deviceID: base64.RawStdEncoding.EncodeToString(pub)},
	})
	signed, err := gomatrixserverlib.SignJSON(userID, gomatrixserverlib.KeyID("ed25519:"+deviceID), priv, raw)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.users.UploadKeys(context.Background(), &uapi.UploadKeysRequest{
		UserID: userID, DeviceID: deviceID, DeviceKeys: signed,
		OneTimeKeys:  map[string]json.RawMessage{"curve25519:A": json.RawMessage(`"k1"`), "curve25519:B": json.RawMessage(`"k2"`)},
		FallbackKeys: map[string]json.RawMessage{"curve25519:F": json.RawMessage(`"f"`)},
	}); err != nil {
		e.t.Fatal(err)
	}
}

// TestDeviceListsInSync: a user's key change reaches, through the user
// API's stream, the device_lists of everyone sharing a room with them (and
// wakes their long-polls), not of strangers; users who stop sharing a room
// are listed in "left"; /keys/changes agrees; one-time key counts are the
// syncing device's.
func TestDeviceListsInSync(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect)
			ctx := context.Background()
			if err := e.users.StartDeviceListPublisher(ctx, e.bus); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(e.users.Close)
			alice, aliceTok := e.user("alice")
			bob, bobTok := e.user("bob")
			_, carolTok := e.user("carol")
			room := "!dl:test.local"
			e.createRoom(room, alice, "shared")
			e.join(room, bob)
			aliceSince := e.syncDeviceLists(aliceTok, "", 0).NextBatch
			carolSince := e.syncDeviceLists(carolTok, "", 0).NextBatch

			// A long-poll wakes when bob's keys change.
			done := make(chan deviceListsResp, 1)
			go func() { done <- e.syncDeviceLists(aliceTok, aliceSince, 20000) }()
			time.Sleep(100 * time.Millisecond)
			e.uploadDeviceKeys(bob, "DEV_bob")
			var got deviceListsResp
			select {
			case got = <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("long-poll did not wake for bob's key change")
			}
			// Bob joined after alice's since token too; either way he is "changed".
			if !slices.Contains(got.DeviceLists.Changed, bob) {
				t.Fatalf("alice's device_lists = %+v, want bob changed", got.DeviceLists)
			}
			if c := e.syncDeviceLists(carolTok, carolSince, 0); len(c.DeviceLists.Changed) != 0 {
				t.Fatalf("carol shares no room with bob but got %+v", c.DeviceLists)
			}
			own := e.syncDeviceLists(bobTok, "", 0)
			if own.OTKCount["curve25519"] != 2 || !slices.Equal(own.Fallback, []string{"curve25519"}) {
				t.Fatalf("bob's key counts = %v, fallback %v", own.OTKCount, own.Fallback)
			}

			// Nothing new: an incremental sync lists no change.
			quiet := e.syncDeviceLists(aliceTok, got.NextBatch, 0)
			if len(quiet.DeviceLists.Changed)+len(quiet.DeviceLists.Left) != 0 {
				t.Fatalf("repeated device_lists: %+v", quiet.DeviceLists)
			}

			// Bob leaves: alice sees him in "left".
			e.event(room, bob, "m.room.member", sk(bob), map[string]any{"membership": "leave"}, nil)
			left := e.syncDeviceLists(aliceTok, quiet.NextBatch, 0)
			if !slices.Equal(left.DeviceLists.Left, []string{bob}) {
				t.Fatalf("after bob left: %+v", left.DeviceLists)
			}

			var changes struct {
				Changed []string `json:"changed"`
				Left    []string `json:"left"`
			}
			status, raw := e.do("GET", "/_matrix/client/v3/keys/changes?from="+url.QueryEscape(aliceSince)+"&to="+url.QueryEscape(left.NextBatch), aliceTok, nil, &changes)
			if status != 200 || !slices.Contains(changes.Left, bob) {
				t.Fatalf("/keys/changes = %d %s", status, raw)
			}
			if status, _ := e.do("GET", "/_matrix/client/v3/keys/changes?from=nonsense&to="+url.QueryEscape(left.NextBatch), aliceTok, nil, nil); status != 400 {
				t.Fatalf("/keys/changes with a bad token = %d", status)
			}
		})
	}
}

// TestToDeviceOrderAndExactlyOnce: messages from one sender reach a
// device in the order sent, across several syncs; a sync repeated with
// the same since token gets the same batch again (its answer may have
// been lost), and a message is never delivered after it was acknowledged.
func TestToDeviceOrderAndExactlyOnce(t *testing.T) {
	e := newEnv(t, "sqlite")
	_, aliceTok := e.user("alice")
	bob, bobTok := e.user("bob")
	since := e.sync(bobTok, "", "", 0).NextBatch
	const n = maxToDevicePerSync + 30
	for i := range n {
		body := map[string]any{"messages": map[string]any{bob: map[string]any{"DEV_bob": map[string]any{"n": i}}}}
		if status, raw := e.do("PUT", fmt.Sprintf("/_matrix/client/v3/sendToDevice/m.test/t%d", i), aliceTok, body, nil); status != 200 {
			t.Fatalf("send %d: %d %s", i, status, raw)
		}
	}
	var seen []int
	for len(seen) < n {
		resp := e.sync(bobTok, since, "", 0)
		if len(resp.ToDevice.Events) == 0 {
			t.Fatalf("stalled after %d messages", len(seen))
		}
		again := e.sync(bobTok, since, "", 0)
		if len(again.ToDevice.Events) != len(resp.ToDevice.Events) || string(again.ToDevice.Events[0].Content) != string(resp.ToDevice.Events[0].Content) {
			t.Fatalf("a repeated sync got a different batch")
		}
		for _, ev := range resp.ToDevice.Events {
			var c struct{ N int }
			_ = json.Unmarshal(ev.Content, &c)
			seen = append(seen, c.N)
		}
		since = resp.NextBatch
	}
	for i, v := range seen {
		if v != i {
			t.Fatalf("message %d delivered as number %d: order %v", v, i, seen)
		}
	}
	if rest := e.sync(bobTok, since, "", 0); len(rest.ToDevice.Events) != 0 {
		t.Fatalf("delivered again after acknowledgement: %+v", rest.ToDevice.Events)
	}
}
