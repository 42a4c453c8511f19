package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hubbub-chat/hubbub/actors"
	hubclient "github.com/hubbub-chat/hubbub/client"
	"github.com/hubbub-chat/hubbub/internal/testproxy"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

// The member-set checker: 200 members join, leave, reconnect, close and drop
// their sockets, and member processes are killed with SIGKILL, while 50
// observers (the Go client keeping the member list) have their connections
// cut and reconnect. Every observer checks its list against the room's
// digest and user count at every diff it applies; at the end every list is
// the room's true member set.
func TestMemberSetChecker(t *testing.T) {
	s := startServer(t, actors.Config{Room: actors.RoomConfig{PresenceInterval: 50 * time.Millisecond}}, transport.Config{})
	checkMemberSets(t, []string{s.URL})
}

// The same across three nodes (separate processes): members and observers
// spread over the nodes, the room on one of them.
func TestClusterMemberSetChecker(t *testing.T) {
	nodes := startCluster(t, 3, "--presence-interval", "50ms")
	checkMemberSets(t, []string{nodes[0].URL, nodes[1].URL, nodes[2].URL})
}

const (
	checkerRoom      = "crowd"
	checkerMembers   = 200
	checkerUsers     = 150 // members 150-199 are second connections of users 0-49
	checkerObservers = 50
	checkerProcesses = 4
	checkerChurn     = 3 * time.Second
)

func checkMemberSets(t *testing.T, urls []string) {
	observers := startObservers(t, urls)
	procs := startChatMembers(t, urls)
	var churnErrs atomic.Int64
	members := runChurn(t, urls, &churnErrs, func(stop <-chan struct{}) int { return cutObservers(observers, stop) }, procs)
	defer func() {
		for _, m := range members {
			m.end(false)
		}
	}()
	want := map[string]bool{}
	for _, m := range members {
		if m.joined {
			want[m.user] = true
		}
	}
	for i := range observers {
		want[fmt.Sprint("observer", i)] = true // observers are members too
	}
	for i, p := range procs {
		if i%2 == 1 { // the odd ones were killed
			continue
		}
		want[p.user] = true
	}
	wantList := slices.Sorted(func(yield func(string) bool) {
		for u := range want {
			if !yield(u) {
				return
			}
		}
	})
	var total hubclient.PresenceStats
	for i, o := range observers {
		deadline := time.Now().Add(waitFor)
		for !slices.Equal(o.sub.Members(), wantList) {
			if time.Now().After(deadline) {
				got := o.sub.Members()
				t.Fatalf("observer %d: %d users, want %d: missing %v, extra %v (%+v)", i, len(got), len(wantList),
					setMinus(wantList, got), setMinus(got, wantList), o.sub.PresenceStats())
			}
			time.Sleep(5 * time.Millisecond)
		}
		st := o.sub.PresenceStats()
		if st.Mismatches != 0 || st.Verified == 0 {
			t.Errorf("observer %d: %+v", i, st)
		}
		total.Diffs += st.Diffs
		total.Loads += st.Loads
		total.Verified += st.Verified
		total.Mismatches += st.Mismatches
	}
	cuts := int(observers[0].cuts.Load())
	for _, o := range observers[1:] {
		cuts += int(o.cuts.Load())
	}
	t.Logf("%d users at the end; churn errors %d; observers: %d cuts, %+v", len(wantList), churnErrs.Load(), cuts, total)
	if cuts == 0 || total.Loads >= uint64(checkerObservers+cuts) {
		t.Errorf("observers reloaded the list %d times for %d cuts: no rejoin recovered the missed diffs", total.Loads, cuts)
	}
}

type observer struct {
	proxy *testproxy.Proxy
	cl    *hubclient.Client
	sub   *hubclient.Subscription
	cuts  atomic.Int64
}

func startObservers(t *testing.T, urls []string) []*observer {
	out := make([]*observer, checkerObservers)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for i := range out {
		u, err := url.Parse(urls[i%len(urls)])
		if err != nil {
			t.Fatal(err)
		}
		o := &observer{proxy: testproxy.New(t, u.Host)}
		o.cl = hubclient.New(hubclient.Config{URL: "ws://" + o.proxy.Addr() + "/ws", Encoding: []wire.Encoding{wire.Proto, wire.JSON}[i%2],
			Name: fmt.Sprint("observer", i), TrackMembers: true, MinReconnectDelay: 20 * time.Millisecond, MaxReconnectDelay: 100 * time.Millisecond})
		t.Cleanup(func() { _ = o.cl.Close() })
		if err := o.cl.Connect(ctx); err != nil {
			t.Fatalf("observer %d: %v", i, err)
		}
		if o.sub, err = o.cl.Join(ctx, checkerRoom); err != nil {
			t.Fatalf("observer %d: %v", i, err)
		}
		go func() { // owner: the observer; ends when Close closes the events
			for range o.sub.Events() {
			}
		}()
		out[i] = o
	}
	return out
}

// cutObservers cuts the connections of a few observers at a time until stop.
func cutObservers(observers []*observer, stop <-chan struct{}) int {
	n := 0
	tick := time.NewTicker(150 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return n
		case <-tick.C:
			for range 5 {
				o := observers[rand.IntN(len(observers))]
				o.proxy.Cut()
				o.cuts.Add(1)
				n++
			}
		}
	}
}

// chatMember is a `hubbub chat` process in the room.
type chatMember struct {
	user string
	cmd  *exec.Cmd
	in   io.WriteCloser
}

func startChatMembers(t *testing.T, urls []string) []*chatMember {
	out := make([]*chatMember, checkerProcesses)
	for i := range out {
		m := &chatMember{user: fmt.Sprint("proc", i)}
		m.cmd = exec.Command(hubbubBinary(t), "chat", "--url", urls[i%len(urls)], "--room", checkerRoom, "--name", m.user)
		var err error
		if m.in, err = m.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := m.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.cmd.Process.Kill(); _ = m.cmd.Wait() })
		out[i] = m
	}
	return out
}

// runChurn drives the members for checkerChurn; halfway through it kills the
// odd chat processes with SIGKILL. It returns the members as they ended.
func runChurn(t *testing.T, urls []string, errs *atomic.Int64, during func(stop <-chan struct{}) int, procs []*chatMember) []*rawMember {
	members := make([]*rawMember, checkerMembers)
	for i := range members {
		members[i] = &rawMember{user: fmt.Sprint("u", i%checkerUsers), url: urls[i%len(urls)], enc: []wire.Encoding{wire.Proto, wire.JSON}[i%2]}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); during(stop) }() // owner: runChurn; joined below
	const workers = 8
	for w := range workers {
		wg.Add(1)
		go func() { // owner: runChurn; joined below
			defer wg.Done()
			mine := members[w*checkerMembers/workers : (w+1)*checkerMembers/workers]
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := mine[rand.IntN(len(mine))].step(); err != nil {
					errs.Add(1)
				}
				time.Sleep(time.Duration(rand.IntN(10)) * time.Millisecond)
			}
		}()
	}
	time.Sleep(checkerChurn / 2)
	for i, p := range procs {
		if i%2 == 1 {
			if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Error(err)
			}
		}
	}
	time.Sleep(checkerChurn / 2)
	close(stop)
	wg.Wait()
	return members
}

// rawMember is a member on its own WebSocket, driven by one worker.
type rawMember struct {
	user, url string
	enc       wire.Encoding
	ws        *websocket.Conn
	replies   chan *hubbubv1.ServerFrame
	done      chan struct{}
	nextID    uint64
	joined    bool
}

// step does one random thing: connect and join, leave, close, drop the socket or rejoin.
func (m *rawMember) step() error {
	if m.ws == nil {
		if err := m.open(); err != nil {
			return err
		}
	}
	if !m.joined {
		_, err := m.do(joinFrame(checkerRoom, nil))
		m.joined = err == nil
		return err
	}
	switch rand.IntN(4) {
	case 0:
		_, err := m.do(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: checkerRoom}}})
		m.joined = false
		return err
	case 1:
		m.end(true)
	case 2:
		m.end(false)
	}
	return nil
}

func (m *rawMember) open() error {
	d := *websocket.DefaultDialer
	d.Subprotocols, d.HandshakeTimeout = []string{m.enc.String()}, 5*time.Second
	ws, _, err := d.Dial(m.url, nil)
	if err != nil {
		return err
	}
	m.ws, m.replies, m.done, m.nextID = ws, make(chan *hubbubv1.ServerFrame, 16), make(chan struct{}), 0
	go m.read(ws, m.replies, m.done) // owner: the member; joined in end
	if _, err := m.do(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Name: m.user}}}); err != nil {
		m.end(false)
		return err
	}
	return nil
}

func (m *rawMember) read(ws *websocket.Conn, replies chan<- *hubbubv1.ServerFrame, done chan<- struct{}) {
	defer close(done)
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if f, err := wire.DecodeServerFrame(data, m.enc); err == nil && f.GetId() != 0 {
			select {
			case replies <- f: // one request at a time: at most one reply waits
			default:
			}
		}
	}
}

func (m *rawMember) do(f *hubbubv1.ClientFrame) (*hubbubv1.ServerFrame, error) {
	m.nextID++
	f.Id = m.nextID
	b, err := wire.Marshal(f, m.enc)
	if err != nil {
		return nil, err
	}
	_ = m.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := m.ws.WriteMessage(messageType(m.enc), b); err != nil {
		return nil, err
	}
	timeout := time.After(waitFor)
	for {
		select {
		case r := <-m.replies:
			if r.GetId() != f.Id {
				continue
			}
			if e := r.GetError(); e != nil {
				return r, fmt.Errorf("%v: %s", e.GetCode(), e.GetMessage())
			}
			return r, nil
		case <-m.done:
			return nil, errors.New("connection ended")
		case <-timeout:
			return nil, errors.New("no reply")
		}
	}
}

// end closes the connection with a close frame (graceful) or by dropping the
// TCP connection, and waits for the reader.
func (m *rawMember) end(graceful bool) {
	if m.ws == nil {
		return
	}
	if graceful {
		_ = m.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	}
	_ = m.ws.NetConn().Close()
	<-m.done
	m.ws, m.joined = nil, false
}

// setMinus returns the elements of a not in b.
func setMinus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
