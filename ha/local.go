package ha

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Leadership grants the right to poll devices, execute commands and uplink.
type Leadership interface {
	// Lead blocks until this node is active and returns a context that is
	// cancelled when it stops being so, and the epoch of this term (strictly
	// greater than any earlier term's).
	Lead(ctx context.Context) (leaderCtx context.Context, epoch uint64, err error)
}

// Local is single-node leadership.
type Local struct {
	Dir string // the data dir; the epoch lives in Dir/epoch
}

var _ Leadership = Local{}

// Lead implements Leadership: it bumps and persists the epoch (write to a
// temporary file, fsync, rename, fsync the dir) before returning it.
func (l Local) Lead(ctx context.Context) (context.Context, uint64, error) {
	if err := os.MkdirAll(l.Dir, 0o750); err != nil {
		return nil, 0, fmt.Errorf("ha: %w", err)
	}
	path := filepath.Join(l.Dir, "epoch")
	var epoch uint64
	switch b, err := os.ReadFile(path); {
	case err == nil:
		epoch, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("ha: %s is corrupt (%q): fix or remove it, and expect the ingest to refuse a lower epoch", path, b)
		}
	case os.IsNotExist(err):
	default:
		return nil, 0, fmt.Errorf("ha: %w", err)
	}
	epoch++
	if err := writeFileSync(path, []byte(strconv.FormatUint(epoch, 10)+"\n")); err != nil {
		return nil, 0, fmt.Errorf("ha: persist epoch: %w", err)
	}
	return ctx, epoch, nil
}

func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
