package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// Options configure a scenario. Zero values take the defaults noted.
type Options struct {
	URL       string // server WebSocket URL, default ws://127.0.0.1:8080/ws
	ServerPID int    // server process to read CPU and RSS of (0: none)

	Subscribers int           // fanout: subscribers in the room (1000)
	Publishers  int           // fanout, rooms: publishing connections (10)
	Rate        float64       // fanout: total publishes per second (1000)
	Size        int           // payload bytes (128)
	Duration    time.Duration // how long publishing runs (10s)
	SlowReaders int           // fanout: subscribers that read one message per 50ms

	StartRate float64       // maxtp: first rate (1000)
	MaxRate   float64       // maxtp: stop past this rate (1e6)
	Step      float64       // maxtp: rate multiplier per step (1.5)
	P99Bound  time.Duration // maxtp: highest acceptable p99 (250ms)

	Rooms        int     // rooms: number of rooms (1000)
	Members      int     // rooms: members per room (10)
	RoomsPerConn int     // rooms: memberships per subscriber connection (100)
	RatePerRoom  float64 // rooms: publishes per second per room (1)

	Conns int // idle, storm: connections (1000); churn: stable subscribers (10)
	// idle: connect only, joining no room (by default each connection joins
	// one of 100 rooms).
	ConnectOnly bool
	Dialers     int // concurrent dialers (50)
	Workers     int // churn: connect/join/leave/disconnect loops (20)

	Compression bool // offer permessage-deflate

	// fanout, maxtp: how subscribers speak (publishers speak protobuf).
	Encoding wire.Encoding // wire.Proto (default) or wire.JSON
	Compact  bool          // ask for compact pushes
	Devices  int           // direct: connections of the user receiving direct messages (3)
	// fanout: every subscriber acks every message it gets (AckRequest), as
	// an application that reports delivery would.
	Ack bool

	APIURL string // api: the server API's base URL, e.g. http://127.0.0.1:8081
	APIKey string // api: a key with the publish scope
	Batch  int    // api: messages per BatchPublish (100)

	Progress io.Writer // progress lines, nil for none
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	deff := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	if o.URL == "" {
		o.URL = "ws://127.0.0.1:8080/ws"
	}
	def(&o.Subscribers, 1000)
	def(&o.Publishers, 10)
	deff(&o.Rate, 1000)
	def(&o.Size, 128)
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	deff(&o.StartRate, 1000)
	deff(&o.MaxRate, 1e6)
	deff(&o.Step, 1.5)
	if o.P99Bound <= 0 {
		o.P99Bound = 250 * time.Millisecond
	}
	def(&o.Rooms, 1000)
	def(&o.Members, 10)
	def(&o.RoomsPerConn, 100)
	deff(&o.RatePerRoom, 1)
	def(&o.Conns, 1000)
	def(&o.Dialers, 50)
	def(&o.Workers, 20)
	def(&o.Batch, 100)
	return o
}

// Result is one scenario's measurements.
type Result struct {
	Scenario            string  `json:"scenario"`
	Params              string  `json:"params"`
	DurationSec         float64 `json:"duration_s"`
	Published           int64   `json:"published,omitempty"`
	PublishErrors       int64   `json:"publish_errors,omitempty"`
	Deliveries          int64   `json:"deliveries,omitempty"`
	BytesPerDelivery    float64 `json:"bytes_per_delivery,omitempty"` // WebSocket payload of one message push
	DeliveriesPerS      float64 `json:"deliveries_per_s,omitempty"`
	Loss                int64   `json:"loss"`
	P50Ms               float64 `json:"p50_ms,omitempty"`
	P90Ms               float64 `json:"p90_ms,omitempty"`
	P99Ms               float64 `json:"p99_ms,omitempty"`
	MaxMs               float64 `json:"max_ms,omitempty"`
	AckP50Ms            float64 `json:"ack_p50_ms,omitempty"`
	AckP99Ms            float64 `json:"ack_p99_ms,omitempty"`
	SlowClosed          int     `json:"slow_readers_closed,omitempty"`
	Conns               int     `json:"conns,omitempty"`
	ConnsPerS           float64 `json:"conns_per_s,omitempty"`
	Cycles              int64   `json:"cycles,omitempty"`
	Errors              int64   `json:"errors,omitempty"`
	ServerCPUSec        float64 `json:"server_cpu_s,omitempty"`
	DeliveriesPerCPUSec float64 `json:"deliveries_per_server_cpu_s,omitempty"`
	ServerRSSBytes      int64   `json:"server_rss_bytes,omitempty"`
	RSSPerConnBytes     float64 `json:"rss_per_conn_bytes,omitempty"`
	JoinsPerS           float64 `json:"joins_per_s,omitempty"`
	JoinP50Ms           float64 `json:"join_p50_ms,omitempty"`
	JoinP99Ms           float64 `json:"join_p99_ms,omitempty"`
	RoomMembers         int     `json:"room_members,omitempty"`
	PresencePageMs      float64 `json:"presence_page_ms,omitempty"`
	PublishAllMs        float64 `json:"publish_all_ms,omitempty"`
	PublishCPUMs        float64 `json:"publish_cpu_ms,omitempty"`
	PublishesPerS       float64 `json:"publishes_per_s,omitempty"`
	CPUPerPublishUs     float64 `json:"server_cpu_per_publish_us,omitempty"`
	Note                string  `json:"note,omitempty"`
}

// JSON renders the result as one JSON line.
func (r Result) JSON() string {
	b, _ := json.Marshal(r)
	return string(b)
}

// Table renders the result as aligned "name value" lines.
func (r Result) Table() string {
	var m map[string]any
	_ = json.Unmarshal([]byte(r.JSON()), &m)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		v := m[k]
		if f, ok := v.(float64); ok {
			v = formatNum(f)
		}
		fmt.Fprintf(&sb, "%-28s %v\n", k, v)
	}
	return sb.String()
}

func formatNum(f float64) string {
	if f == float64(int64(f)) {
		return fmt.Sprintf("%d", int64(f))
	}
	return fmt.Sprintf("%.3f", f)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// openMany opens n connections with the given number of concurrent dialers;
// setup runs on each after its handshake.
func openMany(ctx context.Context, o Options, n int, prefix string, setup func(i int, c *lconn) error) ([]*lconn, error) {
	return openManyWith(ctx, o, dialOpts{compress: o.Compression}, n, prefix, setup)
}

// openManyWith is openMany with the connections speaking as d says.
func openManyWith(ctx context.Context, o Options, d dialOpts, n int, prefix string, setup func(i int, c *lconn) error) ([]*lconn, error) {
	conns := make([]*lconn, n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(o.Dialers, n) {
		wg.Add(1)
		go func() { // owner: openMany; joined below
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := open(ctx, o.URL, fmt.Sprintf("%s%d", prefix, i), d)
				if err == nil && setup != nil {
					if err = setup(i, c); err != nil {
						c.close()
					}
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		closeAll(conns)
		return nil, firstErr
	}
	return conns, ctx.Err()
}

func closeAll(conns []*lconn) {
	var wg sync.WaitGroup
	for _, c := range conns {
		if c != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.close() }() // owner: closeAll; joined below
		}
	}
	wg.Wait()
}

// subscriber counts and times the message pushes one connection receives.
type subscriber struct {
	c        *lconn
	slow     bool
	ackRoom  string // ack every message of this room (Options.Ack)
	received atomic.Int64
	bytes    atomic.Int64 // message push bytes (WebSocket payloads, before any compression)
	hist     hist
	closed   atomic.Bool
}

func (s *subscriber) run() {
	for {
		b, err := s.c.read()
		if err != nil {
			s.closed.Store(true)
			return
		}
		sent, err := messageSentAt(b, s.c.enc)
		if err != nil {
			continue
		}
		s.bytes.Add(int64(len(b)))
		s.hist.record(time.Since(sent))
		s.received.Add(1)
		if s.ackRoom != "" {
			if off := messageOffset(b); off > 0 {
				_ = s.c.send(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Ack{Ack: &hubbubv1.AckRequest{Room: s.ackRoom, Offset: off}}})
			}
		}
		if s.slow {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// publisher sends publishes at a fixed rate, open loop, and times the acks.
type publisher struct {
	c      *lconn
	id     uint32
	rooms  []string
	direct string // send direct messages to this user instead of publishing to rooms
	rate   float64
	size   int
	sentAt [1 << 16]int64 // send time by frame id, for ack latency
	sent   atomic.Int64
	acked  atomic.Int64
	errors atomic.Int64
	ack    hist
	mu     sync.Mutex
}

func (p *publisher) readAcks() {
	for {
		b, err := p.c.read()
		if err != nil {
			return
		}
		id, ack, isErr := replyInfo(b)
		switch {
		case ack:
			p.mu.Lock()
			p.ack.record(time.Duration(time.Now().UnixNano() - atomic.LoadInt64(&p.sentAt[id%uint64(len(p.sentAt))])))
			p.mu.Unlock()
			p.acked.Add(1)
		case isErr && id != 0:
			p.errors.Add(1)
		}
	}
}

// publish runs for d, sending rate publishes per second spread over its rooms.
func (p *publisher) publish(ctx context.Context, d time.Duration) {
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var seq uint32
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			elapsed := now.Sub(start)
			if elapsed >= d {
				return
			}
			due := int64(elapsed.Seconds()*p.rate) - p.sent.Load()
			for k := int64(0); k < due; k++ {
				seq++
				room := p.rooms[int(seq)%len(p.rooms)]
				t := time.Now()
				body := &hubbubv1.Body{Kind: &hubbubv1.Body_Binary{Binary: payload(p.size, t, p.id, seq)}}
				f := &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Publish{Publish: &hubbubv1.PublishRequest{Room: room, Body: body}}}
				if p.direct != "" {
					f.Command = &hubbubv1.ClientFrame_Direct{Direct: &hubbubv1.DirectRequest{User: p.direct, Body: body}}
				}
				p.c.wmu.Lock()
				atomic.StoreInt64(&p.sentAt[(p.c.nextID+1)%uint64(len(p.sentAt))], t.UnixNano())
				p.c.wmu.Unlock()
				if p.c.send(f) != nil {
					return
				}
				p.sent.Add(1)
			}
		}
	}
}

func progress(o Options, format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}
