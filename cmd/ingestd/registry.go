package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
)

const registryUsage = `usage: ingestd registry <command> [flags]

commands (each talks to a running ingestd's registry API):
  list                 the registered devices, as a table
  get PK/DK            one device (JSON; its secret is never shown)
  put PK/DK [flags]    create or replace a device: the flags give all of it
  delete PK/DK         remove a device; its connections are closed

flags of every command:
  -http ADDR           ingestd's HTTP address (default 127.0.0.1:8080)
  -token-file F        the bearer token (ingestd run -admin-token-file)

flags of put:
  -secret-file F       the device's secret (EnOS secret login), read from F
  -keep-secret         keep the secret the device has
  -cert-login          allow login by client certificate
  -cert-sha256 HEX     bind the certificate with this SHA-256 fingerprint
  -cert-serial HEX     bind the certificate with this serial number
  -gateway             the device is a gateway
  -sub PK/DK           a declared sub-device of the gateway (repeat; DK may be *)
  -disabled            refuse the device's logins
`

// registryCmd is one parsed ingestd registry command line.
type registryCmd struct {
	verb      string // list, get, put, delete
	pk, dk    string
	http      string
	tokenFile string
	// put
	device     registryDeviceIn
	secretFile string
}

// registryDeviceIn is the registry API's PUT body.
type registryDeviceIn struct {
	Secret     string           `json:"secret,omitempty"`
	KeepSecret bool             `json:"keep_secret,omitempty"`
	CertLogin  bool             `json:"cert_login"`
	CertSHA256 string           `json:"cert_sha256,omitempty"`
	CertSerial string           `json:"cert_serial,omitempty"`
	Gateway    bool             `json:"gateway"`
	SubDevices []registrySubRef `json:"sub_devices,omitempty"`
	Disabled   bool             `json:"disabled"`
}

type registrySubRef struct {
	ProductKey string `json:"product_key"`
	DeviceKey  string `json:"device_key"`
}

// registryDevice is a device as the registry API shows it.
type registryDevice struct {
	ProductKey string           `json:"product_key"`
	DeviceKey  string           `json:"device_key"`
	HasSecret  bool             `json:"has_secret"`
	CertLogin  bool             `json:"cert_login"`
	CertSHA256 string           `json:"cert_sha256,omitempty"`
	CertSerial string           `json:"cert_serial,omitempty"`
	Gateway    bool             `json:"gateway"`
	SubDevices []registrySubRef `json:"sub_devices"`
	Disabled   bool             `json:"disabled"`
}

// errUsage is a command line mistake (exit code 2).
var errUsage = errors.New("usage")

// parseRegistryArgs reads an ingestd registry command line. Flags may come
// before or after PK/DK.
func parseRegistryArgs(args []string) (*registryCmd, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("%w: give a command: list, get, put or delete", errUsage)
	}
	c := &registryCmd{verb: args[0]}
	fs := flag.NewFlagSet("registry "+c.verb, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // cmdRegistry prints the mistake and the usage
	fs.StringVar(&c.http, "http", "127.0.0.1:8080", "ingestd HTTP address")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the registry API's bearer token")
	var subs multiFlag
	switch c.verb {
	case "list", "get", "delete":
	case "put":
		fs.StringVar(&c.secretFile, "secret-file", "", "file holding the device's secret")
		fs.BoolVar(&c.device.KeepSecret, "keep-secret", false, "keep the device's current secret")
		fs.BoolVar(&c.device.CertLogin, "cert-login", false, "allow login by client certificate")
		fs.StringVar(&c.device.CertSHA256, "cert-sha256", "", "bind the certificate with this SHA-256 fingerprint (hex)")
		fs.StringVar(&c.device.CertSerial, "cert-serial", "", "bind the certificate with this serial number (hex)")
		fs.BoolVar(&c.device.Gateway, "gateway", false, "the device is a gateway")
		fs.Var(&subs, "sub", "declared sub-device PK/DK of the gateway (repeat; DK may be *)")
		fs.BoolVar(&c.device.Disabled, "disabled", false, "refuse the device's logins")
	case "help", "-h", "-help", "--help":
		return nil, flag.ErrHelp
	default:
		return nil, fmt.Errorf("%w: unknown command %q: use list, get, put or delete", errUsage, c.verb)
	}
	var pos []string
	rest := args[1:]
	for {
		if err := fs.Parse(rest); errors.Is(err, flag.ErrHelp) {
			return nil, err
		} else if err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		if rest = fs.Args(); len(rest) == 0 {
			break
		}
		pos, rest = append(pos, rest[0]), rest[1:]
	}
	switch {
	case c.verb == "list" && len(pos) > 0:
		return nil, fmt.Errorf("%w: list takes no device", errUsage)
	case c.verb != "list" && len(pos) != 1:
		return nil, fmt.Errorf("%w: %s takes one PK/DK", errUsage, c.verb)
	case c.tokenFile == "":
		return nil, fmt.Errorf("%w: give -token-file", errUsage)
	case c.secretFile != "" && c.device.KeepSecret:
		return nil, fmt.Errorf("%w: -secret-file and -keep-secret: give one of them", errUsage)
	}
	if len(pos) == 1 {
		var ok bool
		if c.pk, c.dk, ok = strings.Cut(pos[0], "/"); !ok || c.pk == "" || c.dk == "" {
			return nil, fmt.Errorf("%w: %q: want PRODUCT_KEY/DEVICE_KEY", errUsage, pos[0])
		}
	}
	for _, s := range subs {
		pk, dk, ok := strings.Cut(s, "/")
		if !ok || pk == "" || dk == "" {
			return nil, fmt.Errorf("%w: -sub %q: want PRODUCT_KEY/DEVICE_KEY (DEVICE_KEY may be *)", errUsage, s)
		}
		c.device.SubDevices = append(c.device.SubDevices, registrySubRef{pk, dk})
	}
	return c, nil
}

// cmdRegistry manages the device registry of a running ingestd through its
// HTTP API. Exit codes: 0 done, 1 failed (the server's message on stderr),
// 2 usage.
func cmdRegistry(args []string, stdout, stderr io.Writer) int {
	c, err := parseRegistryArgs(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, registryUsage)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "ingestd registry: %v\n\n%s", strings.TrimPrefix(err.Error(), "usage: "), registryUsage)
		return 2
	}
	if err := c.run(stdout); err != nil {
		fmt.Fprintln(stderr, "ingestd registry:", err)
		return 1
	}
	return 0
}

func (c *registryCmd) run(stdout io.Writer) error {
	api, err := newAdminAPI(c.http, c.tokenFile)
	if err != nil {
		return err
	}
	if c.secretFile != "" {
		secret, err := os.ReadFile(c.secretFile)
		if err != nil {
			return fmt.Errorf("secret: %w", err)
		}
		// One trailing line break (echo s3cret > F) is not part of it.
		c.device.Secret = strings.TrimSuffix(strings.TrimSuffix(string(secret), "\n"), "\r")
		if c.device.Secret == "" {
			return fmt.Errorf("secret: %s is empty", c.secretFile)
		}
	}
	path := "/api/v1/registry/devices"
	if c.pk != "" {
		path += "/" + url.PathEscape(c.pk) + "/" + url.PathEscape(c.dk)
	}
	method := map[string]string{"list": "GET", "get": "GET", "put": "PUT", "delete": "DELETE"}[c.verb]
	var body []byte
	if c.verb == "put" {
		if body, err = json.Marshal(c.device); err != nil {
			return err
		}
	}
	status, data, err := api.do(method, path, body)
	if err != nil {
		return err
	}
	switch c.verb {
	case "list":
		var list struct {
			Devices []registryDevice `json:"devices"`
		}
		if err := json.Unmarshal(data, &list); err != nil {
			return fmt.Errorf("list: %w", err)
		}
		printRegistry(stdout, list.Devices)
	case "get":
		var out bytes.Buffer
		if err := json.Indent(&out, data, "", "  "); err != nil {
			return fmt.Errorf("get: %w", err)
		}
		stdout.Write(out.Bytes())
	case "put":
		what := "replaced"
		if status == http.StatusCreated {
			what = "created"
		}
		fmt.Fprintf(stdout, "%s %s/%s\n", what, c.pk, c.dk)
	case "delete":
		fmt.Fprintf(stdout, "deleted %s/%s\n", c.pk, c.dk)
	}
	return nil
}

// printRegistry prints devices as a table.
func printRegistry(w io.Writer, devs []registryDevice) {
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PRODUCT\tDEVICE\tSECRET\tCERT LOGIN\tBINDING\tGATEWAY\tSUB-DEVICES\tDISABLED")
	for _, d := range devs {
		var binding []string
		if d.CertSHA256 != "" {
			binding = append(binding, "sha256:"+d.CertSHA256)
		}
		if d.CertSerial != "" {
			binding = append(binding, "serial:"+d.CertSerial)
		}
		var subs []string
		for _, s := range d.SubDevices {
			subs = append(subs, s.ProductKey+"/"+s.DeviceKey)
		}
		dash := func(s []string) string {
			if len(s) == 0 {
				return "-"
			}
			return strings.Join(s, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ProductKey, d.DeviceKey, yes(d.HasSecret), yes(d.CertLogin),
			dash(binding), yes(d.Gateway), dash(subs), yes(d.Disabled))
	}
	tw.Flush()
}
