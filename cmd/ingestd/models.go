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
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/edged/edged/thingmodel"
)

const modelsUsage = `usage: ingestd models <command> [flags]

commands (each talks to a running ingestd's model API):
  list                 the products with a thing model and their latest versions
  get PK [-version N]  a product's model (the latest, or version N), as JSON
  put PK -f FILE       a new version of PK's model from FILE (- for stdin); checked
                       here first; the version in FILE, if not 0, must be the next
  check -f FILE        check a model file without sending it

flags of every command but check:
  -http ADDR           ingestd's HTTP address (default 127.0.0.1:8080)
  -token-file F        the bearer token (ingestd run -admin-token-file)
`

// modelsCmd is one parsed ingestd models command line.
type modelsCmd struct {
	verb      string
	pk        string
	http      string
	tokenFile string
	file      string
	version   uint64
}

func parseModelsArgs(args []string) (*modelsCmd, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("%w: give a command: list, get, put or check", errUsage)
	}
	c := &modelsCmd{verb: args[0]}
	fs := flag.NewFlagSet("models "+c.verb, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.http, "http", "127.0.0.1:8080", "ingestd HTTP address")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the API's bearer token")
	switch c.verb {
	case "list":
	case "get":
		fs.Uint64Var(&c.version, "version", 0, "the version (default the latest)")
	case "put", "check":
		fs.StringVar(&c.file, "f", "", "the model (JSON); - for stdin")
	case "help", "-h", "-help", "--help":
		return nil, flag.ErrHelp
	default:
		return nil, fmt.Errorf("%w: unknown command %q: use list, get, put or check", errUsage, c.verb)
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
	case (c.verb == "list" || c.verb == "check") && len(pos) > 0:
		return nil, fmt.Errorf("%w: %s takes no product key", errUsage, c.verb)
	case (c.verb == "get" || c.verb == "put") && len(pos) != 1:
		return nil, fmt.Errorf("%w: %s takes one product key", errUsage, c.verb)
	case (c.verb == "put" || c.verb == "check") && c.file == "":
		return nil, fmt.Errorf("%w: give -f FILE", errUsage)
	case c.verb != "check" && c.tokenFile == "":
		return nil, fmt.Errorf("%w: give -token-file", errUsage)
	}
	if len(pos) == 1 {
		c.pk = pos[0]
	}
	return c, nil
}

// cmdModels manages the thing models of a running ingestd through its
// HTTP API. Exit codes: 0 done, 1 failed, 2 usage.
func cmdModels(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c, err := parseModelsArgs(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, modelsUsage)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "ingestd models: %v\n\n%s", strings.TrimPrefix(err.Error(), "usage: "), modelsUsage)
		return 2
	}
	if err := c.run(stdin, stdout); err != nil {
		fmt.Fprintln(stderr, "ingestd models:", err)
		return 1
	}
	return 0
}

func (c *modelsCmd) run(stdin io.Reader, stdout io.Writer) error {
	var body []byte
	if c.file != "" {
		var err error
		if c.file == "-" {
			body, err = io.ReadAll(io.LimitReader(stdin, thingmodel.MaxSize+1))
		} else {
			body, err = os.ReadFile(c.file)
		}
		if err != nil {
			return err
		}
		m, err := thingmodel.Parse(body)
		if err != nil {
			return fmt.Errorf("%s: %w", c.file, err)
		}
		if c.verb == "check" {
			fmt.Fprintf(stdout, "%s: a valid model of %s: %d measure points, %d attributes, %d events, %d services\n",
				c.file, m.ProductKey, len(m.MeasurePoints), len(m.Attributes), len(m.Events), len(m.Services))
			return nil
		}
	}
	api, err := newAdminAPI(c.http, c.tokenFile)
	if err != nil {
		return err
	}
	path := "/api/v1/models"
	if c.pk != "" {
		path += "/" + url.PathEscape(c.pk)
	}
	if c.version != 0 {
		path += "?version=" + strconv.FormatUint(c.version, 10)
	}
	method := "GET"
	if c.verb == "put" {
		method = "PUT"
	} else {
		body = nil
	}
	status, data, err := api.do(method, path, body)
	if err != nil {
		return err
	}
	switch c.verb {
	case "list":
		var list struct {
			Models []struct {
				ProductKey string `json:"productKey"`
				Version    uint64 `json:"version"`
				Versions   int    `json:"versions"`
			} `json:"models"`
		}
		if err := json.Unmarshal(data, &list); err != nil {
			return fmt.Errorf("list: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PRODUCT\tVERSION\tVERSIONS")
		for _, m := range list.Models {
			fmt.Fprintf(tw, "%s\t%d\t%d\n", m.ProductKey, m.Version, m.Versions)
		}
		tw.Flush()
	case "get":
		var out bytes.Buffer
		if err := json.Indent(&out, data, "", "  "); err != nil {
			return fmt.Errorf("get: %w", err)
		}
		stdout.Write(out.Bytes())
	case "put":
		m, err := thingmodel.Parse(bytes.TrimSpace(data))
		if err != nil {
			return fmt.Errorf("put: the reply is not a model: %w", err)
		}
		what := "unchanged: the latest is"
		if status == http.StatusCreated {
			what = "stored"
		}
		fmt.Fprintf(stdout, "%s %s version %d\n", what, m.ProductKey, m.Version)
	}
	return nil
}
