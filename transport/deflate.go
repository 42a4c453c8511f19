package transport

import (
	"bytes"
	"compress/flate"
	"net/http"
	"strings"
	"sync"
	"unsafe"
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

func (d *deflater) release() {
	if d.buf.Cap() > 1<<20 {
		return
	}
	deflaters.Put(d)
}

// zcache holds the compressed form of room pushes, so a message fanned out
// to many connections is compressed once, not once per recipient (with no
// context takeover the compressed bytes are the same for everyone). It is
// keyed by the identity of the payload's bytes: the relay hands every
// recipient the same slice. An entry keeps its payload alive, so while it is
// cached no other payload can have its address; entries are evicted oldest
// first past a byte budget per shard.
type zcache struct {
	shards [zShards]zshard
}

const (
	zShards      = 16
	zShardBudget = 256 << 10 // payload and compressed bytes per shard
)

type zkey struct {
	p     *byte
	n     int
	level int
}

type zshard struct {
	mu    sync.Mutex
	m     map[zkey][]byte
	order []zkey
	src   map[zkey][]byte // the payloads, kept alive while cached
	bytes int
}

var pushZ zcache

// get returns the compressed form of p, compressing it on a miss.
func (z *zcache) get(p []byte, level int, d *deflater) []byte {
	if len(p) == 0 {
		return d.compressOne(p)
	}
	k := zkey{p: &p[0], n: len(p), level: level}
	s := &z.shards[(uintptr(unsafe.Pointer(k.p))>>4)%zShards]
	s.mu.Lock()
	if c, ok := s.m[k]; ok {
		s.mu.Unlock()
		return c
	}
	s.mu.Unlock()
	c := d.compressOne(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.m[k]; ok {
		return prev // compressed meanwhile by another connection
	}
	if s.m == nil {
		s.m, s.src = map[zkey][]byte{}, map[zkey][]byte{}
	}
	s.m[k], s.src[k] = c, p
	s.order = append(s.order, k)
	s.bytes += len(p) + len(c)
	for s.bytes > zShardBudget && len(s.order) > 1 {
		old := s.order[0]
		s.order = s.order[1:]
		s.bytes -= len(s.src[old]) + len(s.m[old])
		delete(s.m, old)
		delete(s.src, old)
	}
	if cap(s.order) > 4*len(s.order)+64 {
		s.order = append([]zkey(nil), s.order...)
	}
	return c
}

// compressOne returns the compressed form of p in a slice of its own.
func (d *deflater) compressOne(p []byte) []byte {
	d.buf.Reset()
	d.w.Reset(&d.buf)
	_, _ = d.w.Write(p)
	_ = d.w.Flush()
	return append([]byte(nil), d.buf.Bytes()[:d.buf.Len()-4]...)
}
