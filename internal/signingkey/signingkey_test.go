package signingkey

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCreateLoadRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.key")
	set, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreate: %v created=%v", err, created)
	}
	again, created, err := LoadOrCreate(path)
	if err != nil || created || again.Current.ID != set.Current.ID || !again.Current.PrivateKey.Equal(set.Current.PrivateKey) {
		t.Fatalf("second load should reuse the key: %v %v", err, created)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	rotated, err := Rotate(path)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Current.ID != rotated.Current.ID || len(loaded.Old) != 1 || loaded.Old[0].ID != set.Current.ID || loaded.Old[0].ExpiredAt.IsZero() {
		t.Fatalf("rotation not persisted: %+v", loaded)
	}
}

func TestLoadRejectsBadFiles(t *testing.T) {
	for name, content := range map[string]string{
		"empty":      "",
		"wrong algo": "rsa v1 AAAA\n",
		"short seed": "ed25519 v1 AAAA\n",
		"not base64": "ed25519 v1 !!!!\n",
	} {
		path := filepath.Join(t.TempDir(), "k")
		os.WriteFile(path, []byte(content), 0o600)
		if _, err := Load(path); err == nil {
			t.Errorf("%s: want error", name)
		}
	}
}
