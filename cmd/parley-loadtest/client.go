package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Client is a minimal Matrix client-server API client: only what the
// scenarios need, over plain net/http, so that the load generator spends
// as little CPU per request as possible and works against any homeserver.
type Client struct {
	HS          string
	HTTP        *http.Client
	UserID      string
	AccessToken string
}

// newTransport returns a transport allowed to keep conns connections to
// the homeserver idle, so that re-polls reuse their connection instead of
// dialling a new one.
func newTransport(conns int) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     5 * time.Minute,
		// Decompressing would add client CPU to every measured latency.
		DisableCompression: true,
	}
}

// MatrixError is a non-200 answer.
type MatrixError struct {
	Status  int
	ErrCode string `json:"errcode"`
	Err     string `json:"error"`
	Body    []byte `json:"-"`
}

func (e *MatrixError) Error() string {
	if e.ErrCode != "" {
		return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.ErrCode, e.Err)
	}
	return fmt.Sprintf("HTTP %d: %.200s", e.Status, e.Body)
}

// do sends one request with an optional JSON body and decodes a 200 answer
// into out (when not nil). It returns the size of the response body.
func (c *Client) do(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.HS+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.AccessToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 512<<20))
	if err != nil {
		return len(data), fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		me := &MatrixError{Status: resp.StatusCode, Body: data}
		_ = json.Unmarshal(data, me)
		return len(data), me
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return len(data), fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return len(data), nil
}

type registerResponse struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
	Session     string `json:"session"`
}

// RegisterDummy registers through the UIA m.login.dummy stage
// (client-server spec §"Account registration"): first without a session to
// obtain one, then completing the dummy stage in it.
func (c *Client) RegisterDummy(ctx context.Context, username, password string) error {
	req := map[string]any{"username": username, "password": password, "initial_device_display_name": "parley-loadtest"}
	var out registerResponse
	_, err := c.do(ctx, http.MethodPost, "/_matrix/client/v3/register", req, &out)
	var me *MatrixError
	if errors.As(err, &me) && me.Status == http.StatusUnauthorized {
		var flow registerResponse
		if jerr := json.Unmarshal(me.Body, &flow); jerr != nil || flow.Session == "" {
			return fmt.Errorf("register %s: 401 without a UIA session: %w", username, err)
		}
		req["auth"] = map[string]string{"type": "m.login.dummy", "session": flow.Session}
		_, err = c.do(ctx, http.MethodPost, "/_matrix/client/v3/register", req, &out)
	}
	if err != nil {
		return fmt.Errorf("register %s: %w", username, err)
	}
	if out.AccessToken == "" {
		return fmt.Errorf("register %s: no access token in the answer", username)
	}
	c.UserID, c.AccessToken = out.UserID, out.AccessToken
	return nil
}

// RegisterSharedSecret registers through the Synapse-compatible admin API
// (/_synapse/admin/v1/register), which Parley, Synapse and Dendrite serve
// when a shared secret is configured: the MAC is HMAC-SHA1 over
// nonce NUL username NUL password NUL "notadmin".
func (c *Client) RegisterSharedSecret(ctx context.Context, secret, username, password string) error {
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if _, err := c.do(ctx, http.MethodGet, "/_synapse/admin/v1/register", nil, &nonce); err != nil {
		return fmt.Errorf("register nonce: %w", err)
	}
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(nonce.Nonce + "\x00" + username + "\x00" + password + "\x00notadmin"))
	req := map[string]any{"nonce": nonce.Nonce, "username": username, "password": password, "admin": false, "mac": hex.EncodeToString(mac.Sum(nil))}
	var out registerResponse
	if _, err := c.do(ctx, http.MethodPost, "/_synapse/admin/v1/register", req, &out); err != nil {
		return fmt.Errorf("register %s: %w", username, err)
	}
	if out.AccessToken == "" {
		return fmt.Errorf("register %s: no access token in the answer", username)
	}
	c.UserID, c.AccessToken = out.UserID, out.AccessToken
	return nil
}

// CreateRoom creates a public room (anyone may join without an invite).
func (c *Client) CreateRoom(ctx context.Context, name string) (string, error) {
	var out struct {
		RoomID string `json:"room_id"`
	}
	body := map[string]any{"preset": "public_chat", "name": name}
	if _, err := c.do(ctx, http.MethodPost, "/_matrix/client/v3/createRoom", body, &out); err != nil {
		return "", fmt.Errorf("createRoom: %w", err)
	}
	return out.RoomID, nil
}

// Join joins a room by ID, asking serverName (if set) to help over
// federation.
func (c *Client) Join(ctx context.Context, roomID, serverName string) error {
	path := "/_matrix/client/v3/join/" + url.PathEscape(roomID)
	if serverName != "" {
		path += "?server_name=" + url.QueryEscape(serverName)
	}
	if _, err := c.do(ctx, http.MethodPost, path, map[string]any{}, nil); err != nil {
		return fmt.Errorf("join %s as %s: %w", roomID, c.UserID, err)
	}
	return nil
}

var txnCounter atomic.Int64

// SendText sends an m.room.message with a unique transaction ID. seq, when
// not negative, is put into the content so receivers can match the event.
func (c *Client) SendText(ctx context.Context, roomID string, seq int64) (string, error) {
	txn := strconv.FormatInt(time.Now().UnixNano(), 36) + "." + strconv.FormatInt(txnCounter.Add(1), 36)
	content := map[string]any{"msgtype": "m.text", "body": "load test message " + txn}
	if seq >= 0 {
		content[seqKey] = seq
	}
	var out struct {
		EventID string `json:"event_id"`
	}
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + txn
	if _, err := c.do(ctx, http.MethodPut, path, content, &out); err != nil {
		return "", err
	}
	return out.EventID, nil
}

// seqKey is the content key carrying a fan-out message's sequence number.
const seqKey = "org.parley.loadtest.seq"

// SyncResponse holds the parts of a /sync answer the scenarios look at.
type SyncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join   map[string]syncRoom `json:"join"`
		Invite map[string]any      `json:"invite"`
		Leave  map[string]syncRoom `json:"leave"`
		Knock  map[string]any      `json:"knock"`
	} `json:"rooms"`
	AccountData eventCount `json:"account_data"`
	Presence    eventCount `json:"presence"`
	ToDevice    eventCount `json:"to_device"`
}

type eventCount struct {
	Events []json.RawMessage `json:"events"`
}

type syncRoom struct {
	Timeline struct {
		Events []syncEvent `json:"events"`
	} `json:"timeline"`
	State     eventCount `json:"state"`
	Ephemeral eventCount `json:"ephemeral"`
	Summary   struct {
		JoinedMemberCount *int `json:"m.joined_member_count"`
	} `json:"summary"`
}

type syncEvent struct {
	Type    string `json:"type"`
	Content struct {
		Seq *int64 `json:"org.parley.loadtest.seq"`
	} `json:"content"`
}

// HasNews says whether an incremental answer carries anything at all.
func (r *SyncResponse) HasNews() bool {
	return len(r.Rooms.Join) > 0 || len(r.Rooms.Invite) > 0 || len(r.Rooms.Leave) > 0 || len(r.Rooms.Knock) > 0 ||
		len(r.AccountData.Events) > 0 || len(r.Presence.Events) > 0 || len(r.ToDevice.Events) > 0
}

// Sync calls GET /sync. since empty means an initial sync; filter is
// inline JSON or empty. It returns the response size in bytes.
func (c *Client) Sync(ctx context.Context, since string, timeout time.Duration, filter string) (*SyncResponse, int, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	if timeout > 0 {
		q.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	path := "/_matrix/client/v3/sync"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out SyncResponse
	n, err := c.do(ctx, http.MethodGet, path, nil, &out)
	if err != nil {
		return nil, n, fmt.Errorf("sync: %w", err)
	}
	return &out, n, nil
}

// lazyInitialFilter keeps a long-poller's first (initial) sync small: one
// timeline event and lazily loaded members, which is what real clients do
// before they start long-polling.
const lazyInitialFilter = `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":1}}}`

// withWroteRequest returns a context whose request calls done when it has
// been written to the connection. done must be safe to call again (the
// caller also calls it when the request fails before being written).
func withWroteRequest(ctx context.Context, done func()) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { done() },
	})
}

// waitGroupCtx waits for wg or for ctx to end.
func waitGroupCtx(ctx context.Context, wg *sync.WaitGroup) error {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
