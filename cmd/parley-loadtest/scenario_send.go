package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

func init() {
	scenarios["send"] = scenario{
		help:  "S senders in R rooms, closed loop: acknowledged events/s and send latency",
		conns: func(o *options) int { return max(o.Senders, o.Concurrency) },
		run:   runSend,
	}
}

// assignRooms says which rooms each of s senders sends to, round robin:
// with at least as many rooms as senders every room gets exactly one
// sender; with fewer, senders share rooms. Room j is created by sender
// j%s, who is always among its senders.
func assignRooms(s, r int) [][]int {
	out := make([][]int, s)
	if r >= s {
		for j := range r {
			out[j%s] = append(out[j%s], j)
		}
		return out
	}
	for i := range s {
		out[i] = []int{i % r}
	}
	return out
}

func runSend(ctx context.Context, e *env) (*Result, error) {
	o := e.opts
	setup := time.Now()
	users, err := e.registerUsers(ctx, o.HS, "send", o.Senders)
	if err != nil {
		return nil, err
	}
	rooms := make([]string, o.Rooms)
	if err := parallel(ctx, o.Rooms, o.Concurrency, func(ctx context.Context, j int) error {
		id, err := users[j%o.Senders].CreateRoom(ctx, fmt.Sprintf("loadtest send %d", j))
		rooms[j] = id
		return err
	}); err != nil {
		return nil, err
	}
	assign := assignRooms(o.Senders, o.Rooms)
	type membership struct{ user, room int }
	var joins []membership
	for i, rs := range assign {
		for _, j := range rs {
			if j%o.Senders != i {
				joins = append(joins, membership{i, j})
			}
		}
	}
	if err := parallel(ctx, len(joins), o.Concurrency, func(ctx context.Context, k int) error {
		return users[joins[k].user].Join(ctx, rooms[joins[k].room], "")
	}); err != nil {
		return nil, err
	}
	res := &Result{SetupSeconds: time.Since(setup).Seconds()}
	e.logf("%d senders in %d rooms: %.0fs warm-up, %s measured", o.Senders, o.Rooms, o.Warmup.Seconds(), o.Duration)

	var (
		rec      Recorder
		acked    atomic.Int64
		failed   atomic.Int64
		firstErr atomic.Value
		lastAck  atomic.Int64
		wg       sync.WaitGroup
	)
	measureFrom := time.Now().Add(o.Warmup)
	end := measureFrom.Add(o.Duration)
	for i, c := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := assign[i]
			for k := 0; ctx.Err() == nil; k++ {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				_, err := c.SendText(ctx, rooms[mine[k%len(mine)]], -1)
				t1 := time.Now()
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
					continue
				}
				rec.Add(t1.Sub(t0))
				acked.Add(1)
				storeMax(&lastAck, t1.UnixNano())
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	window := end.Sub(measureFrom)
	if last := time.Unix(0, lastAck.Load()); last.After(end) {
		window = last.Sub(measureFrom)
	}
	e.serverWindow(res, measureFrom, end)
	res.add("events acknowledged", float64(acked.Load()), "events")
	res.add("throughput", float64(acked.Load())/window.Seconds(), "events/s")
	res.addLatency("send latency", rec.Summary())
	res.add("send errors", float64(failed.Load()), "requests")
	if v := firstErr.Load(); v != nil {
		res.notef("first send error: %s", v)
	}
	return res, nil
}

// storeMax raises a to v if v is larger.
func storeMax(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}
