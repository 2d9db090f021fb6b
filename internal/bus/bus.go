// Package bus is Parley's message bus: NATS JetStream streams with durable
// consumers, on an embedded server (single binary) or an external cluster
// (split deployment). Both use the same code path: the embedded server is
// reached through an in-process connection.
package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sirupsen/logrus"
)

// Options says which NATS to use.
type Options struct {
	// URL of an external cluster; empty starts an embedded server.
	URL string
	// StoreDir is where the embedded server keeps JetStream data.
	StoreDir string
	// Listen is an optional host:port for the embedded server to accept TCP
	// clients on; empty keeps it in-process only.
	Listen string
	// Prefix namespaces stream and subject names.
	Prefix string
}

// Bus is a connection to NATS JetStream.
type Bus struct {
	prefix string
	srv    *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
}

// Open connects to NATS, starting the embedded server first if no URL is set.
func Open(ctx context.Context, opts Options) (*Bus, error) {
	if opts.Prefix == "" {
		opts.Prefix = "parley"
	}
	b := &Bus{prefix: opts.Prefix}
	var connectOpts []nats.Option
	url := opts.URL
	connectOpts = append(connectOpts, nats.Name("parley"), nats.MaxReconnects(-1))
	if url == "" {
		sopts := &server.Options{
			ServerName:         "parley-embedded",
			JetStream:          true,
			StoreDir:           opts.StoreDir,
			NoSigs:             true,
			DontListen:         opts.Listen == "",
			JetStreamMaxMemory: 64 << 20,
		}
		if opts.Listen != "" {
			host, port, err := splitHostPort(opts.Listen)
			if err != nil {
				return nil, fmt.Errorf("embedded nats listen address: %w", err)
			}
			sopts.Host, sopts.Port = host, port
		}
		srv, err := server.NewServer(sopts)
		if err != nil {
			return nil, fmt.Errorf("start embedded nats: %w", err)
		}
		srv.SetLoggerV2(natsLogger{}, false, false, false)
		go srv.Start()
		if !srv.ReadyForConnections(30 * time.Second) {
			srv.Shutdown()
			return nil, errors.New("embedded nats did not become ready within 30s")
		}
		b.srv = srv
		connectOpts = append(connectOpts, nats.InProcessServer(srv))
		url = srv.ClientURL()
	}
	nc, err := nats.Connect(url, connectOpts...)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		b.shutdownServer()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	b.nc, b.js = nc, js
	return b, nil
}

// Conn is the raw NATS connection, for request/reply between components.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// Subject returns the full subject name for a stream's subject suffix.
func (b *Bus) Subject(name string) string { return b.prefix + "." + name }

// StreamName returns the full stream name for a short name.
func (b *Bus) StreamName(name string) string {
	return strings.ToUpper(b.prefix + "_" + name)
}

// EnsureStream creates or updates a durable, file-backed stream that holds
// the given subjects (short names, prefixed here). Duplicates published with
// the same message ID within the window are dropped by the server.
func (b *Bus) EnsureStream(ctx context.Context, name string, subjects ...string) error {
	full := make([]string, len(subjects))
	for i, s := range subjects {
		full[i] = b.Subject(s)
	}
	_, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       b.StreamName(name),
		Subjects:   full,
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     7 * 24 * time.Hour,
		Duplicates: 10 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("ensure stream %s: %w", name, err)
	}
	return nil
}

// Publish stores data on subject and returns once JetStream has it. msgID,
// when set, makes a retried publish of the same message a no-op.
func (b *Bus) Publish(ctx context.Context, subject string, data []byte, msgID string) error {
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := b.js.Publish(ctx, b.Subject(subject), data, opts...); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

// Message is one delivered stream message.
type Message struct {
	Subject string
	Data    []byte
	// Sequence is the message's position in its stream, increasing by one
	// per stored message; consumers use it to make redelivery harmless.
	Sequence uint64
}

// Handler processes one message. Returning nil acknowledges it; an error
// leaves it to be delivered again after a short delay.
type Handler func(ctx context.Context, msg Message) error

// Subscription is a running durable consumer.
type Subscription struct {
	cc     jetstream.ConsumeContext
	cancel context.CancelFunc
}

// Stop stops delivery and waits for the handler in progress to finish.
func (s *Subscription) Stop() {
	s.cc.Drain()
	<-s.cc.Closed()
	s.cancel()
}

// Subscribe runs handler for every message on the stream (optionally only
// subject) through the durable consumer named durable. A durable consumer
// remembers what it has acknowledged, so after a restart it resumes after
// the last acknowledged message; messages are handled one at a time, in
// stream order.
func (b *Bus) Subscribe(ctx context.Context, stream, durable, subject string, handler Handler) (*Subscription, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       ackWait,
		MaxAckPending: 1,
	}
	if subject != "" {
		cfg.FilterSubject = b.Subject(subject)
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, b.StreamName(stream), cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", durable, stream, err)
	}
	hctx, cancel := context.WithCancel(context.Background())
	cc, err := cons.Consume(func(m jetstream.Msg) {
		meta, err := m.Metadata()
		if err != nil {
			_ = m.Term()
			return
		}
		msg := Message{Subject: strings.TrimPrefix(m.Subject(), b.prefix+"."), Data: m.Data(), Sequence: meta.Sequence.Stream}
		stopProgress := keepInProgress(m)
		err = handler(hctx, msg)
		stopProgress()
		if err != nil {
			logrus.WithError(err).WithFields(logrus.Fields{"consumer": durable, "seq": msg.Sequence}).Warn("bus handler failed; will retry")
			_ = m.NakWithDelay(time.Second)
			return
		}
		if err := m.DoubleAck(hctx); err != nil {
			logrus.WithError(err).WithField("consumer", durable).Warn("ack failed; message may be redelivered")
		}
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("consume %s: %w", durable, err)
	}
	return &Subscription{cc: cc, cancel: cancel}, nil
}

// ackWait is how long the server waits for an acknowledgement before it
// delivers a message again. It is short because a message handed to a
// process that then died blocks its consumer (one message in flight) until
// it expires: this bounds the stall after a crash. Handlers that run longer
// are covered by keepInProgress.
const ackWait = 5 * time.Second

// keepInProgress tells the server every ackWait/3 that m is still being
// handled, so a slow handler is not raced by a redelivery. It returns the
// function that stops the reminders.
func keepInProgress(m jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

// Close drains the connection (letting in-flight handlers finish) and stops
// the embedded server, if any.
func (b *Bus) Close() {
	if b.nc != nil {
		_ = b.nc.Drain()
		for i := 0; i < 100 && !b.nc.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
		b.nc.Close()
	}
	b.shutdownServer()
}

func (b *Bus) shutdownServer() {
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}

func splitHostPort(hp string) (string, int, error) {
	i := strings.LastIndexByte(hp, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("expected host:port, got %q", hp)
	}
	var port int
	if _, err := fmt.Sscanf(hp[i+1:], "%d", &port); err != nil {
		return "", 0, fmt.Errorf("bad port in %q", hp)
	}
	return hp[:i], port, nil
}

// natsLogger routes the embedded server's logs through logrus.
type natsLogger struct{}

func (natsLogger) Noticef(format string, v ...any) { logrus.Debugf("nats: "+format, v...) }
func (natsLogger) Warnf(format string, v ...any)   { logrus.Warnf("nats: "+format, v...) }
func (natsLogger) Fatalf(format string, v ...any)  { logrus.Errorf("nats: "+format, v...) }
func (natsLogger) Errorf(format string, v ...any)  { logrus.Errorf("nats: "+format, v...) }
func (natsLogger) Debugf(format string, v ...any)  { logrus.Debugf("nats: "+format, v...) }
func (natsLogger) Tracef(format string, v ...any)  { logrus.Tracef("nats: "+format, v...) }
