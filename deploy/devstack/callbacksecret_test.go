package devstack_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stkgate/stkgate/deploy/devstack"
	"github.com/stkgate/stkgate/events"
)

// TestDevCallbackSecret: with no CALLBACK_SECRET the dev stack makes one,
// keeps it in its data directory readable by its owner only, and finds the
// same one after a restart, so callbacks of pushes sent before it still
// verify.
func TestDevCallbackSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	first, err := devstack.DevCallbackSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := events.ParseCallbackSecrets(first); err != nil {
		t.Fatalf("generated secret refused: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "callback-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode %v, want 0600", fi.Mode().Perm())
	}
	again, err := devstack.DevCallbackSecret(dir)
	if err != nil || again != first {
		t.Fatalf("after a restart: %q, %v; want the same secret", again, err)
	}
	if other, _ := devstack.DevCallbackSecret(t.TempDir()); other == first {
		t.Error("two data directories share a secret")
	}

	if err := os.WriteFile(filepath.Join(dir, "callback-secret"), []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := devstack.DevCallbackSecret(dir); err == nil || !strings.Contains(err.Error(), "delete it") || strings.Contains(err.Error(), "short") {
		t.Errorf("a damaged secret file: %v", err)
	}
}
