package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/userapi/storage"
)

func TestStorage(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		db, err := sqlutil.Open(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		st, err := storage.New(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		// Migrating again, as a second process starting would, is a no-op.
		if _, err := storage.New(ctx, db); err != nil {
			t.Fatalf("second migration: %v", err)
		}

		const user = "@u:example.org"
		if err := st.CreateAccount(ctx, storage.Account{UserID: user, PasswordHash: "h", CreatedTS: 1}); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateAccount(ctx, storage.Account{UserID: user, CreatedTS: 2}); !errors.Is(err, storage.ErrExists) {
			t.Fatalf("duplicate account: %v", err)
		}
		a, err := st.GetAccount(ctx, user)
		if err != nil || a.PasswordHash != "h" || a.Admin || a.Deactivated || a.CreatedTS != 1 {
			t.Fatalf("GetAccount = %+v, %v", a, err)
		}

		// Many devices, deleted in one statement by list.
		var ids []string
		for i := range 50 {
			id := fmt.Sprintf("DEV%02d", i)
			ids = append(ids, id)
			if err := st.UpsertDevice(ctx, storage.Device{UserID: user, DeviceID: id, DisplayName: "n", LastSeenTS: int64(i)}, []byte(id)); err != nil {
				t.Fatal(err)
			}
		}
		// Re-upserting with no name keeps the name and moves the token.
		if err := st.UpsertDevice(ctx, storage.Device{UserID: user, DeviceID: "DEV00", LastSeenTS: 99}, []byte("new")); err != nil {
			t.Fatal(err)
		}
		if _, err := st.TokenOwner(ctx, []byte("DEV00")); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("old token hash still resolves: %v", err)
		}
		o, err := st.TokenOwner(ctx, []byte("new"))
		if err != nil || o.DeviceID != "DEV00" || o.LastSeenTS != 99 {
			t.Fatalf("TokenOwner = %+v, %v", o, err)
		}
		if d, _ := st.GetDevice(ctx, user, "DEV00"); d.DisplayName != "n" {
			t.Fatalf("name lost: %+v", d)
		}
		if err := st.DeleteDevices(ctx, user, ids[:40]); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteDevices(ctx, user, []string{}); err != nil {
			t.Fatal(err)
		}
		left, err := st.ListDevices(ctx, user)
		if err != nil || len(left) != 10 || left[0].DeviceID != "DEV40" {
			t.Fatalf("ListDevices = %d devices, %v", len(left), err)
		}
		if err := st.SetDeviceDisplayName(ctx, user, "DEV00", "x"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("rename deleted device: %v", err)
		}
		if err := st.SetProfileField(ctx, user, "bogus", "x"); err == nil {
			t.Fatal("unknown profile field accepted")
		}
		if err := st.Deactivate(ctx, "@nobody:example.org"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deactivate unknown: %v", err)
		}
		if err := st.Deactivate(ctx, user); err != nil {
			t.Fatal(err)
		}
		if left, _ := st.ListDevices(ctx, user); len(left) != 0 {
			t.Fatalf("devices after deactivation: %d", len(left))
		}
	})
}
