package main_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/testserver"
)

// TestMediaAdminCommands: quarantine and delete from the command line act
// on a running server's media at once; bad arguments and unknown media fail.
func TestMediaAdminCommands(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.RegisterUser(t, "alice")
	ctx := context.Background()
	upload := func(body string) id.ContentURI {
		up, err := alice.UploadBytes(ctx, []byte(body), "text/plain")
		if err != nil {
			t.Fatal(err)
		}
		return up.ContentURI
	}
	downloadable := func(uri id.ContentURI) bool {
		_, err := alice.DownloadBytes(ctx, uri)
		if err != nil && !errors.Is(err, mautrix.MNotFound) {
			t.Fatalf("download %s: %v", uri, err)
		}
		return err == nil
	}
	kept, quarantined, deleted := upload("kept"), upload("quarantined"), upload("deleted")

	out, err := parley(t, nil, "media", "quarantine", "--data-dir", srv.DataDir, "--media-id", quarantined.FileID)
	if err != nil || !strings.Contains(out, "quarantined mxc://"+srv.ServerName+"/"+quarantined.FileID) {
		t.Fatalf("media quarantine: %v\n%s", err, out)
	}
	out, err = parley(t, nil, "media", "delete", "--data-dir", srv.DataDir, "--server-name", srv.ServerName, "--media-id", deleted.FileID)
	if err != nil || !strings.Contains(out, "deleted mxc://") {
		t.Fatalf("media delete: %v\n%s", err, out)
	}
	if !downloadable(kept) || downloadable(quarantined) || downloadable(deleted) {
		t.Fatal("after the commands only the kept file should download")
	}

	out, err = parley(t, nil, "media", "purge-remote", "--data-dir", srv.DataDir, "--older-than", "720h")
	if err != nil || !strings.Contains(out, "purged 0 remote media") {
		t.Fatalf("media purge-remote: %v\n%s", err, out)
	}
	if !downloadable(kept) {
		t.Fatal("purging remote media removed local media")
	}

	for _, bad := range [][]string{
		{"media", "delete", "--data-dir", srv.DataDir, "--media-id", deleted.FileID}, // already gone
		{"media", "delete", "--data-dir", srv.DataDir},                               // no media ID
		{"media", "purge-remote", "--data-dir", srv.DataDir},                         // no duration
		{"media", "purge-remote", "--data-dir", srv.DataDir, "--older-than", "soon"},
		{"media", "shred", "--data-dir", srv.DataDir},
		{"media"},
	} {
		if out, err := parley(t, nil, bad...); err == nil {
			t.Errorf("parley %v succeeded:\n%s", bad, out)
		}
	}
}
