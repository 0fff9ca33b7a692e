package millwrightcli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api/apitypes"
)

const configLong = `A device's desired configuration is computed from layers, each a JSON merge patch
(RFC 7386) over the ones below it. Precedence, lowest first: the fleet; the device's groups,
in byte order of their names; its tags, in byte order of "key=value"; the device itself. A
null in a layer removes a key a lower layer set. Every change reaches the devices concerned
through their mailbox, as a new version of their document; a device reports the version it
applied and the keys it refused (docs/protocol.md, "The device channel").

A layer may set only the keys of the agent's schema (millwright config schema); the server
refuses a document that breaks it, naming the failing JSON path.`

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Desired configuration of devices: layers, schema, what each device applied", Long: configLong}

	var (
		sf                       clientFlags
		device, group, tag, file string
		fleet, clear             bool
	)
	set := &cobra.Command{
		Use:   "set (--device ID | --group NAME | --tag KEY=VALUE | --fleet) (--file FILE | --clear)",
		Short: "Set or clear one layer of desired configuration; prints how many devices' documents changed",
		Long: configLong + `

--file reads the layer's document, a JSON object of at most 64 KiB (--file - reads standard
input); it replaces the layer's previous document whole. --clear removes the layer.`,
		Example: `  millwright config set --fleet --file fleet.json
  echo '{"schedule":{"interval":"30s"}}' | millwright config set --group line-a --file -
  millwright config set --tag site=plant-7 --file plant7.json
  millwright config set --device pump-1 --clear`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			var body apitypes.ConfigLayerRequest
			given := 0
			if fl.Changed("device") {
				given++
				body.Scope, body.Selector = "device", device
			}
			if fl.Changed("group") {
				given++
				body.Scope, body.Selector = "group", group
			}
			if fl.Changed("tag") {
				given++
				k, _, ok := strings.Cut(tag, "=")
				if !ok || k == "" {
					return usageError{fmt.Errorf("invalid --tag %q: want key=value", tag)}
				}
				body.Scope, body.Selector = "tag", tag
			}
			if fleet {
				given++
				body.Scope, body.Selector = "fleet", ""
			}
			if given != 1 {
				return usageError{errors.New("give exactly one of --device, --group, --tag and --fleet: the layer to set")}
			}
			switch {
			case clear && file != "":
				return usageError{errors.New("give --file or --clear, not both")}
			case !clear && file == "":
				return usageError{errors.New("give --file with the layer's document (--file - reads standard input), or --clear to remove the layer")}
			case !clear:
				doc, err := readConfigDocument(file, cmd.InOrStdin())
				if err != nil {
					return err
				}
				body.Document = doc
			}
			c, err := sf.client()
			if err != nil {
				return err
			}
			var out apitypes.ConfigLayerSet
			if err := c.call(cmd.Context(), http.MethodPost, "/api/v1/config/layers", body, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			verb := "set"
			if clear {
				verb = "cleared"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %s\n", layerLabel(out.Scope, out.Selector), verb, plural(out.DevicesChanged, "device changed", "devices changed"))
			if n := len(out.DevicesTooLarge); n > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s would get a document over %d bytes and keep the previous one: %s\n",
					plural(n, "device", "devices"), apitypes.MaxConfigDocument, strings.Join(out.DevicesTooLarge, ", "))
			}
			return nil
		},
	}
	sf.add(set)
	f := set.Flags()
	f.StringVar(&device, "device", "", "the layer of one device")
	f.StringVar(&group, "group", "", "the layer of a group's devices")
	f.StringVar(&tag, "tag", "", "the layer of the devices tagged key=value")
	f.BoolVar(&fleet, "fleet", false, "the fleet's layer, under every other")
	f.StringVar(&file, "file", "", "JSON document of the layer; - reads standard input")
	f.BoolVar(&clear, "clear", false, "remove the layer instead")

	var hf clientFlags
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a device's desired configuration, what it applied, and the keys it refused",
		Long: `Show a device's desired configuration: its version, the layers it was computed from, what
the device last reported applied, the keys whose desired and applied values differ, and the
keys the device refused with its reasons. -o json prints the API's DeviceConfig.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := hf.client()
			if err != nil {
				return err
			}
			var dc apitypes.DeviceConfig
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/devices/"+url.PathEscape(args[0])+"/config", nil, &dc); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), dc)
			}
			return printDeviceConfig(cmd.OutOrStdout(), dc)
		},
	}
	hf.add(show)

	var lf clientFlags
	layers := &cobra.Command{
		Use:   "layers",
		Short: "List the layers of desired configuration, lowest precedence first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lf.client()
			if err != nil {
				return err
			}
			var ls []apitypes.ConfigLayer
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/config/layers", nil, &ls); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), ls)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "SCOPE\tSELECTOR\tUPDATED\tBY\tDOCUMENT")
			for _, l := range ls {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", l.Scope, dash(l.Selector), when(l.UpdatedAt), dash(l.UpdatedBy), shorten(compactJSON(l.Document), 60))
			}
			return w.Flush()
		},
	}
	lf.add(layers)

	cf := clientFlags{output: "json"} // the schema is JSON: no --output
	schema := &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of the keys a configuration layer may set",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/config/schema", nil, &raw); err != nil {
				return err
			}
			var b bytes.Buffer
			if err := json.Indent(&b, raw, "", "  "); err != nil {
				return fmt.Errorf("GET /api/v1/config/schema: unreadable answer: %w", err)
			}
			b.WriteByte('\n')
			_, err = b.WriteTo(cmd.OutOrStdout())
			return err
		},
	}
	cf.addConnection(schema, "")

	cmd.AddCommand(set, show, layers, schema)
	return cmd
}

// maxConfigFile bounds what readConfigDocument reads: a layer is at most
// apitypes.MaxConfigDocument once compacted, so a file may be indented generously.
const maxConfigFile = 1 << 20

// readConfigDocument reads a layer's document from path ("-" for stdin) and checks what the
// server would refuse less clearly: that it is a JSON object, and its size once compacted.
func readConfigDocument(path string, stdin io.Reader) (json.RawMessage, error) {
	name, r := path, stdin
	if path == "-" {
		name = "standard input"
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read --file: %w", err)
		}
		defer f.Close()
		r = f
	}
	raw, err := io.ReadAll(io.LimitReader(r, maxConfigFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(raw) > maxConfigFile {
		return nil, fmt.Errorf("%s: larger than %d bytes; a configuration layer holds at most %d", name, maxConfigFile, apitypes.MaxConfigDocument)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := position(raw, se.Offset)
			return nil, fmt.Errorf("%s: not JSON: line %d, column %d: %v", name, line, col, err)
		}
		return nil, fmt.Errorf("%s: not JSON: %w", name, err)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, fmt.Errorf("%s: the document must be a JSON object such as {\"schedule\": {\"interval\": \"30s\"}} (--clear removes a layer)", name)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if b.Len() > apitypes.MaxConfigDocument {
		return nil, fmt.Errorf("%s: %d bytes of JSON once compacted; a configuration layer holds at most %d", name, b.Len(), apitypes.MaxConfigDocument)
	}
	return b.Bytes(), nil
}

// position turns a byte offset into a 1-based line and column.
func position(b []byte, offset int64) (line, col int) {
	offset = min(max(offset, 0), int64(len(b)))
	before := b[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:])
	return line, max(col, 1)
}

func layerLabel(scope, selector string) string {
	if scope == "fleet" {
		return "fleet"
	}
	return scope + " " + selector
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func printDeviceConfig(out io.Writer, dc apitypes.DeviceConfig) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	desired := "none yet"
	if dc.DesiredVersion > 0 {
		desired = fmt.Sprintf("version %d, computed %s", dc.DesiredVersion, when(dc.DesiredAt))
	}
	applied := "no report yet"
	if !dc.ReportedAt.IsZero() || dc.AppliedVersion > 0 {
		applied = fmt.Sprintf("version %d, reported %s", dc.AppliedVersion, when(dc.ReportedAt))
	}
	layers := "none"
	if len(dc.Layers) > 0 {
		layers = strings.Join(dc.Layers, " < ")
	}
	inSync := "no"
	if len(dc.Difference) == 0 && len(dc.Refused) == 0 && dc.AppliedVersion == dc.DesiredVersion {
		inSync = "yes"
	}
	for _, row := range [][2]string{
		{"Device", dc.Device}, {"Desired", desired}, {"Applied", applied}, {"Layers", layers}, {"In sync", inSync},
	} {
		fmt.Fprintf(w, "%s:\t%s\n", row[0], row[1])
	}
	if err := w.Flush(); err != nil {
		return err
	}

	// The keys that differ or were refused, with both values and the device's reason.
	keys := append([]string(nil), dc.Difference...)
	for k := range dc.Refused {
		if !contains(keys, k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if len(keys) > 0 {
		fmt.Fprintln(out)
		w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "KEY\tDESIRED\tAPPLIED\tREFUSED")
		for _, k := range keys {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", k, valueAt(dc.Desired, k), valueAt(dc.Reported, k), dash(dc.Refused[k]))
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "Desired configuration:")
	fmt.Fprintln(out, indentJSON(dc.Desired, "  "))
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// valueAt shows the value at a dotted path of a JSON object, compact and shortened; "-" when
// there is none.
func valueAt(doc json.RawMessage, path string) string {
	var v any
	if json.Unmarshal(doc, &v) != nil {
		return "-"
	}
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return "-"
		}
		if v, ok = m[k]; !ok {
			return "-"
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "-"
	}
	return shorten(string(b), 40)
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

func indentJSON(raw json.RawMessage, prefix string) string {
	var b bytes.Buffer
	if t := bytes.TrimSpace(raw); len(t) == 0 || string(t) == "null" || json.Indent(&b, raw, prefix, "  ") != nil {
		return prefix + "{}"
	}
	return prefix + b.String()
}

// shorten cuts s to n runes, marking the cut with "…".
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
