package roomserver

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/signingkey"
)

// signEvent must produce what gomatrixserverlib's EventBuilder.Build
// produces, byte for byte, in every room version, or refuse what it refuses.
func TestSignEventMatchesBuild(t *testing.T) {
	key, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	keyID := gomatrixserverlib.KeyID(key.ID)
	ts := time.UnixMilli(1_700_000_000_123)
	sender := "@alice:" + testServer
	prevs := []string{"$prevA", "$prev_B-9"}
	auths := []string{"$create", "$pl", "$member"}
	cases := []struct {
		name     string
		evType   string
		stateKey *string
		content  string
		redacts  string
	}{
		{name: "message", evType: "m.room.message", content: `{"msgtype":"m.text","body":"hello"}`},
		{name: "unsorted, spaced, escaped content", evType: "m.room.message",
			content: `{ "z": 1, "body": "<b>&amp;</b> \u00e9\u2028\u2029 \ud83d\ude00 \"q\" \\ \n\t\u0001 \/", "a": {"y": [3, 2, 1], "x": null, "w": true} }`},
		{name: "state event", evType: "m.room.topic", stateKey: strp(""), content: `{"topic":"t"}`},
		{name: "member", evType: "m.room.member", stateKey: strp("@bob:" + testServer), content: `{"membership":"join","displayname":"Bob"}`},
		{name: "odd type and state key", evType: "com.example.\"odd\"\u00e9\u2028", stateKey: strp("key \\ with \n newline \u00ff <>&"), content: `{}`},
		{name: "ASCII quotes and backslashes", evType: `a"b\c`, stateKey: strp(`say "hi" \ ok`), content: `{}`},
		{name: "redaction", evType: "m.room.redaction", redacts: "$target", content: `{"reason":"spam"}`},
		{name: "big integers", evType: "m.room.message", content: `{"n":9007199254740991,"m":-9007199254740991}`},
		{name: "float", evType: "m.room.message", content: `{"n":1.5}`},
		{name: "integer out of range", evType: "m.room.message", content: `{"n":9007199254740992}`},
		{name: "too large", evType: "m.room.message", content: `{"body":"` + strings.Repeat("x", 70000) + `"}`},
		{name: "type too long", evType: strings.Repeat("t", 300), content: `{}`},
	}
	for _, version := range []gomatrixserverlib.RoomVersion{"1", "3", "4", "5", "6", "7", "8", "9", "10", "11"} {
		verImpl, err := gomatrixserverlib.GetRoomVersion(version)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			proto := func() *gomatrixserverlib.ProtoEvent {
				p := &gomatrixserverlib.ProtoEvent{
					SenderID: sender, RoomID: "!room:" + testServer, Type: tc.evType, StateKey: tc.stateKey,
					Content: spec.RawJSON(tc.content), Redacts: tc.redacts, Depth: 42,
					PrevEvents: prevs, AuthEvents: auths,
				}
				if verImpl.EventFormat() == gomatrixserverlib.EventFormatV1 {
					// Room versions 1 and 2 reference events with hashes;
					// signEvent hands them to Build.
					p.PrevEvents, p.AuthEvents = []any{}, []any{}
				}
				return p
			}
			want, wantErr := verImpl.NewEventBuilderFromProtoEvent(proto()).Build(ts, testServer, keyID, key.PrivateKey)
			got, gotErr := signEvent(verImpl, proto(), ts, testServer, keyID, key.PrivateKey)
			if (wantErr != nil) != (gotErr != nil) {
				t.Fatalf("v%s %s: Build error %v, signEvent error %v", version, tc.name, wantErr, gotErr)
			}
			if wantErr != nil {
				continue
			}
			if verImpl.EventIDFormat() == gomatrixserverlib.EventIDFormatV1 {
				// Random event IDs: nothing to compare.
				continue
			}
			if !bytes.Equal(got.JSON(), want.JSON()) {
				t.Fatalf("v%s %s:\n got %s\nwant %s", version, tc.name, got.JSON(), want.JSON())
			}
			if got.EventID() != want.EventID() {
				t.Fatalf("v%s %s: event ID %s, want %s", version, tc.name, got.EventID(), want.EventID())
			}
		}
	}
}

// BenchmarkSignEvent compares signEvent with gomatrixserverlib's Build on
// a typical message.
func BenchmarkSignEvent(b *testing.B) {
	key, err := signingkey.Generate()
	if err != nil {
		b.Fatal(err)
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	proto := func() *gomatrixserverlib.ProtoEvent {
		return &gomatrixserverlib.ProtoEvent{
			SenderID: "@alice:" + testServer, RoomID: "!room:" + testServer, Type: "m.room.message", Depth: 42,
			Content:    spec.RawJSON(`{"msgtype":"m.text","body":"a message of a typical length, about eighty characters long"}`),
			PrevEvents: []string{"$Vb2Bd0xQe1Zw3ZQvH2eX3dYkQ5u2o7C0bQm3kq8hJ9Y"},
			AuthEvents: []string{"$c1", "$p2", "$m3"},
		}
	}
	keyID := gomatrixserverlib.KeyID(key.ID)
	b.Run("Build", func(b *testing.B) {
		for b.Loop() {
			if _, err := verImpl.NewEventBuilderFromProtoEvent(proto()).Build(time.Now(), testServer, keyID, key.PrivateKey); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("signEvent", func(b *testing.B) {
		for b.Loop() {
			if _, err := signEvent(verImpl, proto(), time.Now(), testServer, keyID, key.PrivateKey); err != nil {
				b.Fatal(err)
			}
		}
	})
}
