package ha

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestLocalEpochGrowsAcrossStarts(t *testing.T) {
	dir := t.TempDir()
	var last uint64
	for i := range 3 {
		_, e, err := Local{Dir: dir}.Lead(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if e != last+1 {
			t.Fatalf("start %d: epoch %d, want %d", i, e, last+1)
		}
		last = e
	}
}

func TestLocalCorruptEpochIsAnError(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "epoch"), []byte("garbage"), 0o600)
	if _, _, err := (Local{Dir: dir}).Lead(context.Background()); err == nil {
		t.Fatal("corrupt epoch accepted")
	}
}
