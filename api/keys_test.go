package api

import (
	"strings"
	"testing"
)

func TestParseKeys(t *testing.T) {
	keys, err := ParseKeys(strings.NewReader("# backends\n\nbilling 3f9c0a7e51d2aa publish,read\n\tops  77777777777777\tadmin\n"), "keys")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].Name != "billing" || !keys[0].Allows(ScopeRead) || keys[0].Allows(ScopeAdmin) ||
		!keys[1].Allows(ScopePublish) || !keys[1].Allows(ScopeAdmin) {
		t.Fatalf("keys %+v", keys)
	}
	for _, c := range []struct{ file, want string }{
		{"a 3f9c0a7e51d2aa\n", "keys:1: want NAME KEY SCOPES, got 2 fields"},
		{"# c\na 3f9c0a7e51d2aa write\n", `keys:2: key "a": unknown scope "write"`},
		{"a short publish\n", `keys:1: key "a" is shorter than 12 characters`},
		{"a/b 3f9c0a7e51d2aa publish\n", `keys:1: key name "a/b"`},
		{"a 3f9c0a7e51d2aa publish\na 3f9c0a7e51d2bb read\n", `keys:2: key name "a" used twice`},
		{"a 3f9c0a7e51d2aa publish\nb 3f9c0a7e51d2aa read\n", `keys:2: key "b" repeats another key's secret`},
		{"# nothing\n", "keys: no API keys"},
	} {
		_, err := ParseKeys(strings.NewReader(c.file), "keys")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.file, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "3f9c0a7e51d2") {
			t.Errorf("%q: the error shows the key: %v", c.file, err)
		}
	}
}

func TestKeyringFind(t *testing.T) {
	k := newKeyring([]Key{{Name: "a", Secret: "aaaaaaaaaaaaaa"}, {Name: "b", Secret: "bbbbbbbbbbbbbb"}})
	if got := k.find("bbbbbbbbbbbbbb"); got == nil || got.Name != "b" {
		t.Fatalf("found %v", got)
	}
	for _, bad := range []string{"", "bbbbbbbbbbbbb", "bbbbbbbbbbbbbbb", "aaaaaaaaaaaaab"} {
		if got := k.find(bad); got != nil {
			t.Fatalf("%q found %v", bad, got)
		}
	}
}
