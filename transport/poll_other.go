//go:build !linux

package transport

import "errors"

// poller is Linux-only (epoll); elsewhere every connection reads on a
// goroutine of its own.
type poller struct{}

func newPoller() (*poller, error) { return nil, errors.New("no epoll on this system") }

func (p *poller) arm(*wsConn) error { return errors.New("no epoll on this system") }
func (p *poller) remove(*wsConn)    {}
func (p *poller) close()            {}
