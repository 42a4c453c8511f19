package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"

	"github.com/hubbub-chat/hubbub/actors"
)

// A config file (YAML) holds any serve setting under its flag's name, and
// the room profiles under rooms:
//
//	listen: 127.0.0.1:8080
//	history-store: embedded
//	rooms:
//	  - pattern: "market:*"
//	    presence: counts
//	    overflow: conflate
//	  - pattern: "live:*"
//	    join-leave: false
//	    publish: listed
//	    publishers: ["host:*"]
//
// Flags and HUBBUB_* variables override the file. Profiles are tried in
// order (the first whose pattern matches a room's name wins); a setting a
// profile leaves out comes from the room settings (the flags).

// roomSpec is one profile of the file: its settings, checked, to be applied
// to the default profile once every flag is known.
type roomSpec struct {
	where   string // file:line
	pattern string
	set     []func(*actors.RoomProfile)
}

// profileSetters parse each profile setting; keys are as in the file.
var profileSetters = map[string]func(v string) (func(*actors.RoomProfile), error){
	"name": func(v string) (func(*actors.RoomProfile), error) {
		return func(p *actors.RoomProfile) { p.Name = v }, nil
	},
	"history-size":       intSetter(func(p *actors.RoomProfile, n int) { p.HistorySize = n }),
	"history-ttl":        durationSetter(func(p *actors.RoomProfile, d time.Duration) { p.HistoryTTL = d }),
	"presence-interval":  durationSetter(func(p *actors.RoomProfile, d time.Duration) { p.PresenceInterval = d }),
	"presence-max-diff":  intSetter(func(p *actors.RoomProfile, n int) { p.PresenceMaxDiff = n }),
	"presence-max-users": intSetter(func(p *actors.RoomProfile, n int) { p.PresenceMaxUsers = n }),
	"max-members":        intSetter(func(p *actors.RoomProfile, n int) { p.MaxMembers = n }),
	"publish-burst":      intSetter(func(p *actors.RoomProfile, n int) { p.PublishBurst = n }),
	"join-leave":         boolSetter(func(p *actors.RoomProfile, b bool) { p.JoinLeave = b }),
	"typing":             boolSetter(func(p *actors.RoomProfile, b bool) { p.Typing = b }),
	"join-hook":          boolSetter(func(p *actors.RoomProfile, b bool) { p.SkipJoinHook = !b }),
	"publish-hook":       boolSetter(func(p *actors.RoomProfile, b bool) { p.SkipPublishHook = !b }),
	"publish-rate": func(v string) (func(*actors.RoomProfile), error) {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			return nil, fmt.Errorf("%q is not a number of publishes per second (0: unlimited)", v)
		}
		return func(p *actors.RoomProfile) { p.PublishRate, p.PublishBurst = f, 0 }, nil
	},
	"store": func(v string) (func(*actors.RoomProfile), error) {
		if v != "durable" && v != "memory" {
			return nil, fmt.Errorf("%q is not durable or memory", v)
		}
		return func(p *actors.RoomProfile) { p.Durable = v == "durable" }, nil
	},
	"presence": func(v string) (func(*actors.RoomProfile), error) {
		m, err := actors.ParsePresenceMode(v)
		return func(p *actors.RoomProfile) { p.Presence = m }, err
	},
	"overflow": func(v string) (func(*actors.RoomProfile), error) {
		o, ok := actors.ParseOverflow(v)
		if !ok {
			return nil, fmt.Errorf("%q is not disconnect, drop-oldest or conflate", v)
		}
		return func(p *actors.RoomProfile) { p.Overflow = o }, nil
	},
	"hook-notify": func(v string) (func(*actors.RoomProfile), error) {
		m, err := actors.ParseHookNotify(v)
		return func(p *actors.RoomProfile) { p.HookNotify = m }, err
	},
	"publish": func(v string) (func(*actors.RoomProfile), error) {
		pp, err := actors.ParsePublishPolicy(v)
		return func(p *actors.RoomProfile) { p.Publish = pp }, err
	},
}

func intSetter(set func(*actors.RoomProfile, int)) func(string) (func(*actors.RoomProfile), error) {
	return func(v string) (func(*actors.RoomProfile), error) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a whole number of zero or more", v)
		}
		return func(p *actors.RoomProfile) { set(p, n) }, nil
	}
}

func durationSetter(set func(*actors.RoomProfile, time.Duration)) func(string) (func(*actors.RoomProfile), error) {
	return func(v string) (func(*actors.RoomProfile), error) {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%q is not a positive duration such as 500ms or 10m", v)
		}
		return func(p *actors.RoomProfile) { set(p, d) }, nil
	}
}

func boolSetter(set func(*actors.RoomProfile, bool)) func(string) (func(*actors.RoomProfile), error) {
	return func(v string) (func(*actors.RoomProfile), error) {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", v)
		}
		return func(p *actors.RoomProfile) { set(p, b) }, nil
	}
}

// configPath finds --config in args (it must be read before the other
// flags, which override it), else HUBBUB_CONFIG.
func configPath(args []string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			continue
		}
		if hasValue {
			return value
		}
		if i+1 < len(args) {
			return args[i+1]
		}
	}
	return os.Getenv(envName("config"))
}

// loadConfigFile sets the flags the file names and returns its room profiles.
// Errors name the file, the line and the setting.
func loadConfigFile(path string, fs *flag.FlagSet) ([]roomSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		var se interface {
			GetToken() *token.Token
			GetMessage() string
		}
		if errors.As(err, &se) && se.GetToken() != nil {
			return nil, fmt.Errorf("%s:%d: %s", path, se.GetToken().Position.Line, se.GetMessage())
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(f.Docs) != 1 || f.Docs[0].Body == nil {
		return nil, fmt.Errorf("%s: expected one YAML document of settings", path)
	}
	top, ok := f.Docs[0].Body.(*ast.MappingNode)
	if !ok {
		return nil, fmt.Errorf("%s:%d: expected settings as key: value lines", path, line(f.Docs[0].Body))
	}
	var rooms []roomSpec // the parser refuses a key set twice
	for _, kv := range top.Values {
		key := kv.Key.GetToken().Value
		at := fmt.Sprintf("%s:%d", path, line(kv.Key))
		if key == "rooms" {
			if rooms, err = loadRooms(path, kv.Value); err != nil {
				return nil, err
			}
			continue
		}
		fl := fs.Lookup(key)
		if fl == nil || key == "config" || key == "print-config" {
			return nil, fmt.Errorf("%s: unknown setting %q (settings are the flags of 'hubbub serve -h' without the dashes, and rooms)", at, key)
		}
		v, err := scalar(kv.Value)
		if err == nil && fl.Value.Set(v) != nil {
			err = fmt.Errorf("expected %s, got %q", kindOf(fl), v)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %v", at, key, err)
		}
	}
	return rooms, nil
}

func loadRooms(path string, n ast.Node) ([]roomSpec, error) {
	seq, ok := n.(*ast.SequenceNode)
	if !ok {
		return nil, fmt.Errorf("%s:%d: rooms: expected a list of profiles (lines starting with '- pattern:')", path, line(n))
	}
	var out []roomSpec
	for i, item := range seq.Values {
		at := fmt.Sprintf("%s:%d", path, line(item))
		m, ok := item.(*ast.MappingNode)
		if !ok {
			return nil, fmt.Errorf("%s: rooms[%d]: expected a profile (pattern: and settings)", at, i)
		}
		spec, err := loadRoom(path, i, m)
		if err != nil {
			return nil, err
		}
		for _, prev := range out {
			if prev.pattern == "*" || prev.pattern == spec.pattern {
				return nil, fmt.Errorf("%s: rooms[%d]: pattern %q is never used: the profile at %s (pattern %q) matches its rooms first", at, i, spec.pattern, prev.where, prev.pattern)
			}
		}
		out = append(out, spec)
	}
	return out, nil
}

func loadRoom(path string, i int, m *ast.MappingNode) (roomSpec, error) {
	spec := roomSpec{where: fmt.Sprintf("%s:%d", path, line(m))}
	var publishers []string
	hasPublishers := false
	for _, kv := range m.Values {
		key := kv.Key.GetToken().Value
		at := fmt.Sprintf("%s:%d: rooms[%d].%s", path, line(kv.Key), i, key)
		switch key {
		case "pattern":
			v, err := scalar(kv.Value)
			if err == nil {
				err = checkPattern(v)
			}
			if err != nil {
				return spec, fmt.Errorf("%s: %v", at, err)
			}
			spec.pattern = v
			continue
		case "publishers":
			seq, ok := kv.Value.(*ast.SequenceNode)
			if !ok {
				return spec, fmt.Errorf("%s: expected a list of user patterns", at)
			}
			for _, u := range seq.Values {
				v, err := scalar(u)
				if err == nil {
					err = checkPattern(v)
				}
				if err != nil {
					return spec, fmt.Errorf("%s: %v", at, err)
				}
				publishers = append(publishers, v)
			}
			hasPublishers = true
			continue
		}
		parse, ok := profileSetters[key]
		if !ok {
			return spec, fmt.Errorf("%s: unknown profile setting (known: pattern, publishers, %s)", at, strings.Join(sortedKeys(profileSetters), ", "))
		}
		v, err := scalar(kv.Value)
		if err != nil {
			return spec, fmt.Errorf("%s: %v", at, err)
		}
		set, err := parse(v)
		if err != nil {
			return spec, fmt.Errorf("%s: %v", at, err)
		}
		spec.set = append(spec.set, set)
	}
	if spec.pattern == "" {
		return spec, fmt.Errorf("%s: rooms[%d]: pattern: required", spec.where, i)
	}
	if hasPublishers {
		spec.set = append(spec.set, func(p *actors.RoomProfile) { p.Publishers = publishers })
	}
	return spec, nil
}

// checkPattern refuses patterns no room name can match as meant.
func checkPattern(p string) error {
	if p == "" {
		return errors.New("empty pattern")
	}
	for _, r := range p {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("pattern %q has a space or control character; room names have none", p)
		}
	}
	return nil
}

func scalar(n ast.Node) (string, error) {
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return "", errors.New("expected a single value, got a mapping")
	case *ast.SequenceNode:
		return "", errors.New("expected a single value, got a list")
	case *ast.NullNode, nil:
		return "", errors.New("expected a value, got none")
	}
	if _, ok := n.(ast.ScalarNode); !ok {
		return "", fmt.Errorf("expected a single value, got %s", n.Type())
	}
	return n.GetToken().Value, nil
}

// kindOf names what a flag's value must be.
func kindOf(fl *flag.Flag) string {
	g, ok := fl.Value.(flag.Getter)
	if !ok {
		return "a valid value"
	}
	switch g.Get().(type) {
	case int:
		return "a whole number"
	case bool:
		return "true or false"
	case float64:
		return "a number"
	case time.Duration:
		return "a duration such as 500ms or 10s"
	}
	return "a valid value"
}

func line(n ast.Node) int {
	if n == nil || n.GetToken() == nil {
		return 0
	}
	return n.GetToken().Position.Line
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// resolveProfiles turns the file's profiles into the node's, each starting
// from the default profile (the room flags).
func resolveProfiles(specs []roomSpec, rc *actors.RoomConfig) {
	def := rc.DefaultProfile()
	for _, s := range specs {
		p := def
		p.Name, p.Pattern = s.pattern, s.pattern
		for _, set := range s.set {
			set(&p)
		}
		rc.Profiles = append(rc.Profiles, p)
	}
}

// printConfig writes the effective configuration as a config file: every
// setting with its value, then every room profile fully spelled out.
func printConfig(w io.Writer, f *envFlags, rc actors.RoomConfig) error {
	var top yaml.MapSlice
	for _, g := range f.groups {
		for _, name := range g.names {
			if name == "config" || name == "print-config" {
				continue
			}
			top = append(top, yaml.MapItem{Key: name, Value: flagValue(f.Lookup(name))})
		}
	}
	var rooms []yaml.MapSlice
	for _, p := range rc.Profiles {
		store := "memory"
		if p.Durable {
			store = "durable"
		}
		rooms = append(rooms, yaml.MapSlice{
			{Key: "pattern", Value: p.Pattern}, {Key: "name", Value: p.Name},
			{Key: "history-size", Value: p.HistorySize}, {Key: "history-ttl", Value: p.HistoryTTL.String()},
			{Key: "store", Value: store}, {Key: "presence", Value: actors.PresenceModeName(p.Presence)},
			{Key: "join-leave", Value: p.JoinLeave}, {Key: "presence-interval", Value: p.PresenceInterval.String()},
			{Key: "presence-max-diff", Value: p.PresenceMaxDiff}, {Key: "presence-max-users", Value: p.PresenceMaxUsers},
			{Key: "typing", Value: p.Typing},
			{Key: "overflow", Value: actors.OverflowName(p.Overflow)}, {Key: "publish-rate", Value: p.PublishRate},
			{Key: "publish-burst", Value: p.PublishBurst}, {Key: "max-members", Value: p.MaxMembers},
			{Key: "publish", Value: p.Publish.String()}, {Key: "publishers", Value: p.Publishers},
			{Key: "join-hook", Value: !p.SkipJoinHook}, {Key: "publish-hook", Value: !p.SkipPublishHook},
			{Key: "hook-notify", Value: p.HookNotify.String()},
		})
	}
	top = append(top, yaml.MapItem{Key: "rooms", Value: rooms})
	b, err := yaml.Marshal(top)
	if err != nil {
		return err
	}
	if !strings.HasSuffix(string(b), "\n") {
		b = append(b, '\n')
	}
	_, err = fmt.Fprintf(w, "# hubbub serve: the effective configuration (usable as --config). Rooms that match no profile\n"+
		"# take the room settings above; --overflow-policy and --ephemeral-rooms add profiles after these.\n%s", b)
	return err
}

// flagValue is a flag's value for printing: typed where the flag package
// knows the type, durations as text, and a password in a URL hidden.
func flagValue(fl *flag.Flag) any {
	g, ok := fl.Value.(flag.Getter)
	if !ok {
		return fl.Value.String()
	}
	switch v := g.Get().(type) {
	case time.Duration:
		return v.String()
	case string:
		if u, err := url.Parse(v); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), "xxxxx")
				return u.String()
			}
		}
		return v
	default:
		return v
	}
}
