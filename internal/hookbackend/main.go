// Command hookbackend is a backend implementing hubbub.hooks.v1.Hooks for
// the end-to-end tests: it serves Connect, gRPC and HTTP+JSON on one port and
// decides from what it is sent (see the handler's methods). It prints
// "listening ADDR" first, then one line per call: "call METHOD TRACEPARENT".
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	hooksv1 "github.com/hubbub-chat/hubbub/proto/hubbub/hooks/v1"
	"github.com/hubbub-chat/hubbub/proto/hubbub/hooks/v1/hooksv1connect"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address")
	secret := flag.String("secret", "", "required bearer secret")
	garbage := flag.Bool("garbage", false, "answer every call with bytes that are not a reply")
	acceptAll := flag.Bool("accept-all", false, "connect: the user is the name the client gave (benchmarks)")
	quiet := flag.Bool("quiet", false, "print no line per call (benchmarks)")
	certFile := flag.String("tls-cert", "", "serve TLS with this PEM certificate (and --tls-key)")
	keyFile := flag.String("tls-key", "", "PEM key of --tls-cert")
	clientCA := flag.String("client-ca", "", "with TLS: require a client certificate signed by these PEM CAs")
	flag.Parse()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	h := &handler{secret: *secret, acceptAll: *acceptAll, quiet: *quiet}
	path, hh := hooksv1connect.NewHooksHandler(h)
	if *garbage {
		hh = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte("{this is not a reply"))
		})
	}
	mux.Handle(path, hh)
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true) // over TLS, for gRPC
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: p}
	fmt.Println("listening", l.Addr())
	if *certFile == "" {
		_ = srv.Serve(l)
		return
	}
	srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if *clientCA != "" {
		b, err := os.ReadFile(*clientCA)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(b)
		srv.TLSConfig.ClientCAs, srv.TLSConfig.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	_ = srv.ServeTLS(l, *certFile, *keyFile)
}

type handler struct {
	secret    string
	acceptAll bool
	quiet     bool
	mu        sync.Mutex
}

// seen checks the secret and prints the call.
func (h *handler) seen(method string, hdr http.Header) error {
	if !h.quiet {
		h.mu.Lock()
		fmt.Println("call", method, hdr.Get("traceparent"))
		h.mu.Unlock()
	}
	if h.secret != "" && hdr.Get("Authorization") != "Bearer "+h.secret {
		return connect.NewError(connect.CodeUnauthenticated, errors.New("wrong secret"))
	}
	return nil
}

// Connect: token "user:NAME" is NAME (with "/ROOM,ROOM" the rooms to join),
// with info naming them and echoing the Cookie header and the connect data;
// "deny" is refused, "suspended" refused with PERMISSION_DENIED; anything
// else gets no user.
func (h *handler) Connect(_ context.Context, req *connect.Request[hooksv1.ConnectRequest]) (*connect.Response[hooksv1.ConnectResponse], error) {
	if err := h.seen("Connect", req.Header()); err != nil {
		return nil, err
	}
	res := &hooksv1.ConnectResponse{}
	switch tok := req.Msg.GetToken(); {
	case strings.HasPrefix(tok, "user:"):
		// "user:NAME" or "user:NAME/ROOM,ROOM": the user, and rooms to join.
		user, rooms, _ := strings.Cut(strings.TrimPrefix(tok, "user:"), "/")
		res.User = user
		if rooms != "" {
			res.Rooms = strings.Split(rooms, ",")
		}
		info := map[string]any{"name": strings.ToUpper(user[:1]) + user[1:]}
		if c := req.Msg.GetHeaders()["Cookie"]; c != "" {
			info["cookie"] = c
		}
		if d := req.Msg.GetData(); d != nil {
			info["data"] = d.AsInterface()
		}
		if req.Msg.GetRemoteAddr() != "" {
			info["remote"] = true
		}
		res.Info, _ = structpb.NewValue(info)
	case strings.Count(tok, ".") == 2:
		// A JWT that Hubbub checked already: the user is "jwt-" and its subject.
		var claims struct{ Sub string }
		b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
		if err == nil && json.Unmarshal(b, &claims) == nil && claims.Sub != "" {
			res.User = "jwt-" + claims.Sub
		}
	case h.acceptAll:
		res.User = req.Msg.GetName()
	case tok == "deny":
		res.Error = &hooksv1.Refusal{Reason: "banned"}
	case tok == "suspended":
		res.Error = &hooksv1.Refusal{Reason: "suspended until tomorrow", Code: hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED}
	}
	return connect.NewResponse(res), nil
}

// Join: rooms "secret*" are refused, "vip*" return data, "slow*" take 300ms.
func (h *handler) Join(_ context.Context, req *connect.Request[hooksv1.JoinRequest]) (*connect.Response[hooksv1.JoinResponse], error) {
	if err := h.seen("Join", req.Header()); err != nil {
		return nil, err
	}
	res := &hooksv1.JoinResponse{}
	switch room := req.Msg.GetRoom(); {
	case strings.HasPrefix(room, "secret"):
		res.Error = &hooksv1.Refusal{Reason: "members only"}
	case strings.HasPrefix(room, "vip"):
		res.Data, _ = structpb.NewValue(map[string]any{"tier": "gold", "user": req.Msg.GetUser()})
	case strings.HasPrefix(room, "slow"):
		time.Sleep(300 * time.Millisecond)
	}
	return connect.NewResponse(res), nil
}

// Publish: "badword" is refused, "shout:..." is upper-cased, "slow..." takes 200ms.
func (h *handler) Publish(_ context.Context, req *connect.Request[hooksv1.PublishRequest]) (*connect.Response[hooksv1.PublishResponse], error) {
	if err := h.seen("Publish", req.Header()); err != nil {
		return nil, err
	}
	res := &hooksv1.PublishResponse{}
	switch text := req.Msg.GetBody().GetText(); {
	case strings.Contains(text, "badword"):
		res.Error = &hooksv1.Refusal{Reason: "watch your language"}
	case strings.HasPrefix(text, "shout:"):
		res.Body = &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: strings.ToUpper(text)}}
	case strings.HasPrefix(text, "slow"):
		time.Sleep(200 * time.Millisecond)
	}
	return connect.NewResponse(res), nil
}

// Notify prints each notification: "notify KIND USER CLIENT ROOM REASON NODE SEQ".
func (h *handler) Notify(_ context.Context, req *connect.Request[hooksv1.NotifyRequest]) (*connect.Response[hooksv1.NotifyResponse], error) {
	if err := h.seen("Notify", req.Header()); err != nil {
		return nil, err
	}
	h.mu.Lock()
	for _, n := range req.Msg.GetNotifications() {
		fmt.Println("notify", n.GetKind().String(), n.GetUser(), n.GetClientId(), orDash(n.GetRoom()), n.GetReason(), req.Msg.GetNode(), n.GetSeq())
	}
	h.mu.Unlock()
	return connect.NewResponse(&hooksv1.NotifyResponse{}), nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Rpc: "echo" returns its data, "whoami" the user, "fail" refuses, "sleep" sleeps data.ms.
func (h *handler) Rpc(_ context.Context, req *connect.Request[hooksv1.RpcRequest]) (*connect.Response[hooksv1.RpcResponse], error) {
	if err := h.seen("Rpc", req.Header()); err != nil {
		return nil, err
	}
	res := &hooksv1.RpcResponse{}
	switch req.Msg.GetMethod() {
	case "echo":
		res.Data = req.Msg.GetData()
	case "whoami":
		res.Data = structpb.NewStringValue(req.Msg.GetUser())
	case "sleep":
		ms := req.Msg.GetData().GetStructValue().GetFields()["ms"].GetNumberValue()
		time.Sleep(time.Duration(ms) * time.Millisecond)
		res.Data = structpb.NewStringValue("slept")
	default:
		res.Error = &hooksv1.Refusal{Reason: "no such method: " + req.Msg.GetMethod()}
	}
	return connect.NewResponse(res), nil
}
