package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// cmdWatch prints the latest values of some devices every second: the
// demo's live table, and a quick look for an operator.
func cmdWatch(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("http", "127.0.0.1:8080", "ingestd HTTP address")
	gateway := fs.String("gateway", "", "also show this gateway's stored sequence numbers")
	every := fs.Duration("every", time.Second, "refresh interval")
	count := fs.Int("count", 0, "stop after this many tables (0 = until interrupted)")
	var devices multiFlag
	fs.Var(&devices, "device", "PRODUCT_KEY/DEVICE_KEY to show (repeat)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if len(devices) == 0 {
		fmt.Fprintln(stderr, "ingestd watch: give at least one -device PK/DK")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	url := "http://" + strings.TrimPrefix(*base, "http://")
	client := &http.Client{Timeout: 3 * time.Second}
	clear := isTerminal(stdout)
	t := time.NewTicker(*every)
	defer t.Stop()
	for n := 1; ; n++ {
		var b strings.Builder
		if clear {
			b.WriteString("\x1b[H\x1b[2J")
		}
		fmt.Fprintf(&b, "ingestd at %s — %s\n\n", url, time.Now().Format("15:04:05"))
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "DEVICE\tMEASURE POINT\tVALUE\tQUALITY\tAGE")
		for _, d := range devices {
			pts, err := latest(ctx, client, url, d)
			if err != nil {
				fmt.Fprintf(tw, "%s\t(%v)\t\t\t\n", d, err)
				continue
			}
			ids := make([]string, 0, len(pts))
			for id := range pts {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			for _, id := range ids {
				p := pts[id]
				v := "—"
				if p.Value != nil {
					v = fmt.Sprint(p.Value)
				}
				q := p.Quality
				if p.Reason != "" {
					q += " (" + p.Reason + ")"
				}
				age := ""
				if p.Time > 0 {
					age = time.Since(time.UnixMilli(p.Time)).Round(100 * time.Millisecond).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d, id, v, q, age)
			}
		}
		tw.Flush()
		if *gateway != "" {
			if s, err := sequences(ctx, client, url, *gateway); err == nil {
				fmt.Fprintf(&b, "\ngateway %s: %s\n", *gateway, s)
			}
		}
		io.WriteString(stdout, b.String())
		if *count > 0 && n >= *count {
			return 0
		}
		select {
		case <-ctx.Done():
			return 0
		case <-t.C:
		}
	}
}

type watchPoint struct {
	Value   any    `json:"value"`
	Quality string `json:"quality"`
	Reason  string `json:"reason"`
	Time    int64  `json:"time"`
}

func getJSON(ctx context.Context, c *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("no data yet")
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s", resp.Status)
	}
	return json.Unmarshal(b, v)
}

func latest(ctx context.Context, c *http.Client, base, device string) (map[string]watchPoint, error) {
	var doc struct {
		Points map[string]watchPoint `json:"points"`
	}
	if err := getJSON(ctx, c, base+"/api/v1/devices/"+device+"/latest", &doc); err != nil {
		return nil, err
	}
	return doc.Points, nil
}

func sequences(ctx context.Context, c *http.Client, base, gw string) (string, error) {
	var doc struct {
		Epochs []struct {
			Epoch  uint64      `json:"epoch"`
			Ranges [][2]uint64 `json:"ranges"`
			Count  uint64      `json:"count"`
		} `json:"epochs"`
		Duplicates uint64 `json:"duplicates"`
	}
	if err := getJSON(ctx, c, base+"/api/v1/gateways/"+gw+"/sequences", &doc); err != nil {
		return "", err
	}
	var total uint64
	var all [][2]uint64
	for _, e := range doc.Epochs {
		total += e.Count
		all = append(all, e.Ranges...)
	}
	// sequence numbers run on across epochs: a gap is a hole in their union
	sort.Slice(all, func(i, j int) bool { return all[i][0] < all[j][0] })
	holes := 0
	for i := 1; i < len(all); i++ {
		if all[i][0] > all[i-1][1]+1 {
			holes++
		}
	}
	gaps := "no gaps"
	if holes > 0 {
		gaps = fmt.Sprintf("%d gaps", holes)
	}
	return fmt.Sprintf("%d records stored, %s, %d duplicates discarded", total, gaps, doc.Duplicates), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
