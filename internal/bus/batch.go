package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sirupsen/logrus"
)

// BatchHandler processes several messages, in stream order. Returning nil
// acknowledges all of them; after an error the same messages are handed
// over again (after 1 s, doubling up to 30 s), so the handler must be
// idempotent.
type BatchHandler func(ctx context.Context, msgs []Message) error

// batchWait is how long one fetch waits for a first message before it
// asks again (so that Stop is noticed).
const batchWait = time.Second

// SubscribeBatch is Subscribe for handlers that do better with several
// messages at once (one database transaction for all of them): whatever
// has queued up, up to maxBatch messages, is handed over together; a lone
// message is handed over at once, without waiting for more. Messages are
// in stream order and no batch starts before the previous one is
// acknowledged. It may take over a durable consumer that Subscribe created.
func (b *Bus) SubscribeBatch(ctx context.Context, stream, durable, subject string, maxBatch int, handler BatchHandler) (*BatchSubscription, error) {
	if maxBatch < 1 {
		return nil, fmt.Errorf("consumer %s: batch size %d", durable, maxBatch)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       ackWait,
		MaxAckPending: maxBatch,
	}
	if subject != "" {
		cfg.FilterSubject = b.Subject(subject)
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, b.StreamName(stream), cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", durable, stream, err)
	}
	hctx, cancel := context.WithCancel(context.Background())
	sub := &BatchSubscription{cancel: cancel, stop: make(chan struct{})}
	sub.wg.Add(1)
	go func() {
		defer sub.wg.Done()
		for {
			select {
			case <-sub.stop:
				return
			default:
			}
			msgs, err := fetchBatch(cons, maxBatch)
			if err != nil {
				if !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
					logrus.WithError(err).WithField("consumer", durable).Warn("bus fetch failed")
					select {
					case <-sub.stop:
					case <-time.After(batchWait):
					}
				}
				continue
			}
			if len(msgs) > 0 {
				b.handleBatch(hctx, sub.stop, durable, msgs, handler)
			}
		}
	}()
	return sub, nil
}

// fetchBatch waits up to batchWait for one message, then takes whatever
// else is already waiting, up to maxBatch in all.
func fetchBatch(cons jetstream.Consumer, maxBatch int) ([]jetstream.Msg, error) {
	first, err := cons.Fetch(1, jetstream.FetchMaxWait(batchWait))
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range first.Messages() {
		msgs = append(msgs, m)
	}
	if err := first.Error(); err != nil && len(msgs) == 0 {
		return nil, err
	}
	if len(msgs) == 0 || maxBatch == 1 {
		return msgs, nil
	}
	more, err := cons.FetchNoWait(maxBatch - 1)
	if err != nil {
		return msgs, nil
	}
	for m := range more.Messages() {
		msgs = append(msgs, m)
	}
	return msgs, nil
}

func (b *Bus) handleBatch(ctx context.Context, stop <-chan struct{}, durable string, ms []jetstream.Msg, handler BatchHandler) {
	msgs := make([]Message, 0, len(ms))
	kept := ms[:0:0]
	for _, m := range ms {
		meta, err := m.Metadata()
		if err != nil {
			_ = m.Term()
			continue
		}
		kept = append(kept, m)
		msgs = append(msgs, Message{Subject: strings.TrimPrefix(m.Subject(), b.prefix+"."), Data: m.Data(), Sequence: meta.Sequence.Stream})
	}
	if len(kept) == 0 {
		return
	}
	stops := make([]func(), len(kept))
	for i, m := range kept {
		stops[i] = keepInProgress(m)
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	// A failed batch is retried here, with the messages still held, rather
	// than handed back with a negative acknowledgement: the server would
	// redeliver nak'ed messages one by one as their delays ran out, not
	// necessarily in stream order, and consumers rely on the order.
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		err := handler(ctx, msgs)
		if err == nil {
			break
		}
		logrus.WithError(err).WithFields(logrus.Fields{"consumer": durable, "first_seq": msgs[0].Sequence, "messages": len(msgs)}).
			Warn("bus batch handler failed; will retry")
		select {
		case <-stop:
			// Left unacknowledged: after the ack wait the server delivers
			// them again, in order, to whoever consumes next.
			return
		case <-time.After(delay):
		}
	}
	// Acknowledgements travel in order on one connection: once the last
	// is confirmed, the server has them all.
	for _, m := range kept[:len(kept)-1] {
		_ = m.Ack()
	}
	if err := kept[len(kept)-1].DoubleAck(ctx); err != nil {
		logrus.WithError(err).WithField("consumer", durable).Warn("ack failed; messages may be redelivered")
	}
}

// BatchSubscription is a running SubscribeBatch consumer.
type BatchSubscription struct {
	cancel context.CancelFunc
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

// Stop stops fetching (within batchWait) and waits for the batch in
// progress to finish.
func (s *BatchSubscription) Stop() {
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
	s.cancel()
}
