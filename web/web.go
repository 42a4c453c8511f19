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
)

//go:embed static
var static embed.FS

// Handler serves the chat page at / and its assets.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return http.FileServer(http.FS(sub))
}
