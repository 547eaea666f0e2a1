package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	fi, _ := os.Stat(path)
	if string(b) != "new" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("content %q, mode %v", b, fi.Mode())
	}
	// A rename that fails (a directory in the way) leaves nothing behind.
	in := filepath.Join(dir, "d")
	os.Mkdir(in, 0o700)
	os.WriteFile(filepath.Join(in, "x"), nil, 0o600)
	if err := Write(in, []byte("new"), 0o600); err == nil {
		t.Fatal("replaced a directory")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("left behind: %v", ents)
	}
}
