package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
)

// cmdStatus prints a running edged's state, from its /healthz: the field
// engineer's first look (role and epoch, links and devices, the queue, the
// cloud link, the models).
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	conf := fs.String("config", "", "the gateway's config (its metrics.listen is asked)")
	addr := fs.String("addr", "", "host:port of edged's metrics listener (instead of -config)")
	asJSON := fs.Bool("json", false, "print /healthz as it is")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *addr == "" {
		if *conf == "" {
			fmt.Fprintln(stderr, "usage: edged status (-config FILE | -addr HOST:PORT) [-json]")
			return 2
		}
		cfg, err := load(*conf)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if cfg.Metrics.Listen == "off" {
			fmt.Fprintln(stderr, "edged status: metrics.listen is off in", *conf, "— nothing to ask")
			return 1
		}
		*addr = cfg.Metrics.Listen
	}
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + *addr + "/healthz")
	if err != nil {
		fmt.Fprintf(stderr, "edged status: %v (is edged running?)\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		fmt.Fprintln(stderr, "edged status:", err)
		return 1
	}
	if *asJSON {
		stdout.Write(body)
		return 0
	}
	var h health
	if err := json.Unmarshal(body, &h); err != nil {
		fmt.Fprintf(stderr, "edged status: %s answered %d with no health document: %v\n", *addr, resp.StatusCode, err)
		return 1
	}
	printStatus(stdout, &h)
	if h.Status == "ok" {
		return 0
	}
	return 1
}

func printStatus(w io.Writer, h *health) {
	fmt.Fprintf(w, "gateway %s: %s\n", h.Gateway, strings.ToUpper(h.Status))
	role := h.HA.Role
	if h.HA.Kind == "etcd" {
		role += fmt.Sprintf(" (node %s; group leader %s, epoch %d; standbys %s", h.HA.Node, orNone(h.HA.Leader), h.HA.LeaderEpoch, orNone(strings.Join(h.HA.Standbys, ", ")))
		if h.HA.Error != "" {
			role += "; etcd: " + h.HA.Error
		}
		role += ")"
	}
	fmt.Fprintf(w, "role     %s, epoch %d\n", role, h.Epoch)
	up := "down"
	if h.Uplink.Connected {
		up = "up"
	}
	fmt.Fprintf(w, "cloud    %s", up)
	if !h.Uplink.LastAck.IsZero() {
		fmt.Fprintf(w, ", last ack %s ago", time.Since(h.Uplink.LastAck).Round(time.Second))
	}
	if h.Uplink.LastError != "" {
		fmt.Fprintf(w, ", last error: %s", h.Uplink.LastError)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "queue    %d records in %d messages, %d of %d bytes, oldest %s", h.Bus.Records, h.Bus.Depth, h.Bus.Bytes, h.Bus.MaxBytes,
		(time.Duration(h.Bus.OldestAgeS * float64(time.Second))).Round(time.Second))
	if h.Bus.Dropped > 0 {
		fmt.Fprintf(w, ", %d DROPPED (disk budget)", h.Bus.Dropped)
	}
	if h.Bus.Stalled {
		fmt.Fprint(w, ", STALLED (not reaching the cloud)")
	}
	fmt.Fprintln(w)
	for _, m := range h.Models {
		fmt.Fprintf(w, "model    %s version %d", m.ProductKey, m.Version)
		if m.Rejected != 0 {
			fmt.Fprintf(w, " (version %d refused)", m.Rejected)
		}
		if m.LastError != "" {
			fmt.Fprintf(w, ": %s", m.LastError)
		}
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LINK\tDEVICE\tSTATE\tLAST GOOD\tLAST ERROR")
	for _, l := range h.Links {
		for _, d := range l.Devices {
			state := "up"
			if !d.Up {
				state = "DOWN"
			}
			last := "never"
			if !d.LastGood.IsZero() {
				last = time.Since(d.LastGood).Round(time.Second).String() + " ago"
			}
			errText := d.LastError
			if errText == "" && !l.Up {
				errText = l.LastError
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.Link, d.Device, state, last, errText)
		}
	}
	tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
