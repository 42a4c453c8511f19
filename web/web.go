// Package web serves Hubbub's browser chat page, embedded in the binary.
//
// The page speaks the hubbub.v1.json subprotocol with plain JavaScript: the
// canonical protobuf JSON encoding is ordinary JSON, so a browser needs no
// generated code or build step, and the page stays a few kilobytes.
//
// # Concurrency
//
// Handler is safe for concurrent use; it serves read-only embedded files.
package web

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/hubbub-chat/hubbub/wire"
)

//go:embed static
var static embed.FS

// Handler serves the chat page at / and its assets, and close-codes.js: the
// server's close code table (wire.CloseCodes) for the page, so the page and
// the server cannot disagree on what a code means.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.FS(sub)))
	codes := []byte("window.HUBBUB_CLOSE_CODES = " + string(wire.CloseCodesJSON()) + ";\n")
	mux.HandleFunc("/close-codes.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		_, _ = w.Write(codes)
	})
	return mux
}
