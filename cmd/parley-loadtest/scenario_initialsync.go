package main

import (
	"context"
	"fmt"
	"time"
)

func init() {
	scenarios["initialsync"] = scenario{
		help:  "one user in R rooms with H messages each: full initial /sync time (median of reps) and size",
		conns: func(o *options) int { return o.Concurrency + 8 },
		run:   runInitialSync,
	}
}

func runInitialSync(ctx context.Context, e *env) (*Result, error) {
	o := e.opts
	setup := time.Now()
	users, err := e.registerUsers(ctx, o.HS, "init", 1)
	if err != nil {
		return nil, err
	}
	u := users[0]
	rooms := make([]string, o.Rooms)
	// Rooms fill in parallel; messages within a room go in order.
	if err := parallel(ctx, o.Rooms, o.Concurrency, func(ctx context.Context, j int) error {
		id, err := u.CreateRoom(ctx, fmt.Sprintf("loadtest initialsync %d", j))
		if err != nil {
			return err
		}
		rooms[j] = id
		for k := range o.Messages {
			if _, err := u.SendText(ctx, id, int64(k)); err != nil {
				return fmt.Errorf("send: %w", err)
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := waitSynced(ctx, u, rooms, o.Messages); err != nil {
		return nil, err
	}
	res := &Result{SetupSeconds: time.Since(setup).Seconds()}
	e.logf("user in %d rooms with %d messages each; %d initial syncs", o.Rooms, o.Messages, o.Reps)

	var rec Recorder
	var sizes []float64
	from := time.Now()
	e.sampleNow()
	for range o.Reps {
		t0 := time.Now()
		resp, n, err := u.Sync(ctx, "", 0, "")
		if err != nil {
			return res, err
		}
		rec.Add(time.Since(t0))
		sizes = append(sizes, float64(n))
		if got := len(resp.Rooms.Join); got != o.Rooms {
			res.notef("initial sync listed %d joined rooms, expected %d", got, o.Rooms)
		}
	}
	e.serverWindow(res, from, time.Now())
	res.addLatency("initial sync", rec.Summary())
	res.add("initial sync size", Median(sizes)/1024, "KiB")
	return res, nil
}

// waitSynced waits until u's initial /sync lists every room with its last
// message (sequence messages-1) at the end of the timeline, so that the
// measured syncs all see the same, complete data even on a server whose
// sync stream trails the writes.
func waitSynced(ctx context.Context, u *Client, rooms []string, messages int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, _, err := u.Sync(ctx, "", 0, lazyInitialFilter)
		if err != nil {
			return err
		}
		done := 0
		for _, id := range rooms {
			r, ok := resp.Rooms.Join[id]
			if !ok {
				continue
			}
			evs := r.Timeline.Events
			if messages == 0 || (len(evs) > 0 && evs[len(evs)-1].Content.Seq != nil && *evs[len(evs)-1].Content.Seq == int64(messages-1)) {
				done++
			}
		}
		if done == len(rooms) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/sync shows only %d of %d rooms complete after 2 minutes", done, len(rooms))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
