package clientapi_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/internal/testserver"
)

// TestAccountsEndToEnd drives a real server with the mautrix-go client
// through an account's life: register, whoami, profile, a second login,
// devices, logout.
func TestAccountsEndToEnd(t *testing.T) {
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			srv := testserver.Start(t, testserver.Options{DB: dialect})
			alice := srv.RegisterUser(t, "alice")

			who, err := alice.Whoami(ctx)
			if err != nil {
				t.Fatal(err)
			}
			wantID := id.UserID("@alice:" + srv.ServerName)
			if who.UserID != wantID || who.DeviceID != alice.DeviceID {
				t.Fatalf("whoami = %+v, want %s / %s", who, wantID, alice.DeviceID)
			}

			if err := alice.SetDisplayName(ctx, "Alice Liddell"); err != nil {
				t.Fatal(err)
			}
			other := srv.RegisterUser(t, "bob")
			prof, err := other.GetProfile(ctx, wantID)
			if err != nil {
				t.Fatal(err)
			}
			if prof.DisplayName != "Alice Liddell" {
				t.Fatalf("profile displayname = %q", prof.DisplayName)
			}

			// A second device by password login, by localpart.
			phone := srv.Client(t)
			login, err := phone.Login(ctx, &mautrix.ReqLogin{
				Type:                     mautrix.AuthTypePassword,
				Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
				Password:                 testserver.Password,
				InitialDeviceDisplayName: "phone",
				StoreCredentials:         true,
			})
			if err != nil {
				t.Fatal(err)
			}
			if login.UserID != wantID || login.DeviceID == alice.DeviceID {
				t.Fatalf("login = %+v", login)
			}

			devices, err := alice.GetDevicesInfo(ctx)
			if err != nil {
				t.Fatal(err)
			}
			names := map[id.DeviceID]string{}
			for _, d := range devices.Devices {
				names[d.DeviceID] = d.DisplayName
			}
			if len(names) != 2 || names[login.DeviceID] != "phone" || names[alice.DeviceID] != "test device" {
				t.Fatalf("devices = %+v", devices.Devices)
			}
			if err := alice.SetDeviceInfo(ctx, login.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "old phone"}); err != nil {
				t.Fatal(err)
			}
			dev, err := phone.GetDeviceInfo(ctx, login.DeviceID)
			if err != nil || dev.DisplayName != "old phone" {
				t.Fatalf("device after rename = %+v, %v", dev, err)
			}

			// Logging out the phone invalidates its token and only its token.
			if _, err := phone.Logout(ctx); err != nil {
				t.Fatal(err)
			}
			_, err = phone.Whoami(ctx)
			if !errors.Is(err, mautrix.MUnknownToken) {
				t.Fatalf("whoami after logout: %v, want M_UNKNOWN_TOKEN", err)
			}
			var httpErr mautrix.HTTPError
			if errors.As(err, &httpErr) && httpErr.Response.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", httpErr.Response.StatusCode)
			}
			if _, err := alice.Whoami(ctx); err != nil {
				t.Fatalf("alice's first device should still work: %v", err)
			}

			// A wrong password is refused.
			_, err = srv.Client(t).Login(ctx, &mautrix.ReqLogin{
				Type:       mautrix.AuthTypePassword,
				Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: string(wantID)},
				Password:   "wrong",
			})
			if !errors.Is(err, mautrix.MForbidden) {
				t.Fatalf("login with wrong password: %v, want M_FORBIDDEN", err)
			}

			// The account survives a restart.
			srv.Restart()
			if _, err := alice.Whoami(ctx); err != nil {
				t.Fatalf("whoami after restart: %v", err)
			}
			if _, err := alice.LogoutAll(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := alice.Whoami(ctx); !errors.Is(err, mautrix.MUnknownToken) {
				t.Fatalf("whoami after logout/all: %v", err)
			}
		})
	}
}
