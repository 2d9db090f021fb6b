package clientapi_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/internal/testserver"
)

// The room directory, room upgrades, space hierarchies, reports and
// forgetting, driven through a real server with mautrix-go.

const adminSecret = "directory-test-secret"

var (
	typeTombstone  = event.Type{Type: "m.room.tombstone", Class: event.StateEventType}
	typeSpaceChild = event.Type{Type: "m.space.child", Class: event.StateEventType}
)

func TestRoomDiscoveryEndToEnd(t *testing.T) {
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			srv := testserver.Start(t, testserver.Options{DB: dialect, Env: map[string]string{
				"PARLEY_REGISTRATION_SHARED_SECRET": adminSecret,
			}})
			alice := srv.RegisterUser(t, "alice")
			bob := srv.RegisterUser(t, "bob")
			carol := srv.RegisterUser(t, "carol")
			t.Run("directory", func(t *testing.T) { testDirectory(t, srv, alice, bob) })
			t.Run("upgrade", func(t *testing.T) { testUpgrade(t, srv, alice, bob) })
			t.Run("hierarchy", func(t *testing.T) { testHierarchy(t, srv, alice, bob) })
			t.Run("report", func(t *testing.T) { testReport(t, srv, alice, bob, carol) })
			t.Run("forget", func(t *testing.T) { testForget(t, alice, bob) })
			t.Run("bad input", func(t *testing.T) { testRoomDiscoveryBadInput(t, srv, alice) })
		})
	}
}

func publicRoomIDs(resp *mautrix.RespPublicRooms) []id.RoomID {
	var out []id.RoomID
	for _, r := range resp.Chunk {
		out = append(out, r.RoomID)
	}
	return out
}

type directoryPage struct {
	Chunk     []mautrix.PublicRoomInfo `json:"chunk"`
	NextBatch string                   `json:"next_batch"`
	PrevBatch string                   `json:"prev_batch"`
	Total     int                      `json:"total_room_count_estimate"`
}

func searchDirectory(t *testing.T, cli *mautrix.Client, body map[string]any) *directoryPage {
	t.Helper()
	var page directoryPage
	if err := roomRequest(t, cli, http.MethodPost, "/_matrix/client/v3/publicRooms", body, &page); err != nil {
		t.Fatalf("POST publicRooms %v: %v", body, err)
	}
	return &page
}

func (p *directoryPage) ids() []id.RoomID {
	var out []id.RoomID
	for _, r := range p.Chunk {
		out = append(out, r.RoomID)
	}
	return out
}

func roomVisibility(t *testing.T, cli *mautrix.Client, roomID id.RoomID) string {
	t.Helper()
	var v struct {
		Visibility string `json:"visibility"`
	}
	if err := roomRequest(t, cli, http.MethodGet, "/_matrix/client/v3/directory/list/room/"+pathEsc(roomID), nil, &v); err != nil {
		t.Fatalf("visibility of %s: %v", roomID, err)
	}
	return v.Visibility
}

func setRoomVisibility(t *testing.T, cli *mautrix.Client, roomID id.RoomID, v string) error {
	t.Helper()
	return roomRequest(t, cli, http.MethodPut, "/_matrix/client/v3/directory/list/room/"+pathEsc(roomID), map[string]string{"visibility": v}, nil)
}

func testDirectory(t *testing.T, srv *testserver.Server, alice, bob *mautrix.Client) {
	ctx := context.Background()
	create := func(req *mautrix.ReqCreateRoom) id.RoomID {
		t.Helper()
		return mustOK[*mautrix.RespCreateRoom](t, "create "+req.Name)(alice.CreateRoom(ctx, req)).RoomID
	}
	alpha := create(&mautrix.ReqCreateRoom{Visibility: "public", Name: "Directory Alpha", Topic: "The first room", RoomAliasName: "alpha"})
	beta := create(&mautrix.ReqCreateRoom{Visibility: "public", Name: "Directory Beta"})
	gamma := create(&mautrix.ReqCreateRoom{Visibility: "public", Name: "Directory Gamma", CreationContent: map[string]any{"type": "m.space"}})
	secret := create(&mautrix.ReqCreateRoom{Visibility: "private", Name: "Directory Secret"})
	mustOK[*mautrix.RespJoinRoom](t, "bob joins beta")(bob.JoinRoomByID(ctx, beta))

	// Anyone may read the directory without an access token.
	anon := srv.Client(t)
	all := mustOK[*mautrix.RespPublicRooms](t, "public rooms")(anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{}))
	if got := publicRoomIDs(all); len(got) != 3 || got[0] != beta || !slices.Contains(got, alpha) || !slices.Contains(got, gamma) || all.TotalRoomCountEstimate != 3 {
		t.Fatalf("directory = %v (total %d); want beta (2 members) first, then alpha and gamma", got, all.TotalRoomCountEstimate)
	}
	var info *mautrix.PublicRoomInfo
	for _, r := range all.Chunk {
		if r.RoomID == alpha {
			info = r
		}
	}
	want := mautrix.PublicRoomInfo{
		RoomID: alpha, Name: "Directory Alpha", Topic: "The first room", CanonicalAlias: id.RoomAlias("#alpha:" + srv.ServerName),
		JoinRule: "public", NumJoinedMembers: 1, WorldReadable: false, GuestCanJoin: false,
	}
	if !reflect.DeepEqual(*info, want) {
		t.Fatalf("alpha's entry = %+v, want %+v", *info, want)
	}

	// Pagination, forwards and back.
	page1 := mustOK[*mautrix.RespPublicRooms](t, "page 1")(anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 2}))
	if len(page1.Chunk) != 2 || page1.NextBatch == "" || page1.PrevBatch != "" {
		t.Fatalf("page 1 = %v next %q prev %q", publicRoomIDs(page1), page1.NextBatch, page1.PrevBatch)
	}
	page2 := mustOK[*mautrix.RespPublicRooms](t, "page 2")(anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 2, Since: page1.NextBatch}))
	if len(page2.Chunk) != 1 || page2.NextBatch != "" || page2.PrevBatch == "" {
		t.Fatalf("page 2 = %v next %q prev %q", publicRoomIDs(page2), page2.NextBatch, page2.PrevBatch)
	}
	if got := append(publicRoomIDs(page1), publicRoomIDs(page2)...); !slices.Equal(got, publicRoomIDs(all)) {
		t.Fatalf("pages %v != whole list %v", got, publicRoomIDs(all))
	}
	back := mustOK[*mautrix.RespPublicRooms](t, "back")(anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{Limit: 2, Since: page2.PrevBatch}))
	if !slices.Equal(publicRoomIDs(back), publicRoomIDs(page1)) {
		t.Fatalf("prev_batch gave %v, want %v", publicRoomIDs(back), publicRoomIDs(page1))
	}

	// Filters.
	if got := searchDirectory(t, bob, map[string]any{"filter": map[string]any{"generic_search_term": "FIRST"}}).ids(); !slices.Equal(got, []id.RoomID{alpha}) {
		t.Fatalf("search by topic = %v", got)
	}
	if got := searchDirectory(t, bob, map[string]any{"filter": map[string]any{"generic_search_term": "#alpha"}}).ids(); !slices.Equal(got, []id.RoomID{alpha}) {
		t.Fatalf("search by alias = %v", got)
	}
	if got := searchDirectory(t, bob, map[string]any{"filter": map[string]any{"room_types": []any{"m.space"}}}).ids(); !slices.Equal(got, []id.RoomID{gamma}) {
		t.Fatalf("spaces = %v", got)
	}
	if got := searchDirectory(t, bob, map[string]any{"filter": map[string]any{"room_types": []any{nil}}}).ids(); len(got) != 2 || slices.Contains(got, gamma) {
		t.Fatalf("rooms without a type = %v", got)
	}
	paged := searchDirectory(t, bob, map[string]any{"limit": 1, "filter": map[string]any{"generic_search_term": "directory"}})
	if len(paged.Chunk) != 1 || paged.Total != 3 || paged.NextBatch == "" {
		t.Fatalf("filtered page = %+v", paged)
	}
	if got := searchDirectory(t, bob, map[string]any{"include_all_networks": true}).ids(); len(got) != 3 {
		t.Fatalf("all networks = %v", got)
	}
	if got := searchDirectory(t, bob, map[string]any{"third_party_instance_id": "irc"}).ids(); len(got) != 0 {
		t.Fatalf("a third-party network = %v", got)
	}

	// Changes of state show.
	if _, err := alice.SendStateEvent(ctx, alpha, event.StateRoomName, "", map[string]string{"name": "Directory Alpha Renamed"}); err != nil {
		t.Fatal(err)
	}
	if got := searchDirectory(t, bob, map[string]any{"filter": map[string]any{"generic_search_term": "renamed"}}); len(got.Chunk) != 1 || got.Chunk[0].Name != "Directory Alpha Renamed" {
		t.Fatalf("after rename = %+v", got.Chunk)
	}

	// Visibility.
	if v := roomVisibility(t, anon, alpha); v != "public" {
		t.Fatalf("alpha visibility %q", v)
	}
	if v := roomVisibility(t, anon, secret); v != "private" {
		t.Fatalf("secret visibility %q", v)
	}
	wantMatrixError(t, "bob unpublishes a room he is not in", setRoomVisibility(t, bob, alpha, "private"), http.StatusForbidden, "M_FORBIDDEN")
	wantMatrixError(t, "bob unpublishes a room where he has no power", setRoomVisibility(t, bob, beta, "private"), http.StatusForbidden, "M_FORBIDDEN")
	if err := setRoomVisibility(t, alice, alpha, "private"); err != nil {
		t.Fatal(err)
	}
	if err := setRoomVisibility(t, alice, secret, "public"); err != nil {
		t.Fatal(err)
	}
	if v := roomVisibility(t, anon, alpha); v != "private" {
		t.Fatalf("alpha visibility after unpublishing %q", v)
	}
	got := mustOK[*mautrix.RespPublicRooms](t, "after changes")(anon.PublicRooms(ctx, &mautrix.ReqPublicRooms{}))
	if ids := publicRoomIDs(got); slices.Contains(ids, alpha) || !slices.Contains(ids, secret) {
		t.Fatalf("directory after changes = %v", ids)
	}
	// A missing visibility means public; the admin may change any room.
	admin := registerAdmin(t, srv, "diradmin")
	if err := roomRequest(t, admin, http.MethodPut, "/_matrix/client/v3/directory/list/room/"+pathEsc(alpha), map[string]any{}, nil); err != nil {
		t.Fatalf("admin publishes alpha: %v", err)
	}
	if v := roomVisibility(t, anon, alpha); v != "public" {
		t.Fatalf("alpha visibility after the admin published it %q", v)
	}
	for _, r := range []id.RoomID{alpha, beta, gamma, secret} {
		if err := setRoomVisibility(t, alice, r, "private"); err != nil {
			t.Fatal(err)
		}
	}
}

// registerAdmin creates a server admin through the shared-secret API.
func registerAdmin(t *testing.T, srv *testserver.Server, localpart string) *mautrix.Client {
	t.Helper()
	cli := srv.Client(t)
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := roomRequest(t, cli, http.MethodGet, "/_synapse/admin/v1/register", nil, &nonce); err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha1.New, []byte(adminSecret))
	m.Write([]byte(nonce.Nonce + "\x00" + localpart + "\x00" + testserver.Password + "\x00admin"))
	var resp struct {
		UserID      id.UserID `json:"user_id"`
		AccessToken string    `json:"access_token"`
	}
	err := roomRequest(t, cli, http.MethodPost, "/_synapse/admin/v1/register", map[string]any{
		"nonce": nonce.Nonce, "username": localpart, "password": testserver.Password, "admin": true,
		"mac": hex.EncodeToString(m.Sum(nil)),
	}, &resp)
	if err != nil {
		t.Fatal(err)
	}
	cli.SetCredentials(resp.UserID, resp.AccessToken)
	return cli
}

func stateEventJSON(t *testing.T, cli *mautrix.Client, roomID id.RoomID, evType string) map[string]any {
	t.Helper()
	var ev map[string]any
	path := "/_matrix/client/v3/rooms/" + pathEsc(roomID) + "/state/" + url.PathEscape(evType) + "/?format=event"
	if err := roomRequest(t, cli, http.MethodGet, path, nil, &ev); err != nil {
		t.Fatalf("state %s of %s: %v", evType, roomID, err)
	}
	return ev
}

func upgrade(t *testing.T, cli *mautrix.Client, roomID id.RoomID, body any) (id.RoomID, error) {
	t.Helper()
	var resp struct {
		ReplacementRoom id.RoomID `json:"replacement_room"`
	}
	err := roomRequest(t, cli, http.MethodPost, "/_matrix/client/v3/rooms/"+pathEsc(roomID)+"/upgrade", body, &resp)
	return resp.ReplacementRoom, err
}

func testUpgrade(t *testing.T, srv *testserver.Server, alice, bob *mautrix.Client) {
	ctx := context.Background()
	created := mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Visibility: "public", Preset: "public_chat", RoomVersion: "10", Name: "Old", Topic: "Before", RoomAliasName: "upgrademe",
		InitialState: []*event.Event{
			{Type: event.StateEncryption, Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}},
			{Type: typeCustomState, Content: event.Content{Raw: map[string]any{"stays": true}}},
		},
		PowerLevelOverride: &event.PowerLevelsEventContent{
			Users: map[id.UserID]int{alice.UserID: 100, bob.UserID: 50}, StateDefaultPtr: ptr(50), EventsDefault: 0,
			Events: map[string]int{"m.room.tombstone": 100, "m.room.power_levels": 100},
		},
	}))
	oldRoom := created.RoomID
	mustOK[*mautrix.RespJoinRoom](t, "bob joins")(bob.JoinRoomByID(ctx, oldRoom))

	_, err := upgrade(t, bob, oldRoom, map[string]string{"new_version": "11"})
	wantMatrixError(t, "bob upgrades without the power", err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = upgrade(t, alice, oldRoom, map[string]string{"new_version": "999"})
	wantMatrixError(t, "unknown version", err, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
	_, err = upgrade(t, alice, id.RoomID("!unknown:"+srv.ServerName), map[string]string{"new_version": "11"})
	wantMatrixError(t, "unknown room", err, http.StatusNotFound, "M_NOT_FOUND")

	newRoom, err := upgrade(t, alice, oldRoom, map[string]string{"new_version": "11"})
	if err != nil || newRoom == "" || newRoom == oldRoom {
		t.Fatalf("upgrade: %q, %v", newRoom, err)
	}

	tombstone := stateEventJSON(t, alice, oldRoom, "m.room.tombstone")
	if tombstone["content"].(map[string]any)["replacement_room"] != string(newRoom) {
		t.Fatalf("tombstone = %v", tombstone)
	}
	oldPL := roomStateContent(t, alice, oldRoom, event.StatePowerLevels, "")
	if oldPL["events_default"] != float64(50) || oldPL["invite"] != float64(50) {
		t.Fatalf("old room's power levels not restricted: %v", oldPL)
	}
	if c := roomStateContent(t, alice, oldRoom, event.StateCanonicalAlias, ""); len(c) != 0 {
		t.Fatalf("old room keeps canonical alias %v", c)
	}
	create := roomStateContent(t, alice, newRoom, event.StateCreate, "")
	pred, _ := create["predecessor"].(map[string]any)
	if create["room_version"] != "11" || pred["room_id"] != string(oldRoom) || pred["event_id"] != tombstone["event_id"] || create["creator"] != nil {
		t.Fatalf("new room's create = %v (tombstone %v)", create, tombstone["event_id"])
	}
	for evType, want := range map[event.Type][2]string{
		event.StateRoomName:          {"name", "Old"},
		event.StateTopic:             {"topic", "Before"},
		event.StateJoinRules:         {"join_rule", "public"},
		event.StateEncryption:        {"algorithm", "m.megolm.v1.aes-sha2"},
		event.StateGuestAccess:       {"guest_access", "forbidden"},
		event.StateHistoryVisibility: {"history_visibility", "shared"},
		event.StateCanonicalAlias:    {"alias", "#upgrademe:" + srv.ServerName},
	} {
		if got := roomStateContent(t, alice, newRoom, evType, "")[want[0]]; got != want[1] {
			t.Fatalf("new room's %s.%s = %v, want %s", evType.Type, want[0], got, want[1])
		}
	}
	var c map[string]any
	wantMatrixError(t, "custom state is not copied", alice.StateEvent(ctx, newRoom, typeCustomState, "", &c), http.StatusNotFound, "M_NOT_FOUND")
	newPL := roomStateContent(t, alice, newRoom, event.StatePowerLevels, "")
	users := newPL["users"].(map[string]any)
	if users[string(alice.UserID)] != float64(100) || users[string(bob.UserID)] != float64(50) || newPL["events_default"] != float64(0) {
		t.Fatalf("new room's power levels = %v", newPL)
	}
	alias := mustOK[*mautrix.RespAliasResolve](t, "resolve")(alice.ResolveAlias(ctx, id.RoomAlias("#upgrademe:"+srv.ServerName)))
	if alias.RoomID != newRoom {
		t.Fatalf("alias points at %s", alias.RoomID)
	}
	if roomVisibility(t, alice, newRoom) != "public" || roomVisibility(t, alice, oldRoom) != "private" {
		t.Fatal("the directory entry did not move to the new room")
	}
	mustOK[*mautrix.RespJoinRoom](t, "bob follows")(bob.JoinRoomByID(ctx, newRoom))

	// An upgrader below the levels of what is copied is raised while the
	// state is copied, and put back after.
	mod := mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset: "public_chat", Name: "Mods",
		PowerLevelOverride: &event.PowerLevelsEventContent{
			Users:  map[id.UserID]int{alice.UserID: 100, bob.UserID: 60},
			Events: map[string]int{"m.room.tombstone": 60, "m.room.name": 90, "m.room.power_levels": 100},
		},
	})).RoomID
	mustOK[*mautrix.RespJoinRoom](t, "bob joins mods")(bob.JoinRoomByID(ctx, mod))
	modNew, err := upgrade(t, bob, mod, map[string]string{"new_version": "10"})
	if err != nil {
		t.Fatalf("bob upgrades with tombstone power: %v", err)
	}
	if got := roomStateContent(t, bob, modNew, event.StateRoomName, "")["name"]; got != "Mods" {
		t.Fatalf("name copied by a raised upgrader = %v", got)
	}
	modPL := roomStateContent(t, bob, modNew, event.StatePowerLevels, "")
	if modPL["users"].(map[string]any)[string(bob.UserID)] != float64(60) {
		t.Fatalf("upgrader not put back to 60: %v", modPL)
	}
	if c := roomStateContent(t, bob, modNew, event.StateCreate, ""); c["creator"] != string(bob.UserID) {
		t.Fatalf("v10 create content = %v", c)
	}
	// bob (60) could not change the old room's power levels (100): they stay.
	if pl := roomStateContent(t, bob, mod, event.StatePowerLevels, ""); pl["events_default"] != float64(0) {
		t.Fatalf("old power levels changed without the power: %v", pl)
	}
}

func ptr[T any](v T) *T { return &v }

type hierarchyPage struct {
	Rooms []struct {
		mautrix.PublicRoomInfo
		ChildrenState []struct {
			Type           string         `json:"type"`
			StateKey       string         `json:"state_key"`
			Sender         string         `json:"sender"`
			OriginServerTS int64          `json:"origin_server_ts"`
			Content        map[string]any `json:"content"`
		} `json:"children_state"`
	} `json:"rooms"`
	NextBatch string `json:"next_batch"`
}

func hierarchy(t *testing.T, cli *mautrix.Client, roomID id.RoomID, query string) (*hierarchyPage, error) {
	t.Helper()
	var page hierarchyPage
	err := roomRequest(t, cli, http.MethodGet, "/_matrix/client/v1/rooms/"+pathEsc(roomID)+"/hierarchy?"+query, nil, &page)
	return &page, err
}

func (p *hierarchyPage) ids() []id.RoomID {
	var out []id.RoomID
	for _, r := range p.Rooms {
		out = append(out, r.RoomID)
	}
	return out
}

func testHierarchy(t *testing.T, srv *testserver.Server, alice, bob *mautrix.Client) {
	ctx := context.Background()
	create := func(name, preset string, space bool) id.RoomID {
		t.Helper()
		req := &mautrix.ReqCreateRoom{Name: name, Preset: preset}
		if space {
			req.CreationContent = map[string]any{"type": "m.space"}
		}
		return mustOK[*mautrix.RespCreateRoom](t, "create "+name)(alice.CreateRoom(ctx, req)).RoomID
	}
	space := create("Space", "public_chat", true)
	sub := create("Sub", "public_chat", true)
	r1 := create("R1", "public_chat", false)
	private := create("Private", "private_chat", false)
	r3 := create("R3", "public_chat", false)
	via := []string{srv.ServerName}
	addChild := func(parent, child id.RoomID, extra map[string]any) {
		t.Helper()
		c := map[string]any{"via": via}
		for k, v := range extra {
			c[k] = v
		}
		if _, err := alice.SendStateEvent(ctx, parent, typeSpaceChild, string(child), c); err != nil {
			t.Fatal(err)
		}
	}
	addChild(space, r1, nil)
	addChild(space, private, nil)
	addChild(space, id.RoomID("!unknown:"+srv.ServerName), nil)
	addChild(space, sub, map[string]any{"order": "a", "suggested": true})
	addChild(sub, r3, map[string]any{"suggested": true})
	addChild(sub, space, nil) // a loop
	// A child without via is no child.
	if _, err := alice.SendStateEvent(ctx, space, typeSpaceChild, string(r3), map[string]any{}); err != nil {
		t.Fatal(err)
	}

	full, err := hierarchy(t, bob, space, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := full.ids(), []id.RoomID{space, sub, r3, r1}; !slices.Equal(got, want) || full.NextBatch != "" {
		t.Fatalf("bob's hierarchy = %v (next %q), want %v: depth first, ordered children, private room left out", got, full.NextBatch, want)
	}
	root := full.Rooms[0]
	if root.Name != "Space" || root.RoomType != "m.space" || root.NumJoinedMembers != 1 || root.JoinRule != "public" {
		t.Fatalf("root summary = %+v", root.PublicRoomInfo)
	}
	var kids []string
	for _, c := range root.ChildrenState {
		if c.Type != "m.space.child" || c.Sender != string(alice.UserID) || c.OriginServerTS == 0 || c.Content["via"] == nil {
			t.Fatalf("child event = %+v", c)
		}
		kids = append(kids, c.StateKey)
	}
	if want := []string{string(sub), string(r1), string(private), "!unknown:" + srv.ServerName}; !slices.Equal(kids, want) {
		t.Fatalf("children_state = %v, want %v (the private and unknown rooms listed as children too)", kids, want)
	}
	if len(full.Rooms[3].ChildrenState) != 0 || full.Rooms[3].ChildrenState == nil {
		t.Fatalf("a plain room's children_state = %v", full.Rooms[3].ChildrenState)
	}

	if got, _ := hierarchy(t, alice, space, ""); !slices.Equal(got.ids(), []id.RoomID{space, sub, r3, r1, private}) {
		t.Fatalf("alice's hierarchy = %v", got.ids())
	}
	suggested, err := hierarchy(t, bob, space, "suggested_only=true")
	if err != nil || !slices.Equal(suggested.ids(), []id.RoomID{space, sub, r3}) || len(suggested.Rooms[0].ChildrenState) != 1 {
		t.Fatalf("suggested only = %v, %v", suggested.ids(), err)
	}
	shallow, err := hierarchy(t, bob, space, "max_depth=1")
	if err != nil || !slices.Equal(shallow.ids(), []id.RoomID{space, sub, r1}) {
		t.Fatalf("max_depth=1 = %v, %v", shallow.ids(), err)
	}
	if only, err := hierarchy(t, bob, space, "max_depth=0"); err != nil || !slices.Equal(only.ids(), []id.RoomID{space}) {
		t.Fatalf("max_depth=0 = %v, %v", only.ids(), err)
	}

	// Pagination with mautrix's own call.
	var paged []id.RoomID
	from := ""
	for i := 0; ; i++ {
		page := mustOK[*mautrix.RespHierarchy](t, "page")(bob.Hierarchy(ctx, space, &mautrix.ReqHierarchy{Limit: 1, From: from}))
		for _, r := range page.Rooms {
			paged = append(paged, r.RoomID)
		}
		if page.NextBatch == "" || i > 10 {
			break
		}
		from = page.NextBatch
	}
	if !slices.Equal(paged, full.ids()) {
		t.Fatalf("paged hierarchy = %v, want %v", paged, full.ids())
	}
	first, _ := hierarchy(t, bob, space, "limit=2")
	_, err = hierarchy(t, bob, space, "limit=2&max_depth=1&from="+url.QueryEscape(first.NextBatch))
	wantMatrixError(t, "max_depth changed while paginating", err, http.StatusBadRequest, "M_INVALID_PARAM")
	_, err = hierarchy(t, bob, sub, "from="+url.QueryEscape(first.NextBatch))
	wantMatrixError(t, "token of another root", err, http.StatusBadRequest, "M_INVALID_PARAM")
	_, err = hierarchy(t, bob, space, "from=nonsense!")
	wantMatrixError(t, "bad token", err, http.StatusBadRequest, "M_INVALID_PARAM")

	_, err = hierarchy(t, bob, private, "")
	wantMatrixError(t, "private root", err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = hierarchy(t, bob, id.RoomID("!unknown:"+srv.ServerName), "")
	wantMatrixError(t, "unknown root", err, http.StatusForbidden, "M_FORBIDDEN")
	for _, q := range []string{"limit=0", "limit=x", "max_depth=-1", "suggested_only=maybe"} {
		_, err = hierarchy(t, bob, space, q)
		wantMatrixError(t, q, err, http.StatusBadRequest, "M_INVALID_PARAM")
	}

	// A room restricted to the space's members shows to them only.
	restricted := mustOK[*mautrix.RespCreateRoom](t, "create restricted")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Name: "Members", Preset: "private_chat", RoomVersion: "10",
		InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{
			"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": sub}},
		}}}},
	})).RoomID
	addChild(sub, restricted, nil)
	if got, _ := hierarchy(t, bob, sub, ""); slices.Contains(got.ids(), restricted) {
		t.Fatalf("restricted room shown to a non-member of the space: %v", got.ids())
	}
	mustOK[*mautrix.RespJoinRoom](t, "bob joins sub")(bob.JoinRoomByID(ctx, sub))
	if got, _ := hierarchy(t, bob, sub, ""); !slices.Contains(got.ids(), restricted) {
		t.Fatalf("restricted room hidden from a member of the space: %v", got.ids())
	}

	// Upgrading a space carries its children over.
	newSub, err := upgrade(t, alice, sub, map[string]string{"new_version": "11"})
	if err != nil {
		t.Fatal(err)
	}
	upgraded, err := hierarchy(t, alice, newSub, "max_depth=1")
	got := upgraded.ids()
	if err != nil || len(got) != 4 || got[0] != newSub || !slices.Contains(got, r3) || !slices.Contains(got, space) ||
		!slices.Contains(got, restricted) || upgraded.Rooms[0].RoomType != "m.space" {
		t.Fatalf("upgraded space's hierarchy = %v, %v", upgraded.ids(), err)
	}
}

func report(t *testing.T, cli *mautrix.Client, roomID id.RoomID, eventID id.EventID, body any) error {
	t.Helper()
	return roomRequest(t, cli, http.MethodPost, "/_matrix/client/v3/rooms/"+pathEsc(roomID)+"/report/"+pathEsc(eventID), body, nil)
}

func testReport(t *testing.T, srv *testserver.Server, alice, bob, carol *mautrix.Client) {
	ctx := context.Background()
	roomID := mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})).RoomID
	other := mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})).RoomID
	mustOK[*mautrix.RespJoinRoom](t, "join")(bob.JoinRoomByID(ctx, roomID))
	msg := mustOK[*mautrix.RespSendEvent](t, "send")(alice.SendText(ctx, roomID, "offensive")).EventID

	if err := bob.ReportEvent(ctx, roomID, msg, "rude"); err != nil {
		t.Fatal(err)
	}
	if err := report(t, bob, roomID, msg, map[string]any{"reason": "very rude", "score": -100}); err != nil {
		t.Fatal(err)
	}
	wantMatrixError(t, "not joined", carol.ReportEvent(ctx, roomID, msg, "x"), http.StatusNotFound, "M_NOT_FOUND")
	wantMatrixError(t, "unknown event", bob.ReportEvent(ctx, roomID, "$nope", "x"), http.StatusNotFound, "M_NOT_FOUND")
	mustOK[*mautrix.RespJoinRoom](t, "join other")(bob.JoinRoomByID(ctx, other))
	wantMatrixError(t, "event of another room", bob.ReportEvent(ctx, other, msg, "x"), http.StatusNotFound, "M_NOT_FOUND")
	wantMatrixError(t, "score out of range", report(t, bob, roomID, msg, map[string]any{"score": 10}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantMatrixError(t, "score of the wrong type", report(t, bob, roomID, msg, map[string]any{"score": "bad"}), http.StatusBadRequest, "M_BAD_JSON")

	var list struct {
		EventReports []struct {
			RoomID  id.RoomID  `json:"room_id"`
			EventID id.EventID `json:"event_id"`
			UserID  id.UserID  `json:"user_id"`
			Reason  string     `json:"reason"`
			Score   *int       `json:"score"`
		} `json:"event_reports"`
	}
	wantMatrixError(t, "reports for non-admins", roomRequest(t, bob, http.MethodGet, "/_synapse/admin/v1/event_reports", nil, &list), http.StatusForbidden, "M_FORBIDDEN")
	admin := registerAdmin(t, srv, "reportadmin")
	if err := roomRequest(t, admin, http.MethodGet, "/_synapse/admin/v1/event_reports", nil, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.EventReports) != 2 {
		t.Fatalf("reports = %+v", list.EventReports)
	}
	r0, r1 := list.EventReports[0], list.EventReports[1]
	if r0.RoomID != roomID || r0.EventID != msg || r0.UserID != bob.UserID || r0.Reason != "rude" || r0.Score != nil ||
		r1.Reason != "very rude" || r1.Score == nil || *r1.Score != -100 {
		t.Fatalf("reports = %+v", list.EventReports)
	}
}

func testForget(t *testing.T, alice, bob *mautrix.Client) {
	ctx := context.Background()
	roomID := mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})).RoomID
	mustOK[*mautrix.RespJoinRoom](t, "join")(bob.JoinRoomByID(ctx, roomID))
	_, err := bob.ForgetRoom(ctx, roomID)
	wantMatrixError(t, "forget while joined", err, http.StatusBadRequest, "M_UNKNOWN")
	mustOK[*mautrix.RespLeaveRoom](t, "leave")(bob.LeaveRoom(ctx, roomID))
	if _, err := bob.ForgetRoom(ctx, roomID); err != nil {
		t.Fatalf("forget after leaving: %v", err)
	}
	// Forgetting twice is harmless.
	if _, err := bob.ForgetRoom(ctx, roomID); err != nil {
		t.Fatalf("forget again: %v", err)
	}
	_, err = bob.ForgetRoom(ctx, id.RoomID("!unknown:"+alice.UserID.Homeserver()))
	wantMatrixError(t, "forget unknown room", err, http.StatusNotFound, "M_NOT_FOUND")
}

func testRoomDiscoveryBadInput(t *testing.T, srv *testserver.Server, alice *mautrix.Client) {
	ctx := context.Background()
	roomID := mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})).RoomID
	unknown := "!unknown:" + srv.ServerName
	for _, c := range []struct {
		what, method, path string
		body               any
		status             int
		code               string
	}{
		{"visibility of an unknown room", "GET", "/_matrix/client/v3/directory/list/room/" + pathEsc(unknown), nil, 404, "M_NOT_FOUND"},
		{"publish an unknown room", "PUT", "/_matrix/client/v3/directory/list/room/" + pathEsc(unknown), map[string]any{"visibility": "public"}, 404, "M_NOT_FOUND"},
		{"bad room ID", "GET", "/_matrix/client/v3/directory/list/room/notaroom", nil, 400, "M_INVALID_PARAM"},
		{"bad visibility", "PUT", "/_matrix/client/v3/directory/list/room/" + pathEsc(roomID), map[string]any{"visibility": "secret"}, 400, "M_INVALID_PARAM"},
		{"visibility of the wrong type", "PUT", "/_matrix/client/v3/directory/list/room/" + pathEsc(roomID), map[string]any{"visibility": true}, 400, "M_BAD_JSON"},
		{"not JSON", "PUT", "/_matrix/client/v3/directory/list/room/" + pathEsc(roomID), []byte("{"), 400, "M_NOT_JSON"},
		{"limit not a number", "GET", "/_matrix/client/v3/publicRooms?limit=abc", nil, 400, "M_INVALID_PARAM"},
		{"limit zero", "GET", "/_matrix/client/v3/publicRooms?limit=0", nil, 400, "M_INVALID_PARAM"},
		{"bad since", "GET", "/_matrix/client/v3/publicRooms?since=garbage", nil, 400, "M_INVALID_PARAM"},
		{"negative since", "GET", "/_matrix/client/v3/publicRooms?since=d-1", nil, 400, "M_INVALID_PARAM"},
		{"remote server", "GET", "/_matrix/client/v3/publicRooms?server=other.example", nil, 404, "M_NOT_FOUND"},
		{"bad server", "GET", "/_matrix/client/v3/publicRooms?server=bad%20server", nil, 400, "M_INVALID_PARAM"},
		{"POST limit of the wrong type", "POST", "/_matrix/client/v3/publicRooms", map[string]any{"limit": "x"}, 400, "M_BAD_JSON"},
		{"room_types not a list", "POST", "/_matrix/client/v3/publicRooms", map[string]any{"filter": map[string]any{"room_types": "m.space"}}, 400, "M_BAD_JSON"},
		{"POST bad since", "POST", "/_matrix/client/v3/publicRooms", map[string]any{"since": "x1"}, 400, "M_INVALID_PARAM"},
		{"all networks and one network", "POST", "/_matrix/client/v3/publicRooms", map[string]any{"include_all_networks": true, "third_party_instance_id": "irc"}, 400, "M_INVALID_PARAM"},
		{"upgrade without new_version", "POST", "/_matrix/client/v3/rooms/" + pathEsc(roomID) + "/upgrade", map[string]any{}, 400, "M_MISSING_PARAM"},
		{"new_version not a string", "POST", "/_matrix/client/v3/rooms/" + pathEsc(roomID) + "/upgrade", map[string]any{"new_version": 11}, 400, "M_BAD_JSON"},
		{"report with a bad event ID", "POST", "/_matrix/client/v3/rooms/" + pathEsc(roomID) + "/report/nope", map[string]any{}, 400, "M_INVALID_PARAM"},
		{"reason of the wrong type", "POST", "/_matrix/client/v3/rooms/" + pathEsc(roomID) + "/report/$x", map[string]any{"reason": 1}, 400, "M_BAD_JSON"},
		{"forget with a bad room ID", "POST", "/_matrix/client/v3/rooms/nope/forget", map[string]any{}, 400, "M_INVALID_PARAM"},
		{"hierarchy with a bad room ID", "GET", "/_matrix/client/v1/rooms/nope/hierarchy", nil, 400, "M_INVALID_PARAM"},
	} {
		err := roomRequest(t, alice, c.method, c.path, c.body, nil)
		wantMatrixError(t, c.what, err, c.status, c.code)
	}
	// Unauthenticated calls to the authenticated endpoints.
	anon := srv.Client(t)
	for _, path := range []string{"/_matrix/client/v3/rooms/" + pathEsc(roomID) + "/upgrade", "/_matrix/client/v3/publicRooms"} {
		wantMatrixError(t, "no token "+path, roomRequest(t, anon, "POST", path, map[string]any{}, nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
	}
}
