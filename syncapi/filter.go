package syncapi

import (
	"encoding/json"
	"strings"

	"github.com/parley-chat/parley/internal/httputil"
)

// Filter is a client's sync filter (client-server spec §"Filtering").
type Filter struct {
	AccountData *EventFilter `json:"account_data,omitempty"`
	EventFields []string     `json:"event_fields,omitempty"`
	EventFormat string       `json:"event_format,omitempty"`
	Presence    *EventFilter `json:"presence,omitempty"`
	Room        *RoomFilter  `json:"room,omitempty"`
}

// EventFilter selects events by type and sender. A nil list means "no
// restriction"; an empty list (given as []) matches nothing.
type EventFilter struct {
	Limit      *int      `json:"limit,omitempty"`
	NotSenders []string  `json:"not_senders,omitempty"`
	NotTypes   []string  `json:"not_types,omitempty"`
	Senders    *[]string `json:"senders,omitempty"`
	Types      *[]string `json:"types,omitempty"`
}

// RoomEventFilter adds room and membership-loading options.
type RoomEventFilter struct {
	EventFilter
	ContainsURL             *bool     `json:"contains_url,omitempty"`
	IncludeRedundantMembers bool      `json:"include_redundant_members,omitempty"`
	LazyLoadMembers         bool      `json:"lazy_load_members,omitempty"`
	NotRooms                []string  `json:"not_rooms,omitempty"`
	Rooms                   *[]string `json:"rooms,omitempty"`
	// UnreadThreadNotifications asks /sync for per-thread counts.
	UnreadThreadNotifications bool `json:"unread_thread_notifications,omitempty"`
}

// RoomFilter is the "room" part of a filter.
type RoomFilter struct {
	AccountData  *RoomEventFilter `json:"account_data,omitempty"`
	Ephemeral    *RoomEventFilter `json:"ephemeral,omitempty"`
	IncludeLeave bool             `json:"include_leave,omitempty"`
	NotRooms     []string         `json:"not_rooms,omitempty"`
	Rooms        *[]string        `json:"rooms,omitempty"`
	State        *RoomEventFilter `json:"state,omitempty"`
	Timeline     *RoomEventFilter `json:"timeline,omitempty"`
}

// Limits on how many events one response carries.
const (
	defaultTimelineLimit = 20
	maxTimelineLimit     = 100
)

// parseFilter decodes and checks a filter, answering M_NOT_JSON or
// M_BAD_JSON for bad input.
func parseFilter(body []byte) (*Filter, error) {
	var f Filter
	if err := httputil.UnmarshalJSONObject(body, &f); err != nil {
		return nil, err
	}
	if f.EventFormat != "" && f.EventFormat != "client" && f.EventFormat != "federation" {
		return nil, httputil.BadJSON("event_format must be 'client' or 'federation'")
	}
	check := func(name string, ef *EventFilter) error {
		if ef != nil && ef.Limit != nil && *ef.Limit < 0 {
			return httputil.BadJSON("%s.limit must not be negative", name)
		}
		return nil
	}
	if err := check("account_data", f.AccountData); err != nil {
		return nil, err
	}
	if err := check("presence", f.Presence); err != nil {
		return nil, err
	}
	if r := f.Room; r != nil {
		for name, ref := range map[string]*RoomEventFilter{"room.account_data": r.AccountData, "room.ephemeral": r.Ephemeral, "room.state": r.State, "room.timeline": r.Timeline} {
			if ref != nil {
				if err := check(name, &ref.EventFilter); err != nil {
					return nil, err
				}
			}
		}
	}
	return &f, nil
}

func (f *Filter) room() *RoomFilter {
	if f == nil || f.Room == nil {
		return &RoomFilter{}
	}
	return f.Room
}

// timelineLimit is the timeline size asked for, bounded.
func (f *Filter) timelineLimit() int {
	tl := f.room().Timeline
	if tl == nil || tl.Limit == nil {
		return defaultTimelineLimit
	}
	return min(*tl.Limit, maxTimelineLimit)
}

// includesRoom applies the room filter's rooms / not_rooms lists.
func (r *RoomFilter) includesRoom(roomID string) bool {
	return matchList(r.Rooms, r.NotRooms, roomID, false)
}

// matchesEvent applies a room event filter to one event.
func (f *RoomEventFilter) matchesEvent(roomID, sender, eventType string, eventJSON []byte) bool {
	if f == nil {
		return true
	}
	if !matchList(f.Rooms, f.NotRooms, roomID, false) {
		return false
	}
	if !f.EventFilter.matches(sender, eventType) {
		return false
	}
	if f.ContainsURL != nil {
		var e struct {
			Content struct {
				URL *string `json:"url"`
			} `json:"content"`
		}
		_ = json.Unmarshal(eventJSON, &e)
		if (e.Content.URL != nil) != *f.ContainsURL {
			return false
		}
	}
	return true
}

// matchesType applies only the type lists: for ephemeral and account data
// events, which have no sender.
func (f *RoomEventFilter) matchesType(roomID, eventType string) bool {
	if f == nil {
		return true
	}
	return matchList(f.Rooms, f.NotRooms, roomID, false) && matchList(f.Types, f.NotTypes, eventType, true)
}

// matches applies types / not_types / senders / not_senders.
func (f *EventFilter) matches(sender, eventType string) bool {
	if f == nil {
		return true
	}
	return matchList(f.Types, f.NotTypes, eventType, true) && matchList(f.Senders, f.NotSenders, sender, false)
}

// limit returns the filter's limit bounded to max, or def when unset.
func (f *EventFilter) limit(def, max int) int {
	if f == nil || f.Limit == nil {
		return def
	}
	return min(*f.Limit, max)
}

// exactTypes returns the filter's types when none has a wildcard, for the
// database to narrow its query; nil otherwise.
func (f *EventFilter) exactTypes() (types, notTypes []string) {
	if f == nil {
		return nil, nil
	}
	if f.Types != nil && len(*f.Types) > 0 && !anyWildcard(*f.Types) {
		types = *f.Types
	}
	for _, t := range f.NotTypes {
		if !strings.Contains(t, "*") {
			notTypes = append(notTypes, t)
		}
	}
	return types, notTypes
}

func anyWildcard(list []string) bool {
	for _, s := range list {
		if strings.Contains(s, "*") {
			return true
		}
	}
	return false
}

// matchList: v must match allow (when set) and no entry of deny; deny wins.
// With wildcards, '*' matches any sequence of characters (spec: "A '*' can
// be used as a wildcard to match any sequence of characters").
func matchList(allow *[]string, deny []string, v string, wildcards bool) bool {
	eq := func(pattern string) bool {
		if wildcards {
			return globMatch(pattern, v)
		}
		return pattern == v
	}
	for _, d := range deny {
		if eq(d) {
			return false
		}
	}
	if allow == nil {
		return true
	}
	for _, a := range *allow {
		if eq(a) {
			return true
		}
	}
	return false
}

// globMatch matches s against a pattern where '*' is any sequence.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}
