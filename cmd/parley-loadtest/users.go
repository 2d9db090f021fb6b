package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// parallel runs fn(ctx, i) for i in [0, n) on at most workers goroutines.
// The first error cancels the rest and is returned.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(max(workers, 1), n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && err != context.Canceled {
		return err
	}
	return ctx.Err()
}

// loadtestPassword is every generated account's password; the accounts
// are throwaway and the name prefix is unique per run.
const loadtestPassword = "parley-loadtest-password"

// registerUsers creates n accounts named lt<run>-<role><i>, in parallel
// with bounded concurrency, using the shared-secret admin API when a
// secret is configured and open registration otherwise.
func (e *env) registerUsers(ctx context.Context, hs, role string, n int) ([]*Client, error) {
	start := time.Now()
	users := make([]*Client, n)
	err := parallel(ctx, n, e.opts.Concurrency, func(ctx context.Context, i int) error {
		c := e.newClient(hs)
		name := fmt.Sprintf("lt%s-%s%d", e.runID, role, i)
		var err error
		if e.opts.SharedSecret != "" {
			err = c.RegisterSharedSecret(ctx, e.opts.SharedSecret, name, loadtestPassword)
		} else {
			err = c.RegisterDummy(ctx, name, loadtestPassword)
		}
		users[i] = c
		return err
	})
	if err != nil {
		return nil, err
	}
	e.logf("registered %d %s users in %.1fs", n, role, time.Since(start).Seconds())
	return users, nil
}

// joinAll joins every client in users to roomID, in parallel.
func (e *env) joinAll(ctx context.Context, users []*Client, roomID string) error {
	start := time.Now()
	err := parallel(ctx, len(users), e.opts.Concurrency, func(ctx context.Context, i int) error {
		return users[i].Join(ctx, roomID, "")
	})
	if err == nil && len(users) > 0 {
		e.logf("joined %d users to %s in %.1fs", len(users), roomID, time.Since(start).Seconds())
	}
	return err
}

// initialSyncs gives each client a since token from a small initial sync.
func (e *env) initialSyncs(ctx context.Context, users []*Client) ([]string, error) {
	start := time.Now()
	since := make([]string, len(users))
	err := parallel(ctx, len(users), e.opts.Concurrency, func(ctx context.Context, i int) error {
		resp, _, err := users[i].Sync(ctx, "", 0, lazyInitialFilter)
		if err != nil {
			return fmt.Errorf("initial sync of %s: %w", users[i].UserID, err)
		}
		since[i] = resp.NextBatch
		return nil
	})
	if err == nil {
		e.logf("initial sync of %d users in %.1fs", len(users), time.Since(start).Seconds())
	}
	return since, err
}

// waitJoined waits until c's /sync reports at least n joined members in
// roomID. A homeserver may acknowledge a join before its sync stream has
// seen it; waiting here keeps that catch-up out of the measured phase
// (otherwise idle long-polls would return with the joins as news).
func (e *env) waitJoined(ctx context.Context, c *Client, roomID string, n int) error {
	filter := `{"room":{"rooms":["` + roomID + `"],"state":{"lazy_load_members":true},"timeline":{"limit":1}}}`
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, _, err := c.Sync(ctx, "", 0, filter)
		if err != nil {
			return err
		}
		room, ok := resp.Rooms.Join[roomID]
		if ok && room.Summary.JoinedMemberCount == nil {
			// No room summary from this server: nothing to wait on.
			e.logf("no m.joined_member_count in /sync; not waiting for the sync stream to catch up")
			return nil
		}
		if ok && *room.Summary.JoinedMemberCount >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/sync still does not show %d members in %s after 2 minutes", n, roomID)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
