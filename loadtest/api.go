package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	apiv1 "github.com/hubbub-chat/hubbub/proto/hubbub/api/v1"
	"github.com/hubbub-chat/hubbub/proto/hubbub/api/v1/apiv1connect"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// API measures the server API beside client publishes, each for Duration
// with Publishers concurrent callers in a closed loop (the next call when the
// previous answered), all to one room with one member reading:
//
//   - api-publish: unary Publish over Connect (protobuf, HTTP/1.1 keep-alive);
//   - api-batch: BatchPublish of Batch messages per call;
//   - ws-publish: the same publishes from WebSocket clients, each waiting for
//     its ack, for comparison on the same machine in the same run.
//
// It reports messages per second, call latency p50/p99 and server CPU per
// message.
func API(ctx context.Context, o Options) ([]Result, error) {
	if o.APIURL == "" || o.APIKey == "" {
		return nil, errors.New("the api scenario needs --api-url and --api-key")
	}
	room := fmt.Sprintf("api-%d", time.Now().UnixNano())
	reader, err := open(ctx, o.URL, "reader", dialOpts{})
	if err != nil {
		return nil, err
	}
	defer reader.close()
	if err := reader.join(room); err != nil {
		return nil, err
	}
	var got atomic.Int64
	done := make(chan struct{})
	go func() { countMessages(reader, &got); close(done) }() // owner: API; ends when reader closes
	defer func() { reader.close(); <-done }()

	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.Publishers}}
	api := apiv1connect.NewServerAPIClient(httpc, strings.TrimSuffix(o.APIURL, "/"))
	auth := "Bearer " + o.APIKey
	body := &hubbubv1.Body{Kind: &hubbubv1.Body_Binary{Binary: make([]byte, o.Size)}}
	var out []Result
	unary := func(context.Context) (int, error) {
		req := connect.NewRequest(&apiv1.PublishRequest{Room: room, Body: body})
		req.Header().Set("Authorization", auth)
		_, err := api.Publish(ctx, req)
		return 1, err
	}
	batch := func(context.Context) (int, error) {
		items := make([]*apiv1.PublishRequest, o.Batch)
		for i := range items {
			items[i] = &apiv1.PublishRequest{Room: room, Body: body}
		}
		req := connect.NewRequest(&apiv1.BatchPublishRequest{Items: items})
		req.Header().Set("Authorization", auth)
		res, err := api.BatchPublish(ctx, req)
		if err != nil {
			return 0, err
		}
		for _, r := range res.Msg.GetResults() {
			if r.GetError() != nil {
				return 0, fmt.Errorf("batch item: %v", r.GetError())
			}
		}
		return len(items), nil
	}
	for _, s := range []struct {
		name string
		call func(context.Context) (int, error)
	}{{"api-publish", unary}, {"api-batch", batch}} {
		calls := make([]func(context.Context) (int, error), o.Publishers)
		for i := range calls {
			calls[i] = s.call
		}
		r, err := closedLoop(ctx, o, s.name, calls)
		out = append(out, r)
		if err != nil {
			return out, err
		}
	}
	// The same from WebSocket clients.
	calls := make([]func(context.Context) (int, error), o.Publishers)
	for i := range calls {
		c, err := open(ctx, o.URL, fmt.Sprintf("pub-%d", i), dialOpts{})
		if err != nil {
			return out, err
		}
		defer c.close()
		calls[i] = func(context.Context) (int, error) {
			r, err := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Publish{Publish: &hubbubv1.PublishRequest{Room: room, Body: body}}}, 10*time.Second)
			if err == nil && r.GetPublish() == nil {
				err = fmt.Errorf("publish: %v", r)
			}
			return 1, err
		}
	}
	r, err := closedLoop(ctx, o, "ws-publish", calls)
	out = append(out, r)
	return out, err
}

// closedLoop runs each call in its own loop for o.Duration and reports
// messages per second, call latency and server CPU per message.
func closedLoop(ctx context.Context, o Options, name string, calls []func(context.Context) (int, error)) (Result, error) {
	r := Result{Scenario: name, Params: fmt.Sprintf("callers=%d batch=%d size=%d", len(calls), o.Batch, o.Size)}
	if name != "api-batch" {
		r.Params = fmt.Sprintf("callers=%d size=%d", len(calls), o.Size)
	}
	before, _ := readProc(o.ServerPID)
	var lat hist
	var mu sync.Mutex
	var msgs, errs atomic.Int64
	var firstErr error
	stop := time.Now().Add(o.Duration)
	start := time.Now()
	var wg sync.WaitGroup
	for _, call := range calls {
		wg.Go(func() {
			var mine hist
			for time.Now().Before(stop) && ctx.Err() == nil {
				t0 := time.Now()
				n, err := call(ctx)
				if err != nil {
					if errs.Add(1) == 1 {
						mu.Lock()
						firstErr = err
						mu.Unlock()
					}
					if errs.Load() > 1000 {
						return // broken: stop rather than spin
					}
					continue
				}
				mine.record(time.Since(t0))
				msgs.Add(int64(n))
			}
			mu.Lock()
			lat.merge(&mine)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	after, _ := readProc(o.ServerPID)
	r.DurationSec = elapsed.Seconds()
	r.Published, r.PublishErrors = msgs.Load(), errs.Load()
	r.PublishesPerS = float64(r.Published) / elapsed.Seconds()
	r.P50Ms, r.P99Ms = ms(lat.quantile(0.5)), ms(lat.quantile(0.99))
	r.ServerCPUSec = after.cpuSeconds - before.cpuSeconds
	if r.Published > 0 && o.ServerPID != 0 {
		r.CPUPerPublishUs = r.ServerCPUSec * 1e6 / float64(r.Published)
	}
	progress(o, "%s: %.0f messages/s, call p50 %.2fms p99 %.2fms", name, r.PublishesPerS, r.P50Ms, r.P99Ms)
	if firstErr != nil {
		r.Note = "first error: " + firstErr.Error()
	}
	return r, nil
}
