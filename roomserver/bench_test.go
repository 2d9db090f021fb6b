package roomserver

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/roomserver/api"
)

// BenchmarkSendEvent measures the whole send path: build, auth, sign,
// persist, publish. "one_room" sends from parallel goroutines into one busy
// room (serialized, batched per transaction); "100_rooms" spreads them over
// 100 rooms. Run with e.g. -bench SendEvent -benchtime 2000x.
func BenchmarkSendEvent(b *testing.B) {
	for _, dialect := range testdb.Dialects {
		b.Run(dialect, func(b *testing.B) {
			for _, tc := range []struct {
				name  string
				rooms int
			}{{"one_room", 1}, {"100_rooms", 100}} {
				b.Run(tc.name, func(b *testing.B) {
					h := newHarness(b, testdb.URL(b, dialect))
					alice := user("alice")
					roomIDs := make([]string, tc.rooms)
					for i := range roomIDs {
						roomIDs[i] = h.createRoom("10", alice, "public", nil)
					}
					content := mustJSON(map[string]any{"msgtype": "m.text", "body": "benchmark message"})
					var next atomic.Int64
					// Several senders per CPU, as under load from many clients.
					b.SetParallelism(8)
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						ctx := context.Background()
						for pb.Next() {
							roomID := roomIDs[int(next.Add(1))%len(roomIDs)]
							if _, err := h.rs.SendEvent(ctx, &api.SendEventRequest{RoomID: roomID, Event: api.EventTemplate{
								Sender: alice, Type: "m.room.message", Content: content}}); err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
		})
	}
}
