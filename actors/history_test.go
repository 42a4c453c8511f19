package actors

import (
	"fmt"
	"testing"
	"time"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

func offsets(ms []*hubbubv1.Message) string {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.GetOffset()
	}
	return fmt.Sprint(out)
}

func TestHistoryRing(t *testing.T) {
	h := newHistory(4, time.Hour)
	now := time.Now().UnixMilli()
	for o := uint64(1); o <= 6; o++ {
		h.append(&hubbubv1.Message{Offset: o, TimeUnixMs: now})
	}
	cases := []struct {
		name string
		got  []*hubbubv1.Message
		want string
	}{
		{"all", h.since(0, 0), "[3 4 5 6]"},
		{"after 4", h.since(4, 0), "[5 6]"},
		{"limit", h.since(0, 2), "[3 4]"},
		{"after top", h.since(6, 0), "[]"},
		{"past top", h.since(60, 0), "[]"},
		{"newest", h.newest(0, 3), "[6 5 4]"},
		{"newest after 5", h.newest(5, 3), "[6]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := offsets(tc.got); got != tc.want {
				t.Fatalf("got %s want %s", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		after uint64
		want  bool
	}{{6, true}, {5, true}, {2, true}, {1, false}, {0, false}} {
		if got := h.covers(tc.after, 6); got != tc.want {
			t.Fatalf("covers(%d) = %v", tc.after, got)
		}
	}
}

func TestHistoryTrimByAge(t *testing.T) {
	h := newHistory(10, time.Minute)
	old := time.Now().Add(-2 * time.Minute).UnixMilli()
	h.append(&hubbubv1.Message{Offset: 1, TimeUnixMs: old})
	h.append(&hubbubv1.Message{Offset: 2, TimeUnixMs: old})
	h.append(&hubbubv1.Message{Offset: 3, TimeUnixMs: time.Now().UnixMilli()})
	h.trim(time.Now())
	if got := offsets(h.since(0, 0)); got != "[3]" {
		t.Fatalf("after trim %s", got)
	}
	if h.covers(1, 3) || !h.covers(2, 3) {
		t.Fatal("covers after trim")
	}
}

func TestHistoryDisabled(t *testing.T) {
	h := newHistory(0, time.Minute)
	h.append(&hubbubv1.Message{Offset: 1})
	if len(h.since(0, 0)) != 0 || h.covers(0, 1) || !h.covers(1, 1) {
		t.Fatal("disabled history retained something")
	}
}

func TestDedupeWindow(t *testing.T) {
	d := newDedupe(2)
	d.put("u", "a", 1)
	d.put("u", "b", 2)
	if off, ok := d.get("u", "a"); !ok || off != 1 {
		t.Fatal("a forgotten early")
	}
	if _, ok := d.get("v", "a"); ok {
		t.Fatal("ids are per user")
	}
	d.put("u", "c", 3)
	if _, ok := d.get("u", "a"); ok {
		t.Fatal("a kept beyond the window")
	}
	if off, ok := d.get("u", "c"); !ok || off != 3 {
		t.Fatal("c missing")
	}
}

func TestValidNames(t *testing.T) {
	for name, want := range map[string]bool{"lobby": true, "game:42/eu": true, "ünïcode": true, "a b": false, "tab\t": false, "\x00": false, "bad\xff": false} {
		if validName(name) != want {
			t.Errorf("validName(%q) = %v", name, !want)
		}
	}
	if !validDisplayName("Alice Smith") || validDisplayName("a\nb") {
		t.Error("display names")
	}
}
