package main

import (
	"context"
	"time"
)

func init() {
	scenarios["fanout"] = scenario{
		help:  "N clients long-polling /sync in one room, one sender at a fixed rate: delivery latency and losses",
		conns: func(o *options) int { return o.Clients + o.Concurrency + 8 },
		run:   runFanout,
	}
}

func runFanout(ctx context.Context, e *env) (*Result, error) {
	o := e.opts
	setup := time.Now()
	senders, err := e.registerUsers(ctx, o.HS, "fansend", 1)
	if err != nil {
		return nil, err
	}
	receivers, err := e.registerUsers(ctx, o.HS, "fan", o.Clients)
	if err != nil {
		return nil, err
	}
	roomID, err := senders[0].CreateRoom(ctx, "loadtest fanout")
	if err != nil {
		return nil, err
	}
	if err := e.joinAll(ctx, receivers, roomID); err != nil {
		return nil, err
	}
	if err := e.waitJoined(ctx, senders[0], roomID, o.Clients+1); err != nil {
		return nil, err
	}
	d, err := e.prepareDelivery(ctx, senders[0], roomID, receivers)
	if err != nil {
		return nil, err
	}
	res := &Result{SetupSeconds: time.Since(setup).Seconds()}
	e.logf("%d receivers long-polling; sending %.0f msg/s for %s", o.Clients, o.Rate, o.Duration)
	dr, err := d.run(ctx)
	if err != nil {
		return res, err
	}
	e.serverWindow(res, dr.from, dr.to)
	dr.report(res)
	return res, nil
}

// prepareDelivery uploads each receiver's filter and takes its since token.
func (e *env) prepareDelivery(ctx context.Context, sender *Client, roomID string, receivers []*Client) (*delivery, error) {
	o := e.opts
	filters := make([]string, len(receivers))
	if err := parallel(ctx, len(receivers), o.Concurrency, func(ctx context.Context, i int) error {
		id, err := receivers[i].UploadFilter(ctx, pollFilter)
		filters[i] = id
		return err
	}); err != nil {
		return nil, err
	}
	since, err := e.initialSyncs(ctx, receivers)
	if err != nil {
		return nil, err
	}
	return &delivery{
		sender: sender, roomID: roomID, receivers: receivers, since: since, filters: filters,
		rate: o.Rate, duration: o.Duration, poll: o.PollTimeout, drain: 10 * time.Second,
	}, nil
}
