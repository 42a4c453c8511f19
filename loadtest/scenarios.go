package loadtest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// Scenarios lists the scenario names Run accepts.
var Scenarios = []string{"fanout", "maxtp", "rooms", "idle", "storm", "churn", "bigroom", "api", "direct"}

// Run runs one scenario and returns its results (maxtp returns one per step).
func Run(ctx context.Context, name string, o Options) ([]Result, error) {
	o = o.withDefaults()
	switch name {
	case "direct":
		r, err := Direct(ctx, o)
		return []Result{r}, err
	case "fanout":
		r, err := Fanout(ctx, o)
		return []Result{r}, err
	case "maxtp":
		return MaxThroughput(ctx, o)
	case "rooms":
		r, err := Rooms(ctx, o)
		return []Result{r}, err
	case "idle":
		r, err := Idle(ctx, o)
		return []Result{r}, err
	case "storm":
		r, err := Storm(ctx, o)
		return []Result{r}, err
	case "churn":
		r, err := Churn(ctx, o)
		return []Result{r}, err
	case "bigroom":
		r, err := BigRoom(ctx, o)
		return []Result{r}, err
	case "api":
		return API(ctx, o)
	}
	return nil, fmt.Errorf("unknown scenario %q (one of %v)", name, Scenarios)
}

// traffic runs publishers against subscribers and collects the figures.
type traffic struct {
	o          Options
	subs       []*subscriber
	pubs       []*publisher
	perPublish int64 // deliveries expected per accepted publish (members of its room)
	wg         sync.WaitGroup
}

func (t *traffic) start() {
	for _, s := range t.subs {
		t.wg.Add(1)
		go func() { defer t.wg.Done(); s.run() }() // owner: traffic; joined in finish
	}
	for _, p := range t.pubs {
		t.wg.Add(1)
		go func() { defer t.wg.Done(); p.readAcks() }() // owner: traffic; joined in finish
	}
}

// measure publishes for the duration, waits for stragglers, and fills r.
func (t *traffic) measure(ctx context.Context, r *Result) {
	before, _ := readProc(t.o.ServerPID)
	start := time.Now()
	var pw sync.WaitGroup
	for _, p := range t.pubs {
		pw.Add(1)
		go func() { defer pw.Done(); p.publish(ctx, t.o.Duration) }() // owner: measure; joined below
	}
	stop := make(chan struct{})
	go t.report(stop, start) // owner: measure; ends when stop closes
	pw.Wait()
	// Wait for acks and deliveries to settle (bounded).
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if t.acked() == t.sent() && t.received() >= t.acked()*t.perPublish-t.slowShare() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	elapsed := time.Since(start)
	after, _ := readProc(t.o.ServerPID)
	var lat, ack hist
	slowClosed := 0
	var received, slowReceived, bytes int64
	for _, s := range t.subs {
		bytes += s.bytes.Load()
		if s.slow {
			slowReceived += s.received.Load()
			if s.closed.Load() {
				slowClosed++
			}
			continue
		}
		received += s.received.Load()
		lat.merge(&s.hist)
	}
	var sent, errs int64
	for _, p := range t.pubs {
		sent += p.sent.Load()
		errs += p.errors.Load()
		p.mu.Lock()
		ack.merge(&p.ack)
		p.mu.Unlock()
	}
	fast := int64(len(t.subs) - t.o.SlowReaders)
	expected := t.acked() * t.perPublish * fast / max(1, int64(len(t.subs)))
	r.DurationSec = t.o.Duration.Seconds()
	r.Published = sent
	r.PublishErrors = errs + sent - t.acked()
	r.Deliveries = received + slowReceived
	r.DeliveriesPerS = float64(received+slowReceived) / t.o.Duration.Seconds()
	if r.Deliveries > 0 {
		r.BytesPerDelivery = float64(bytes) / float64(r.Deliveries)
	}
	r.Loss = max(0, expected-received)
	r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs = ms(lat.quantile(0.5)), ms(lat.quantile(0.9)), ms(lat.quantile(0.99)), ms(time.Duration(lat.max))
	r.AckP50Ms, r.AckP99Ms = ms(ack.quantile(0.5)), ms(ack.quantile(0.99))
	r.SlowClosed = slowClosed
	if t.o.ServerPID != 0 {
		r.ServerCPUSec = after.cpuSeconds - before.cpuSeconds
		r.ServerRSSBytes = after.rssBytes
		if r.ServerCPUSec > 0 {
			r.DeliveriesPerCPUSec = float64(r.Deliveries) / r.ServerCPUSec
		}
	}
	_ = elapsed
}

func (t *traffic) report(stop chan struct{}, start time.Time) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := int64(0)
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			n := t.received()
			progress(t.o, "  %5.1fs  published %d  acked %d  delivered %d (%d/s)", time.Since(start).Seconds(), t.sent(), t.acked(), n, n-last)
			last = n
		}
	}
}

func (t *traffic) sent() (n int64) {
	for _, p := range t.pubs {
		n += p.sent.Load()
	}
	return n
}

func (t *traffic) acked() (n int64) {
	for _, p := range t.pubs {
		n += p.acked.Load()
	}
	return n
}

func (t *traffic) received() (n int64) {
	for _, s := range t.subs {
		n += s.received.Load()
	}
	return n
}

// slowShare is what slow readers would have received; they are not waited for.
func (t *traffic) slowShare() int64 {
	if len(t.subs) == 0 {
		return 0
	}
	return t.acked() * t.perPublish * int64(t.o.SlowReaders) / int64(len(t.subs))
}

func (t *traffic) finish() {
	for _, s := range t.subs {
		s.c.close()
	}
	for _, p := range t.pubs {
		p.c.close()
	}
	t.wg.Wait()
}

func newPublishers(ctx context.Context, o Options, rooms []string, totalRate float64) ([]*publisher, error) {
	conns, err := openMany(ctx, o, o.Publishers, "pub", nil)
	if err != nil {
		return nil, err
	}
	pubs := make([]*publisher, len(conns))
	for i, c := range conns {
		var mine []string
		for k := i; k < len(rooms); k += len(conns) {
			mine = append(mine, rooms[k])
		}
		if len(mine) == 0 {
			mine = rooms[:1]
		}
		pubs[i] = &publisher{c: c, id: uint32(i), rooms: mine, rate: totalRate / float64(len(conns)), size: o.Size}
	}
	return pubs, nil
}

// Fanout: S subscribers in one room, P publishers at a fixed total rate.
func Fanout(ctx context.Context, o Options) (Result, error) {
	o = o.withDefaults()
	r := Result{Scenario: "fanout", Params: fmt.Sprintf("subscribers=%d publishers=%d rate=%g/s size=%dB duration=%s slow=%d encoding=%v compact=%v ack=%v",
		o.Subscribers, o.Publishers, o.Rate, o.Size, o.Duration, o.SlowReaders, o.Encoding, o.Compact, o.Ack)}
	room := fmt.Sprintf("fanout-%d", time.Now().UnixNano())
	progress(o, "opening %d subscribers", o.Subscribers)
	conns, err := openManyWith(ctx, o, dialOpts{compress: o.Compression, enc: o.Encoding, compact: o.Compact, raw: true}, o.Subscribers, "sub",
		func(_ int, c *lconn) error { return c.join(room) })
	if err != nil {
		return r, err
	}
	t := &traffic{o: o, perPublish: int64(o.Subscribers)}
	for i, c := range conns {
		s := &subscriber{c: c, slow: i < o.SlowReaders}
		if o.Ack {
			s.ackRoom = room
		}
		t.subs = append(t.subs, s)
	}
	if t.pubs, err = newPublishers(ctx, o, []string{room}, o.Rate); err != nil {
		closeAll(conns)
		return r, err
	}
	t.start()
	defer t.finish()
	progress(o, "publishing %g/s for %s", o.Rate, o.Duration)
	t.measure(ctx, &r)
	return r, nil
}

// Direct: one user with Devices connections (3 by default: a phone, a
// laptop, a tablet) receiving its personal stream, P publishers sending it
// direct messages at a fixed total rate.
func Direct(ctx context.Context, o Options) (Result, error) {
	o = o.withDefaults()
	if o.Devices <= 0 {
		o.Devices = 3
	}
	user := fmt.Sprintf("target-%d", time.Now().UnixNano())
	r := Result{Scenario: "direct", Params: fmt.Sprintf("devices=%d publishers=%d rate=%g/s size=%dB duration=%s",
		o.Devices, o.Publishers, o.Rate, o.Size, o.Duration)}
	conns, err := openManyWith(ctx, o, dialOpts{compress: o.Compression, user: user}, o.Devices, "dev", nil)
	if err != nil {
		return r, err
	}
	t := &traffic{o: o, perPublish: int64(o.Devices)}
	for _, c := range conns {
		t.subs = append(t.subs, &subscriber{c: c})
	}
	if t.pubs, err = newPublishers(ctx, o, []string{"unused"}, o.Rate); err != nil {
		closeAll(conns)
		return r, err
	}
	for _, p := range t.pubs {
		p.direct = user
	}
	t.start()
	defer t.finish()
	progress(o, "sending %g direct messages/s to %d devices for %s", o.Rate, o.Subscribers, o.Duration)
	t.measure(ctx, &r)
	return r, nil
}

// MaxThroughput raises the fanout rate until loss appears or p99 passes the bound.
func MaxThroughput(ctx context.Context, o Options) ([]Result, error) {
	o = o.withDefaults()
	var out []Result
	best := 0.0
	for rate := o.StartRate; rate <= o.MaxRate && ctx.Err() == nil; rate *= o.Step {
		step := o
		step.Rate = rate
		r, err := Fanout(ctx, step)
		if err != nil {
			return out, err
		}
		r.Scenario = "maxtp-step"
		out = append(out, r)
		progress(o, "rate %g/s: %.0f deliveries/s, loss %d, p99 %.1fms", rate, r.DeliveriesPerS, r.Loss, r.P99Ms)
		if r.Loss > 0 || r.P99Ms > ms(o.P99Bound) || r.PublishErrors > 0 {
			break
		}
		best = r.DeliveriesPerS
	}
	out = append(out, Result{Scenario: "maxtp", Params: fmt.Sprintf("subscribers=%d publishers=%d p99<=%s", o.Subscribers, o.Publishers, o.P99Bound),
		DeliveriesPerS: best, Note: "highest rate without loss and within the p99 bound"})
	return out, nil
}

// Rooms: many rooms with few members each; subscriber connections join several rooms.
func Rooms(ctx context.Context, o Options) (Result, error) {
	o = o.withDefaults()
	r := Result{Scenario: "rooms", Params: fmt.Sprintf("rooms=%d members=%d rooms_per_conn=%d rate_per_room=%g/s duration=%s",
		o.Rooms, o.Members, o.RoomsPerConn, o.RatePerRoom, o.Duration)}
	rooms := make([]string, o.Rooms)
	prefix := fmt.Sprintf("r%d-", time.Now().UnixNano()%100000)
	for i := range rooms {
		rooms[i] = fmt.Sprint(prefix, i)
	}
	memberships := o.Rooms * o.Members
	nconns := (memberships + o.RoomsPerConn - 1) / o.RoomsPerConn
	progress(o, "opening %d subscriber connections for %d memberships", nconns, memberships)
	conns, err := openMany(ctx, o, nconns, "m", func(i int, c *lconn) error {
		for k := 0; k < o.RoomsPerConn; k++ {
			m := i*o.RoomsPerConn + k
			if m >= memberships {
				return nil
			}
			if err := c.join(rooms[m%o.Rooms]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	t := &traffic{o: o, perPublish: int64(o.Members)}
	for _, c := range conns {
		t.subs = append(t.subs, &subscriber{c: c})
	}
	t.o.SlowReaders = 0
	if t.pubs, err = newPublishers(ctx, o, rooms, o.RatePerRoom*float64(o.Rooms)); err != nil {
		closeAll(conns)
		return r, err
	}
	t.start()
	defer t.finish()
	// Expected deliveries: each accepted publish reaches Members memberships.
	t.measure(ctx, &r)
	r.Loss = max(0, t.acked()*int64(o.Members)-r.Deliveries)
	return r, nil
}

// Idle opens N idle connections (each joined to a room) and reports server RSS per connection.
func Idle(ctx context.Context, o Options) (Result, error) {
	o = o.withDefaults()
	r := Result{Scenario: "idle", Params: fmt.Sprintf("conns=%d connect_only=%t", o.Conns, o.ConnectOnly), Conns: o.Conns}
	before, err := readProc(o.ServerPID)
	if err != nil {
		return r, err
	}
	join := func(i int, c *lconn) error { return c.join(fmt.Sprint("idle-", i%100)) }
	if o.ConnectOnly {
		join = nil
	}
	start := time.Now()
	conns, err := openMany(ctx, o, o.Conns, "idle", join)
	if err != nil {
		return r, err
	}
	defer closeAll(conns)
	r.DurationSec = time.Since(start).Seconds()
	time.Sleep(min(o.Duration, 30*time.Second)) // hold the connections; let the server settle
	after, err := readProc(o.ServerPID)
	if err != nil {
		return r, err
	}
	r.ServerRSSBytes = after.rssBytes
	if o.ServerPID != 0 {
		r.RSSPerConnBytes = float64(after.rssBytes-before.rssBytes) / float64(o.Conns)
	}
	return r, nil
}

// Storm measures how fast N connections open (dial, upgrade, connect reply) with C dialers.
func Storm(ctx context.Context, o Options) (Result, error) {
	o = o.withDefaults()
	r := Result{Scenario: "storm", Params: fmt.Sprintf("conns=%d dialers=%d", o.Conns, o.Dialers), Conns: o.Conns}
	before, _ := readProc(o.ServerPID)
	start := time.Now()
	// The tool's own side of the storm (a raw client without compression)
	// costs as little as it can: it shares the machine with the server.
	conns, err := openManyWith(ctx, o, dialOpts{compress: o.Compression, raw: true, small: true}, o.Conns, "storm", nil)
	if err != nil {
		return r, err
	}
	elapsed := time.Since(start)
	after, _ := readProc(o.ServerPID)
	closeAll(conns)
	r.DurationSec = elapsed.Seconds()
	r.ConnsPerS = float64(o.Conns) / elapsed.Seconds()
	r.ServerCPUSec = after.cpuSeconds - before.cpuSeconds
	return r, nil
}

// Churn runs workers that connect, join, leave and disconnect in a loop while
// a publisher publishes to the room and stable subscribers count what they get.
func Churn(ctx context.Context, o Options) (Result, error) {
	o = o.withDefaults()
	stable := min(o.Conns, 100)
	r := Result{Scenario: "churn", Params: fmt.Sprintf("workers=%d stable=%d rate=%g/s duration=%s", o.Workers, stable, o.Rate, o.Duration)}
	room := fmt.Sprintf("churn-%d", time.Now().UnixNano())
	conns, err := openMany(ctx, o, stable, "stable", func(_ int, c *lconn) error { return c.join(room) })
	if err != nil {
		return r, err
	}
	t := &traffic{o: o, perPublish: int64(stable)}
	for _, c := range conns {
		t.subs = append(t.subs, &subscriber{c: c})
	}
	o.Publishers = 1
	if t.pubs, err = newPublishers(ctx, o, []string{room}, o.Rate); err != nil {
		closeAll(conns)
		return r, err
	}
	t.start()
	defer t.finish()
	var cycles, errs atomic.Int64
	churnCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := 0; w < o.Workers; w++ {
		wg.Add(1)
		go func() { // owner: Churn; joined below
			defer wg.Done()
			for churnCtx.Err() == nil {
				c, err := open(churnCtx, o.URL, fmt.Sprint("churn", w), dialOpts{compress: o.Compression})
				if err != nil {
					errs.Add(1)
					continue
				}
				if c.join(room) != nil || c.send(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Leave{Leave: &hubbubv1.LeaveRequest{Room: room}}}) != nil {
					errs.Add(1)
				}
				c.close()
				cycles.Add(1)
			}
		}()
	}
	t.measure(ctx, &r)
	cancel()
	wg.Wait()
	r.Cycles, r.Errors = cycles.Load(), errs.Load()
	r.Note = fmt.Sprintf("%.0f connect/join/leave/disconnect cycles per second", float64(r.Cycles)/o.Duration.Seconds())
	return r, nil
}
