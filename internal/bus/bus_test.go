package bus

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestDurableConsumerSurvivesRestart: messages published before a restart
// of the embedded server are consumed exactly once after it, and what was
// acknowledged before the restart is not delivered again.
func TestDurableConsumerSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func() *Bus {
		b, err := Open(ctx, Options{StoreDir: dir, Prefix: "test"})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.EnsureStream(ctx, "events", "events.>"); err != nil {
			t.Fatal(err)
		}
		return b
	}

	b := open()
	var mu sync.Mutex
	var got []string
	collect := func(ctx context.Context, m Message) error {
		mu.Lock()
		got = append(got, string(m.Data))
		mu.Unlock()
		return nil
	}
	sub, err := b.Subscribe(ctx, "events", "reader", "", collect)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := b.Publish(ctx, "events.room", []byte(fmt.Sprint("before-", i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 3 })
	sub.Stop()
	// Published while no consumer runs, then the server restarts.
	for i := 0; i < 3; i++ {
		if err := b.Publish(ctx, "events.room", []byte(fmt.Sprint("offline-", i)), fmt.Sprint("id-", i)); err != nil {
			t.Fatal(err)
		}
	}
	// A retried publish with the same ID is dropped.
	if err := b.Publish(ctx, "events.room", []byte("offline-0"), "id-0"); err != nil {
		t.Fatal(err)
	}
	b.Close()

	b = open()
	defer b.Close()
	sub, err = b.Subscribe(ctx, "events", "reader", "", collect)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Stop()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 6 })
	time.Sleep(200 * time.Millisecond) // would reveal a duplicate delivery
	mu.Lock()
	defer mu.Unlock()
	want := []string{"before-0", "before-1", "before-2", "offline-0", "offline-1", "offline-2"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestFailedHandlerIsRetried: a handler error leaves the message unacked so
// it comes back; order is kept.
func TestFailedHandlerIsRetried(t *testing.T) {
	ctx := context.Background()
	b, err := Open(ctx, Options{StoreDir: t.TempDir(), Prefix: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureStream(ctx, "s", "s.x"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	failures := 1
	sub, err := b.Subscribe(ctx, "s", "c", "s.x", func(ctx context.Context, m Message) error {
		mu.Lock()
		defer mu.Unlock()
		if string(m.Data) == "a" && failures > 0 {
			failures--
			return fmt.Errorf("transient")
		}
		got = append(got, string(m.Data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Stop()
	for _, s := range []string{"a", "b"} {
		if err := b.Publish(ctx, "s.x", []byte(s), ""); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	if fmt.Sprint(got) != "[a b]" {
		t.Fatalf("got %v", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSlowHandlerIsNotRedelivered: a handler slower than the ack wait keeps
// its message (no duplicate delivery while it runs).
func TestSlowHandlerIsNotRedelivered(t *testing.T) {
	ctx := context.Background()
	b, err := Open(ctx, Options{StoreDir: t.TempDir(), Prefix: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureStream(ctx, "slow", "slow.x"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	calls := 0
	sub, err := b.Subscribe(ctx, "slow", "c", "slow.x", func(ctx context.Context, m Message) error {
		mu.Lock()
		calls++
		mu.Unlock()
		time.Sleep(ackWait + 2*time.Second)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Stop()
	if err := b.Publish(ctx, "slow.x", []byte("x"), ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ackWait + 4*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Fatalf("handler ran %d times, want 1", calls)
	}
}
