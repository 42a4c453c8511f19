// Package testproxy is a TCP forwarder on 127.0.0.1 for tests that break
// connections the way a network does.
//
// # Concurrency
//
// A Proxy runs an accept goroutine and two copying goroutines per
// connection, all joined by Close (registered with t.Cleanup by New). Its
// methods and fields may be used from any goroutine.
package testproxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a TCP forwarder on 127.0.0.1 that a test can cut, pause and make
// deaf.
type Proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
	// Paused refuses new connections.
	Paused atomic.Bool
	// Deaf drops the bytes from the server to the client.
	Deaf atomic.Bool
	// Accepted counts the connections forwarded.
	Accepted atomic.Int64
}

// New starts a proxy to target (host:port), closed when the test ends.
func New(t testing.TB, target string) *Proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{l: l, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept() // owner: the proxy; joined by close
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		if p.Paused.Load() {
			_ = c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.Accepted.Add(1)
		p.mu.Lock()
		p.conns[c], p.conns[s] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(s, c, nil)     // owner: the proxy; client to server
		go p.pipe(c, s, &p.Deaf) // owner: the proxy; server to client
	}
}

func (p *Proxy) pipe(dst, src net.Conn, deaf *atomic.Bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && (deaf == nil || !deaf.Load()) {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if err != io.EOF {
				_ = src.Close()
			}
			_ = dst.Close()
			return
		}
	}
}

// Cut closes every proxied connection.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

// Close stops the proxy and cuts its connections.
func (p *Proxy) Close() {
	_ = p.l.Close()
	p.Cut()
	p.wg.Wait()
}
