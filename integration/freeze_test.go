package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	hubclient "github.com/hubbub-chat/hubbub/client"
	"github.com/hubbub-chat/hubbub/internal/testredis"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/store"
)

// A node hosting rooms freezes (SIGSTOP, as in a long GC pause or a VM
// stall) for a few seconds and resumes, while clients publish and subscribe
// on every node. The others evict it and serve its rooms; when it resumes it
// finds it was stalled past --cluster-stall-limit, closes its connections
// with 1001 and exits with status 3 instead of serving stale activations
// beside the live ones. No acknowledged message is lost or stored twice,
// every subscriber's stream stays gapless (recovering across reconnects,
// never "not recovered"), and the rooms settle on one activation each.
func TestClusterFreeze(t *testing.T) {
	for _, tc := range []struct {
		provider string
		freeze   time.Duration
		roomless bool // freeze a node that hosts no room but holds members
	}{{"automanaged", 3 * time.Second, false}, {"automanaged", 8 * time.Second, false}, {"etcd", 3 * time.Second, false},
		{"automanaged", 3 * time.Second, true}} {
		name := tc.provider + "/" + tc.freeze.String()
		if tc.roomless {
			name += "/members-only"
		}
		t.Run(name, func(t *testing.T) { testClusterFreeze(t, tc.provider, tc.freeze, tc.roomless) })
	}
}

func testClusterFreeze(t *testing.T, provider string, freeze time.Duration, roomless bool) {
	redisURL := testredis.Start(t)
	manage := []string{freePort(t), freePort(t), freePort(t)}
	seeds := strings.Join(manage, ",")
	membership := func(i int) []string {
		if provider == "etcd" {
			return nil
		}
		_, port, _ := net.SplitHostPort(manage[i])
		return []string{"--cluster-automanage-port", port, "--cluster-seeds", seeds}
	}
	if provider == "etcd" {
		endpoint := startEtcd(t)
		membership = func(int) []string { return []string{"--etcd-endpoints", endpoint} }
	}
	var nodes []*serverProcess
	var urls []string
	for i := range manage {
		args := append([]string{"--cluster-provider", provider, "--cluster-bind", freePort(t),
			"--history-store", "redis", "--redis-url", redisURL, "--history-size", "100000"}, membership(i)...)
		p := startProcess(t, args...)
		nodes = append(nodes, p)
		urls = append(urls, p.URL)
	}
	for _, p := range nodes {
		eventually(t, "node ready", func() bool { code, err := httpGet(httpBase(p.URL) + "/readyz"); return err == nil && code == 200 })
	}
	rooms := []string{"freeze-0", "freeze-1", "freeze-2", "freeze-3", "freeze-4", "freeze-5"}
	if roomless {
		rooms = rooms[:2] // two rooms on three nodes: one node hosts none
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	recCtx, stopRecorders := context.WithCancel(ctx)
	var recorders []*recorder
	var rwg sync.WaitGroup
	for i := 0; i < 6; i++ {
		rec := newRecorder(fmt.Sprint("sub", i), []string{urls[i%3], urls[(i+1)%3], urls[(i+2)%3]}, rooms)
		rec.enc = encodings[i%2] // both encodings
		recorders = append(recorders, rec)
		rwg.Add(1)
		go func() { defer rwg.Done(); rec.run(recCtx) }()
	}
	defer func() { stopRecorders(); rwg.Wait() }()
	eventually(t, "subscribers joined", func() bool {
		for _, rec := range recorders {
			rec.mu.Lock()
			n := len(rec.got)
			rec.mu.Unlock()
			if n != len(rooms) {
				return false
			}
		}
		return true
	})
	type ack struct {
		room, text string
		offset     uint64
	}
	var mu sync.Mutex
	var acks []ack
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acks) }
	stop := make(chan struct{})
	var pwg sync.WaitGroup
	for w := 0; w < 3; w++ {
		cl := hubclient.New(hubclient.Config{URL: urls[w], URLs: []string{urls[(w+1)%3], urls[(w+2)%3]}, Name: fmt.Sprint("pub", w),
			Encoding:          encodings[w%2],
			MinReconnectDelay: 50 * time.Millisecond, MaxReconnectDelay: 300 * time.Millisecond})
		defer cl.Close()
		if err := cl.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		pwg.Add(1)
		go func() { // owner: this test; joined through pwg
			defer pwg.Done()
			for i := 0; i < 20000; i++ { // bounded; stopped after the freeze
				select {
				case <-stop:
					return
				default:
				}
				room, text := rooms[(w+i)%len(rooms)], fmt.Sprintf("p%d-%d", w, i)
				for {
					pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
					r, err := cl.Publish(pctx, room, &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: text}}, &hubclient.PublishOptions{MessageID: text})
					pcancel()
					if err == nil {
						mu.Lock()
						acks = append(acks, ack{room, text, r.GetOffset()})
						mu.Unlock()
						break
					}
					var se *hubclient.ServerError
					if ctx.Err() != nil || (errors.As(err, &se) && !se.Temporary) {
						t.Errorf("publish %s: %v", text, err)
						return
					}
					time.Sleep(20 * time.Millisecond) // temporary: the room is moving; same id again
				}
				time.Sleep(10 * time.Millisecond) // about 100 publishes/s per publisher
			}
		}()
	}
	eventually(t, "publishing under way", func() bool { return count() >= 200 })
	host, most := 0, -1.0
	for i, p := range nodes {
		n := sum(scrape(t, httpBase(p.URL)), "hubbub_rooms_active")
		if (!roomless && n > most) || (roomless && n == 0) {
			host, most = i, n
		}
	}
	if roomless && most != 0 {
		t.Fatal("every node hosts a room")
	}
	if err := nodes[host].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozenAt := count()
	time.Sleep(freeze) // the fault itself
	if err := nodes[host].cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	resumedAt := count()
	select {
	case err := <-nodes[host].done:
		nodes[host].done <- err // for the cleanup
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 3 {
			t.Fatalf("the frozen node ended with %v, want exit status 3", err)
		}
	case <-time.After(waitFor):
		t.Fatal("the frozen node did not leave after it resumed")
	}
	left := time.Since(resumed)
	alive := append(append([]*serverProcess{}, nodes[:host]...), nodes[host+1:]...)
	eventually(t, "publishing after the freeze", func() bool { return count() >= resumedAt+300 })
	close(stop)
	pwg.Wait()
	// One activation per room once the cluster has settled.
	var settled time.Duration
	eventually(t, "one activation per room", func() bool {
		total := 0.0
		for _, p := range alive {
			total += sum(scrape(t, httpBase(p.URL)), "hubbub_rooms_active")
		}
		settled = time.Since(resumed)
		return int(total) == len(rooms)
	})
	t.Logf("froze node %d (hosting %v rooms) for %v after %d acks; %d acked during the freeze; %d in all; it left %v after it resumed; one activation per room %v after it resumed",
		host, most, freeze, frozenAt, resumedAt-frozenAt, count(), left.Round(10*time.Millisecond), settled.Round(100*time.Millisecond))
	if t.Failed() {
		return
	}
	st, err := store.OpenRedis(ctx, store.RedisOptions{URL: redisURL}, store.Retention{MaxLen: 100000})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	streams := map[string][]*hubbubv1.Message{}
	for _, room := range rooms {
		msgs, err := st.Read(ctx, room, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for i, m := range msgs {
			if m.GetOffset() != uint64(i+1) || seen[m.GetBody().GetText()] {
				t.Fatalf("%s: entry %d (offset %d, %q): gap or duplicate", room, i, m.GetOffset(), m.GetBody().GetText())
			}
			seen[m.GetBody().GetText()] = true
		}
		streams[room] = msgs
	}
	mu.Lock()
	for _, a := range acks {
		msgs := streams[a.room]
		if a.offset == 0 || a.offset > uint64(len(msgs)) || msgs[a.offset-1].GetBody().GetText() != a.text {
			t.Fatalf("%q acknowledged at %s/%d is not in the stream there", a.text, a.room, a.offset)
		}
	}
	mu.Unlock()
	for _, rec := range recorders {
		for _, room := range rooms {
			top := uint64(len(streams[room]))
			eventually(t, rec.name+" catching up "+room, func() bool { return rec.offset(room) >= top })
		}
	}
	stopRecorders()
	rwg.Wait()
	for _, rec := range recorders {
		for _, p := range rec.problems {
			t.Error(p)
		}
	}
}
