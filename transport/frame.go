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

// frameWriter turns a batch of payloads into WebSocket frames written with one
// system call. Small payloads are copied next to their headers into one
// buffer: the kernel's send path pays per iovec (a copy call, a page-fragment
// check and accounting for each), so a batch of 60 pushes of 200 bytes costs
// far less as one 12 KB iovec than as 120 small ones; copying them here is a
// few nanoseconds each. Large payloads are not copied but written from where
// they are, between the buffer's runs.
type frameWriter struct {
	iov  net.Buffers
	flat []byte
}

var writerPool = sync.Pool{New: func() any { return &frameWriter{} }}

// maxHeaderBytes is the longest header appendHeader writes.
const maxHeaderBytes = 10

// copyMax is the largest payload copied into the write buffer; larger ones
// are written from their own memory.
const copyMax = 4096

// writeFrames writes every payload as one data frame to nc.
func writeFrames(nc net.Conn, opcode byte, payloads [][]byte) (int, error) {
	w := writerPool.Get().(*frameWriter)
	defer w.release()
	_, vectored := nc.(*net.TCPConn)
	need := 0
	for _, p := range payloads {
		need += maxHeaderBytes
		if len(p) <= copyMax || !vectored {
			need += len(p)
		}
	}
	if cap(w.flat) < need {
		w.flat = make([]byte, 0, need)
	}
	run := 0 // where the buffer's current run starts
	for _, p := range payloads {
		w.flat = appendHeader(w.flat, opcode, len(p))
		if len(p) <= copyMax || !vectored {
			w.flat = append(w.flat, p...)
			continue
		}
		w.iov = append(w.iov, w.flat[run:len(w.flat):len(w.flat)], p)
		run = len(w.flat)
	}
	if len(w.iov) == 0 {
		return nc.Write(w.flat)
	}
	if run < len(w.flat) {
		w.iov = append(w.iov, w.flat[run:])
	}
	iov := w.iov // WriteTo consumes the slice header
	n, err := iov.WriteTo(nc)
	return int(n), err
}

func (w *frameWriter) release() {
	if cap(w.flat) > 256<<10 || cap(w.iov) > 4096 {
		return // let a burst's buffers go
	}
	clear(w.iov)
	w.iov, w.flat = w.iov[:0], w.flat[:0]
	writerPool.Put(w)
}
