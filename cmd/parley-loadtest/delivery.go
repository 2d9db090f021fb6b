package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// pollFilter is uploaded once per receiver and then named by ID on every
// long-poll, as real clients do; the timeline limit is the largest a
// server must allow, so a receiver that falls behind still sees every
// message rather than a "limited" gap.
const pollFilter = `{"room":{"timeline":{"limit":100}}}`

// UploadFilter stores a filter for the client's user and returns its ID
// (client-server spec §"Filtering").
func (c *Client) UploadFilter(ctx context.Context, filter string) (string, error) {
	var out struct {
		FilterID string `json:"filter_id"`
	}
	path := "/_matrix/client/v3/user/" + url.PathEscape(c.UserID) + "/filter"
	if _, err := c.do(ctx, http.MethodPost, path, json.RawMessage(filter), &out); err != nil {
		return "", fmt.Errorf("upload filter: %w", err)
	}
	return out.FilterID, nil
}

// delivery measures how long messages take from the start of their send
// request to the moment each receiver's long-poll /sync returns them.
type delivery struct {
	sender    *Client
	roomID    string
	receivers []*Client
	since     []string
	filters   []string
	rate      float64
	duration  time.Duration
	poll      time.Duration
	// drain is how long to wait for stragglers after the last send.
	drain time.Duration
}

type deliveryResult struct {
	sent, sendErrors, pollErrors int64
	delivered, lost              int64
	latency, sendLatency         Summary
	from, to                     time.Time
	// lastDelivery is when the last message reached its last receiver.
	lastDelivery time.Time
	firstErr     string
}

func (d *delivery) run(ctx context.Context) (*deliveryResult, error) {
	total := max(int(d.rate*d.duration.Seconds()), 1)
	starts := make([]atomic.Int64, total) // UnixNano of the send's start
	sentOK := make([]atomic.Bool, total)
	got := make([][]bool, len(d.receivers))
	var (
		lat, sendLat Recorder
		received     atomic.Int64
		lastSeen     atomic.Int64 // UnixNano of the latest delivery
		pollErrs     atomic.Int64
		sendErrs     atomic.Int64
		firstErr     atomic.Value
	)
	pollCtx, stopPolls := context.WithCancel(ctx)
	defer stopPolls()
	var polls, ready sync.WaitGroup
	for i, c := range d.receivers {
		got[i] = make([]bool, total)
		polls.Add(1)
		ready.Add(1)
		go func() {
			defer polls.Done()
			since := d.since[i]
			markReady := sync.OnceFunc(ready.Done)
			defer markReady()
			first := withWroteRequest(pollCtx, markReady)
			for pollCtx.Err() == nil {
				resp, _, err := c.Sync(first, since, d.poll, d.filters[i])
				first = pollCtx
				markReady()
				now := time.Now()
				if err != nil {
					if pollCtx.Err() != nil {
						return
					}
					pollErrs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					time.Sleep(100 * time.Millisecond)
					continue
				}
				since = resp.NextBatch
				for _, ev := range resp.Rooms.Join[d.roomID].Timeline.Events {
					seq := ev.Content.Seq
					if seq == nil || *seq < 0 || *seq >= int64(total) || got[i][*seq] {
						continue
					}
					got[i][*seq] = true
					received.Add(1)
					lat.Add(now.Sub(time.Unix(0, starts[*seq].Load())))
					storeMax(&lastSeen, now.UnixNano())
				}
			}
		}()
	}

	// Sending starts once every receiver's first long-poll is on the wire
	// (plus a moment for the server to park it), so that connection set-up
	// is not counted as delivery latency.
	if err := waitGroupCtx(ctx, &ready); err != nil {
		return nil, err
	}
	time.Sleep(500 * time.Millisecond)

	// Open loop: messages leave on schedule even if earlier sends are slow.
	from := time.Now()
	interval := time.Duration(float64(time.Second) / d.rate)
	var sends sync.WaitGroup
	for seq := range total {
		at := from.Add(time.Duration(seq) * interval)
		select {
		case <-ctx.Done():
			sends.Wait()
			return nil, ctx.Err()
		case <-time.After(time.Until(at)):
		}
		sends.Add(1)
		go func() {
			defer sends.Done()
			t0 := time.Now()
			starts[seq].Store(t0.UnixNano())
			if _, err := d.sender.SendText(ctx, d.roomID, int64(seq)); err != nil {
				sendErrs.Add(1)
				firstErr.CompareAndSwap(nil, "send: "+err.Error())
				return
			}
			sendLat.Add(time.Since(t0))
			sentOK[seq].Store(true)
		}()
	}
	sends.Wait()
	to := time.Now()
	var ok int64
	for i := range sentOK {
		if sentOK[i].Load() {
			ok++
		}
	}
	want := ok * int64(len(d.receivers))
	deadline := time.Now().Add(d.drain)
	for received.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	stopPolls()
	polls.Wait()
	r := &deliveryResult{
		sent: ok, sendErrors: sendErrs.Load(), pollErrors: pollErrs.Load(),
		delivered: received.Load(), latency: lat.Summary(), sendLatency: sendLat.Summary(),
		from: from, to: to, lastDelivery: time.Unix(0, lastSeen.Load()),
	}
	// Only messages whose send was acknowledged must arrive; one that
	// failed to send but still arrived counts as delivered, not lost.
	for i := range got {
		for seq := range got[i] {
			if sentOK[seq].Load() && !got[i][seq] {
				r.lost++
			}
		}
	}
	if v := firstErr.Load(); v != nil {
		r.firstErr = v.(string)
	}
	return r, ctx.Err()
}

func (r *deliveryResult) report(res *Result) {
	res.add("messages sent", float64(r.sent), "messages")
	res.add("deliveries", float64(r.delivered), "deliveries")
	res.addLatency("delivery latency", r.latency)
	res.add("never delivered", float64(r.lost), "deliveries")
	res.addLatency("send latency", r.sendLatency)
	res.add("send errors", float64(r.sendErrors), "requests")
	res.add("poll errors", float64(r.pollErrors), "requests")
	if r.firstErr != "" {
		res.notef("first error: %s", r.firstErr)
	}
}
