package main

import (
	"context"
	"fmt"
	"time"
)

func init() {
	scenarios["joinlarge"] = scenario{
		help:  "a room with N members: time for a new user's join and first /sync (median over reps new users)",
		conns: func(o *options) int { return o.Concurrency + 8 },
		run:   runJoinLarge,
	}
}

func runJoinLarge(ctx context.Context, e *env) (*Result, error) {
	o := e.opts
	setup := time.Now()
	members, err := e.registerUsers(ctx, o.HS, "member", o.Members)
	if err != nil {
		return nil, err
	}
	newcomers, err := e.registerUsers(ctx, o.HS, "newcomer", o.Reps)
	if err != nil {
		return nil, err
	}
	roomID, err := members[0].CreateRoom(ctx, "loadtest joinlarge")
	if err != nil {
		return nil, err
	}
	joinStart := time.Now()
	if err := e.joinAll(ctx, members[1:], roomID); err != nil {
		return nil, err
	}
	setupJoinRate := float64(o.Members-1) / time.Since(joinStart).Seconds()
	if err := e.waitJoined(ctx, members[0], roomID, o.Members); err != nil {
		return nil, err
	}
	res := &Result{SetupSeconds: time.Since(setup).Seconds()}
	e.logf("room of %d members; %d newcomers join one at a time", o.Members, o.Reps)

	var joins, syncs Recorder
	var sizes []float64
	var behind int
	from := time.Now()
	e.sampleNow()
	for _, c := range newcomers {
		t0 := time.Now()
		if err := c.Join(ctx, roomID, ""); err != nil {
			return res, err
		}
		t1 := time.Now()
		// The first sync is a full initial sync without lazy loading: the
		// worst case, every member's m.room.member event. If the sync
		// stream has not caught up with the join yet, the client keeps
		// long-polling until the room appears, and the time counts to
		// the answer that shows it.
		resp, n, err := c.Sync(ctx, "", 0, "")
		for err == nil {
			if _, ok := resp.Rooms.Join[roomID]; ok {
				break
			}
			behind++
			if time.Since(t1) > time.Minute {
				return res, fmt.Errorf("%s's /sync did not show the joined room within a minute", c.UserID)
			}
			resp, n, err = c.Sync(ctx, resp.NextBatch, 10*time.Second, "")
		}
		if err != nil {
			return res, err
		}
		joins.Add(t1.Sub(t0))
		syncs.Add(time.Since(t1))
		sizes = append(sizes, float64(n))
	}
	e.serverWindow(res, from, time.Now())
	res.addLatency("join", joins.Summary())
	res.addLatency("first sync", syncs.Summary())
	res.add("first sync size", Median(sizes)/1024, "KiB")
	res.add("syncs not yet showing the join", float64(behind), "responses")
	res.add("setup join rate", setupJoinRate, "joins/s")
	return res, nil
}
