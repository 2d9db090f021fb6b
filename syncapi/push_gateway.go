package syncapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/syncapi/storage"
)

// pushGateway delivers queued notifications to HTTP push gateways
// (push gateway spec §"POST /_matrix/push/v1/notify"). The queue is the
// syncapi_push_outbox table, filled in the same transaction as the event,
// so a push survives a crash or restart. The worker runs apart from the
// stream consumer: a slow or dead gateway never holds up /sync.
//
// Each queued row is one notification for one pusher. Rows for the same
// event, user and gateway URL go out as one request with several devices.
// A failure (network error, 429 or 5xx) is retried with exponential
// backoff (baseBackoff doubling up to maxBackoff) for maxAttempts attempts,
// then dropped with a log line; any other 4xx is dropped at once. Pushkeys
// the gateway reports as rejected have their pusher removed.
type pushGateway struct {
	s      *Service
	client *http.Client

	baseBackoff time.Duration
	maxBackoff  time.Duration
	maxAttempts int

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// Delivery bounds. Notifications are kept for notificationRetention (for
// GET /notifications) and pruned every pruneInterval by the same worker.
const (
	notificationRetention = 30 * 24 * time.Hour
	pruneInterval         = time.Hour
	pushBatch             = 100
	pushConcurrency       = 8
	pushTimeout           = 15 * time.Second
	maxPushBody           = 64 << 10
)

func newPushGateway(s *Service) *pushGateway {
	return &pushGateway{
		s:           s,
		client:      &http.Client{Timeout: pushTimeout},
		baseBackoff: time.Second,
		maxBackoff:  10 * time.Minute,
		maxAttempts: 12,
		wake:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
	}
}

// poke tells the worker that new pushes may be queued.
func (g *pushGateway) poke() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

func (g *pushGateway) start() { go g.run() }

func (g *pushGateway) close() {
	close(g.stop)
	<-g.done
}

func (g *pushGateway) run() {
	defer close(g.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-g.stop
		cancel()
	}()
	var lastPrune time.Time
	for {
		if time.Since(lastPrune) > pruneInterval {
			lastPrune = time.Now()
			if err := g.s.db.PruneNotifications(ctx, lastPrune.Add(-notificationRetention).UnixMilli()); err != nil {
				logrus.WithError(err).Error("syncapi: prune notifications")
			}
		}
		n, err := g.deliverDue(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			logrus.WithError(err).Error("syncapi: push delivery")
		}
		if n == pushBatch {
			continue // more are due now
		}
		wait := time.Minute
		if next, err := g.s.db.NextPushDue(ctx); err == nil && next > 0 {
			wait = min(wait, max(time.Until(time.UnixMilli(next)), 10*time.Millisecond))
		}
		t := time.NewTimer(wait)
		select {
		case <-g.stop:
			t.Stop()
			return
		case <-g.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// pushRequest is one HTTP request: one notification for one user's
// devices that share a gateway URL and format.
type pushRequest struct {
	url   string
	rows  []storage.QueuedPush
	owner string
}

func (g *pushGateway) deliverDue(ctx context.Context) (int, error) {
	due, err := g.s.db.DuePushes(ctx, time.Now().UnixMilli(), pushBatch)
	if err != nil || len(due) == 0 {
		return 0, err
	}
	groups := map[string]*pushRequest{}
	var order []*pushRequest
	for _, q := range due {
		key := q.Pusher.UserID + "|" + q.Notif.EventID + "|" + q.Pusher.URL + "|" + pusherFormat(q.Pusher.Data)
		pr := groups[key]
		if pr == nil {
			pr = &pushRequest{url: q.Pusher.URL, owner: q.Pusher.UserID}
			groups[key] = pr
			order = append(order, pr)
		}
		pr.rows = append(pr.rows, q)
	}
	sem := make(chan struct{}, pushConcurrency)
	var wg sync.WaitGroup
	for _, pr := range order {
		wg.Add(1)
		sem <- struct{}{}
		go func(pr *pushRequest) {
			defer wg.Done()
			defer func() { <-sem }()
			g.deliver(ctx, pr)
		}(pr)
	}
	wg.Wait()
	return len(due), nil
}

// deliver sends one request and records the outcome of each of its rows.
func (g *pushGateway) deliver(ctx context.Context, pr *pushRequest) {
	body, err := g.body(ctx, pr)
	if err != nil {
		logrus.WithError(err).Error("syncapi: build push")
		return
	}
	rejected, retry, err := g.post(ctx, pr.url, body)
	log := logrus.WithFields(logrus.Fields{"url": pr.url, "user_id": pr.owner})
	if err != nil && !retry {
		log.WithError(err).Warn("syncapi: push gateway refused the notification; dropping it")
	}
	// One retry time for the whole request keeps its devices together.
	now := time.Now()
	for _, q := range pr.rows {
		if err != nil && retry {
			attempts := q.Attempts + 1
			if attempts >= g.maxAttempts {
				log.WithError(err).Warnf("syncapi: giving up on a push after %d attempts", attempts)
				_ = g.s.db.PushDone(ctx, q.ID)
				continue
			}
			backoff := g.baseBackoff << min(q.Attempts, 20)
			backoff = min(backoff, g.maxBackoff)
			if err := g.s.db.PushRetry(ctx, q.ID, attempts, now.Add(backoff).UnixMilli()); err != nil {
				log.WithError(err).Error("syncapi: record push retry")
			}
			continue
		}
		if err := g.s.db.PushDone(ctx, q.ID); err != nil {
			log.WithError(err).Error("syncapi: record push delivery")
		}
		if rejected[q.Pusher.PushKey] {
			// Spec: the homeserver should stop sending to rejected pushkeys.
			if _, err := g.s.db.DeletePusher(ctx, q.Pusher.UserID, q.Pusher.AppID, q.Pusher.PushKey); err != nil {
				log.WithError(err).Error("syncapi: remove rejected pusher")
			}
		}
	}
}

// post sends a notification; retry says whether a failure is worth trying
// again.
func (g *pushGateway) post(ctx context.Context, url string, body []byte) (rejected map[string]bool, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, true, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxPushBody))
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return nil, true, fmt.Errorf("gateway answered %d", resp.StatusCode)
	case resp.StatusCode >= 300:
		return nil, false, fmt.Errorf("gateway answered %d", resp.StatusCode)
	}
	var out struct {
		Rejected []string `json:"rejected"`
	}
	_ = json.Unmarshal(raw, &out)
	rejected = map[string]bool{}
	for _, k := range out.Rejected {
		rejected[k] = true
	}
	return rejected, false, nil
}

// pushDevice and pushNotification are the gateway request body (push
// gateway spec §"POST /_matrix/push/v1/notify").
type pushDevice struct {
	AppID     string                     `json:"app_id"`
	PushKey   string                     `json:"pushkey"`
	PushKeyTS int64                      `json:"pushkey_ts,omitempty"`
	Data      map[string]json.RawMessage `json:"data,omitempty"`
	Tweaks    map[string]json.RawMessage `json:"tweaks,omitempty"`
}

type pushCounts struct {
	Unread int64 `json:"unread"`
}

type pushNotification struct {
	EventID           string          `json:"event_id,omitempty"`
	RoomID            string          `json:"room_id,omitempty"`
	Type              string          `json:"type,omitempty"`
	Sender            string          `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	UserIsTarget      bool            `json:"user_is_target,omitempty"`
	Prio              string          `json:"prio,omitempty"`
	Content           json.RawMessage `json:"content,omitempty"`
	Counts            pushCounts      `json:"counts"`
	Devices           []pushDevice    `json:"devices"`
}

func pusherFormat(data []byte) string {
	var d struct {
		Format string `json:"format"`
	}
	_ = json.Unmarshal(data, &d)
	return d.Format
}

func (g *pushGateway) body(ctx context.Context, pr *pushRequest) ([]byte, error) {
	first := pr.rows[0]
	unread, err := g.s.db.TotalUnread(ctx, pr.owner)
	if err != nil {
		return nil, err
	}
	n := pushNotification{EventID: first.Notif.EventID, RoomID: first.Notif.RoomID, Counts: pushCounts{Unread: unread}}
	var tweaks map[string]json.RawMessage
	var actions []PushAction
	if err := json.Unmarshal(first.Notif.Actions, &actions); err == nil {
		tweaks = outcomeOf(actions).tweaks
	}
	for _, q := range pr.rows {
		var data map[string]json.RawMessage
		_ = json.Unmarshal(q.Pusher.Data, &data)
		delete(data, "url") // the gateway's own address is not for it
		n.Devices = append(n.Devices, pushDevice{AppID: q.Pusher.AppID, PushKey: q.Pusher.PushKey, PushKeyTS: q.Pusher.PushKeyTS,
			Data: data, Tweaks: tweaks})
	}
	// Spec: with format event_id_only only the event and room IDs, counts
	// and devices are sent; the app fetches the rest itself.
	if pusherFormat(first.Pusher.Data) != "event_id_only" && first.EventJSON != nil {
		var ev struct {
			Type     string          `json:"type"`
			Sender   string          `json:"sender"`
			StateKey *string         `json:"state_key"`
			Content  json.RawMessage `json:"content"`
		}
		_ = json.Unmarshal(first.EventJSON, &ev)
		n.Type, n.Sender, n.Content = ev.Type, ev.Sender, ev.Content
		n.RoomName, n.SenderDisplayName = g.s.push.names(ctx, n.RoomID, ev.Sender)
		n.UserIsTarget = ev.StateKey != nil && *ev.StateKey == pr.owner
		n.Prio = "low"
		if first.Notif.Highlight || tweaks["sound"] != nil {
			n.Prio = "high"
		}
	}
	return json.Marshal(map[string]any{"notification": n})
}
