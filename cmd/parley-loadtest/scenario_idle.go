package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

func init() {
	scenarios["idle"] = scenario{
		help:  "C clients each holding a long-poll /sync open and re-polling in rooms where nothing happens: server memory per connection, CPU, early returns",
		conns: func(o *options) int { return o.Clients + o.Concurrency + 8 },
		run:   runIdle,
	}
}

// rampDials bounds how many first polls are being connected at once, so
// that thousands of simultaneous SYNs do not overflow the server's accept
// backlog (net.core.somaxconn) and get retried a second later.
const rampDials = 256

func runIdle(ctx context.Context, e *env) (*Result, error) {
	o := e.opts
	setup := time.Now()
	users, err := e.registerUsers(ctx, o.HS, "idle", o.Clients)
	if err != nil {
		return nil, err
	}
	size := o.RoomSize
	if size <= 0 {
		size = o.Clients
	}
	nRooms := (o.Clients + size - 1) / size
	rooms := make([]string, nRooms)
	if err := parallel(ctx, nRooms, o.Concurrency, func(ctx context.Context, k int) error {
		id, err := users[k*size].CreateRoom(ctx, fmt.Sprintf("loadtest idle %d", k))
		rooms[k] = id
		return err
	}); err != nil {
		return nil, err
	}
	joinStart := time.Now()
	if err := parallel(ctx, o.Clients, o.Concurrency, func(ctx context.Context, i int) error {
		if i%size == 0 {
			return nil // the creator
		}
		return users[i].Join(ctx, rooms[i/size], "")
	}); err != nil {
		return nil, err
	}
	e.logf("joined %d users to %d rooms in %.1fs", o.Clients-nRooms, nRooms, time.Since(joinStart).Seconds())
	if err := parallel(ctx, nRooms, o.Concurrency, func(ctx context.Context, k int) error {
		return e.waitJoined(ctx, users[k*size], rooms[k], min(size, o.Clients-k*size))
	}); err != nil {
		return nil, err
	}
	since, err := e.initialSyncs(ctx, users)
	if err != nil {
		return nil, err
	}
	res := &Result{SetupSeconds: time.Since(setup).Seconds()}

	// The baseline is taken with no client connection open, after the
	// set-up connections are closed and the server has had a moment.
	e.transport.CloseIdleConnections()
	var baseline ProcSample
	if e.sampler != nil {
		time.Sleep(2 * time.Second)
		if baseline, err = e.sampler.Sample(); err != nil {
			return res, fmt.Errorf("server sample: %w", err)
		}
	}

	earlyBefore := o.PollTimeout * 97 / 100
	var (
		polls, early, news, pollErrs atomic.Int64
		firstErr                     atomic.Value
		wg, ready                    sync.WaitGroup
	)
	pollCtx, stopPolls := context.WithCancel(ctx)
	defer stopPolls()
	sem := make(chan struct{}, rampDials)
	rampStart := time.Now()
	for i, c := range users {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-pollCtx.Done():
				ready.Done()
				return
			}
			markReady := sync.OnceFunc(func() { <-sem; ready.Done() })
			defer markReady()
			pctx := withWroteRequest(pollCtx, markReady)
			tok := since[i]
			for pollCtx.Err() == nil {
				t0 := time.Now()
				resp, _, err := c.Sync(pctx, tok, o.PollTimeout, "")
				elapsed := time.Since(t0)
				markReady()
				pctx = pollCtx
				if err != nil {
					if pollCtx.Err() != nil {
						return
					}
					pollErrs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					time.Sleep(time.Second)
					continue
				}
				polls.Add(1)
				tok = resp.NextBatch
				switch {
				case resp.HasNews():
					news.Add(1)
				case elapsed < earlyBefore:
					early.Add(1)
				}
			}
		}()
	}
	if err := waitGroupCtx(ctx, &ready); err != nil {
		return res, err
	}
	holdFrom := time.Now()
	e.logf("%d long-polls open after %.1fs; holding for %s", o.Clients, holdFrom.Sub(rampStart).Seconds(), o.Duration)
	select {
	case <-time.After(o.Duration):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	holdTo := time.Now()
	stopPolls()
	wg.Wait()

	res.add("clients", float64(o.Clients), "connections")
	res.add("ramp (all polls open)", holdFrom.Sub(rampStart).Seconds(), "s")
	res.add("polls completed", float64(polls.Load()), "polls")
	res.add("early empty returns", float64(early.Load()), "polls")
	res.add("returns with news", float64(news.Load()), "polls")
	res.add("poll errors", float64(pollErrs.Load()), "requests")
	if e.sampler != nil {
		e.serverWindow(res, holdFrom, holdTo)
		res.add("server RSS before polls", mib(baseline.RSSBytes), "MiB")
		perConn := float64(res.Server.peakRSS-baseline.RSSBytes) / float64(o.Clients) / 1024
		res.add("server RSS per connection", perConn, "KiB")
	}
	if v := firstErr.Load(); v != nil {
		res.notef("first poll error: %s", v)
	}
	return res, nil
}
