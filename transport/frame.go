package transport

import (
	"net"
	"sync"
)

// WebSocket opcodes of data frames (RFC 6455 section 5.2).
const (
	opText   = 0x1
	opBinary = 0x2
	finBit   = 0x80
)

// appendHeader appends an unmasked, final server frame header for a payload of n bytes.
func appendHeader(b []byte, opcode byte, n int) []byte {
	b = append(b, finBit|opcode)
	switch {
	case n <= 125:
		return append(b, byte(n))
	case n <= 0xFFFF:
		return append(b, 126, byte(n>>8), byte(n))
	default:
		return append(b, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// frameWriter turns a batch of payloads into WebSocket frames written with as
// few system calls as possible: one writev on TCP, one copied buffer otherwise.
type frameWriter struct {
	headers []byte
	iov     net.Buffers
	flat    []byte
}

var writerPool = sync.Pool{New: func() any { return &frameWriter{} }}

// maxHeaderBytes is the longest header appendHeader writes.
const maxHeaderBytes = 10

// writeFrames writes every payload as one data frame to nc.
func writeFrames(nc net.Conn, opcode byte, payloads [][]byte) (int, error) {
	w := writerPool.Get().(*frameWriter)
	defer w.release()
	if _, ok := nc.(*net.TCPConn); !ok {
		for _, p := range payloads {
			w.flat = appendHeader(w.flat, opcode, len(p))
			w.flat = append(w.flat, p...)
		}
		return nc.Write(w.flat)
	}
	if need := len(payloads) * maxHeaderBytes; cap(w.headers) < need {
		w.headers = make([]byte, 0, need)
	}
	for _, p := range payloads {
		start := len(w.headers)
		w.headers = appendHeader(w.headers, opcode, len(p))
		w.iov = append(w.iov, w.headers[start:len(w.headers):len(w.headers)], p)
	}
	iov := w.iov // WriteTo consumes the slice header
	n, err := iov.WriteTo(nc)
	return int(n), err
}

func (w *frameWriter) release() {
	if cap(w.flat) > 64<<10 || cap(w.iov) > 4096 {
		return // let a burst's buffers go
	}
	clear(w.iov)
	w.iov, w.headers, w.flat = w.iov[:0], w.headers[:0], w.flat[:0]
	writerPool.Put(w)
}
