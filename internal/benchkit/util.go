package benchkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"
)

// EnsureBinaries builds edged and ingestd into dir when force is set or
// they are missing; progress goes to stderr prefixed with tool.
func EnsureBinaries(tool, dir string, force bool) error {
	for _, name := range []string{"edged", "ingestd"} {
		out := filepath.Join(dir, name)
		if _, err := os.Stat(out); err == nil && !force {
			continue
		}
		fmt.Fprintf(os.Stderr, "%s: building %s\n", tool, out)
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/"+name)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w", name, err)
		}
	}
	return nil
}

// Stats summarises durations.
type Stats struct{ Median, P90, Max time.Duration }

// Summarise returns the median, 90th percentile and maximum of ds (zero
// for none).
func Summarise(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return Stats{Median: s[len(s)/2], P90: s[len(s)*9/10], Max: s[len(s)-1]}
}

// Ms formats d in whole milliseconds.
func Ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

// UnionRanges merges inclusive ranges into sorted, disjoint ones
// (adjacent ranges join).
func UnionRanges(rs [][2]uint64) [][2]uint64 {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b [2]uint64) int {
		switch {
		case a[0] < b[0]:
			return -1
		case a[0] > b[0]:
			return 1
		}
		return 0
	})
	var out [][2]uint64
	for _, r := range rs {
		if n := len(out); n > 0 && r[0] <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}
