package clientapi_test

import (
	"testing"

	"github.com/parley-chat/parley/internal/testdb"
)

func TestDevices(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		e := newAccountEnv(t, dbURL, nil)
		_, first, token := e.register("alice", "password1")
		e.login("alice", "password1", "PHONE")
		e.login("alice", "password1", "TABLET")
		e.login("alice", "password1", "WATCH")

		resp := e.do(request{Method: "GET", Path: "/_matrix/client/v3/devices", Token: token})
		expect(t, "list", resp, 200, "")
		if devices, _ := resp.Body["devices"].([]any); len(devices) != 4 {
			t.Fatalf("list %s", resp.Raw)
		}

		expect(t, "rename", e.do(request{Method: "PUT", Path: "/_matrix/client/v3/devices/PHONE", Token: token,
			Body: map[string]any{"display_name": "Alice's phone"}}), 200, "")
		resp = e.do(request{Method: "GET", Path: "/_matrix/client/v3/devices/PHONE", Token: token})
		expect(t, "get", resp, 200, "")
		if resp.str("device_id") != "PHONE" || resp.str("display_name") != "Alice's phone" || resp.Body["last_seen_ts"] == nil {
			t.Fatalf("get %s", resp.Raw)
		}
		expect(t, "PUT without a name changes nothing", e.do(request{Method: "PUT", Path: "/_matrix/client/v3/devices/PHONE", Token: token, Body: map[string]any{}}), 200, "")
		if got := e.do(request{Method: "GET", Path: "/_matrix/client/v3/devices/PHONE", Token: token}); got.str("display_name") != "Alice's phone" {
			t.Fatalf("name lost: %s", got.Raw)
		}

		resp = e.completeUIA("DELETE", "/_matrix/client/v3/devices/PHONE", token, "alice", "password1", map[string]any{})
		expect(t, "delete one", resp, 200, "")
		expect(t, "deleted device", e.do(request{Method: "GET", Path: "/_matrix/client/v3/devices/PHONE", Token: token}), 404, "M_NOT_FOUND")

		resp = e.completeUIA("POST", "/_matrix/client/v3/delete_devices", token, "alice", "password1",
			map[string]any{"devices": []string{"TABLET", "WATCH", "NO_SUCH_DEVICE"}})
		expect(t, "delete several", resp, 200, "")
		resp = e.do(request{Method: "GET", Path: "/_matrix/client/v3/devices", Token: token})
		if devices, _ := resp.Body["devices"].([]any); len(devices) != 1 || devices[0].(map[string]any)["device_id"] != first {
			t.Fatalf("after deletes %s", resp.Raw)
		}

		// Another user's devices are invisible.
		_, _, bob := e.register("bob", "password2")
		expect(t, "other user's device", e.do(request{Method: "GET", Path: "/_matrix/client/v3/devices/" + first, Token: bob}), 404, "M_NOT_FOUND")
	})
}
