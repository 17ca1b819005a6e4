package main

import (
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/alecthomas/kong"
)

type configCmd struct {
	Check configCheckCmd `cmd:"" help:"Read the configuration the way cached serve does (--config file, CACHED_* environment, and any serve flags given here), report the first bad key with its file and line, and print every setting with its effective value and where it came from (command line, environment, file:line or default), as TOML. Secret values (s3-access-key, s3-secret-key, and the password of an upstream URL's user:password@) are shown as <redacted>; paths to files holding secrets are shown as they are. Exits 0 when the configuration is valid, 2 otherwise. It checks keys, types and values; what only start-up can find (a key file that is missing, a port in use) it does not."`
}

// configCheckCmd takes every serve flag, so that checking a command line, not only a file, is
// possible, and so that a new serve flag is checked and listed without touching this code.
type configCheckCmd struct {
	serveCmd
}

func (c *configCheckCmd) Run(kctx *kong.Context, out io.Writer, file *configFile) error {
	sources := map[*kong.Flag]string{}
	for _, p := range kctx.Path {
		if p.Flag == nil {
			continue
		}
		if p.Resolved {
			sources[p.Flag] = fmt.Sprintf("%s:%d", file.Path, file.Entries[p.Flag.Name].Line)
		} else {
			sources[p.Flag] = "command line"
		}
	}
	if file.Path == "" {
		fmt.Fprintln(out, "# No configuration file (give --config or CACHED_CONFIG).")
	} else {
		fmt.Fprintf(out, "# %s is valid.\n", file.Path)
	}
	fmt.Fprintln(out, "# Effective configuration of cached serve: command line > environment > file > default.")
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	seen := map[string]bool{}
	for _, fl := range kctx.Flags() {
		if metaFlags[fl.Name] || seen[fl.Name] {
			continue
		}
		seen[fl.Name] = true
		src, ok := sources[fl]
		if !ok {
			if env := envSet(fl); env != "" {
				src = "environment " + env
			} else {
				src = "default"
			}
		}
		val := tomlLiteral(fl.Target)
		if redacted(fl) && !fl.Target.IsZero() {
			val = `"<redacted>"`
		} else if redactsUserinfo(fl) {
			val = tomlLiteral(redactURLs(fl.Target))
		}
		fmt.Fprintf(tw, "%s = %s\t# %s\n", fl.Name, val, src)
	}
	return tw.Flush()
}

// tomlLiteral writes v as a TOML value that reads back to the same setting.
func tomlLiteral(v reflect.Value) string {
	if s, ok := v.Interface().(fmt.Stringer); ok && v.Kind() != reflect.String {
		return tomlQuote(s.String())
	}
	switch v.Kind() {
	case reflect.String:
		return tomlQuote(v.String())
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10)
	case reflect.Float32, reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = tomlLiteral(v.Index(i))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	default:
		return tomlQuote(fmt.Sprint(v.Interface()))
	}
}

// tomlQuote writes s as a TOML basic string.
func tomlQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}
