package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestHandlerServesThePages(t *testing.T) {
	chat := httptest.NewServer(Handler())
	defer chat.Close()
	mux := http.NewServeMux()
	mux.Handle("/admin/", Admin())
	admin := httptest.NewServer(mux)
	defer admin.Close()
	// With the bundles built (scripts/build-web.sh), the pages' scripts are
	// theirs; without, a notice that says how to build them.
	want := func(path, built string) string {
		if _, err := fs.Stat(files, path); err != nil {
			return "scripts/build-web.sh"
		}
		return built
	}
	for url, mention := range map[string]string{
		chat.URL + "/":                "<title>Hubbub chat</title>",
		chat.URL + "/app.js":          want("static/app.js", "hubbub.v1.proto"),
		chat.URL + "/style.css":       "[hidden]",
		chat.URL + "/close-codes.js":  `{"code":4004,"reason":"a joined room moved; rejoin","reconnect":true}`,
		admin.URL + "/admin/":         "<title>Hubbub console</title>",
		admin.URL + "/admin/admin.js": want("admin/admin.js", "Bearer "),
	} {
		if code, body := get(t, url); code != http.StatusOK || !strings.Contains(body, mention) {
			t.Fatalf("%s: %d %.80q, want %q", url, code, body, mention)
		}
	}
}
