package transport

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hubbub-chat/hubbub/actors"
	"github.com/hubbub-chat/hubbub/internal/workers"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/telemetry"
	"github.com/hubbub-chat/hubbub/wire"
)

// wsConn is one WebSocket: the actors' Sink, the read loop and the write pump.
type wsConn struct {
	ws       *websocket.Conn
	nc       net.Conn
	enc      wire.Encoding
	opcode   byte
	deflate  bool // permessage-deflate was negotiated
	cfg      *Config
	log      *slog.Logger
	counters *telemetry.Counters

	q          outQueue
	pumping    atomic.Bool            // a pump goroutine is running
	pumps      sync.WaitGroup         // joins pump goroutines
	pumpExit   chan struct{}          // cap 1: a pump goroutine ended
	closed     atomic.Bool            // the close was written (or abandoned)
	pingDue    atomic.Bool            // the shared pinger asked for a ping
	pong       atomic.Pointer[[]byte] // a peer's ping to answer
	closeReq   atomic.Pointer[closeRequest]
	readerDone chan struct{} // closed when the read loop returns
	peerCode   atomic.Int32  // close code the peer sent, if any

	// With the poller (an idle connection holds no goroutine): the socket's
	// buffered reader (the one gorilla reads from), the registration, and
	// whether a reader goroutine runs.
	poll      atomic.Pointer[poller] // set once the connection is registered
	br        *bufio.Reader          // gorilla's reader; its buffer is lent from readers while input is read
	brLent    *bufio.Reader          // the pooled reader whose buffer br holds, nil while idle
	readers   *sync.Pool             // of *bufio.Reader
	raw       syscall.RawConn
	pollToken uint64
	reading   atomic.Bool
	lastRead  atomic.Int64       // Unix nanoseconds of the last input, for the keep-alive check
	h         *actors.ConnHandle // the connection actor's handle, for polled reads
	ended     func()             // the server's end of a polled connection
	run       *workers.Pool      // the server's goroutines for pumps and polled reads
	// when the pump last moved the write deadline (Unix nanoseconds); the pump's own
	deadlineSet int64
	// when the reader last read a burst of input (Unix nanoseconds); the reader's own
	lastBurst int64
}

type closeRequest struct {
	code   int
	reason string
	drain  bool // write what is queued first
	echo   bool // answering the peer's close: no Disconnect push
}

func newWSConn(ws *websocket.Conn, enc wire.Encoding, cfg *Config, log *slog.Logger, c *telemetry.Counters) *wsConn {
	w := &wsConn{
		ws: ws, nc: ws.NetConn(), enc: enc, opcode: opBinary, cfg: cfg, log: log, counters: c,
		readerDone: make(chan struct{}), pumpExit: make(chan struct{}, 1),
	}
	if enc == wire.JSON {
		w.opcode = opText
	}
	w.q.maxBytes = cfg.MaxQueuedBytes
	if tc, ok := w.nc.(interface{ SetWriteBuffer(int) error }); ok && cfg.SocketSendBuffer > 0 {
		_ = tc.SetWriteBuffer(cfg.SocketSendBuffer)
	}
	return w
}

// Encoding implements actors.Sink.
func (c *wsConn) Encoding() wire.Encoding { return c.enc }

// QueuedBytes is the bytes waiting in the outbound queue (the server API's Connections).
func (c *wsConn) QueuedBytes() int { return c.q.queued() }

// Send implements actors.Sink: it queues a reply without blocking.
func (c *wsConn) Send(frame []byte) error {
	return c.enqueue(item{b: frame})
}

// Push implements actors.Sink: it queues a room's push under the room's overflow policy.
func (c *wsConn) Push(frame []byte, p *actors.PushInfo) error {
	return c.enqueue(item{b: frame, info: p})
}

// PushRun implements actors.RunSink: a run of one room's pushes queued under
// one lock.
func (c *wsConn) PushRun(frames [][]byte, infos []*actors.PushInfo, errs []error) {
	wake, res, slow := c.q.pushRun(frames, infos, errs)
	c.queued(wake, res, slow)
}

func (c *wsConn) enqueue(it item) error {
	wake, res, err := c.q.push(it)
	c.queued(wake, res, errors.Is(err, ErrSlowConsumer))
	return err
}

// queued counts what a push did and wakes the pump or closes a slow consumer.
func (c *wsConn) queued(wake bool, res pushResult, slow bool) {
	if res.dropped > 0 {
		c.counters.OverflowDropped.Add(int64(res.dropped))
	}
	if res.conflated > 0 {
		c.counters.Conflated.Add(int64(res.conflated))
	}
	if slow {
		c.counters.SlowConsumers.Add(1)
		c.requestClose(wire.CloseSlowConsumer, wire.CloseReason(wire.CloseSlowConsumer), false)
		// A pump stuck writing to a peer that does not read gets a short
		// grace: a peer that reads again within it gets the Disconnect push
		// and the 4000 close frame; one that does not is dropped (TCP close),
		// as a write cut off mid-frame leaves nothing else to send.
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.cfg.SlowConsumerGrace))
		return
	}
	if wake {
		c.kick()
	}
}

// Close implements actors.Sink: queued frames are written, then a Disconnect
// push and a close frame with the code.
func (c *wsConn) Close(code int, reason string) { c.requestClose(code, reason, true) }

func (c *wsConn) requestClose(code int, reason string, drain bool) {
	c.setClose(&closeRequest{code: code, reason: reason, drain: drain})
}

func (c *wsConn) setClose(req *closeRequest) {
	if c.closeReq.CompareAndSwap(nil, req) {
		c.kick()
	}
}

// ping asks for a ping to be written (from the server's shared pinger).
func (c *wsConn) ping() {
	c.pingDue.Store(true)
	c.kick()
}

// kick makes sure a pump goroutine runs. An idle connection has none: only
// its reader goroutine.
func (c *wsConn) kick() {
	if c.pumping.CompareAndSwap(false, true) {
		c.pumps.Add(1)
		c.run.Go(c.pump) // owner: the connection's handler, which waits on c.pumps
	}
}

var readBufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// keepAlive is how long a silent peer is kept.
func (c *wsConn) keepAlive() time.Duration { return c.cfg.PingInterval + c.cfg.PongTimeout }

// extend moves the read deadline: input came.
func (c *wsConn) extend() {
	now := time.Now()
	c.lastRead.Store(now.UnixNano())
	_ = c.ws.SetReadDeadline(now.Add(c.keepAlive()))
}

func (c *wsConn) onPing(p []byte) {
	c.extend()
	b := append([]byte(nil), p...)
	c.pong.Store(&b)
	c.kick()
}

// setHandlers sets gorilla's control-frame handlers and read limit.
func (c *wsConn) setHandlers() {
	c.extend()
	c.ws.SetPongHandler(func(string) error { c.extend(); return nil })
	c.ws.SetPingHandler(func(p string) error { c.onPing([]byte(p)); return nil })
	c.ws.SetCloseHandler(func(code int, _ string) error {
		c.peerCode.Store(int32(code))
		return nil
	})
	// A backstop far above our own limit; gorilla answers it with 1009 itself.
	c.ws.SetReadLimit(int64(c.cfg.MaxFrameBytes)*4 + 4096)
}

// readLoop decodes client frames and hands them to the connection actor
// until the peer goes away, breaks the protocol or the connection closes.
func (c *wsConn) readLoop(h *actors.ConnHandle) {
	defer close(c.readerDone)
	c.setHandlers()
	for c.readMessage(h) {
	}
}

// readMessage reads one data message (and the control frames before it)
// and hands it on; false when reading has ended.
func (c *wsConn) readMessage(h *actors.ConnHandle) bool {
	mt, r, err := c.ws.NextReader()
	if err != nil {
		if code := int(c.peerCode.Load()); code != 0 {
			// Echo the peer's close (RFC 6455 section 5.5.1).
			c.setClose(&closeRequest{code: code, echo: true})
		}
		return false
	}
	c.extend()
	if c.closeReq.Load() == nil {
		c.readFrame(h, mt, r)
	} // else closing: discard until the peer's close reply or the deadline
	// Read the message to its end (a frame over the limit, or one discarded
	// while closing, was not), so the socket's buffer is at a frame boundary
	// for the polled reader's own look at the next header. gorilla bounds
	// the message with its read limit.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return c.readMessage(h) // gorilla reports the broken stream on the next read
	}
	return true
}

// schedule starts a reader goroutine for a polled connection unless one runs.
func (c *wsConn) schedule() {
	if c.reading.CompareAndSwap(false, true) {
		c.run.Go(c.readSome) // owner: the connection's poller registration; ends when the socket has nothing buffered
	}
}

// readSome reads what a polled socket has, then hands it back to the
// poller; when reading ends it ends the connection.
func (c *wsConn) readSome() {
	for {
		c.lendBuffer()
		if !c.readAvailable() {
			close(c.readerDone)
			c.ended() // reading stays true: no reader after the end
			return
		}
		// A connection that sent within the last wait keeps its reader for
		// the next input; one whose input is a single burst (a connect, a
		// device's report) hands the socket back at once.
		now := time.Now().UnixNano()
		busy := c.lastBurst != 0 && now-c.lastBurst < int64(c.idleWait())
		c.lastBurst = now
		if busy && c.awaitInput() {
			continue // a busy connection keeps its reader
		}
		c.returnBuffer()
		c.reading.Store(false) // before re-arming, so the next report starts a reader
		if c.poll.Load().arm(c) == nil {
			return
		}
		// The socket was closed: read again to see the end.
		if !c.reading.CompareAndSwap(false, true) {
			return
		}
	}
}

// readFirst serves a connection just upgraded. Its first input, the
// connect, is due within a round trip, so the upgrading goroutine waits for
// it in the runtime's own poller and reads it; the socket joins the epoll set
// only after that. A connection then costs no re-arm and no wake through the
// poller's thread on its way in.
func (c *wsConn) readFirst() {
	if c.br.Buffered() > 0 || c.awaitInput() {
		c.readSome()
		return
	}
	c.returnBuffer()
	c.reading.Store(false)
	if c.poll.Load().arm(c) != nil && c.reading.CompareAndSwap(false, true) {
		c.readSome() // closed meanwhile: read to see the end
	}
}

// idleReaderAfter is how long a polled connection's reader waits for more
// input (in the runtime's own poller, at no extra latency) before it hands
// the socket to the epoll set, when the connection also sent within the
// previous such wait. Connections that send often (publishers) keep a
// reader; idle ones hold none, and one that sends a single burst (a connect)
// does not hold a reader (and a timer) for the wait either. A wake from the epoll set passes
// through one more thread and the scheduler's run queue, which under load
// costs milliseconds, so only idle connections take that path.
const idleReaderAfter = 500 * time.Millisecond

func (c *wsConn) idleWait() time.Duration {
	if c.cfg.idleReaderAfter > 0 {
		return c.cfg.idleReaderAfter
	}
	return idleReaderAfter
}

// awaitInput waits up to idleReaderAfter for input; false when none came.
func (c *wsConn) awaitInput() bool {
	_ = c.nc.SetReadDeadline(time.Now().Add(c.idleWait()))
	_, err := c.br.Peek(1)
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout() // input, or an end readAvailable reports
}

// lendBuffer gives gorilla's reader a buffer for reading; returnBuffer takes
// it back once it is drained, so an idle connection holds no read buffer.
// gorilla keeps a pointer to br, so br's contents are swapped in place.
func (c *wsConn) lendBuffer() {
	if c.brLent != nil {
		return
	}
	p := c.readers.Get().(*bufio.Reader)
	p.Reset(c.nc)
	*c.br, c.brLent = *p, p
}

func (c *wsConn) returnBuffer() {
	if c.brLent == nil || c.br.Buffered() > 0 {
		return
	}
	*c.brLent = *c.br
	*c.br = bufio.Reader{}
	c.readers.Put(c.brLent)
	c.brLent = nil
}

// readAvailable reads frames until the socket's buffer is empty; false when
// reading has ended. A ping or pong that is whole in the buffer is answered
// here: gorilla would read on past it, waiting for a data message, and keep
// a goroutine for an idle connection.
func (c *wsConn) readAvailable() bool {
	for {
		c.extend()
		if _, err := c.br.Peek(1); err != nil {
			return c.readMessage(c.h) // reports the end (and a peer's close)
		}
		if ok, handled := c.controlFrame(); handled {
			if !ok {
				return false
			}
		} else if !c.readMessage(c.h) {
			return false
		}
		if c.br.Buffered() == 0 {
			return true
		}
	}
}

// controlFrame answers a ping or pong at the head of the buffer; handled is
// false for anything else (data, close, malformed), which gorilla reads.
func (c *wsConn) controlFrame() (ok, handled bool) {
	h, err := c.br.Peek(2)
	if err != nil {
		return false, false
	}
	op := h[0] & 0x0f
	n := int(h[1] & 0x7f)
	// FIN, no RSV bits, ping or pong, masked (as client frames are), short.
	if h[0]&0xf0 != 0x80 || (op != websocket.PingMessage && op != websocket.PongMessage) || h[1]&0x80 == 0 || n > 125 {
		return false, false
	}
	f, err := c.br.Peek(6 + n)
	if err != nil {
		return false, false // gorilla reads it and sees the error
	}
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = f[6+i] ^ f[2+i%4]
	}
	_, _ = c.br.Discard(6 + n)
	if op == websocket.PingMessage {
		c.onPing(payload)
	} else {
		c.extend()
	}
	return true, true
}

func (c *wsConn) readFrame(h *actors.ConnHandle, mt int, r io.Reader) {
	buf := readBufPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 {
			buf.Reset()
			readBufPool.Put(buf)
		}
	}()
	n, err := buf.ReadFrom(io.LimitReader(r, int64(c.cfg.MaxFrameBytes)+1))
	if err != nil {
		return // the next NextReader reports the broken connection
	}
	c.counters.FramesIn.Add(1)
	c.counters.BytesIn.Add(n)
	if n > int64(c.cfg.MaxFrameBytes) {
		c.counters.MalformedFrames.Add(1)
		c.requestClose(wire.CloseTooBig, wire.CloseReason(wire.CloseTooBig), true)
		return
	}
	if (mt == websocket.TextMessage) != (c.enc == wire.JSON) {
		c.counters.MalformedFrames.Add(1)
		c.requestClose(wire.CloseUnsupportedData, wire.CloseReason(wire.CloseUnsupportedData), true)
		return
	}
	f, err := wire.DecodeClientFrame(buf.Bytes(), c.enc)
	if err != nil {
		c.counters.MalformedFrames.Add(1)
		c.requestClose(wire.CloseInvalidPayload, wire.CloseReason(wire.CloseInvalidPayload), true)
		return
	}
	h.Receive(f, int(n))
}

// pump is the only writer of the socket while it runs. It writes what is
// due (pong, ping, queued frames, close) and exits when nothing is; kick
// starts the next one.
func (c *wsConn) pump() {
	defer func() {
		select {
		case c.pumpExit <- struct{}{}:
		default:
		}
	}()
	defer c.pumps.Done()
	for {
		if c.closeReq.Load() != nil {
			c.finishClose()
			c.closed.Store(true)
			return // pumping stays true: no pump after the close
		}
		if c.writeDue() != nil {
			c.abort()
			c.closed.Store(true)
			return // the connection is broken; pumping stays true
		}
		c.pumping.Store(false)
		if !c.hasWork() || !c.pumping.CompareAndSwap(false, true) {
			return
		}
	}
}

// writeDue writes a pending pong, a due ping and the queue.
func (c *wsConn) writeDue() error {
	if p := c.pong.Swap(nil); p != nil {
		if err := c.ws.WriteControl(websocket.PongMessage, *p, time.Now().Add(c.cfg.WriteTimeout)); err != nil {
			return err
		}
	}
	if c.pingDue.Swap(false) {
		if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.cfg.WriteTimeout)); err != nil {
			return err
		}
	}
	return c.flush()
}

func (c *wsConn) hasWork() bool {
	return c.closeReq.Load() != nil || c.pingDue.Load() || c.pong.Load() != nil || c.q.queued() > 0
}

// flush writes everything queued.
func (c *wsConn) flush() error {
	batch := c.q.take()
	if len(batch) == 0 {
		return nil
	}
	payloads := payloadPool.Get().(*[][]byte)
	for _, it := range batch {
		if it.b != nil { // skip conflated tombstones
			*payloads = append(*payloads, it.b)
		}
	}
	frames, opcode := *payloads, c.opcode
	if c.deflate {
		d := getDeflater(c.cfg.CompressionLevel)
		defer d.release()
		frames = make([][]byte, 0, len(frames))
		for _, it := range batch {
			switch {
			case it.b == nil:
			case it.room() != "": // a room's push: the same bytes go to every member
				frames = append(frames, pushZ.get(it.b, c.cfg.CompressionLevel, d))
			default:
				frames = append(frames, d.compressOne(it.b))
			}
		}
		opcode |= rsv1Bit
	}
	// Moving the socket's deadline is a runtime timer update (and deep
	// enough to grow a fresh goroutine's stack): at fan-out rates it is done
	// once per quarter of the write timeout, so a write always has at least
	// three quarters of it.
	if now := time.Now().UnixNano(); now-c.deadlineSet > int64(c.cfg.WriteTimeout/4) {
		_ = c.nc.SetWriteDeadline(time.Unix(0, now).Add(c.cfg.WriteTimeout))
		c.deadlineSet = now
	}
	n, err := writeFrames(c.nc, opcode, frames)
	outcome := actors.OutcomeWritten
	if err != nil {
		outcome = actors.OutcomeGone
	}
	resolveAll(batch, outcome)
	c.counters.FramesOut.Add(int64(len(*payloads)))
	c.counters.SocketWrites.Add(1)
	c.counters.BytesOut.Add(int64(n))
	clear(*payloads)
	if cap(*payloads) <= 4096 {
		*payloads = (*payloads)[:0]
		payloadPool.Put(payloads)
	}
	c.q.recycle(batch)
	return err
}

var payloadPool = sync.Pool{New: func() any { return new([][]byte) }}

// finishClose writes the queue (or drops it), a Disconnect push and the close
// frame, then waits for the peer's close reply for at most CloseTimeout.
func (c *wsConn) finishClose() {
	req := c.closeReq.Load()
	c.q.close(!req.drain)
	if req.drain && c.flush() != nil {
		c.abort()
		return
	}
	if req.echo {
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(req.code, ""), time.Now().Add(c.cfg.WriteTimeout))
		return
	}
	writeTimeout := c.cfg.WriteTimeout
	if req.code == wire.CloseSlowConsumer {
		writeTimeout = c.cfg.SlowConsumerGrace // the queue is discarded: only the close is left to write
	}
	disc := &hubbubv1.ServerFrame{Body: &hubbubv1.ServerFrame_Disconnect{Disconnect: &hubbubv1.Disconnect{
		Code: uint32(req.code), Reason: req.reason, Reconnect: wire.Reconnect(req.code),
	}}}
	if b, err := wire.Marshal(disc, c.enc); err == nil {
		_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		n, err := writeFrames(c.nc, c.opcode, [][]byte{b})
		if err != nil {
			c.abort()
			return
		}
		c.counters.FramesOut.Add(1)
		c.counters.SocketWrites.Add(1)
		c.counters.BytesOut.Add(int64(n))
	}
	reason := req.reason
	if len(reason) > 120 {
		reason = reason[:120]
	}
	deadline := time.Now().Add(writeTimeout)
	if c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(req.code, reason), deadline) != nil {
		c.abort()
		return
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(c.cfg.CloseTimeout))
	select {
	case <-c.readerDone:
	case <-time.After(c.cfg.CloseTimeout + time.Second):
	}
	if c.poll.Load() != nil {
		c.abort() // no reader waits on a polled socket for its deadline
	}
}

// abort drops the TCP connection, which ends the read loop.
func (c *wsConn) abort() {
	c.q.close(true)
	_ = c.nc.Close()
	if c.poll.Load() != nil {
		c.schedule() // a closed socket leaves the epoll set without a report
	}
}

// closeCode is the code this connection ended with, for counting.
func (c *wsConn) closeCode() int {
	if req := c.closeReq.Load(); req != nil && !req.echo {
		return req.code
	}
	if req := c.closeReq.Load(); req != nil {
		return req.code
	}
	if code := c.peerCode.Load(); code != 0 {
		return int(code)
	}
	return websocket.CloseAbnormalClosure
}

// stopPumps keeps any new pump from starting and waits for a running one.
// The handler calls it once the read loop has ended.
func (c *wsConn) stopPumps() {
	for !c.pumping.CompareAndSwap(false, true) && !c.closed.Load() {
		select {
		case <-c.pumpExit:
		case <-time.After(10 * time.Millisecond):
		}
	}
	c.pumps.Wait()
}
