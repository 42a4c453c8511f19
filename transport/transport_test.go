package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/hubbub-chat/hubbub/actors"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// protoactor's dead-letter throttle parks a goroutine for one throttle
// interval (1s) after a dead letter; it ends by itself.
var ignoreThrottle = goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, ignoreThrottle) }

func TestOutQueueBoundsBytes(t *testing.T) {
	q := outQueue{maxBytes: 10}
	push := func(n int) (bool, error) {
		wake, _, err := q.push(item{b: make([]byte, n)})
		return wake, err
	}
	if wake, err := push(4); !wake || err != nil {
		t.Fatalf("first push: %v %v", wake, err)
	}
	if wake, err := push(4); wake || err != nil {
		t.Fatalf("second push: %v %v", wake, err)
	}
	if q.queued() != 8 {
		t.Fatalf("queued %d", q.queued())
	}
	batch := q.take()
	if len(batch) != 2 || q.queued() != 0 {
		t.Fatalf("take %d, left %d", len(batch), q.queued())
	}
	q.recycle(batch)
	if wake, err := push(10); !wake || err != nil {
		t.Fatalf("push after take: %v %v", wake, err)
	}
	if _, err := push(1); !errors.Is(err, ErrSlowConsumer) {
		t.Fatalf("overflow: %v", err)
	}
	if _, err := push(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("after overflow: %v", err)
	}
}

// A run pushed at once gets, push by push, what single pushes would: the
// wake-up once, conflation within the run, drop-oldest, and under the
// disconnect policy the overflow and then a closed queue.
func TestOutQueuePushRunMatchesPushes(t *testing.T) {
	infos := func(policy actors.Overflow, keys ...string) []*actors.PushInfo {
		out := make([]*actors.PushInfo, len(keys))
		for i, k := range keys {
			out[i] = &actors.PushInfo{Room: "r", Key: k, Policy: policy}
		}
		return out
	}
	frames := func(ss ...string) [][]byte {
		out := make([][]byte, len(ss))
		for i, s := range ss {
			out[i] = []byte(s)
		}
		return out
	}
	q := outQueue{maxBytes: 10}
	errs := make([]error, 3)
	wake, res, slow := q.pushRun(frames("a1", "b1", "a2"), infos(actors.OverflowConflate, "a", "b", "a"), errs)
	if !wake || slow || res.conflated != 1 || errs[0] != nil || errs[1] != nil || errs[2] != nil {
		t.Fatalf("conflate run: wake %v slow %v %+v %v", wake, slow, res, errs)
	}
	if wake, _, _ := q.pushRun(frames("c1"), infos(actors.OverflowConflate, "c"), errs[:1]); wake {
		t.Fatal("a run onto a queue that holds pushes woke the pump again")
	}
	if got := texts(q.take()); got != "b1,a2,c1" {
		t.Fatalf("conflated run left %q", got)
	}
	q = outQueue{maxBytes: 6}
	_, res, _ = q.pushRun(frames("aaa", "bbb", "ccc"), infos(actors.OverflowDropOldest, "", "", ""), errs)
	if res.dropped != 1 || errs[2] != nil {
		t.Fatalf("drop-oldest run: %+v %v", res, errs)
	}
	if got := texts(q.take()); got != "bbb,ccc" {
		t.Fatalf("drop-oldest run left %q", got)
	}
	q = outQueue{maxBytes: 6}
	_, _, slow = q.pushRun(frames("aaa", "bbb", "ccc"), infos(actors.OverflowDisconnect, "", "", ""), errs)
	if !slow || errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], ErrSlowConsumer) {
		t.Fatalf("disconnect run: slow %v %v", slow, errs)
	}
	if _, _, _ = q.pushRun(frames("d"), infos(actors.OverflowDisconnect, ""), errs[:1]); !errors.Is(errs[0], ErrClosed) {
		t.Fatalf("after the overflow: %v", errs[0])
	}
}

func texts(batch []item) string {
	var out []string
	for _, it := range batch {
		if it.b != nil {
			out = append(out, string(it.b))
		}
	}
	return strings.Join(out, ",")
}

func TestOutQueueDropOldest(t *testing.T) {
	q := outQueue{maxBytes: 7}
	push := func(room, s string) (pushResult, error) {
		_, res, err := q.push(item{b: []byte(s), info: &actors.PushInfo{Room: room, Policy: actors.OverflowDropOldest}})
		return res, err
	}
	_, _, _ = q.push(item{b: []byte("R1")}) // a reply: never evicted
	_, _ = push("a", "a1")
	_, _ = push("b", "b1")
	res, err := push("a", "a2") // full: a1 goes
	if err != nil || res.dropped != 1 {
		t.Fatalf("res %+v err %v", res, err)
	}
	if res, err := push("a", "a3-too-big"); !errors.Is(err, actors.ErrDropped) || res.dropped < 1 {
		t.Fatalf("oversized: %+v %v", res, err)
	}
	if got := texts(q.take()); !strings.HasPrefix(got, "R1,b1") {
		t.Fatalf("queue %s", got)
	}
}

func TestOutQueueConflate(t *testing.T) {
	q := outQueue{maxBytes: 1 << 10}
	push := func(key, s string) pushResult {
		_, res, err := q.push(item{b: []byte(s), info: &actors.PushInfo{Room: "m", Key: key, Policy: actors.OverflowConflate}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	push("x", "x1")
	push("y", "y1")
	if res := push("x", "x2"); res.conflated != 1 {
		t.Fatalf("res %+v", res)
	}
	push("y", "y2")
	push("x", "x3")
	if got := texts(q.take()); got != "y2,x3" {
		t.Fatalf("queue %s", got)
	}
	// After a take the index starts over.
	push("x", "x4")
	if got := texts(q.take()); got != "x4" {
		t.Fatalf("queue %s", got)
	}
}

func TestAppendHeaderLengths(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{{0, "8200"}, {125, "827d"}, {126, "827e007e"}, {65535, "827effff"}, {65536, "827f0000000000010000"}} {
		if got := fmt.Sprintf("%x", appendHeader(nil, opBinary, tc.n)); got != tc.want {
			t.Fatalf("len %d: %s want %s", tc.n, got, tc.want)
		}
	}
}

// Frames written by the pump decode in a real WebSocket client at every
// header length boundary, in both encodings.
func TestPumpFramesReadByGorilla(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprint("compression=", compress), func(t *testing.T) { testPumpFrames(t, compress) })
	}
}

func testPumpFrames(t *testing.T, compress bool) {
	node := actors.NewNode(actors.Config{Conn: actors.ConnConfig{MaxMessageBytes: 200 << 10}}, actors.Options{})
	srv := NewServer(node, Config{MaxFrameBytes: 256 << 10, Compression: compress}, nil)
	hs := httptest.NewServer(srv.Handler())
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		hs.Close()
	}()
	sizes := []int{0, 1, 100, 125, 126, 127, 1000, 65535, 65536, 70000, 150000}
	for _, enc := range []wire.Encoding{wire.Proto, wire.JSON} {
		d := websocket.Dialer{Subprotocols: []string{enc.String()}, EnableCompression: compress}
		ws, _, err := d.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		send := func(f *hubbubv1.ClientFrame) {
			b, _ := wire.Marshal(f, enc)
			mt := websocket.BinaryMessage
			if enc == wire.JSON {
				mt = websocket.TextMessage
			}
			if err := ws.WriteMessage(mt, b); err != nil {
				t.Fatal(err)
			}
		}
		send(&hubbubv1.ClientFrame{Id: 1, Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: "f"}}})
		send(&hubbubv1.ClientFrame{Id: 2, Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "frames-" + enc.String()}}})
		for _, n := range sizes {
			send(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Publish{Publish: &hubbubv1.PublishRequest{
				Room: "frames-" + enc.String(), Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: strings.Repeat("y", n)}}}}})
		}
		var got []int
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for len(got) < len(sizes) {
			_, b, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("%v: read after %v: %v", enc, got, err)
			}
			f, err := wire.DecodeServerFrame(b, enc)
			if err != nil {
				t.Fatal(err)
			}
			if m := f.GetMessage(); m != nil {
				got = append(got, len(m.GetBody().GetText()))
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(sizes) {
			t.Fatalf("%v: sizes %v", enc, got)
		}
		_ = ws.Close()
	}
	// Repetitive payloads shrink on the wire only with compression.
	total := 0
	for _, n := range sizes {
		total += 2 * n
	}
	out := node.Counters().BytesOut.Load()
	if compress != (out < int64(total/4)) {
		t.Fatalf("compression %v: %d bytes out for %d payload bytes", compress, out, total)
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(b testing.TB) (net.Conn, net.Conn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	c1, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	c2, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	return c1, c2
}

// TestWriteFramesMixedSizes writes a batch that mixes payloads copied into the
// write buffer with ones written from their own memory, over TCP (writev)
// and over a pipe (one buffer), and reads every frame back intact and in order.
func TestWriteFramesMixedSizes(t *testing.T) {
	sizes := []int{0, 5, 125, 126, copyMax, copyMax + 1, 10, 70000, 65535, 65536, 3, copyMax + 1, copyMax + 1, 1}
	payloads := make([][]byte, len(sizes))
	total := 0
	for i, n := range sizes {
		payloads[i] = make([]byte, n)
		for j := range payloads[i] {
			payloads[i][j] = byte(i*31 + j)
		}
		total += n
	}
	tcpW, tcpR := tcpPair(t)
	pipeW, pipeR := net.Pipe()
	for _, pair := range [][2]net.Conn{{tcpW, tcpR}, {pipeW, pipeR}} {
		w, r := pair[0], pair[1]
		errc := make(chan error, 1)
		go func() { // owner: this test; ends after one batch
			_, err := writeFrames(w, opBinary, payloads)
			errc <- err
		}()
		for i, want := range payloads {
			var h [2]byte
			if _, err := io.ReadFull(r, h[:]); err != nil {
				t.Fatal(err)
			}
			if h[0] != finBit|opBinary || h[1]&0x80 != 0 {
				t.Fatalf("frame %d: header %x", i, h)
			}
			n := int(h[1])
			switch n {
			case 126:
				var ext [2]byte
				_, _ = io.ReadFull(r, ext[:])
				n = int(ext[0])<<8 | int(ext[1])
			case 127:
				var ext [8]byte
				_, _ = io.ReadFull(r, ext[:])
				n = 0
				for _, b := range ext {
					n = n<<8 | int(b)
				}
			}
			got := make([]byte, n)
			if _, err := io.ReadFull(r, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%T frame %d: %d bytes, want %d (or different content)", w, i, n, len(want))
			}
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		_ = w.Close()
		_ = r.Close()
	}
}

// BenchmarkWriteFrames measures the write path: a batch of shared 128-byte
// payloads written as frames with one writev.
func BenchmarkWriteFrames(b *testing.B) {
	for _, batch := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			w, r := tcpPair(b)
			defer w.Close()
			go func() { _, _ = io.Copy(io.Discard, r) }() // owner: this benchmark; ends when w closes
			defer r.Close()
			payload := make([]byte, 128)
			payloads := make([][]byte, batch)
			for i := range payloads {
				payloads[i] = payload
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := writeFrames(w, opBinary, payloads); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "frames/s")
		})
	}
}
