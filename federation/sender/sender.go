// Package sender delivers PDUs and EDUs to other servers
// (server-server spec §"Transactions"). Everything to send is first
// committed to a per-destination queue in the database, so nothing
// acknowledged is lost when the process dies; each destination then has at
// most one transaction in flight, of at most 50 PDUs and 100 EDUs, oldest
// first. A destination that fails is retried with exponential backoff; once
// it has failed often enough to look dead, each retry first probes it with
// a cheap GET /version before sending a whole transaction.
package sender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/federation/storage"
	"github.com/parley-chat/parley/internal/bus"
)

// Client is what the sender needs from the federation client.
type Client interface {
	SendTransaction(ctx context.Context, t gomatrixserverlib.Transaction) (fclient.RespSend, error)
	GetVersion(ctx context.Context, s spec.ServerName) (fclient.Version, error)
}

// Options tune the sender; zero values take the defaults.
type Options struct {
	// MaxPDUs and MaxEDUs per transaction: the spec's limits, 50 and 100.
	MaxPDUs, MaxEDUs int
	// MinBackoff after the first failure, doubling per further failure up
	// to MaxBackoff: 1s and 1h.
	MinBackoff, MaxBackoff time.Duration
	// DeadAfter consecutive failures a destination counts as dead and is
	// probed before each attempt: 6 (about a minute of trying).
	DeadAfter int
	// RequestTimeout bounds one transaction: 60s.
	RequestTimeout time.Duration
}

func (o *Options) defaults() {
	if o.MaxPDUs == 0 {
		o.MaxPDUs = 50
	}
	if o.MaxEDUs == 0 {
		o.MaxEDUs = 100
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = time.Hour
	}
	if o.DeadAfter == 0 {
		o.DeadAfter = 6
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 60 * time.Second
	}
}

// Sender owns the outbound queues of one server.
type Sender struct {
	db     *storage.Database
	client Client
	origin spec.ServerName
	opts   Options

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	queues map[string]*destinationQueue
	sub    *bus.Subscription

	// Transaction IDs are "<process start ms>.<counter>": unique per
	// origin across restarts without a stored counter.
	txnPrefix  int64
	txnCounter atomic.Uint64
}

// New returns a sender; Start begins delivering.
func New(db *storage.Database, client Client, origin spec.ServerName, opts Options) *Sender {
	opts.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Sender{
		db: db, client: client, origin: origin, opts: opts,
		ctx: ctx, cancel: cancel,
		queues:    map[string]*destinationQueue{},
		txnPrefix: time.Now().UnixMilli(),
	}
}

// Start resumes every destination that has anything queued, as left by a
// previous run.
func (s *Sender) Start(ctx context.Context) error {
	pending, err := s.db.PendingDestinations(ctx)
	if err != nil {
		return err
	}
	s.Notify(pending)
	return nil
}

// Close stops consuming and delivering and waits for in-flight
// transactions to end. Undelivered items stay queued for the next start.
func (s *Sender) Close() {
	if s.sub != nil {
		s.sub.Stop()
	}
	s.cancel()
	s.wg.Wait()
}

// QueuePDU commits pdu to the queues of destinations, then starts their
// delivery. When it returns nil the PDU will be delivered, restart or not.
func (s *Sender) QueuePDU(ctx context.Context, destinations []string, pdu json.RawMessage) error {
	destinations = s.others(destinations)
	if err := s.db.EnqueuePDU(ctx, destinations, pdu); err != nil {
		return err
	}
	s.Notify(destinations)
	return nil
}

// QueueEDU commits an EDU (typing, receipt, to-device, ...) to the queues
// of destinations, then starts their delivery.
func (s *Sender) QueueEDU(ctx context.Context, destinations []string, edu gomatrixserverlib.EDU) error {
	destinations = s.others(destinations)
	edu.Origin = string(s.origin)
	edu.Destination = ""
	raw, err := json.Marshal(edu)
	if err != nil {
		return err
	}
	if err := s.db.EnqueueEDU(ctx, destinations, raw); err != nil {
		return err
	}
	s.Notify(destinations)
	return nil
}

func (s *Sender) others(destinations []string) []string {
	out := make([]string, 0, len(destinations))
	for _, d := range destinations {
		if d != string(s.origin) {
			out = append(out, d)
		}
	}
	return out
}

// Notify starts delivery to destinations whose queues gained rows.
func (s *Sender) Notify(destinations []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return
	}
	for _, d := range destinations {
		q := s.queues[d]
		if q == nil {
			q = &destinationQueue{s: s, name: d, wake: make(chan struct{}, 1)}
			s.queues[d] = q
		}
		if !q.running {
			q.running = true
			s.wg.Add(1)
			go q.run()
			continue
		}
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// destinationQueue delivers one destination's queue; its goroutine runs
// while there is something to send and exits when the queue is empty.
type destinationQueue struct {
	s    *Sender
	name string
	wake chan struct{}
	// running is guarded by s.mu.
	running bool

	// The last transaction attempted, reused when a retry sends the same
	// batch so the receiver can tell it is a retry.
	lastTxnID  gomatrixserverlib.TransactionID
	lastTxnKey string
}

func (q *destinationQueue) run() {
	defer q.s.wg.Done()
	log := logrus.WithField("destination", q.name)
	for {
		more, err := q.step()
		if err != nil {
			if q.s.ctx.Err() != nil {
				return
			}
			log.WithError(err).Error("federation sender: queue error; retrying in 5s")
			if !q.sleep(5 * time.Second) {
				return
			}
			continue
		}
		if more {
			continue
		}
		q.s.mu.Lock()
		select {
		case <-q.wake:
			q.s.mu.Unlock()
			continue
		default:
		}
		q.running = false
		q.s.mu.Unlock()
		return
	}
}

// sleep waits for d unless the sender closes first; wake-ups do not cut a
// backoff short.
func (q *destinationQueue) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-q.s.ctx.Done():
		return false
	}
}

// step makes one delivery attempt; more says whether to go on at once.
func (q *destinationQueue) step() (more bool, err error) {
	ctx := q.s.ctx
	state, err := q.s.db.Destination(ctx, q.name)
	if err != nil {
		return false, err
	}
	if wait := time.Until(time.UnixMilli(state.RetryAtMS)); wait > 0 {
		if !q.sleep(wait) {
			return false, ctx.Err()
		}
	}
	batch, err := q.s.db.PendingBatch(ctx, q.name, q.s.opts.MaxPDUs, q.s.opts.MaxEDUs)
	if err != nil {
		return false, err
	}
	if batch.Empty() {
		return false, nil
	}
	log := logrus.WithField("destination", q.name)
	if state.FailureCount >= q.s.opts.DeadAfter {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, perr := q.s.client.GetVersion(pctx, spec.ServerName(q.name))
		cancel()
		if perr != nil {
			return true, q.failed(ctx, state, fmt.Errorf("probe: %w", perr))
		}
		log.Info("federation sender: destination answers again")
	}
	txn, err := q.transaction(batch)
	if err != nil {
		return false, err
	}
	sctx, cancel := context.WithTimeout(ctx, q.s.opts.RequestTimeout)
	resp, err := q.s.client.SendTransaction(sctx, txn)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if permanent(err) {
			// The receiver refuses this content as such: resending it can
			// only fail again and would hold up everything behind it.
			log.WithError(err).WithFields(logrus.Fields{"txn_id": txn.TransactionID, "pdus": len(batch.PDUs), "edus": len(batch.EDUs)}).
				Error("federation sender: destination rejected transaction; dropping it")
			return true, q.s.db.DeleteBatch(ctx, batch)
		}
		return true, q.failed(ctx, state, err)
	}
	for id, res := range resp.PDUs {
		if res.Error != "" {
			log.WithFields(logrus.Fields{"event_id": id, "error": res.Error}).Debug("federation sender: destination did not accept event")
		}
	}
	if err := q.s.db.DeleteBatch(ctx, batch); err != nil {
		return false, err
	}
	if err := q.s.db.RecordSuccess(ctx, q.name, time.Now().UnixMilli()); err != nil {
		return false, err
	}
	return true, nil
}

// failed records a failed attempt and the next retry time.
func (q *destinationQueue) failed(ctx context.Context, state storage.DestinationState, cause error) error {
	n := state.FailureCount + 1
	delay := Backoff(n, q.s.opts.MinBackoff, q.s.opts.MaxBackoff)
	logrus.WithError(cause).WithFields(logrus.Fields{"destination": q.name, "failures": n, "retry_in": delay.Round(time.Millisecond)}).
		Warn("federation sender: delivery failed")
	return q.s.db.RecordFailure(ctx, q.name, n, time.Now().Add(delay).UnixMilli())
}

// Backoff is the wait after the n-th consecutive failure: min doubled per
// failure, capped at max, less up to a tenth at random so that many
// destinations failing together do not retry in lockstep.
func Backoff(n int, minDelay, maxDelay time.Duration) time.Duration {
	d := maxDelay
	if n < 1 {
		n = 1
	}
	if n <= 40 {
		if b := minDelay << (n - 1); b > 0 && b < maxDelay {
			d = b
		}
	}
	return d - time.Duration(rand.Int64N(int64(d)/10+1))
}

// permanent says whether a failure is the receiver refusing this
// transaction's content, as opposed to the receiver being unreachable,
// overloaded or refusing us for now.
func permanent(err error) bool {
	var httpErr gomatrix.HTTPError
	if errors.As(err, &httpErr) {
		return httpErr.Code == http.StatusBadRequest || httpErr.Code == http.StatusRequestEntityTooLarge
	}
	return false
}

func (q *destinationQueue) transaction(b *storage.Batch) (gomatrixserverlib.Transaction, error) {
	key := batchKey(b)
	if key != q.lastTxnKey {
		q.lastTxnKey = key
		q.lastTxnID = gomatrixserverlib.TransactionID(fmt.Sprintf("%d.%d", q.s.txnPrefix, q.s.txnCounter.Add(1)))
	}
	txn := gomatrixserverlib.Transaction{
		TransactionID:  q.lastTxnID,
		Origin:         q.s.origin,
		Destination:    spec.ServerName(q.name),
		OriginServerTS: spec.AsTimestamp(time.Now()),
		PDUs:           make([]json.RawMessage, 0, len(b.PDUs)),
	}
	for _, p := range b.PDUs {
		txn.PDUs = append(txn.PDUs, p.JSON)
	}
	for _, e := range b.EDUs {
		var edu gomatrixserverlib.EDU
		if err := json.Unmarshal(e.JSON, &edu); err != nil {
			return txn, fmt.Errorf("queued EDU %d: %w", e.NID, err)
		}
		txn.EDUs = append(txn.EDUs, edu)
	}
	return txn, nil
}

func batchKey(b *storage.Batch) string {
	key := fmt.Sprintf("%d/%d", len(b.PDUs), len(b.EDUs))
	for _, l := range [][]storage.Queued{b.PDUs, b.EDUs} {
		if len(l) > 0 {
			key += fmt.Sprintf("/%d-%d", l[0].NID, l[len(l)-1].NID)
		}
	}
	return key
}
