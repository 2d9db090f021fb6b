package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/testserver"
)

// maxBenchTxnPDUs is the most PDUs a transaction may hold
// (server-server spec §"Transactions").
const maxBenchTxnPDUs = 50

// inboundRoom is a room on a Parley that a fake remote server has joined;
// the benchmark extends the remote user's chain of messages in it across
// the calls the testing package makes with growing b.N.
type inboundRoom struct {
	ca      *testserver.CA
	parley  *testserver.FederatedServer
	remote  *fakeRemote
	alice   *mautrix.Client
	roomID  id.RoomID
	sender  string
	auth    []string
	prev    string
	depth   int64
	txnSeq  int
	verImpl gomatrixserverlib.IRoomVersion
}

// BenchmarkInboundSend measures PUT /_matrix/federation/v1/send: a fake
// remote server that has joined a room on a real Parley sends its
// messages in transactions of 50 PDUs, each PDU's prev_events the one
// before it, one transaction at a time (as a sending server does for one
// destination), and the next leaves as soon as the last is answered. The
// answer comes after every PDU was parsed, signature-checked, auth-checked
// and stored, so pdus/s is the rate PDUs are checked and persisted. The
// PDUs and the signed requests are built before the timer starts: signing
// is the remote's cost. One op is one PDU.
//
//	go test ./federation -run '^$' -bench InboundSend -benchtime 5000x
func BenchmarkInboundSend(b *testing.B) {
	for _, db := range []string{"sqlite", "postgres"} {
		room := setUpInboundRoom(b, db)
		b.Run(db, func(b *testing.B) { room.bench(b) })
		// The finished server's CPU would otherwise share the machine
		// with the next database's run.
		room.parley.Stop()
	}
}

func setUpInboundRoom(b *testing.B, db string) *inboundRoom {
	ca := testserver.NewCA(b)
	a := testserver.StartFederated(b, ca, testserver.Options{DB: db})
	remote := startFakeRemote(b, ca)
	ctx := context.Background()
	alice := a.RegisterUser(b, "alice")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		b.Fatal(err)
	}
	first, err := alice.SendText(ctx, created.RoomID, "before the remote joined")
	if err != nil {
		b.Fatal(err)
	}
	join := joinRemote(b, ca, a, remote, alice, created.RoomID, first.EventID)
	state, err := alice.State(ctx, created.RoomID)
	if err != nil {
		b.Fatal(err)
	}
	sender := "@bob:" + string(remote.id.name)
	// Auth events of a message (server-server spec §"Auth events
	// selection"): the create event, the power levels, the sender's
	// membership.
	auth := []string{state[event.StateCreate][""].ID.String(), state[event.StatePowerLevels][""].ID.String(), join}
	return &inboundRoom{
		ca: ca, parley: a, remote: remote, alice: alice, roomID: created.RoomID,
		sender: sender, auth: auth, prev: join, depth: 100,
		verImpl: gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10),
	}
}

// buildTxns builds n chained messages and the signed transactions
// carrying them, at most 50 PDUs each.
func (r *inboundRoom) buildTxns(b *testing.B, n int) (reqs []*http.Request, eventIDs [][]string) {
	b.Helper()
	var pdus []json.RawMessage
	var ids []string
	flush := func() {
		r.txnSeq++
		txn := map[string]any{"origin": r.remote.id.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus}
		reqs = append(reqs, signedRequest(b, r.remote.id, spec.ServerName(r.parley.ServerName), "PUT",
			fmt.Sprintf("/_matrix/federation/v1/send/bench%d", r.txnSeq), txn))
		eventIDs = append(eventIDs, ids)
		pdus, ids = nil, nil
	}
	for i := 0; i < n; i++ {
		r.depth++
		content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("benchmark message %d", r.depth)})
		ev, err := r.verImpl.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
			SenderID: r.sender, RoomID: r.roomID.String(), Type: "m.room.message",
			PrevEvents: []string{r.prev}, AuthEvents: r.auth, Depth: r.depth, Content: content,
		}).Build(time.Now(), r.remote.id.name, gomatrixserverlib.KeyID(r.remote.id.key.ID), r.remote.id.key.PrivateKey)
		if err != nil {
			b.Fatal(err)
		}
		r.prev = ev.EventID()
		pdus = append(pdus, ev.JSON())
		ids = append(ids, ev.EventID())
		if len(pdus) == maxBenchTxnPDUs {
			flush()
		}
	}
	if len(pdus) > 0 {
		flush()
	}
	return reqs, eventIDs
}

func (r *inboundRoom) bench(b *testing.B) {
	reqs, eventIDs := r.buildTxns(b, b.N)
	client := r.ca.HTTPClient()
	b.ResetTimer()
	start := time.Now()
	for i, req := range reqs {
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var body struct {
			PDUs map[string]struct {
				Error string `json:"error"`
			} `json:"pdus"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			b.Fatalf("transaction %d: status %d, %v", i, resp.StatusCode, err)
		}
		// Every PDU must have been accepted, or the figure would count
		// work that was skipped.
		for _, evID := range eventIDs[i] {
			if res, ok := body.PDUs[evID]; !ok || res.Error != "" {
				b.Fatalf("transaction %d: PDU %s not accepted: %+v", i, evID, res)
			}
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pdus/s")
	// The last message is readable by a local user: it was persisted.
	last := id.EventID(r.prev)
	if _, err := r.alice.GetEvent(context.Background(), r.roomID, last); err != nil {
		b.Fatalf("last benchmark event %s not readable on the server: %v", last, err)
	}
}
