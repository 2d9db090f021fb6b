package syncapi

import (
	"fmt"
	"strconv"
	"strings"
)

// StreamToken is a position in every stream a sync covers. It is the
// next_batch / since token: "s<events>_<account_data>_<receipts>_<typing>_<to_device>_<device_lists>_<presence>".
type StreamToken struct {
	Events      int64
	AccountData int64
	Receipts    int64
	Typing      int64
	ToDevice    int64
	DeviceLists int64
	Presence    int64
}

func (t StreamToken) String() string {
	return fmt.Sprintf("s%d_%d_%d_%d_%d_%d_%d", t.Events, t.AccountData, t.Receipts, t.Typing, t.ToDevice, t.DeviceLists, t.Presence)
}

// ParseStreamToken parses a since token.
func ParseStreamToken(s string) (StreamToken, error) {
	var t StreamToken
	rest, ok := strings.CutPrefix(s, "s")
	if !ok {
		return t, fmt.Errorf("token %q does not start with 's'", s)
	}
	parts := strings.Split(rest, "_")
	// Tokens from before device lists had a position have 5 parts; they
	// read as device-list position 0, which reports at most extra users.
	// Likewise tokens from before presence had one (6 parts) read as
	// presence position 0.
	if len(parts) < 5 || len(parts) > 7 {
		return t, fmt.Errorf("token %q has %d parts, want 7", s, len(parts))
	}
	dst := []*int64{&t.Events, &t.AccountData, &t.Receipts, &t.Typing, &t.ToDevice, &t.DeviceLists, &t.Presence}
	for i, p := range parts {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n < 0 {
			return t, fmt.Errorf("token %q: bad position %q", s, p)
		}
		*dst[i] = n
	}
	return t, nil
}

// clampTo keeps each position at most cur's: a token from the future
// (another server's, or from before a database restore) is treated as "now"
// rather than skipping what happens next. Typing positions are in memory
// and may restart lower, so a larger one means "send everything".
func (t StreamToken) clampTo(cur StreamToken) StreamToken {
	t.Events = min(t.Events, cur.Events)
	t.AccountData = min(t.AccountData, cur.AccountData)
	t.Receipts = min(t.Receipts, cur.Receipts)
	t.ToDevice = min(t.ToDevice, cur.ToDevice)
	t.DeviceLists = min(t.DeviceLists, cur.DeviceLists)
	t.Presence = min(t.Presence, cur.Presence)
	if t.Typing > cur.Typing {
		t.Typing = 0
	}
	return t
}

// A pagination token ("t<position>") names the point just after the event
// at that stream position: paginating backwards from it returns that event
// first, forwards returns the event after it. /messages also accepts a sync
// token, using its events position.
func paginationToken(pos int64) string { return "t" + strconv.FormatInt(pos, 10) }

func parsePaginationToken(s string) (int64, error) {
	if rest, ok := strings.CutPrefix(s, "t"); ok {
		n, err := strconv.ParseInt(rest, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad pagination token %q", s)
		}
		return n, nil
	}
	st, err := ParseStreamToken(s)
	if err != nil {
		return 0, err
	}
	return st.Events, nil
}
