package userapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/userapi/api"
)

// signedDeviceKeys returns device keys for userID/deviceID signed by a new
// ed25519 key.
func signedDeviceKeys(t *testing.T, userID, deviceID string) json.RawMessage {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	raw, _ := json.Marshal(map[string]any{
		"user_id": userID, "device_id": deviceID, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
		"keys": map[string]string{"ed25519:" + deviceID: base64.RawStdEncoding.EncodeToString(pub)},
	})
	signed, err := gomatrixserverlib.SignJSON(userID, gomatrixserverlib.KeyID("ed25519:"+deviceID), priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func newUserWithDevice(t *testing.T, s *Service, localpart, deviceID string) string {
	t.Helper()
	ctx := context.Background()
	userID, err := s.CreateAccount(ctx, localpart, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateDevice(ctx, api.DeviceRequest{UserID: userID, DeviceID: deviceID}); err != nil {
		t.Fatal(err)
	}
	return userID
}

// TestConcurrentClaimsNeverShareAKey races claimers for one device's
// one-time keys: each key must go to exactly one of them.
func TestConcurrentClaimsNeverShareAKey(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		s := openService(t, dbURL)
		alice := newUserWithDevice(t, s, "alice", "A")
		const n = 60
		otks := map[string]json.RawMessage{}
		for i := range n {
			otks[fmt.Sprintf("curve25519:K%03d", i)] = json.RawMessage(fmt.Sprintf("%q", fmt.Sprintf("key%d", i)))
		}
		counts, err := s.UploadKeys(ctx, &api.UploadKeysRequest{UserID: alice, DeviceID: "A", OneTimeKeys: otks})
		if err != nil || counts["curve25519"] != n {
			t.Fatalf("upload: %v %v", counts, err)
		}
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					resp, err := s.ClaimKeys(ctx, &api.ClaimKeysRequest{OneTimeKeys: map[string]map[string]string{alice: {"A": "curve25519"}}})
					if err != nil {
						t.Error(err)
						return
					}
					keys := resp.OneTimeKeys[alice]["A"]
					if len(keys) == 0 {
						return
					}
					mu.Lock()
					for kid := range keys {
						got[kid]++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(got) != n {
			t.Fatalf("claimed %d distinct keys, want %d", len(got), n)
		}
		for kid, c := range got {
			if c != 1 {
				t.Fatalf("key %s handed out %d times", kid, c)
			}
		}
	})
}

// TestDeviceListUpdatesArePublished checks the device-list stream: key
// uploads and device deletions are published in per-user order with
// chained stream IDs, and a restart publishes what was queued before.
func TestDeviceListUpdatesArePublished(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		s := openService(t, dbURL)
		alice := newUserWithDevice(t, s, "alice", "A")
		if _, err := s.CreateDevice(ctx, api.DeviceRequest{UserID: alice, DeviceID: "B"}); err != nil {
			t.Fatal(err)
		}
		// Queued while no publisher runs: they wait in the outbox.
		for _, dev := range []string{"A", "B"} {
			if _, err := s.UploadKeys(ctx, &api.UploadKeysRequest{UserID: alice, DeviceID: dev, DeviceKeys: signedDeviceKeys(t, alice, dev)}); err != nil {
				t.Fatal(err)
			}
		}
		// Unchanged keys publish nothing.
		if _, err := s.UploadKeys(ctx, &api.UploadKeysRequest{UserID: alice, DeviceID: "A"}); err != nil {
			t.Fatal(err)
		}

		b, err := bus.Open(ctx, bus.Options{StoreDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		if err := s.StartDeviceListPublisher(ctx, b); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		updates := make(chan api.DeviceListUpdate, 10)
		sub, err := b.Subscribe(ctx, api.DeviceListStream, "test", api.DeviceListSubject, func(_ context.Context, m bus.Message) error {
			var u api.DeviceListUpdate
			if err := json.Unmarshal(m.Data, &u); err != nil {
				return err
			}
			updates <- u
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sub.Stop)
		if err := s.Logout(ctx, alice, "B"); err != nil {
			t.Fatal(err)
		}
		var got []api.DeviceListUpdate
		for len(got) < 3 {
			select {
			case u := <-updates:
				got = append(got, u)
			case <-time.After(10 * time.Second):
				t.Fatalf("got %d updates, want 3: %+v", len(got), got)
			}
		}
		want := []struct {
			device  string
			deleted bool
		}{{"A", false}, {"B", false}, {"B", true}}
		for i, u := range got {
			if u.UserID != alice || u.DeviceID != want[i].device || u.Deleted != want[i].deleted || u.StreamID != int64(i+1) {
				t.Fatalf("update %d = %+v, want %+v stream %d", i, u, want[i], i+1)
			}
			if (i == 0 && len(u.PrevID) != 0) || (i > 0 && (len(u.PrevID) != 1 || u.PrevID[0] != int64(i))) {
				t.Fatalf("update %d prev_id = %v", i, u.PrevID)
			}
			if !u.Deleted && len(u.Keys) == 0 {
				t.Fatalf("update %d carries no keys", i)
			}
		}
		rows, err := s.store.DeviceKeys(ctx, alice, nil)
		if err != nil || len(rows) != 1 || rows[0].DeviceID != "A" {
			t.Fatalf("device keys after logout of B = %+v, %v", rows, err)
		}
		select {
		case u := <-updates:
			t.Fatalf("unexpected update %+v", u)
		case <-time.After(200 * time.Millisecond):
		}
	})
}
