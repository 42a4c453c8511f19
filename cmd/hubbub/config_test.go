package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hubbub-chat/hubbub/actors"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hubbub.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const sampleConfig = `# a sample
listen: 127.0.0.1:7001
history-size: 40
history-ttl: 2m
presence-interval: 250ms
request-timeout: 3s
rooms:
  - pattern: "market:*"
    presence: counts
    overflow: conflate
    store: memory
  - pattern: "live:*"
    name: livestream
    join-leave: false
    typing: false
    publish: listed
    publishers: ["host:*", "bot"]
    history-size: 500
    max-members: 20000
    publish-rate: 10
`

// The file sets what it names; HUBBUB_* variables override it and flags
// override both; profiles inherit every room setting they leave out.
func TestConfigFilePrecedenceAndProfiles(t *testing.T) {
	path := writeConfig(t, sampleConfig)
	t.Setenv("HUBBUB_REQUEST_TIMEOUT", "4s")
	cfg, err := parseServe([]string{"--config", path, "--history-size", "60"})
	if err != nil {
		t.Fatal(err)
	}
	nc := cfg.server.Node
	if cfg.listen != "127.0.0.1:7001" || nc.Room.HistoryTTL != 2*time.Minute {
		t.Fatalf("file settings not applied: listen %q ttl %v", cfg.listen, nc.Room.HistoryTTL)
	}
	if nc.Conn.RequestTimeout != 4*time.Second || nc.Room.HistorySize != 60 {
		t.Fatalf("overrides: request-timeout %v (env 4s), history-size %d (flag 60)", nc.Conn.RequestTimeout, nc.Room.HistorySize)
	}
	if len(nc.Room.Profiles) != 2 {
		t.Fatalf("profiles %+v", nc.Room.Profiles)
	}
	market, live := nc.Room.Profiles[0], nc.Room.Profiles[1]
	if market.Pattern != "market:*" || market.Presence != actors.PresenceCounts || market.Overflow != actors.OverflowConflate ||
		market.Durable || market.HistorySize != 60 || market.PresenceInterval != 250*time.Millisecond || !market.JoinLeave || !market.Typing {
		t.Fatalf("market profile %+v", market)
	}
	if live.Name != "livestream" || live.JoinLeave || live.Typing || live.Publish != actors.PublishListed ||
		strings.Join(live.Publishers, ",") != "host:*,bot" || live.HistorySize != 500 || live.MaxMembers != 20000 ||
		live.PublishRate != 10 || live.Presence != actors.PresenceFull || !live.Durable {
		t.Fatalf("live profile %+v", live)
	}
}

// A bad file is refused at start with the file, the line and the setting named.
func TestConfigFileErrors(t *testing.T) {
	cases := []struct {
		text string
		want string
	}{
		{"histry-size: 5\n", `:1: unknown setting "histry-size"`},
		{"listen: 127.0.0.1:1\nhistory-size: many\n", `:2: history-size: expected a whole number, got "many"`},
		{"compression: maybe\n", `:1: compression: expected true or false`},
		{"history-ttl: 1 hour\n", `:1: history-ttl: expected a duration`},
		{"listen: [a, b]\n", `:1: listen: expected a single value, got a list`},
		{"rooms:\n  - pattern: x\n    presense: full\n", `:3: rooms[0].presense: unknown profile setting`},
		{"rooms:\n  - pattern: x\n    presence: some\n", `:3: rooms[0].presence: "some" is not full, counts or off`},
		{"rooms:\n  - pattern: x\n    history-size: -1\n", `:3: rooms[0].history-size: "-1" is not a whole number`},
		{"rooms:\n  - pattern: \"a b\"\n", `:2: rooms[0].pattern: pattern "a b" has a space`},
		{"rooms:\n  - presence: off\n", `:2: rooms[0]: pattern: required`},
		{"rooms:\n  - pattern: \"*\"\n  - pattern: \"x:*\"\n", `:3: rooms[1]: pattern "x:*" is never used`},
		{"rooms:\n  pattern: x\n", `:2: rooms: expected a list of profiles`},
		{"rooms:\n  - pattern: x\n    publishers: bob\n", `:3: rooms[0].publishers: expected a list`},
		{"a: b: c\n", `:1: mapping value is not allowed`},
		{"listen: a\nlisten: b\n", `:2: mapping key "listen" already defined`},
	}
	for _, tc := range cases {
		path := writeConfig(t, tc.text)
		_, err := parseServe([]string{"--config", path})
		if err == nil || !strings.Contains(err.Error(), path+tc.want) {
			t.Errorf("%q: got %v, want %q", tc.text, err, path+tc.want)
		}
	}
	if _, err := parseServe([]string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}); err == nil || !strings.Contains(err.Error(), "missing.yaml: no such file") {
		t.Errorf("missing file: %v", err)
	}
}

// --print-config writes a file that, read back, gives the same configuration.
func TestPrintConfigRoundTrips(t *testing.T) {
	t.Setenv("HUBBUB_REDIS_URL", "redis://user:s3cret@127.0.0.1:6379/0")
	cfg, err := parseServe([]string{"--config", writeConfig(t, sampleConfig), "--print-config"})
	if err != nil {
		t.Fatal(err)
	}
	var first bytes.Buffer
	if err := printConfig(&first, cfg.flags, cfg.server.Node.Room); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(first.String(), "s3cret") || !strings.Contains(first.String(), "presence: counts") {
		t.Fatalf("printed:\n%s", first.String())
	}
	cfg2, err := parseServe([]string{"--config", writeConfig(t, first.String())})
	if err != nil {
		t.Fatalf("reading the printed config: %v\n%s", err, first.String())
	}
	var second bytes.Buffer
	if err := printConfig(&second, cfg2.flags, cfg2.server.Node.Room); err != nil {
		t.Fatal(err)
	}
	if first.String() != second.String() {
		t.Fatalf("not the same after a round trip:\n%s\n---\n%s", first.String(), second.String())
	}
}
