package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

func init() {
	scenarios["federation"] = scenario{
		help:  "two servers, one room: messages sent on --hs until seen by --clients long-polling clients on --hs2",
		conns: func(o *options) int { return o.Clients + o.Concurrency + 8 },
		run:   runFederation,
	}
}

func runFederation(ctx context.Context, e *env) (*Result, error) {
	o := e.opts
	if o.HS2 == "" {
		return nil, fmt.Errorf("the federation scenario needs --hs2, the second homeserver")
	}
	setup := time.Now()
	senders, err := e.registerUsers(ctx, o.HS, "fedsend", 1)
	if err != nil {
		return nil, err
	}
	receivers, err := e.registerUsers(ctx, o.HS2, "fedrecv", o.Clients)
	if err != nil {
		return nil, err
	}
	roomID, err := senders[0].CreateRoom(ctx, "loadtest federation")
	if err != nil {
		return nil, err
	}
	// The room's server is the sender's: the part of the user ID after
	// the first colon (client-server spec §"User identifiers").
	_, origin, _ := strings.Cut(senders[0].UserID, ":")
	if err := parallel(ctx, len(receivers), o.Concurrency, func(ctx context.Context, i int) error {
		return receivers[i].Join(ctx, roomID, origin)
	}); err != nil {
		return nil, err
	}
	// The sending server must have taken in every join before the first
	// message, or that message need not be sent to the receivers' server.
	if err := e.waitJoined(ctx, senders[0], roomID, o.Clients+1); err != nil {
		return nil, err
	}
	d, err := e.prepareDelivery(ctx, senders[0], roomID, receivers)
	if err != nil {
		return nil, err
	}
	res := &Result{SetupSeconds: time.Since(setup).Seconds()}
	e.logf("%d receivers on %s; sending %.0f msg/s on %s for %s", o.Clients, o.HS2, o.Rate, o.HS, o.Duration)
	dr, err := d.run(ctx)
	if err != nil {
		return res, err
	}
	e.serverWindow(res, dr.from, dr.to)
	dr.report(res)
	// Open loop: at a rate the two servers sustain this equals the send
	// rate; above it, the backlog stretches the time to the last delivery.
	if dr.delivered > 0 {
		res.add("delivered throughput", float64(dr.delivered)/float64(o.Clients)/dr.lastDelivery.Sub(dr.from).Seconds(), "msg/s")
	}
	return res, nil
}
