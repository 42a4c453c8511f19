package loadtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// BigRoom measures one big room: Conns connections (Dialers at a time) each
// connect and join the same room with the server's default profile, then it
// reports the joins per second, the dial-to-joined latency, the server's CPU
// and RSS per joined connection, the members the room counts at the end, the
// time to answer a presence page of 100, and what one publish to all of it
// costs (time until every member has it, server CPU).
func BigRoom(ctx context.Context, o Options) (Result, error) {
	o = o.withDefaults()
	room := fmt.Sprintf("big-%d", time.Now().UnixNano())
	r := Result{Scenario: "bigroom", Params: fmt.Sprintf("conns=%d dialers=%d", o.Conns, o.Dialers), Conns: o.Conns}
	before, _ := readProc(o.ServerPID)
	var lat hist
	var mu sync.Mutex
	start := time.Now()
	conns, err := openMany(ctx, o, o.Conns, "big", func(_ int, c *lconn) error {
		t0 := time.Now()
		err := c.join(room)
		mu.Lock()
		lat.record(time.Since(t0))
		mu.Unlock()
		return err
	})
	if err != nil {
		return r, err
	}
	defer closeAll(conns)
	elapsed := time.Since(start)
	joined, _ := readProc(o.ServerPID)
	r.DurationSec = elapsed.Seconds()
	r.JoinsPerS = float64(o.Conns) / elapsed.Seconds()
	r.JoinP50Ms, r.JoinP99Ms = ms(lat.quantile(0.5)), ms(lat.quantile(0.99))
	r.ServerCPUSec = joined.cpuSeconds - before.cpuSeconds

	// Members read from here on: pushes are counted, messages by offset.
	var got atomic.Int64
	var rg sync.WaitGroup
	for _, c := range conns {
		rg.Add(1)
		go func() { defer rg.Done(); countMessages(c, &got) }() // owner: BigRoom; ends when closeAll closes c
	}
	defer rg.Wait()
	defer closeAll(conns) // before rg.Wait: the readers end with their sockets

	time.Sleep(2 * time.Second) // let presence pushes and the server settle
	settled, _ := readProc(o.ServerPID)
	r.ServerRSSBytes = settled.rssBytes
	if o.ServerPID != 0 {
		r.RSSPerConnBytes = float64(settled.rssBytes-before.rssBytes) / float64(o.Conns)
	}
	obs, err := open(ctx, o.URL, "observer", dialOpts{})
	if err != nil {
		return r, err
	}
	defer obs.close()
	if err := obs.join(room); err != nil {
		return r, err
	}
	r.RoomMembers, r.PresencePageMs = presencePages(ctx, o.URL, room)
	switch {
	case r.RoomMembers < 0:
		r.Note = "no presence"
	case r.RoomMembers != o.Conns+1:
		r.Note = fmt.Sprintf("the room counts %d members, want %d", r.RoomMembers, o.Conns+1)
	}
	r.PublishAllMs, r.PublishCPUMs, err = publishToAll(ctx, o, obs, room, &got)
	return r, err
}

// countMessages reads a member's frames until its connection ends, counting messages.
func countMessages(c *lconn, got *atomic.Int64) {
	for {
		b, err := c.read()
		if err != nil {
			return
		}
		if _, ok := field(b, 20); ok { // ServerFrame.message
			got.Add(1)
		}
	}
}

// presencePages times 20 presence pages of 100 (on a connection of its own,
// which a timeout breaks) and returns the member count the room reports and
// the median time; -1, 0 when the server has no presence.
func presencePages(ctx context.Context, url, room string) (int, float64) {
	c, err := open(ctx, url, "pager", dialOpts{})
	if err != nil {
		return -1, 0
	}
	defer c.close()
	var times []time.Duration
	members := -1
	for range 20 {
		t0 := time.Now()
		f, err := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: room, Limit: 100}}}, 2*time.Second)
		if err != nil || f.GetPresence() == nil {
			return -1, 0
		}
		times = append(times, time.Since(t0))
		members = int(f.GetPresence().GetState().GetMembers())
	}
	slices.Sort(times)
	return members, ms(times[len(times)/2])
}

// publishToAll publishes 5 messages one at a time, each once every member has
// the one before, and returns the median time until all have it and the
// server CPU per publish.
func publishToAll(ctx context.Context, o Options, c *lconn, room string, got *atomic.Int64) (float64, float64, error) {
	const rounds = 5
	var times []time.Duration
	before, _ := readProc(o.ServerPID)
	want := got.Load()
	for i := range rounds {
		t0 := time.Now()
		f, err := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Publish{Publish: &hubbubv1.PublishRequest{
			Room: room, Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Binary{Binary: payload(o.Size, t0, 0, uint32(i))}}}}}, 10*time.Second)
		if err != nil || f.GetError() != nil {
			return 0, 0, fmt.Errorf("publish: %v %v", f, err)
		}
		want += int64(o.Conns)
		deadline := time.Now().Add(30 * time.Second)
		for got.Load() < want {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return 0, 0, fmt.Errorf("publish %d reached %d of %d members", i, int64(o.Conns)-(want-got.Load()), o.Conns)
			}
			time.Sleep(time.Millisecond)
		}
		times = append(times, time.Since(t0))
	}
	after, _ := readProc(o.ServerPID)
	slices.Sort(times)
	return ms(times[rounds/2]), (after.cpuSeconds - before.cpuSeconds) * 1000 / rounds, nil
}

// request sends a command and reads until its reply (skipping pushes) or the timeout.
func (c *lconn) request(f *hubbubv1.ClientFrame, timeout time.Duration) (*hubbubv1.ServerFrame, error) {
	if err := c.send(f); err != nil {
		return nil, err
	}
	id := c.nextID
	c.setReadDeadline(time.Now().Add(timeout))
	defer c.setReadDeadline(time.Time{})
	for {
		r, err := c.readFrame()
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("no reply within %v", timeout)
		}
		if err != nil {
			return nil, err
		}
		if r.GetId() == id {
			return r, nil
		}
	}
}
