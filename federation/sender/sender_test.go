package sender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/federation/storage"
	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/internal/testdb"
)

// recordingClient stands in for the remote servers: it records what
// arrives and fails while told to.
type recordingClient struct {
	mu        sync.Mutex
	failSend  bool
	failProbe bool
	txns      []gomatrixserverlib.Transaction
	sends     int
	probes    int
}

func (c *recordingClient) SendTransaction(_ context.Context, t gomatrixserverlib.Transaction) (fclient.RespSend, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sends++
	c.txns = append(c.txns, t)
	if c.failSend {
		return fclient.RespSend{}, errors.New("connection refused")
	}
	return fclient.RespSend{}, nil
}

func (c *recordingClient) GetVersion(context.Context, spec.ServerName) (fclient.Version, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.probes++
	if c.failProbe {
		return fclient.Version{}, errors.New("connection refused")
	}
	return fclient.Version{}, nil
}

func (c *recordingClient) snapshot() (sends, probes int, txns []gomatrixserverlib.Transaction) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sends, c.probes, append([]gomatrixserverlib.Transaction(nil), c.txns...)
}

func (c *recordingClient) set(failSend, failProbe bool) {
	c.mu.Lock()
	c.failSend, c.failProbe = failSend, failProbe
	c.mu.Unlock()
}

func openDB(t *testing.T, url string) *storage.Database {
	db, err := sqlutil.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	d, err := storage.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// delivered lists the "n" field of every PDU in successful transactions.
func delivered(txns []gomatrixserverlib.Transaction, upTo int) []int {
	var out []int
	for _, txn := range txns[:upTo] {
		for _, p := range txn.PDUs {
			var v struct{ N int }
			_ = json.Unmarshal(p, &v)
			out = append(out, v.N)
		}
	}
	return out
}

func TestBatchingAndRestart(t *testing.T) {
	testdb.Run(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db := openDB(t, url)
		client := &recordingClient{failSend: true}
		s := New(db, client, "a.example", Options{MinBackoff: time.Hour})
		for i := 0; i < 120; i++ {
			if err := s.QueuePDU(ctx, []string{"b.example", "a.example"}, json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 150; i++ {
			if err := s.QueueEDU(ctx, []string{"b.example"}, gomatrixserverlib.EDU{Type: "m.typing", Content: []byte(fmt.Sprintf(`{"i":%d}`, i))}); err != nil {
				t.Fatal(err)
			}
		}
		// The first attempt fails, and the hour of backoff outlives this
		// sender: everything is still queued when it stops.
		waitUntil(t, "the first attempt", func() bool { n, _, _ := client.snapshot(); return n >= 1 })
		s.Close()
		if n, _, _ := client.snapshot(); n != 1 {
			t.Fatalf("%d attempts despite the backoff", n)
		}

		// A new sender (as after a restart) resumes once the backoff ends.
		if err := db.RecordFailure(ctx, "b.example", 1, time.Now().UnixMilli()); err != nil {
			t.Fatal(err)
		}
		client.set(false, false)
		s2 := New(db, client, "a.example", Options{})
		defer s2.Close()
		if err := s2.Start(ctx); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "delivery of everything", func() bool {
			b, err := db.PendingBatch(ctx, "b.example", 1, 1)
			return err == nil && b.Empty()
		})
		_, _, txns := client.snapshot()
		got := delivered(txns[1:], len(txns)-1)
		if len(got) != 120 {
			t.Fatalf("delivered %d PDUs, want 120", len(got))
		}
		for i, n := range got {
			if n != i {
				t.Fatalf("PDU %d delivered as #%d: out of order", n, i)
			}
		}
		edus := 0
		for _, txn := range txns {
			if len(txn.PDUs) > 50 || len(txn.EDUs) > 100 {
				t.Fatalf("transaction with %d PDUs and %d EDUs", len(txn.PDUs), len(txn.EDUs))
			}
			if txn.Destination != "b.example" || txn.Origin != "a.example" {
				t.Fatalf("transaction %s → %s", txn.Origin, txn.Destination)
			}
			for _, e := range txn.EDUs {
				if e.Origin != "a.example" || e.Type != "m.typing" {
					t.Fatalf("EDU %+v", e)
				}
			}
		}
		for _, txn := range txns[1:] {
			edus += len(txn.EDUs)
		}
		if edus != 150 {
			t.Fatalf("delivered %d EDUs, want 150", edus)
		}
		waitUntil(t, "the failure count to reset", func() bool {
			st, err := db.Destination(ctx, "b.example")
			return err == nil && st.FailureCount == 0
		})
	})
}

func TestRetrySameTransactionAndDeadProbe(t *testing.T) {
	testdb.Run(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db := openDB(t, url)
		client := &recordingClient{failSend: true, failProbe: true}
		s := New(db, client, "a.example", Options{MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, DeadAfter: 3})
		defer s.Close()
		if err := s.QueuePDU(ctx, []string{"b.example"}, json.RawMessage(`{"n":0}`)); err != nil {
			t.Fatal(err)
		}
		// Three real attempts; then the destination counts as dead and only
		// cheap probes go out while they fail.
		waitUntil(t, "probing", func() bool { _, p, _ := client.snapshot(); return p >= 5 })
		sends, _, txns := client.snapshot()
		if sends != 3 {
			t.Fatalf("%d transactions sent to a dead destination, want 3 before probing", sends)
		}
		for _, txn := range txns {
			if txn.TransactionID != txns[0].TransactionID {
				t.Fatalf("retries of one batch used IDs %s and %s", txns[0].TransactionID, txn.TransactionID)
			}
		}
		// It answers again: the probe passes and the transaction follows.
		client.set(false, false)
		waitUntil(t, "delivery and recovery", func() bool {
			b, err := db.PendingBatch(ctx, "b.example", 1, 1)
			st, err2 := db.Destination(ctx, "b.example")
			return err == nil && err2 == nil && b.Empty() && st.FailureCount == 0 && st.LastSuccessMS != 0
		})
	})
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 13: time.Hour, 100: time.Hour} {
		got := Backoff(n, time.Second, time.Hour)
		if got > want || got < want-want/10 {
			t.Errorf("Backoff(%d) = %v, want %v less at most a tenth", n, got, want)
		}
	}
}
