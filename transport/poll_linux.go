//go:build linux

package transport

import (
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// poller watches idle connections' sockets with one epoll instance, so an
// idle connection holds no goroutine: when a socket has input, the poller
// starts a reader goroutine for it, which reads what is there and hands the
// socket back (see wsConn.readSome). Registrations are one-shot: a socket
// reports once and is re-armed by its reader, so one reader at most runs per
// connection.
type poller struct {
	epfd, wake int
	mu         sync.Mutex
	conns      map[uint64]*wsConn // by token
	next       uint64
	done       chan struct{}
}

const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil { // token 0
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		return nil, err
	}
	p := &poller{epfd: epfd, wake: wake, conns: map[uint64]*wsConn{}, next: 1, done: make(chan struct{})}
	go p.loop() // owner: the server; joined by close
	return p, nil
}

func (p *poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			tok := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if tok == 0 {
				return // close
			}
			p.mu.Lock()
			c := p.conns[tok]
			p.mu.Unlock()
			if c != nil {
				c.schedule()
			}
		}
	}
}

// arm asks for the connection's next report (when input arrives), adding
// its socket (c.raw) to the epoll set the first time. It fails once the
// socket is closed. Only the connection's reader calls it.
func (p *poller) arm(c *wsConn) error {
	if c.pollToken != 0 {
		return p.ctl(c, unix.EPOLL_CTL_MOD)
	}
	p.mu.Lock()
	tok := p.next
	p.next++
	p.conns[tok] = c
	p.mu.Unlock()
	c.pollToken = tok
	if err := p.ctl(c, unix.EPOLL_CTL_ADD); err != nil {
		p.remove(c)
		return err
	}
	return nil
}

// remove forgets a connection; its socket leaves the epoll set when closed.
func (p *poller) remove(c *wsConn) {
	if c.pollToken == 0 {
		return // never added
	}
	_ = p.ctl(c, unix.EPOLL_CTL_DEL)
	p.mu.Lock()
	delete(p.conns, c.pollToken)
	p.mu.Unlock()
}

func (p *poller) ctl(c *wsConn, op int) error {
	ev := unix.EpollEvent{Events: pollEvents, Fd: int32(uint32(c.pollToken)), Pad: int32(uint32(c.pollToken >> 32))}
	var err error
	// Control holds the descriptor open while it runs, so its number cannot
	// name another socket meanwhile.
	if cerr := c.raw.Control(func(fd uintptr) { err = unix.EpollCtl(p.epfd, op, int(fd), &ev) }); cerr != nil {
		return cerr
	}
	return err
}

// close stops the poller. Connections still registered keep their sockets.
func (p *poller) close() {
	var one [8]byte
	one[0] = 1
	_, _ = unix.Write(p.wake, one[:])
	<-p.done
	_ = unix.Close(p.epfd)
	_ = unix.Close(p.wake)
}
