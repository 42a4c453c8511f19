package integration

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	hubclient "github.com/hubbub-chat/hubbub/client"
	"github.com/hubbub-chat/hubbub/internal/testredis"
	"github.com/hubbub-chat/hubbub/wire"
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
	recorders := startRecorders(t, ctx, 6, rooms, func(i int) []string { return []string{urls[i%3], urls[(i+1)%3], urls[(i+2)%3]} },
		func(i int) wire.Encoding { return encodings[i%2] }) // both encodings
	pubs := startPublishers(t, ctx, 3, rooms, 10*time.Millisecond, func(w int) hubclient.Config { // about 100 publishes/s each
		return hubclient.Config{URL: urls[w], URLs: []string{urls[(w+1)%3], urls[(w+2)%3]}, Encoding: encodings[w%2]}
	})
	count := pubs.count
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
	pubs.halt()
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
	streams := checkStreams(t, ctx, redisURL, rooms, pubs.acks)
	recorders.check(t, rooms, streams)
}
