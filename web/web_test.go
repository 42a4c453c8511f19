package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandlerServesThePage(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for path, want := range map[string]string{"/": "<title>Hubbub chat</title>", "/app.js": "hubbub.v1.json", "/style.css": "[hidden]",
		"/close-codes.js": `{"code":4004,"reason":"a joined room moved; rejoin","reconnect":true}`} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Fatalf("%s: %d %.80q", path, resp.StatusCode, body)
		}
	}
}
