// Package web serves Hubbub's browser pages, embedded in the binary: the
// chat page (Handler) on the client listener and the admin console (Admin)
// on the server API's listener.
//
// Both are TypeScript (web/src), bundled with esbuild by
// scripts/build-web.sh into static/app.js and admin/admin.js: the chat page
// on the TypeScript SDK (sdk/ts), the console on the server API through
// Connect. The bundles are build outputs, not sources: a binary built
// without them serves the pages with a script that says how to build them.
//
// # Concurrency
//
// The handlers are safe for concurrent use; they serve read-only embedded files.
package web

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/hubbub-chat/hubbub/wire"
)

//go:embed static admin
var files embed.FS

// Handler serves the chat page at / and its assets, and close-codes.js: the
// server's close code table (wire.CloseCodes) for other browser clients.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", pages("static", "app.js"))
	codes := []byte("window.HUBBUB_CLOSE_CODES = " + string(wire.CloseCodesJSON()) + ";\n")
	mux.HandleFunc("/close-codes.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		_, _ = w.Write(codes)
	})
	return mux
}

// Admin serves the admin console; mount it at /admin/ on the server API's
// listener (the console calls the API on its own origin). The console asks
// for a key with the admin scope and keeps it in the tab's session storage.
func Admin() http.Handler {
	return http.StripPrefix("/admin", pages("admin", "admin.js"))
}

// Built reports whether the binary holds the pages' bundles.
func Built() bool {
	_, err := fs.Stat(files, "static/app.js")
	_, err2 := fs.Stat(files, "admin/admin.js")
	return err == nil && err2 == nil
}

// notBuilt stands in for a bundle the binary was built without.
const notBuilt = `document.body.insertAdjacentHTML("afterbegin", "<p style=\"margin:1rem;padding:1rem;border:1px solid #cf222e;background:#ffebe9\">` +
	`This hubbub binary was built without its web pages. Build them with <code>./scripts/build-web.sh</code> (Node.js 20+), ` +
	`then build or run the binary again (<code>./scripts/serve.sh</code> does both).</p>");` + "\n"

// pages serves one embedded directory; its bundle falls back to notBuilt.
func pages(dir, bundle string) http.Handler {
	sub, err := fs.Sub(files, dir)
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServer(http.FS(sub))
	if _, err := fs.Stat(sub, bundle); err == nil {
		return noCache(files)
	}
	return noCache(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/"+bundle {
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			_, _ = w.Write([]byte(notBuilt))
			return
		}
		files.ServeHTTP(w, r)
	}))
}

// noCache makes browsers revalidate: the pages change with the binary.
func noCache(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}
