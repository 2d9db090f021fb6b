package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// SubscribeBatch hands over what has queued up in stream order, takes
// over a consumer Subscribe made, and redelivers a whole failed batch.
func TestSubscribeBatch(t *testing.T) {
	ctx := context.Background()
	b, err := Open(ctx, Options{StoreDir: t.TempDir(), Prefix: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureStream(ctx, "events", "events.>"); err != nil {
		t.Fatal(err)
	}
	// The durable consumer first exists with one message in flight at a
	// time, as Subscribe makes it.
	handled := make(chan struct{}, 1)
	single, err := b.Subscribe(ctx, "events", "reader", "", func(context.Context, Message) error {
		handled <- struct{}{}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "events.room", []byte("m-0"), ""); err != nil {
		t.Fatal(err)
	}
	<-handled // m-0 is the single consumer's; stopping earlier would leave it to the batch
	single.Stop()

	const n = 40
	for i := 1; i <= n; i++ {
		if err := b.Publish(ctx, "events.room", []byte(fmt.Sprint("m-", i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var got []string
	var sizes []int
	failed := false
	sub, err := b.SubscribeBatch(ctx, "events", "reader", "", 8, func(_ context.Context, msgs []Message) error {
		mu.Lock()
		defer mu.Unlock()
		if !failed {
			failed = true
			return errors.New("first batch fails")
		}
		sizes = append(sizes, len(msgs))
		for _, m := range msgs {
			got = append(got, string(m.Data))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Stop()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= n })
	mu.Lock()
	defer mu.Unlock()
	if len(got) != n {
		t.Fatalf("got %d messages, want %d", len(got), n)
	}
	seen := map[string]bool{}
	for i, m := range got {
		if m != fmt.Sprint("m-", i+1) || seen[m] {
			t.Fatalf("message %d is %s: want each once, in order: %v", i, m, got)
		}
		seen[m] = true
	}
	batched := false
	for _, s := range sizes {
		if s > 8 {
			t.Fatalf("batch of %d, limit 8", s)
		}
		batched = batched || s > 1
	}
	if !batched {
		t.Fatalf("queued messages were never handed over together: batch sizes %v", sizes)
	}
}
