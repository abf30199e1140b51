// Package benchkit is what the end-to-end benchmark commands
// (internal/cmd/e2ebench, internal/cmd/drainbench) share: the simulator,
// ingestd and edged started as processes from a bin directory on loopback,
// their configs, free ports, and readings from /healthz, /metrics, the
// ingest's API and /proc.
package benchkit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edged/edged/certs"
)

// Proc is a started process. It is waited for once, by its own goroutine.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends sig and waits up to timeout for the process to end, then kills
// it. It returns how long the process took to end.
func (p *Proc) Stop(sig syscall.Signal, timeout time.Duration) time.Duration {
	start := time.Now()
	if p.Exited() {
		return 0
	}
	p.Cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.Cmd.Process.Kill()
		<-p.done
	}
	return time.Since(start)
}

// Procs are the processes of one run; their logs are Dir/<name>.log
// (appended to, so a restarted process keeps one log).
type Procs struct {
	Dir  string
	mu   sync.Mutex
	list []*Proc
}

// Start starts bin with args, its output to Dir/name.log.
func (ps *Procs) Start(name, bin string, args ...string) (*Proc, error) {
	f, err := os.OpenFile(filepath.Join(ps.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, done: make(chan struct{}), log: f}
	go func() { cmd.Wait(); f.Close(); close(p.done) }()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

// StopAll stops every process still running, the newest first: SIGTERM,
// then SIGKILL after 15 s.
func (ps *Procs) StopAll() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for i := len(ps.list) - 1; i >= 0; i-- {
		ps.list[i].Stop(syscall.SIGTERM, 15*time.Second)
	}
	ps.list = nil
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// GetJSON decodes the JSON answer of a GET; a non-2xx status is an error.
func GetJSON(url string, v any) error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return json.Unmarshal(b, v)
}

// WaitFor calls f every 100 ms until it returns nil or timeout passes.
func WaitFor(timeout time.Duration, what string, f func() error) error {
	return WaitEvery(timeout, 100*time.Millisecond, what, f)
}

// WaitEvery calls f every interval until it returns nil or timeout passes.
func WaitEvery(timeout, interval time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %w", what, err)
		}
		time.Sleep(interval)
	}
}

// WaitDial waits until addr accepts TCP connections.
func WaitDial(timeout time.Duration, what, addr string) error {
	return WaitFor(timeout, what, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// CPUSeconds reads a process's user+system CPU time from /proc.
func CPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return math.NaN()
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// PeakRSS reads VmHWM (MB) from /proc.
func PeakRSS(pid int) float64 { return ProcStatus(pid, "VmHWM:") }

// ProcStatus reads a kB field of /proc/PID/status, in MB.
func ProcStatus(pid int, field string) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return math.NaN()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return math.NaN()
}

// LoadAvg is the first three fields of /proc/loadavg.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// Sequences is the ingest's summary of a gateway's stored sequences
// (GET /api/v1/gateways/{id}/sequences).
type Sequences struct {
	Epochs []struct {
		Ranges [][2]uint64 `json:"ranges"`
		Count  uint64      `json:"count"`
	} `json:"epochs"`
	Duplicates uint64 `json:"duplicates"`
}

// Count is the number of sequences stored, over all epochs.
func (s *Sequences) Count() (n uint64) {
	for _, e := range s.Epochs {
		n += e.Count
	}
	return n
}

// Union is the stored sequences of all epochs (sequence numbers run on
// across epochs) as sorted, merged, inclusive ranges.
func (s *Sequences) Union() [][2]uint64 {
	var all [][2]uint64
	for _, e := range s.Epochs {
		all = append(all, e.Ranges...)
	}
	return UnionRanges(all)
}

// Covers reports whether every sequence 1..last is stored.
func (s *Sequences) Covers(last uint64) bool {
	if last == 0 {
		return true
	}
	u := s.Union()
	return len(u) > 0 && u[0][0] <= 1 && u[0][1] >= last
}

// StoredSequences reads the ingest's sequence summary of gateway gw.
func StoredSequences(ingestHTTP, gw string) (Sequences, error) {
	var d Sequences
	err := GetJSON(ingestHTTP+"/api/v1/gateways/"+gw+"/sequences", &d)
	return d, err
}

// StoredRecords is the number of sequences of gw the ingest holds and the
// number of runs they form.
func StoredRecords(ingestHTTP, gw string) (count uint64, ranges int, err error) {
	d, err := StoredSequences(ingestHTTP, gw)
	if err != nil {
		return 0, 0, err
	}
	return d.Count(), len(d.Union()), nil
}

// Gauge reads one unlabelled metric (gauge or counter) from a /metrics page.
func Gauge(metricsURL, name string) (float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(metricsURL)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s", name)
}

// HistogramQuantile reads a Prometheus histogram from a /metrics page and
// estimates quantile q by linear interpolation inside the bucket.
func HistogramQuantile(metricsURL, name string, q float64) (float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(metricsURL)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	type bucket struct{ le, n float64 }
	var bs []bucket
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"_bucket{") {
			continue
		}
		i := strings.Index(line, `le="`)
		j := strings.Index(line[i+4:], `"`)
		le, _ := strconv.ParseFloat(line[i+4:i+4+j], 64)
		n, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		bs = append(bs, bucket{le, n})
	}
	if len(bs) == 0 || bs[len(bs)-1].n == 0 {
		return 0, fmt.Errorf("no %s histogram", name)
	}
	total := bs[len(bs)-1].n
	rank := q * total
	prevLe, prevN := 0.0, 0.0
	for _, b := range bs {
		if b.n >= rank {
			if math.IsInf(b.le, 1) {
				return prevLe, nil
			}
			return prevLe + (b.le-prevLe)*(rank-prevN)/math.Max(b.n-prevN, 1), nil
		}
		prevLe, prevN = b.le, b.n
	}
	return prevLe, nil
}

// Bulk is the benchmark's point map: Devices devices of PointsPerDevice
// input registers of Type (float32 or uint16), each a sine in the
// simulator, spread over Links Modbus TCP connections and polled every
// Poll.
type Bulk struct {
	Devices         int
	PointsPerDevice int
	Type            string // float32 (default) or uint16
	Links           int
	Poll            time.Duration
}

// The identities of the benchmark's gateway and its sub-devices.
const (
	GatewayID  = "bench-gw"
	ProductKey = "benchPK" // the sub-devices' product
)

func (b Bulk) typ() string {
	if b.Type == "" {
		return "float32"
	}
	return b.Type
}

// width is the registers per point.
func (b Bulk) width() int {
	if b.typ() == "uint16" {
		return 1
	}
	return 2
}

// DeviceKey is the name (and cloud device key) of device d.
func DeviceKey(d int) string { return fmt.Sprintf("d%04d", d) }

// SimConfig is the simulator's config: every unit (up to 247; devices
// beyond share them) a bulk of sine signals.
func (b Bulk) SimConfig() string {
	var sim strings.Builder
	fmt.Fprintf(&sim, "profiles:\n  bulk:\n    input_registers:\n      - {name: v, address: 0, type: %s, count: %d, sine: {amplitude: 10, offset: 100, period: 60s}}\nunits:\n", b.typ(), b.PointsPerDevice)
	for u := 1; u <= min(b.Devices, 247); u++ {
		fmt.Fprintf(&sim, "  - {id: %d, profile: bulk}\n", u)
	}
	return sim.String()
}

// Ports are the loopback ports of one run.
type Ports struct {
	Sim, MQTT, IngestHTTP, Edged int
}

// NewPorts picks free ports.
func NewPorts() Ports {
	return Ports{Sim: FreePort(), MQTT: FreePort(), IngestHTTP: FreePort(), Edged: FreePort()}
}

// SimAddr, IngestURL and EdgedURL are the endpoints.
func (p Ports) SimAddr() string   { return fmt.Sprintf("127.0.0.1:%d", p.Sim) }
func (p Ports) IngestURL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.IngestHTTP) }
func (p Ports) EdgedURL() string  { return fmt.Sprintf("http://127.0.0.1:%d", p.Edged) }

// EdgedConfig is edged's config for b; cloudExtra are further lines of the
// cloud section, each indented by two spaces ("  resume_rate: 100000\n").
// Certificates are in certs/ next to the config.
func (b Bulk) EdgedConfig(p Ports, cloudExtra string) string {
	var conf strings.Builder
	fmt.Fprintf(&conf, `gateway: {id: %s, data_dir: edged-data}
cloud:
  broker: tls://127.0.0.1:%d
  ca: certs/ca.pem
  cert: certs/gateway.pem
  key: certs/gateway-key.pem
  product_key: gwPK
  device_key: gwDK
  secret: gwSecret
%smetrics: {listen: "127.0.0.1:%d"}
links:
`, GatewayID, p.MQTT, cloudExtra, p.Edged)
	for l := range b.Links {
		fmt.Fprintf(&conf, "  - {name: l%d, protocol: modbus-tcp, address: %q, timeout: 1s}\n", l, p.SimAddr())
	}
	fmt.Fprintf(&conf, "profiles:\n  - name: bulk\n    product_key: %s\n    points:\n", ProductKey)
	for i := range b.PointsPerDevice {
		fmt.Fprintf(&conf, "      - {name: p%03d, table: input_register, address: %d, type: %s}\n", i, b.width()*i, b.typ())
	}
	conf.WriteString("devices:\n")
	for d := range b.Devices {
		fmt.Fprintf(&conf, "  - {name: %s, link: l%d, profile: bulk, unit_id: %d, poll: %s}\n", DeviceKey(d), d%b.Links, d%247+1, b.Poll)
	}
	return conf.String()
}

// Registry is ingestd's registry: the gateway, which declares its
// sub-devices' product.
const Registry = "devices:\n  - {product_key: gwPK, device_key: gwDK, secret: gwSecret, gateway: true, sub_devices: [{product_key: " + ProductKey + ", device_key: \"*\"}]}\n"

// Ingest starts (and restarts) ingestd with its data in Dir/ingest-data.
type Ingest struct {
	Bin   string // the ingestd binary
	Dir   string
	Ports Ports
	Certs certs.DevFiles
}

// Setup makes the dev certificates in Dir/certs and writes the registry.
func Setup(dir string) (certs.DevFiles, error) {
	files, err := certs.MakeDev(filepath.Join(dir, "certs"), certs.DevOptions{GatewayCN: "gwDK"})
	if err != nil {
		return files, err
	}
	return files, os.WriteFile(filepath.Join(dir, "registry.yaml"), []byte(Registry), 0o644)
}

// Start starts ingestd and waits for its /healthz.
func (in Ingest) Start(ps *Procs) (*Proc, error) {
	p, err := in.Launch(ps)
	if err != nil {
		return nil, err
	}
	return p, WaitFor(30*time.Second, "ingestd", func() error { return in.Ready(p) })
}

// Launch starts ingestd without waiting for it.
func (in Ingest) Launch(ps *Procs) (*Proc, error) {
	return ps.Start("ingestd", in.Bin, "run",
		"-mqtt", fmt.Sprintf("127.0.0.1:%d", in.Ports.MQTT), "-http", fmt.Sprintf("127.0.0.1:%d", in.Ports.IngestHTTP),
		"-data", filepath.Join(in.Dir, "ingest-data"), "-cert", in.Certs.ServerCert, "-key", in.Certs.ServerKey,
		"-client-ca", in.Certs.CACert, "-registry", filepath.Join(in.Dir, "registry.yaml"), "-log-level", "warn")
}

// Ready is nil once ingestd p answers /healthz with 200.
func (in Ingest) Ready(p *Proc) error {
	if p.Exited() {
		return fmt.Errorf("exited (see %s)", filepath.Join(in.Dir, "ingestd.log"))
	}
	var m map[string]any
	return GetJSON(in.Ports.IngestURL()+"/healthz", &m)
}

// EdgedHealth is the part of edged's /healthz the benchmarks read.
type EdgedHealth struct {
	Status string `json:"status"`
	Bus    struct {
		Depth   int    `json:"depth"`
		Records uint64 `json:"records"`
		NextSeq uint64 `json:"next_seq"`
	} `json:"bus"`
	Uplink struct {
		Connected bool   `json:"connected"`
		LastError string `json:"last_error"`
	} `json:"uplink"`
}

// Etcd is a private etcd cluster on loopback for the benchmarks: members
// of the system's etcd (Debian etcd-server) started through Procs, with
// internal/testsvc's timings (50 ms heartbeat, 500 ms election timeout);
// their data in Dir/etcd-m<i>, their logs Dir/etcd-m<i>.log.
type Etcd struct {
	Dir         string
	ClientPorts []int
	Procs       []*Proc
}

// StartEtcd starts an n-member cluster and waits until every member is
// healthy. ps stops the members.
func StartEtcd(ps *Procs, n int) (*Etcd, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if bin, err = exec.LookPath("etcd-server"); err != nil {
			return nil, fmt.Errorf("etcd not found (apt-get install etcd-server): %w", err)
		}
	}
	e := &Etcd{Dir: ps.Dir}
	peers := make([]int, n)
	var initial []string
	for i := range n {
		e.ClientPorts = append(e.ClientPorts, FreePort())
		peers[i] = FreePort()
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, peers[i]))
	}
	for i := range n {
		client := fmt.Sprintf("http://127.0.0.1:%d", e.ClientPorts[i])
		peer := fmt.Sprintf("http://127.0.0.1:%d", peers[i])
		p, err := ps.Start(fmt.Sprintf("etcd-m%d", i), bin,
			"--name", fmt.Sprintf("m%d", i), "--data-dir", filepath.Join(ps.Dir, fmt.Sprintf("etcd-m%d", i)),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "edged-bench", "--heartbeat-interval", "50", "--election-timeout", "500",
			"--logger", "zap", "--log-outputs", "stderr")
		if err != nil {
			return nil, err
		}
		e.Procs = append(e.Procs, p)
	}
	return e, WaitFor(30*time.Second, "etcd healthy", e.Healthy)
}

// Endpoints are the members' client URLs.
func (e *Etcd) Endpoints() []string {
	var eps []string
	for _, p := range e.ClientPorts {
		eps = append(eps, fmt.Sprintf("http://127.0.0.1:%d", p))
	}
	return eps
}

// Healthy is nil when every member says it is healthy (it has a raft
// leader and serves reads).
func (e *Etcd) Healthy() error {
	c := http.Client{Timeout: time.Second}
	for i, ep := range e.Endpoints() {
		if e.Procs[i].Exited() {
			return fmt.Errorf("etcd member %d exited (see %s)", i, filepath.Join(e.Dir, fmt.Sprintf("etcd-m%d.log", i)))
		}
		resp, err := c.Get(ep + "/health")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"health":"true"`) {
			return fmt.Errorf("etcd member %d: %s %s", i, resp.Status, strings.TrimSpace(string(b)))
		}
	}
	return nil
}

// HAHealth is the HA part of edged's /healthz, with the bus.
type HAHealth struct {
	Epoch uint64 `json:"epoch"`
	HA    struct {
		Role   string    `json:"role"`
		Node   string    `json:"node"`
		Since  time.Time `json:"since"`
		Leader string    `json:"leader"`
		Error  string    `json:"error"`
	} `json:"ha"`
	Bus struct {
		Depth   int    `json:"depth"`
		Records uint64 `json:"records"`
		NextSeq uint64 `json:"next_seq"`
	} `json:"bus"`
}
