package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	apiv1 "github.com/hubbub-chat/hubbub/proto/hubbub/api/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/wire"
)

// scrape reads /metrics and returns each sample's value by its series text.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out
}

// sum adds the samples of a metric whose labels contain every given label.
func sum(samples map[string]float64, name string, labels ...string) float64 {
	total := 0.0
	for series, v := range samples {
		if series != name && !strings.HasPrefix(series, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(series, l)
		}
		if ok {
			total += v
		}
	}
	return total
}

// /metrics moves with real traffic.
func TestMetricsFollowTraffic(t *testing.T) {
	p := startProcess(t, "--presence-interval", "20ms")
	base := httpBase(p.URL)
	before := scrape(t, base)
	subs := []*client{connect(t, p.URL, wire.Proto, "m1"), connect(t, p.URL, wire.JSON, "m2"), connect(t, p.URL, wire.Proto, "m3")}
	for _, c := range subs {
		c.join("metered", nil)
	}
	pub := connect(t, p.URL, wire.Proto, "pub")
	for i := 0; i < 10; i++ {
		pub.publish("metered", fmt.Sprint(i))
	}
	for _, c := range subs {
		for i := 0; i < 10; i++ {
			c.nextMessage()
		}
	}
	pub.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "bad room"}}})
	bad := dial(t, p.URL, wire.Proto)
	bad.writeRaw(2, []byte{0xff, 0xff})
	for bad.read(waitFor) != nil {
	}
	var after map[string]float64
	eventually(t, "the malformed frame's close to be counted", func() bool {
		after = scrape(t, base)
		return sum(after, "hubbub_connections_closed_total", `websocket_close_code="1007"`) == 1 &&
			sum(after, "hubbub_pushes_total", `hubbub_push="presence"`) > sum(before, "hubbub_pushes_total", `hubbub_push="presence"`) &&
			// The fan-out recorder records a push's size after its relay
			// shards finish, a little after the members have it.
			sum(after, "hubbub_fanout_size_sum")-sum(before, "hubbub_fanout_size_sum") >= 30
	})
	delta := func(name string, labels ...string) float64 {
		return sum(after, name, labels...) - sum(before, name, labels...)
	}
	checks := []struct {
		name   string
		labels []string
		min    float64
	}{
		{"hubbub_publishes_total", nil, 10},
		{"hubbub_deliveries_total", nil, 30},
		{"hubbub_pushes_total", []string{`hubbub_push="message"`}, 30},
		{"hubbub_pushes_total", []string{`hubbub_push="presence"`}, 1},
		{"hubbub_commands_total", []string{`hubbub_command="publish"`}, 10},
		{"hubbub_commands_total", []string{`hubbub_command="join"`}, 4},
		{"hubbub_connections_opened_total", nil, 5},
		{"hubbub_frames_total", []string{`network_io_direction="receive"`}, 15},
		{"hubbub_frames_total", []string{`network_io_direction="transmit"`}, 30},
		{"hubbub_io_bytes_total", []string{`network_io_direction="transmit"`}, 1000},
		{"hubbub_errors_total", []string{`error_type="ERROR_CODE_INVALID_ROOM"`}, 1},
		{"hubbub_frames_malformed_total", nil, 1},
		{"hubbub_delivery_latency_seconds_count", nil, 10},
		{"hubbub_fanout_size_sum", nil, 30},
		{"hubbub_room_members_count", nil, 3},
	}
	for _, c := range checks {
		if d := delta(c.name, c.labels...); d < c.min {
			t.Errorf("%s%v moved by %v, want >= %v", c.name, c.labels, d, c.min)
		}
	}
	if got := sum(after, "hubbub_connections_active"); got < 4 {
		t.Errorf("active connections %v", got)
	}
	if got := sum(after, "hubbub_rooms_active"); got < 1 {
		t.Errorf("active rooms %v", got)
	}
	if _, ok := after[`hubbub_actor_mailbox_depth{hubbub_actor_kind="room",otel_scope_name="github.com/hubbub-chat/hubbub",otel_scope_schema_url="",otel_scope_version=""}`]; !ok {
		t.Errorf("no room mailbox depth")
	}
}

func TestHealthAndReadiness(t *testing.T) {
	p := startProcess(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(httpBase(p.URL) + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}
}

// jaegerConfig is a Jaeger v2 all-in-one with memory storage on the given ports.
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: %s
    grpc:
      endpoint: %s
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`

type jaegerTag struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

type jaegerTrace struct {
	Data []struct {
		TraceID   string `json:"traceID"`
		Processes map[string]struct {
			ServiceName string      `json:"serviceName"`
			Tags        []jaegerTag `json:"tags"`
		} `json:"processes"`
		Spans []struct {
			SpanID        string `json:"spanID"`
			ProcessID     string `json:"processID"`
			OperationName string `json:"operationName"`
			References    []struct {
				RefType string `json:"refType"`
				SpanID  string `json:"spanID"`
			} `json:"references"`
			Tags []jaegerTag `json:"tags"`
		} `json:"spans"`
	} `json:"data"`
}

// A publish's trace, sent by Hubbub over OTLP to a real Jaeger, comes back
// from Jaeger's query API as one trace across two cluster nodes: the client's
// span -> the command -> the room -> a fan-out span on each node. Needs JAEGER_BIN (the
// test script builds it from the tools/jaeger module).
func TestTraceInJaeger(t *testing.T) {
	bin := os.Getenv("JAEGER_BIN")
	if bin == "" {
		t.Skip("JAEGER_BIN is not set; ./scripts/test.sh builds Jaeger and sets it")
	}
	query, grpcQuery, otlp := freePort(t), freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(jaegerConfig, query, grpcQuery, otlp)), 0o600); err != nil {
		t.Fatal(err)
	}
	jaeger := exec.Command(bin, "--config", "file:"+cfg)
	jaegerLog := &lockedBuffer{}
	jaeger.Stdout, jaeger.Stderr = jaegerLog, jaegerLog
	if err := jaeger.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = jaeger.Wait(); close(exited) }() // owner: this test; joined in the deferred kill
	defer func() { _ = jaeger.Process.Kill(); <-exited }()
	// Jaeger takes a few seconds to start, more on a busy machine.
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get("http://" + query + "/api/services")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("jaeger exited:\n%s", jaegerLog.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("jaeger did not answer:\n%s", jaegerLog.String())
		}
	}

	// Two cluster nodes, a member on each: the publish's trace spans both.
	m1, m2 := freePort(t), freePort(t)
	_, port1, _ := net.SplitHostPort(m1)
	_, port2, _ := net.SplitHostPort(m2)
	var nodes []*serverProcess
	keys := apiArgs(t)
	for _, port := range []string{port1, port2} {
		nodes = append(nodes, startProcess(t, append([]string{"--otel-traces-exporter", "otlp", "--otel-endpoint", "http://" + otlp, "--otel-service-name", "hubbub-it",
			"--cluster-provider", "automanaged", "--cluster-bind", freePort(t), "--cluster-automanage-port", port, "--cluster-seeds", m1 + "," + m2}, keys...)...))
	}
	for _, p := range nodes {
		eventually(t, "node ready", func() bool {
			code, err := httpGet(httpBase(p.URL) + "/readyz")
			return err == nil && code == 200
		})
	}
	subs := []*client{connect(t, nodes[0].URL, wire.JSON, "sub0"), connect(t, nodes[1].URL, wire.Proto, "sub1")}
	for _, c := range subs {
		c.join("jaeger", nil)
	}
	pub := connect(t, nodes[0].URL, wire.Proto, "pub")
	traceHex := "4bf92f3577b34da6a3ce929d0e0e4736"
	f := publishFrame("jaeger", "find me", "")
	f.Trace = map[string]string{"traceparent": "00-" + traceHex + "-00f067aa0ba902b7-01"}
	if r := pub.request(f); r.GetTraceId() != traceHex {
		t.Fatalf("reply %v", r)
	}
	for _, c := range subs {
		c.nextMessage()
	}
	// A backend's API call with its own traceparent, on the other node.
	apiTrace := "0af7651916cd43dd8448eb211c80319c"
	req, _ := http.NewRequest(http.MethodPost, nodes[1].API+"/hubbub.api.v1.ServerAPI/Publish",
		strings.NewReader(`{"room":"jaeger","body":{"text":"from a backend"}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+pubKey)
	req.Header.Set("traceparent", "00-"+apiTrace+"-b7ad6b7169203331-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var pr apiv1.PublishResponse
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := protojson.Unmarshal(b, &pr); err != nil || pr.GetTraceId() != apiTrace {
		t.Fatalf("API publish: %s", b)
	}
	for _, c := range subs {
		c.nextMessage()
	}
	for _, p := range nodes {
		_ = p.cmd.Process.Signal(syscall.SIGTERM) // flushes the batches of spans
	}
	checkAPITrace(t, query, apiTrace)
	tr := jaegerTraceOf(t, query, traceHex, 4)
	ids := map[string]string{}
	parent := map[string]string{}
	fanoutNodes := map[string]bool{}
	for _, s := range tr.Data[0].Spans {
		ids[s.OperationName] = s.SpanID
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" {
				parent[s.SpanID] = r.SpanID
			}
		}
	}
	for _, s := range tr.Data[0].Spans {
		if s.OperationName != "hubbub.fanout" {
			continue
		}
		if parent[s.SpanID] != ids["hubbub.room publish"] {
			t.Fatalf("fanout span's parent %s, room span %s", parent[s.SpanID], ids["hubbub.room publish"])
		}
		for _, tag := range s.Tags {
			if tag.Key == "hubbub.node" {
				fanoutNodes[fmt.Sprint(tag.Value)] = true
			}
		}
	}
	if parent[ids["hubbub publish"]] != "00f067aa0ba902b7" || parent[ids["hubbub.room publish"]] != ids["hubbub publish"] || len(fanoutNodes) != 2 {
		t.Fatalf("spans %v, parents %v, fan-out on nodes %v", ids, parent, fanoutNodes)
	}
	// Each node is its own process in the trace: a service.instance.id and a
	// node address per node, and the two fan-out spans come from the two.
	tag := func(tags []jaegerTag, key string) string {
		for _, t := range tags {
			if t.Key == key {
				return fmt.Sprint(t.Value)
			}
		}
		return ""
	}
	instances := map[string]string{} // instance id -> node address
	fanoutInstances := map[string]bool{}
	for _, s := range tr.Data[0].Spans {
		p := tr.Data[0].Processes[s.ProcessID]
		id, addr := tag(p.Tags, "service.instance.id"), tag(p.Tags, "hubbub.node.address")
		if id == "" || addr == "" || p.ServiceName != "hubbub-it" {
			t.Fatalf("span %s from process %+v", s.OperationName, p)
		}
		instances[id] = addr
		if s.OperationName == "hubbub.fanout" {
			fanoutInstances[id] = true
		}
	}
	if len(instances) != 2 || len(fanoutInstances) != 2 {
		t.Fatalf("instances %v, fan-out from %v", instances, fanoutInstances)
	}
}

// lockedBuffer is a bytes.Buffer safe for a process's output goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// jaegerTraceOf waits until Jaeger has a trace with at least minSpans spans.
func jaegerTraceOf(t *testing.T, query, traceHex string, minSpans int) jaegerTrace {
	t.Helper()
	var tr jaegerTrace
	eventually(t, "the trace in jaeger", func() bool {
		resp, err := http.Get("http://" + query + "/api/traces/" + traceHex)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		tr = jaegerTrace{}
		return json.NewDecoder(resp.Body).Decode(&tr) == nil && len(tr.Data) == 1 && len(tr.Data[0].Spans) >= minSpans
	})
	return tr
}

// checkAPITrace checks the trace of a server API publish: the backend's span,
// then the API call's, the room's, and a fan-out span on each of the two nodes.
func checkAPITrace(t *testing.T, query, traceHex string) {
	t.Helper()
	tr := jaegerTraceOf(t, query, traceHex, 4)
	ids, parent := map[string]string{}, map[string]string{}
	fanouts := 0
	for _, s := range tr.Data[0].Spans {
		ids[s.OperationName] = s.SpanID
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" {
				parent[s.SpanID] = r.SpanID
			}
		}
	}
	for _, s := range tr.Data[0].Spans {
		if s.OperationName == "hubbub.fanout" && parent[s.SpanID] == ids["hubbub.room publish"] {
			fanouts++
		}
	}
	if parent[ids["hubbub.api Publish"]] != "b7ad6b7169203331" || parent[ids["hubbub.room publish"]] != ids["hubbub.api Publish"] || fanouts != 2 {
		t.Fatalf("API trace: spans %v, parents %v, %d fan-outs", ids, parent, fanouts)
	}
}
