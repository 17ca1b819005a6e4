package main

// The configuration file. It holds flag values in TOML, one top-level key per flag, named as the
// flag is (listen = "0.0.0.0:5000", max-upload-size = "64GiB", require-upload-sigs = ["a:..."]).
// Nothing here knows a particular flag: keys are checked against kong's model of every command,
// so a flag added to any command can be set in the file without touching this code.
//
// Precedence is command line > environment (CACHED_*) > file > default. Kong applies
// environment variables together with defaults, before resolvers run, so a resolver would
// override them; the resolver below therefore steps aside for a flag whose variable is set.

import (
	"encoding"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/cached-dev/cached/internal/upstream"
)

// metaFlags steer the command line itself; a file cannot set them.
var metaFlags = map[string]bool{"help": true, "version": true, "config": true}

// configError is a problem with the configuration file, located at a line when it has one.
type configError struct {
	File string
	Line int // 0: the file as a whole
	Msg  string
}

func (e *configError) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Msg
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// configEntry is one top-level key of the file.
type configEntry struct {
	Value any // as go-toml decodes it: string, int64, float64, bool, []any, map[string]any, time
	Line  int
}

// configFile is a parsed configuration file. Its zero value stands for "no file".
type configFile struct {
	Path    string
	Entries map[string]configEntry
}

// loadConfigFile reads and parses path. It checks TOML syntax only; check does the rest.
func loadConfigFile(path string) (*configFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &configError{File: path, Msg: "configuration file does not exist"}
		}
		return nil, &configError{File: path, Msg: fmt.Sprintf("cannot read configuration file: %v", err)}
	}
	return parseConfig(path, data)
}

func parseConfig(path string, data []byte) (*configFile, error) {
	values := map[string]any{}
	if err := toml.Unmarshal(data, &values); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, col := de.Position()
			return nil, &configError{File: path, Line: line, Msg: fmt.Sprintf("column %d: %s", col, strings.TrimPrefix(de.Error(), "toml: "))}
		}
		return nil, &configError{File: path, Msg: err.Error()}
	}
	lines := topLevelLines(data)
	f := &configFile{Path: path, Entries: make(map[string]configEntry, len(values))}
	for k, v := range values {
		f.Entries[k] = configEntry{Value: v, Line: lines[k]}
	}
	return f, nil
}

// topLevelLines maps each top-level key (or table name) to the line it first appears on. It runs
// on a document that go-toml already accepted.
func topLevelLines(data []byte) map[string]int {
	lines := map[string]int{}
	var p unstable.Parser
	p.Reset(data)
	inTable := false
	for p.NextExpression() {
		e := p.Expression()
		var key *unstable.Node
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			inTable = true
			it := e.Key()
			if it.Next() {
				key = it.Node()
			}
		case unstable.KeyValue:
			if inTable {
				continue
			}
			it := e.Key()
			if it.Next() {
				key = it.Node()
			}
		}
		if key == nil {
			continue
		}
		name := string(key.Data)
		if _, seen := lines[name]; !seen {
			lines[name] = p.Shape(key.Raw).Start.Line
		}
	}
	return lines
}

// flagsByName lists every flag of the application, global and per command, by name, but for
// flags tagged config:"-": those name an output of their command (keygen's --secret-key-file is
// where a new key is written), which a server's configuration file must never set.
func flagsByName(app *kong.Application) map[string][]*kong.Flag {
	out := map[string][]*kong.Flag{}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			if notConfigurable(f) {
				continue
			}
			out[f.Name] = append(out[f.Name], f)
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(app.Node)
	return out
}

// check validates every key of the file against every flag of that name in the application,
// whichever command runs: a file that one command accepts, every command accepts. Errors come
// in file order, the first one wins.
func (f *configFile) check(app *kong.Application) error {
	known := flagsByName(app)
	keys := make([]string, 0, len(f.Entries))
	for k := range f.Entries {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := f.Entries[keys[i]], f.Entries[keys[j]]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		e := f.Entries[k]
		fail := func(format string, args ...any) error {
			return &configError{File: f.Path, Line: e.Line, Msg: fmt.Sprintf(format, args...)}
		}
		if metaFlags[k] {
			return fail("key %q cannot be set in a configuration file", k)
		}
		flags := known[k]
		if len(flags) == 0 {
			msg := fmt.Sprintf("unknown key %q", k)
			if _, table := e.Value.(map[string]any); table {
				msg += " (keys are flag names at the top level; tables are not used)"
			}
			if s := suggest(k, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			return fail("%s", msg)
		}
		for _, fl := range flags {
			if err := checkValue(fl, e.Value); err != nil {
				return fail("key %q: %v", k, err)
			}
		}
	}
	return nil
}

// checkValue checks that v, a TOML value, is of the type fl takes and that kong's own mapper for
// fl accepts it (and its enum, if any) — the same decoding the command line goes through.
func checkValue(fl *kong.Flag, v any) error {
	t := fl.Target.Type()
	if t.Kind() == reflect.Slice && !isText(t) {
		if arr, ok := v.([]any); ok {
			for i, el := range arr {
				if want, ok := tomlTypeFits(t.Elem(), el); !ok {
					return fmt.Errorf("element %d: expected %s, got %s", i+1, want, tomlType(el))
				}
			}
		} else if want, ok := tomlTypeFits(t.Elem(), v); !ok {
			return fmt.Errorf("expected an array of %s, got %s", plural(want), tomlType(v))
		}
	} else if want, ok := tomlTypeFits(t, v); !ok {
		msg := fmt.Sprintf("expected %s", want)
		switch {
		case fl.Default != "" && t.Kind() != reflect.Bool:
			msg += fmt.Sprintf(" such as %q", fl.Default)
		case t == durationType:
			msg += ` such as "90s", "5m" or "2h"`
		}
		return fmt.Errorf("%s, got %s", msg, tomlType(v))
	}
	target := reflect.New(t).Elem()
	scan := kong.Scan().PushTyped(kongValue(fl, v), kong.FlagValueToken)
	if err := fl.Mapper.Decode(&kong.DecodeContext{Value: fl.Value, Scan: scan}, target); err != nil {
		if redacted(fl) {
			return errors.New("invalid value (not shown: the flag holds a secret)")
		}
		return err
	}
	if fl.Enum != "" {
		allowed := fl.EnumMap()
		vals := []reflect.Value{target}
		if target.Kind() == reflect.Slice {
			vals = vals[:0]
			for i := range target.Len() {
				vals = append(vals, target.Index(i))
			}
		}
		for _, el := range vals {
			if s := fmt.Sprint(el.Interface()); !allowed[s] {
				return fmt.Errorf("%q is not one of %s", s, quoteList(fl.EnumSlice()))
			}
		}
	}
	return nil
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	textType     = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func isText(t reflect.Type) bool { return reflect.PointerTo(t).Implements(textType) }

// tomlTypeFits says whether the TOML value v may set a Go value of type t, and if not, what
// would (in words for the error message).
func tomlTypeFits(t reflect.Type, v any) (string, bool) {
	switch {
	case t == durationType:
		_, ok := v.(string)
		return "a duration string", ok
	case isText(t):
		switch v.(type) {
		case string:
			return "", true
		case int64:
			if k := t.Kind(); k >= reflect.Int && k <= reflect.Uint64 {
				return "", true
			}
		}
		if k := t.Kind(); k >= reflect.Int && k <= reflect.Uint64 {
			return "a string or an integer", false
		}
		return "a string", false
	}
	switch t.Kind() {
	case reflect.Bool:
		_, ok := v.(bool)
		return "a boolean (true or false)", ok
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		_, ok := v.(int64)
		return "an integer", ok
	case reflect.Float32, reflect.Float64:
		switch v.(type) {
		case int64, float64:
			return "", true
		}
		return "a number", false
	default:
		_, ok := v.(string)
		return "a string", ok
	}
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return "a date/time"
	}
}

func plural(want string) string {
	for _, a := range []string{"a ", "an "} {
		if rest, ok := strings.CutPrefix(want, a); ok {
			if i := strings.IndexAny(rest, " ("); i > 0 {
				return rest[:i] + "s" + rest[i:]
			}
			return rest + "s"
		}
	}
	return want
}

// kongValue turns a checked TOML value into the token kong decodes for fl: text, as on the
// command line, so that type:"path" expansion and every custom mapper apply unchanged. Arrays
// become one separator-joined value (escaped as kong expects) when the flag has a separator.
func kongValue(fl *kong.Flag, v any) any {
	arr, ok := v.([]any)
	if !ok {
		return scalarText(v)
	}
	parts := make([]string, len(arr))
	for i, el := range arr {
		parts[i] = scalarText(el)
	}
	if fl.Tag.Sep == -1 {
		out := make([]any, len(parts))
		for i, p := range parts {
			out[i] = p
		}
		return out
	}
	return kong.JoinEscaped(parts, fl.Tag.Sep)
}

func scalarText(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	default:
		return fmt.Sprint(v)
	}
}

// configResolver hands kong the file's value for a flag not given on the command line nor in
// the environment.
type configResolver struct{ file *configFile }

func (r *configResolver) Validate(*kong.Application) error { return nil } // done by check at load

func (r *configResolver) Resolve(_ *kong.Context, _ *kong.Path, fl *kong.Flag) (any, error) {
	e, ok := r.file.Entries[fl.Name]
	if !ok || metaFlags[fl.Name] || notConfigurable(fl) || envSet(fl) != "" {
		return nil, nil
	}
	return kongValue(fl, e.Value), nil
}

// notConfigurable reports whether fl is tagged config:"-" and so never read from the file.
func notConfigurable(fl *kong.Flag) bool { return fl.Tag != nil && fl.Tag.Get("config") == "-" }

// envSet returns the name of the environment variable that sets fl, if one does.
func envSet(fl *kong.Flag) string {
	for _, env := range fl.Envs {
		if _, ok := os.LookupEnv(env); ok {
			return env
		}
	}
	return ""
}

// loadConfig is cli's BeforeResolve hook: it reads --config (or CACHED_CONFIG), which kong has
// traced or reset by now but not yet applied, and registers the file as a resolver.
func (c *cli) BeforeResolve(kctx *kong.Context) error {
	c.file = &configFile{}
	var path string
	for _, fl := range kctx.Flags() {
		if fl.Name == "config" {
			path, _ = kctx.FlagValue(fl).(string)
		}
	}
	if path == "" {
		return nil
	}
	f, err := loadConfigFile(path)
	if err != nil {
		return err
	}
	if err := f.check(kctx.Model); err != nil {
		return err
	}
	c.file = f
	kctx.AddResolver(&configResolver{file: f})
	return nil
}

// suggest returns the known key closest to k, if one is close enough to be a typo.
func suggest(k string, known map[string][]*kong.Flag) string {
	if alt := strings.ReplaceAll(k, "_", "-"); known[alt] != nil && !metaFlags[alt] {
		return alt
	}
	best, bestD := "", max(2, len(k)/3)+1
	names := make([]string, 0, len(known))
	for n := range known {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if metaFlags[n] {
			continue
		}
		if d := levenshtein(k, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

// redacted says whether fl carries a secret inline (`redact:"true"`): its value is never shown.
func redacted(fl *kong.Flag) bool {
	return fl.Tag.Get("redact") == "true"
}

// redactsUserinfo says whether fl is a URL, or list of URLs, that may carry a password as
// user:password@ (`redact:"userinfo"`): shown with the password replaced.
func redactsUserinfo(fl *kong.Flag) bool {
	return fl.Tag.Get("redact") == "userinfo"
}

// redactURLs is v (a string or []string of URLs) with their passwords replaced.
func redactURLs(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.String:
		return reflect.ValueOf(upstream.RedactURL(v.String()))
	case reflect.Slice:
		out := make([]string, v.Len())
		for i := range out {
			out[i] = upstream.RedactURL(fmt.Sprint(v.Index(i).Interface()))
		}
		return reflect.ValueOf(out)
	}
	return v
}
