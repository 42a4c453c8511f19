package integration

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// startCluster starts n `hubbub serve` processes forming an automanaged cluster on 127.0.0.1.
func startCluster(t *testing.T, n int) []*serverProcess {
	t.Helper()
	manage := make([]string, n)
	for i := range manage {
		manage[i] = freePort(t)
	}
	seeds := strings.Join(manage, ",")
	nodes := make([]*serverProcess, n)
	for i := range nodes {
		_, port, _ := net.SplitHostPort(manage[i])
		nodes[i] = startProcess(t, "--cluster-provider", "automanaged", "--cluster-bind", freePort(t),
			"--cluster-automanage-port", port, "--cluster-seeds", seeds)
	}
	for _, p := range nodes {
		eventually(t, "node ready", func() bool {
			resp, err := httpGet(httpBase(p.URL) + "/readyz")
			return err == nil && resp == 200
		})
	}
	return nodes
}

func httpGet(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Members connected to different nodes see one identical, gapless stream and
// one presence list; each publish crosses to each node with members once,
// however many members that node has.
func TestClusterRoomAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3)
	const perNode, msgs = 5, 20
	var members []*client
	for i, p := range nodes {
		for k := 0; k < perNode; k++ {
			enc := wire.Proto
			if k%2 == 1 {
				enc = wire.JSON
			}
			c := connect(t, p.URL, enc, fmt.Sprintf("n%d-m%d", i, k))
			c.join("global", nil)
			members = append(members, c)
		}
	}
	r := members[0].request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: "global"}}})
	if got := len(r.GetPresence().GetMembers()); got != 3*perNode {
		t.Fatalf("presence lists %d members, want %d", got, 3*perNode)
	}
	before := make([]float64, len(nodes))
	for i, p := range nodes {
		before[i] = sum(scrape(t, httpBase(p.URL)), "hubbub_relay_delivers_total")
	}
	pubs := []*client{connect(t, nodes[1].URL, wire.Proto, "pub1"), connect(t, nodes[2].URL, wire.JSON, "pub2")}
	for i := 0; i < msgs; i++ {
		pubs[i%2].publish("global", fmt.Sprint("m", i))
	}
	var first []string
	for i, c := range members {
		var got []string
		for k := 0; k < msgs; k++ {
			m := c.nextMessage()
			if m.GetOffset() != uint64(k+1) {
				t.Fatalf("member %d: offset %d at %d", i, m.GetOffset(), k)
			}
			got = append(got, m.GetBody().GetText())
		}
		if first == nil {
			first = got
		} else if fmt.Sprint(got) != fmt.Sprint(first) {
			t.Fatalf("member %d saw %v, member 0 saw %v", i, got, first)
		}
	}
	for i, p := range nodes {
		delivers := sum(scrape(t, httpBase(p.URL)), "hubbub_relay_delivers_total") - before[i]
		// One per message for this node's members, not one per member (plus
		// presence pushes for the two publishers, which joined no room).
		if delivers != msgs {
			t.Fatalf("node %d relay got %v delivers for %d messages to %d local members", i, delivers, msgs, perNode)
		}
	}
}
