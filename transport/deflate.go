package transport

import (
	"bytes"
	"compress/flate"
	"net/http"
	"strings"
	"sync"
)

// rsv1Bit marks a compressed message (RFC 7692).
const rsv1Bit = 0x40

// offersDeflate reports whether the client offered permessage-deflate; gorilla
// accepts it (without context takeover) when compression is enabled.
func offersDeflate(r *http.Request) bool {
	for _, v := range r.Header.Values("Sec-Websocket-Extensions") {
		for _, ext := range strings.Split(v, ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(ext), ";")
			if strings.TrimSpace(name) == "permessage-deflate" {
				return true
			}
		}
	}
	return false
}

// deflater compresses payloads for permessage-deflate with no context
// takeover: each message is compressed on its own, so the result for a
// payload is the same for every connection.
type deflater struct {
	w   *flate.Writer
	buf bytes.Buffer
}

var deflaters sync.Pool

func getDeflater(level int) *deflater {
	if d, ok := deflaters.Get().(*deflater); ok {
		return d
	}
	d := &deflater{}
	d.w, _ = flate.NewWriter(&d.buf, level) // level is validated by Config
	return d
}

// compressAll appends the compressed form of every payload to one buffer and
// returns slices of it (valid until the next call on this deflater).
func (d *deflater) compressAll(payloads [][]byte, out [][]byte) [][]byte {
	d.buf.Reset()
	ends := make([]int, 0, len(payloads))
	for _, p := range payloads {
		d.w.Reset(&d.buf)
		_, _ = d.w.Write(p)
		_ = d.w.Flush()
		// Drop the empty stored block's 0x00 0x00 0xff 0xff tail (RFC 7692 7.2.1).
		d.buf.Truncate(d.buf.Len() - 4)
		ends = append(ends, d.buf.Len())
	}
	all := d.buf.Bytes()
	start := 0
	for _, end := range ends {
		out = append(out, all[start:end:end])
		start = end
	}
	return out
}

func (d *deflater) release() {
	if d.buf.Cap() > 1<<20 {
		return
	}
	deflaters.Put(d)
}
