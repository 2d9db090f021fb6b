package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestNotifierWakesByRoomMembership(t *testing.T) {
	n := NewNotifier()
	n.SetMembership("!a", "@alice", "join")
	n.SetMembership("!b", "@bob", "join")
	wakeA, stopA := n.Listen("@alice")
	defer stopA()
	wakeB, stopB := n.Listen("@bob")
	defer stopB()

	n.WakeRoom("!b")
	if closed(wakeA) || !closed(wakeB) {
		t.Fatal("an event in !b must wake bob and only bob")
	}
	// Someone invited to !b is woken although not joined.
	wakeC, stopC := n.Listen("@carol")
	defer stopC()
	n.WakeRoom("!b", "@carol")
	if !closed(wakeC) || closed(wakeA) {
		t.Fatal("extra users must be woken")
	}
	n.SetMembership("!a", "@alice", "leave")
	n.WakeRoom("!a")
	if closed(wakeA) {
		t.Fatal("a user who left must no longer be woken by the room")
	}
	// Listeners that stopped leave nothing behind.
	stopA()
	stopB()
	stopC()
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.users) != 0 {
		t.Fatalf("notifier keeps %d idle users", len(n.users))
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestFanOut: 200 long-polling users in one room each receive all 50
// messages, in order, none twice.
func TestFanOut(t *testing.T) {
	const waiters, messages = 200, 50
	e := newEnv(t, "sqlite")
	room := "!big:test.local"
	e.createRoom(room, "@u0:test.local", "shared")
	users := []string{"@u0:test.local"}
	for i := 1; i < waiters; i++ {
		u := fmt.Sprintf("@u%d:test.local", i)
		users = append(users, u)
		oe := e.output(room, u, "m.room.member", sk(u), map[string]any{"membership": "join"}, nil)
		e.publish(oe)
		if i == waiters-1 {
			e.waitStored(oe.EventID)
		}
	}
	deadline := 120 * time.Second
	if raceEnabled {
		deadline = 600 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	filter, err := parseFilter([]byte(`{"room":{"timeline":{"limit":100,"types":["m.room.message"]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	// Every waiter starts from "now", as after an initial sync.
	start, err := e.svc.currentToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make([][]string, waiters)
	var wg sync.WaitGroup
	errs := make(chan error, waiters)
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			since := start
			for len(got[i]) < messages {
				resp, err := e.svc.sync(ctx, &syncRequest{userID: u, since: &since, filter: filter}, 30*time.Second)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", u, err)
					return
				}
				if jr := resp.Rooms.Join[room]; jr != nil {
					for _, raw := range jr.Timeline.Events {
						var ev struct {
							Content struct {
								Body string `json:"body"`
							} `json:"content"`
						}
						_ = json.Unmarshal(raw, &ev)
						got[i] = append(got[i], ev.Content.Body)
					}
				}
				since, _ = ParseStreamToken(resp.NextBatch)
			}
		}()
	}
	var want []string
	for m := 0; m < messages; m++ {
		body := fmt.Sprint("msg ", m)
		want = append(want, body)
		e.publish(e.output(room, users[m%waiters], "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": body}, nil))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range users {
		if fmt.Sprint(got[i]) != fmt.Sprint(want) {
			t.Fatalf("%s received %v, want every message once in order", users[i], got[i])
		}
	}
}
