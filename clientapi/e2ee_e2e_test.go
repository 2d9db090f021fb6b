//go:build goolm

package clientapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"
	_ "modernc.org/sqlite" // the "sqlite" driver for the clients' crypto stores

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/internal/testserver"
)

// e2eeClient is a mautrix client with its own Olm machine (pure Go, goolm)
// and crypto store, syncing in the background.
type e2eeClient struct {
	t    *testing.T
	cli  *mautrix.Client
	mach *crypto.OlmMachine

	mu        sync.Mutex
	plaintext map[id.EventID]string
	changed   []id.UserID // device_lists.changed of every sync, in order
}

func newE2EEClient(t *testing.T, cli *mautrix.Client) *e2eeClient {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "crypto.db")
	db, err := dbutil.NewWithDialect("file:"+path+"?_pragma=foreign_keys(1)&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate", "sqlite")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	log := zerolog.Nop()
	stateStore := sqlstatestore.NewSQLStateStore(db, dbutil.ZeroLogger(log), false)
	if err := stateStore.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	cli.StateStore = stateStore
	store := crypto.NewSQLCryptoStore(db, dbutil.ZeroLogger(log), "", cli.DeviceID, []byte("pickle key"))
	if err := store.DB.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	c := &e2eeClient{t: t, cli: cli, mach: crypto.NewOlmMachine(cli, &log, store, stateStore), plaintext: map[id.EventID]string{}}
	if err := c.mach.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.mach.ShareKeys(ctx, -1); err != nil {
		t.Fatalf("upload device keys: %v", err)
	}
	syncer := cli.Syncer.(*mautrix.DefaultSyncer)
	syncer.OnSync(func(ctx context.Context, resp *mautrix.RespSync, since string) bool {
		c.mu.Lock()
		c.changed = append(c.changed, resp.DeviceLists.Changed...)
		c.mu.Unlock()
		return c.mach.ProcessSyncResponse(ctx, resp, since)
	})
	syncer.OnEvent(cli.StateStoreSyncHandler)
	syncer.OnEventType(event.StateMember, c.mach.HandleMemberEvent)
	syncer.OnEventType(event.EventEncrypted, func(ctx context.Context, evt *event.Event) { c.decrypt(ctx, evt) })

	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for sctx.Err() == nil {
			if err := cli.SyncWithContext(sctx); err != nil && sctx.Err() == nil {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func (c *e2eeClient) decrypt(ctx context.Context, evt *event.Event) {
	dec, err := c.mach.DecryptMegolmEvent(ctx, evt)
	if err != nil {
		return // the key may come later; decryptLater retries
	}
	c.record(evt.ID, dec)
}

func (c *e2eeClient) record(eventID id.EventID, dec *event.Event) {
	_ = dec.Content.ParseRaw(dec.Type)
	if msg := dec.Content.AsMessage(); msg != nil {
		c.mu.Lock()
		c.plaintext[eventID] = msg.Body
		c.mu.Unlock()
	}
}

// send encrypts a text message for every joined member's devices.
func (c *e2eeClient) send(ctx context.Context, roomID id.RoomID, body string) id.EventID {
	c.t.Helper()
	members, err := c.cli.JoinedMembers(ctx, roomID)
	if err != nil {
		c.t.Fatal(err)
	}
	var users []id.UserID
	for u := range members.Joined {
		users = append(users, u)
	}
	if err := c.mach.ShareGroupSession(ctx, roomID, users); err != nil {
		c.t.Fatalf("share group session: %v", err)
	}
	enc, err := c.mach.EncryptMegolmEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		c.t.Fatalf("encrypt: %v", err)
	}
	resp, err := c.cli.SendMessageEvent(ctx, roomID, event.EventEncrypted, enc)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.EventID
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *e2eeClient) waitPlaintext(eventID id.EventID, want string) {
	c.t.Helper()
	waitFor(c.t, c.cli.UserID.String()+"/"+c.cli.DeviceID.String()+" decrypting "+eventID.String(), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.plaintext[eventID] == want
	})
}

// changesSince returns how often user appeared in device_lists.changed
// from the n-th recorded entry on.
func (c *e2eeClient) changesSince(n int, user id.UserID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	count := 0
	for _, u := range c.changed[n:] {
		if u == user {
			count++
		}
	}
	return count
}

func (c *e2eeClient) changedLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.changed)
}

func (c *e2eeClient) knowsDevice(ctx context.Context, user id.UserID, device id.DeviceID) bool {
	devs, err := c.mach.CryptoStore.GetDevices(ctx, user)
	if err != nil {
		return false
	}
	_, ok := devs[device]
	return ok
}

// TestEndToEndEncryption drives the server with mautrix-go's own crypto:
// Olm/Megolm messages between two users, cross-signing seen by another
// user, a later device of bob that gets room keys shared to it and reads
// older history from the key backup, and device deletion reaching the
// other user's device list through /sync.
func TestEndToEndEncryption(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) { testEndToEndEncryption(t, dialect) })
	}
}

func testEndToEndEncryption(t *testing.T, dialect string) {
	srv := testserver.Start(t, testserver.Options{DB: dialect})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	alice := newE2EEClient(t, srv.RegisterUser(t, "alice"))
	bob := newE2EEClient(t, srv.RegisterUser(t, "bob"))

	room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", Invite: []id.UserID{bob.cli.UserID},
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{
			Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}

	// Messages both ways decrypt on the other side.
	hello := alice.send(ctx, room.RoomID, "hello bob")
	bob.waitPlaintext(hello, "hello bob")
	reply := bob.send(ctx, room.RoomID, "hi alice")
	alice.waitPlaintext(reply, "hi alice")

	// Cross-signing: alice signs her device; bob sees it in /keys/query.
	keys, err := alice.mach.GenerateCrossSigningKeys()
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.mach.PublishCrossSigningKeys(ctx, keys, func(*mautrix.RespUserInteractive) any {
		t.Error("the first cross-signing upload must not need user-interactive authentication")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := alice.mach.SignOwnDevice(ctx, alice.mach.OwnIdentity()); err != nil {
		t.Fatal(err)
	}
	q, err := bob.cli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.cli.UserID: {}}})
	if err != nil {
		t.Fatal(err)
	}
	sskID := id.NewKeyID(id.KeyAlgorithmEd25519, keys.SelfSigningKey.PublicKey().String())
	if q.MasterKeys[alice.cli.UserID].Keys == nil || q.SelfSigningKeys[alice.cli.UserID].Keys == nil {
		t.Fatalf("bob does not see alice's cross-signing keys: %+v", q)
	}
	if _, ok := q.DeviceKeys[alice.cli.UserID][alice.cli.DeviceID].Signatures[alice.cli.UserID][sskID]; !ok {
		t.Fatalf("alice's device is not cross-signed in bob's query: %+v", q.DeviceKeys[alice.cli.UserID])
	}
	if len(q.UserSigningKeys) != 0 {
		t.Fatalf("alice's user-signing key shown to bob: %+v", q.UserSigningKeys)
	}

	// Bob backs up the room key of alice's session.
	sessionID := id.SessionID("")
	{
		evt, err := bob.cli.GetEvent(ctx, room.RoomID, hello)
		if err != nil {
			t.Fatal(err)
		}
		_ = evt.Content.ParseRaw(evt.Type)
		sessionID = evt.Content.AsEncrypted().SessionID
	}
	igs, err := bob.mach.CryptoStore.GetGroupSession(ctx, room.RoomID, sessionID)
	if err != nil || igs == nil {
		t.Fatalf("bob's inbound session: %v", err)
	}
	exported, err := igs.Internal.Export(igs.Internal.FirstKnownIndex())
	if err != nil {
		t.Fatal(err)
	}
	backupKey, err := backup.NewMegolmBackupKey()
	if err != nil {
		t.Fatal(err)
	}
	encrypted, err := backup.EncryptSessionData(backupKey, backup.MegolmSessionData{
		Algorithm: id.AlgorithmMegolmV1, SenderKey: igs.SenderKey,
		SenderClaimedKeys: backup.SenderClaimedKeys{Ed25519: igs.SigningKey}, SessionKey: string(exported),
	})
	if err != nil {
		t.Fatal(err)
	}
	sessionData, _ := json.Marshal(encrypted)
	version, err := bob.cli.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
		Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
		AuthData:  backup.MegolmAuthData{PublicKey: id.Ed25519(backupKey.PublicKey().Bytes())},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.cli.PutKeysInBackup(ctx, version.Version, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{
		room.RoomID: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{sessionID: {
			FirstMessageIndex: int(igs.Internal.FirstKnownIndex()), SessionData: sessionData}}}}}); err != nil {
		t.Fatal(err)
	}

	// A second device of bob: alice learns of it through device_lists and
	// shares the room key with it for the next message.
	mark := alice.changedLen()
	login, err := srv.Client(t).Login(ctx, &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Password: testserver.Password,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bob"},
	})
	if err != nil {
		t.Fatal(err)
	}
	cli2, err := mautrix.NewClient(srv.URL, login.UserID, login.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	cli2.DeviceID = login.DeviceID
	bob2 := newE2EEClient(t, cli2)
	waitFor(t, "alice to see bob in device_lists.changed", func() bool { return alice.changesSince(mark, bob.cli.UserID) > 0 })
	waitFor(t, "alice to fetch bob's new device", func() bool { return alice.knowsDevice(ctx, bob.cli.UserID, bob2.cli.DeviceID) })
	later := alice.send(ctx, room.RoomID, "for both of bob's devices")
	bob2.waitPlaintext(later, "for both of bob's devices")
	bob.waitPlaintext(later, "for both of bob's devices")

	// The new device reads the earlier message with the key from backup.
	keysResp, err := bob2.cli.GetKeyBackup(ctx, version.Version)
	if err != nil {
		t.Fatal(err)
	}
	backed := keysResp.Rooms[room.RoomID].Sessions[sessionID]
	data, err := backed.SessionData.Decrypt(backupKey)
	if err != nil {
		t.Fatalf("decrypt backed-up session: %v", err)
	}
	if _, err := bob2.mach.ImportRoomKeyFromBackup(ctx, version.Version, room.RoomID, sessionID, data); err != nil {
		t.Fatal(err)
	}
	old, err := bob2.cli.GetEvent(ctx, room.RoomID, hello)
	if err != nil {
		t.Fatal(err)
	}
	_ = old.Content.ParseRaw(old.Type)
	dec, err := bob2.mach.DecryptMegolmEvent(ctx, old)
	if err != nil {
		t.Fatalf("decrypt history with the backed-up key: %v", err)
	}
	bob2.record(hello, dec)
	bob2.waitPlaintext(hello, "hello bob")

	// Deleting bob's second device reaches alice's device list.
	mark = alice.changedLen()
	body, err := bob.cli.MakeRequest(ctx, "DELETE", bob.cli.BuildClientURL("v3", "devices", bob2.cli.DeviceID), struct{}{}, nil)
	var httpErr mautrix.HTTPError
	var challenge mautrix.RespUserInteractive
	if !errors.As(err, &httpErr) || !httpErr.IsStatus(401) || json.Unmarshal(body, &challenge) != nil || challenge.Session == "" {
		t.Fatalf("delete device without auth = %v %s, want a UIA challenge", err, body)
	}
	session := challenge.Session
	if err := bob.cli.DeleteDevice(ctx, bob2.cli.DeviceID, &mautrix.ReqDeleteDevice[any]{Auth: map[string]any{
		"type": "m.login.password", "session": session, "password": testserver.Password,
		"identifier": map[string]any{"type": "m.id.user", "user": "bob"},
	}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice to see bob's device deletion in device_lists.changed", func() bool { return alice.changesSince(mark, bob.cli.UserID) > 0 })
	waitFor(t, "alice to forget bob's deleted device", func() bool { return !alice.knowsDevice(ctx, bob.cli.UserID, bob2.cli.DeviceID) })
	q, err = alice.cli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{bob.cli.UserID: {}}})
	if err != nil {
		t.Fatal(err)
	}
	if devs := q.DeviceKeys[bob.cli.UserID]; len(devs) != 1 || !slices.Contains([]id.DeviceID{bob.cli.DeviceID}, firstKey(devs)) {
		t.Fatalf("bob's devices after deletion: %+v", devs)
	}
}

func firstKey[V any](m map[id.DeviceID]V) id.DeviceID {
	for k := range m {
		return k
	}
	return ""
}
