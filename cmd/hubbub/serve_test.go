package main

import (
	"context"
	"errors"
	"flag"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hubbub-chat/hubbub/client"
)

// Nonsense values are refused with the flag named instead of silently
// becoming defaults.
func TestServeRefusesNonsenseFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--max-frame-bytes", "-5"}, "--max-frame-bytes"},
		{[]string{"--max-frame-bytes", "0"}, "--max-frame-bytes"},
		{[]string{"--max-queued-bytes", "-1"}, "--max-queued-bytes"},
		{[]string{"--ping-interval", "0s"}, "--ping-interval"},
		{[]string{"--history-ttl", "-1m"}, "--history-ttl"},
		{[]string{"--connect-timeout", "0s"}, "--connect-timeout"},
		{[]string{"--max-connections", "-3"}, "--max-connections"},
		{[]string{"--room-publish-rate", "-1"}, "--room-publish-rate"},
		{[]string{"--compression-level", "12"}, "--compression-level"},
		{[]string{"--max-message-bytes", "100000"}, "--max-message-bytes"},
		{[]string{"--jwt-alg", "HS256"}, "--jwt-alg HS256 needs a key"},
		{[]string{"--history-store", "disk"}, "--history-store"},
		{[]string{"--hook-url", "http://127.0.0.1:9", "--hooks", "connect,subscribe"}, `--hooks: no hook "subscribe"`},
		{[]string{"--hook-url", "http://127.0.0.1:9", "--hook-urls", "join"}, "--hook-urls"},
		{[]string{"--hook-url", "http://127.0.0.1:9", "--hook-urls", "join=ftp://x"}, "not http:// or https://"},
		{[]string{"--hook-url", "http://127.0.0.1:9", "--hook-timeouts", "rpc=soon"}, "--hook-timeouts: Rpc"},
		{[]string{"--hook-url", "http://127.0.0.1:9", "--hook-cert", "c.pem"}, "--hook-cert and --hook-key go together"},
		{[]string{"--hook-url", "http://127.0.0.1:9", "--hook-ca-file", "/nonexistent"}, "--hook-ca-file"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := parseServe(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
	// Zero keeps its documented meaning where it has one; negative rates mean unlimited.
	if _, err := parseServe([]string{"--max-connections", "0", "--command-rate", "-1", "--history-size", "-1"}); err != nil {
		t.Fatal(err)
	}
	c, err := parseServe([]string{"--hook-url", "http://127.0.0.1:9", "--hooks", "Connect, rpc", "--hook-urls", "rpc=https://10.0.0.1:9000",
		"--hook-timeouts", "connect=5s"})
	if err != nil || strings.Join(c.hooks.Enabled, ",") != "Connect,Rpc" || c.hooks.URLs["Rpc"] != "https://10.0.0.1:9000" || c.hooks.Timeouts["Connect"] != 5*time.Second {
		t.Fatalf("hook settings: %+v %v", c.hooks, err)
	}
}

func TestServeHelpIsGrouped(t *testing.T) {
	f := newEnvFlags("serve")
	f.group("Connections")
	var n int
	f.integer(&n, "max-frame-bytes", 1, "largest frame")
	var b strings.Builder
	f.usage(&b)
	if !strings.Contains(b.String(), "\nConnections:\n  --max-frame-bytes int") {
		t.Fatalf("usage:\n%s", b.String())
	}
	if _, err := parseServe([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
}

func TestVersionStringHasBuildInfo(t *testing.T) {
	v := versionString()
	if v == "" || v == "dev" || !strings.Contains(v, "go1.") {
		t.Fatalf("version %q", v)
	}
}

func TestChatRefusesNonWebSocketURLs(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:8080/ws", "127.0.0.1:8080", "ws://", "ftp://x/ws"} {
		if err := checkWSURL(u); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
	for _, u := range []string{"ws://127.0.0.1:8080/ws", "wss://chat.example.com/ws"} {
		if err := checkWSURL(u); err != nil {
			t.Errorf("%q: %v", u, err)
		}
	}
}

// A chat pointed at a port nobody listens on gives up after --wait with a
// clear error instead of retrying forever.
func TestChatGivesUpWhenServerIsDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "ws://" + l.Addr().String() + "/ws"
	_ = l.Close() // nothing listens there now
	start := time.Now()
	err = runChat(context.Background(), client.Config{URL: url, Name: "ci", MinReconnectDelay: 10 * time.Millisecond},
		"ops", 300*time.Millisecond, strings.NewReader("deploy done\n"), &strings.Builder{})
	if err == nil || !strings.Contains(err.Error(), "giving up") {
		t.Fatalf("err %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("gave up after %v", took)
	}
}
