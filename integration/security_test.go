package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/hubbub-chat/hubbub/actors"
	"github.com/hubbub-chat/hubbub/auth"
	apiv1 "github.com/hubbub-chat/hubbub/proto/hubbub/api/v1"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/server"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

var testSecret = []byte("integration secret, 32 bytes ok!")

func token(t *testing.T, method jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func userClaims(sub string, exp time.Duration) jwt.MapClaims {
	c := jwt.MapClaims{"exp": time.Now().Add(exp).Unix(),
		"rooms": map[string]any{"join": []string{"lobby", "team:*"}, "publish": []string{"lobby"}, "read": []string{"*"}}}
	if sub != "" {
		c["sub"] = sub
	}
	return c
}

func authServer(t *testing.T, nc actors.Config, tc transport.Config) *testServer {
	t.Helper()
	a, err := auth.New(auth.Config{Algorithm: "HS256", HMACSecret: testSecret, AnonymousRooms: []string{"public:*"}})
	if err != nil {
		t.Fatal(err)
	}
	return startServer(t, nc, tc, server.Options{Auth: a})
}

func connectFrame(tok, name string) *hubbubv1.ClientFrame {
	return &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Connect{Connect: &hubbubv1.ConnectRequest{Token: tok, Name: name}}}
}

// Refused tokens get UNAUTHORIZED and a close code saying whether to come back.
func TestTokensAtConnect(t *testing.T) {
	s := authServer(t, actors.Config{}, transport.Config{})
	other := []byte("not the server's secret at all!!")
	cases := []struct {
		name  string
		token string
		close int
	}{
		{"expired", token(t, jwt.SigningMethodHS256, testSecret, userClaims("alice", -time.Hour)), wire.CloseTokenExpired},
		{"wrong signature", token(t, jwt.SigningMethodHS256, other, userClaims("alice", time.Hour)), wire.CloseUnauthorized},
		{"wrong algorithm", token(t, jwt.SigningMethodHS384, testSecret, userClaims("alice", time.Hour)), wire.CloseUnauthorized},
		{"missing sub", token(t, jwt.SigningMethodHS256, testSecret, userClaims("", time.Hour)), wire.CloseUnauthorized},
		{"alg none", func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, userClaims("alice", time.Hour)).SignedString(jwt.UnsafeAllowNoneSignatureType)
			return s
		}(), wire.CloseUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s.URL, wire.Proto)
			r := c.request(connectFrame(tc.token, "alice"))
			if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_UNAUTHORIZED {
				t.Fatalf("reply %v", r)
			}
			for c.read(waitFor) != nil {
			}
			if got := closeCode(c.err()); got != tc.close {
				t.Fatalf("close %d (%v), want %d", got, c.err(), tc.close)
			}
		})
	}
	if s.node.Counters().Unauthorized.Load() != int64(len(cases)) {
		t.Fatalf("unauthorized counted %d", s.node.Counters().Unauthorized.Load())
	}
}

// What a valid token allows, per room and command; the sender shown is always the token's subject.
func TestPermissionMatrix(t *testing.T) {
	s := authServer(t, actors.Config{}, transport.Config{})
	alice := dial(t, s.URL, wire.JSON)
	r := alice.request(connectFrame(token(t, jwt.SigningMethodHS256, testSecret, userClaims("alice", time.Hour)), "admin"))
	if r.GetConnect().GetClient().GetUser() != "alice" || r.GetConnect().GetExpiresUnixMs() == 0 {
		t.Fatalf("connect %v", r)
	}
	anon := connect(t, s.URL, wire.Proto, "alice") // a name is not an identity
	join := func(room string) *hubbubv1.ClientFrame {
		return &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: room}}}
	}
	hist := func(room string) *hubbubv1.ClientFrame {
		return &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: room}}}
	}
	pres := func(room string) *hubbubv1.ClientFrame {
		return &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Presence{Presence: &hubbubv1.PresenceRequest{Room: room}}}
	}
	denied := hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED
	ok := hubbubv1.ErrorCode_ERROR_CODE_UNSPECIFIED
	cases := []struct {
		who   *client
		frame *hubbubv1.ClientFrame
		want  hubbubv1.ErrorCode
	}{
		{alice, join("lobby"), ok}, {alice, join("team:red"), ok}, {alice, join("secret"), denied},
		{alice, publishFrame("lobby", "hi", ""), ok}, {alice, publishFrame("team:red", "hi", ""), denied},
		{alice, hist("secret"), ok}, {alice, pres("secret"), ok},
		{alice, join("public:x"), ok}, {alice, publishFrame("public:x", "hi", ""), ok},
		{anon, join("lobby"), denied}, {anon, publishFrame("lobby", "hi", ""), denied}, {anon, hist("lobby"), denied}, {anon, pres("lobby"), denied},
		{anon, join("public:x"), ok}, {anon, publishFrame("public:x", "hi", ""), ok}, {anon, hist("public:x"), ok},
	}
	for i, tc := range cases {
		if got := errCode(tc.who.request(tc.frame)); got != tc.want {
			t.Errorf("case %d (%v): got %v want %v", i, tc.frame.GetCommand(), got, tc.want)
		}
	}
	// Senders are identities, not chosen names.
	var senders []string
	for k := 0; k < 2; {
		f := alice.nextPush()
		if m := f.GetMessage(); m != nil && m.GetRoom() == "public:x" {
			senders = append(senders, m.GetSender().GetUser())
			k++
		}
	}
	if fmt.Sprint(senders) != "[alice anon:alice]" {
		t.Fatalf("senders %v", senders)
	}
	if s.node.Counters().PermissionDenied.Load() != 6 {
		t.Fatalf("denials counted %d", s.node.Counters().PermissionDenied.Load())
	}
}

func TestTokenInQueryParameter(t *testing.T) {
	s := authServer(t, actors.Config{}, transport.Config{})
	c := dial(t, s.URL+"?token="+token(t, jwt.SigningMethodHS256, testSecret, userClaims("qp", time.Hour)), wire.Proto)
	if r := c.request(connectFrame("", "")); r.GetConnect().GetClient().GetUser() != "qp" {
		t.Fatalf("connect %v", r)
	}
}

// A token that expires while connected closes the connection with 4001 unless refreshed.
func TestTokenExpiryAndRefresh(t *testing.T) {
	s := authServer(t, actors.Config{}, transport.Config{})
	short := func(sub string) string {
		return token(t, jwt.SigningMethodHS256, testSecret, userClaims(sub, 1500*time.Millisecond))
	}
	expiring := dial(t, s.URL, wire.Proto)
	expiring.request(connectFrame(short("eve"), ""))
	refreshed := dial(t, s.URL, wire.JSON)
	refreshed.request(connectFrame(short("rob"), ""))
	if r := refreshed.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Refresh{Refresh: &hubbubv1.RefreshRequest{
		Token: token(t, jwt.SigningMethodHS256, testSecret, userClaims("someone-else", time.Hour))}}}); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
		t.Fatalf("refresh as another user: %v", r)
	}
	r := refreshed.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Refresh{Refresh: &hubbubv1.RefreshRequest{
		Token: token(t, jwt.SigningMethodHS256, testSecret, userClaims("rob", time.Hour))}}})
	if r.GetRefresh().GetExpiresUnixMs() < time.Now().Add(50*time.Minute).UnixMilli() {
		t.Fatalf("refresh %v", r)
	}
	var disc *hubbubv1.Disconnect
	for f := expiring.read(waitFor); f != nil; f = expiring.read(waitFor) {
		if d := f.GetDisconnect(); d != nil {
			disc = d
		}
	}
	if closeCode(expiring.err()) != wire.CloseTokenExpired || !disc.GetReconnect() {
		t.Fatalf("expiry close %v %v", expiring.err(), disc)
	}
	// The refreshed connection outlived the first token.
	if r := refreshed.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Ping{Ping: &hubbubv1.PingRequest{}}}); r.GetPing() == nil {
		t.Fatalf("refreshed connection: %v", r)
	}
}

func TestOriginAllowlist(t *testing.T) {
	s := startServer(t, actors.Config{}, transport.Config{AllowedOrigins: []string{"https://chat.example.com", "https://*.apps.example.org"}})
	for origin, want := range map[string]int{
		"https://chat.example.com":      http.StatusSwitchingProtocols,
		"https://a.apps.example.org":    http.StatusSwitchingProtocols,
		"https://evil.example.com":      http.StatusForbidden,
		"https://apps.example.org.evil": http.StatusForbidden,
		"http://chat.example.com":       http.StatusForbidden,
	} {
		d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolProto}}
		ws, resp, err := d.Dial(s.URL, http.Header{"Origin": {origin}})
		if resp == nil || resp.StatusCode != want {
			t.Fatalf("%s: %v %v", origin, resp, err)
		}
		if ws != nil {
			ws.Close()
		}
		resp.Body.Close()
	}
}

// A client flooding a room is throttled and then closed; a well-behaved
// client in the same room has every publish accepted and delivered.
func TestFloodingClientThrottled(t *testing.T) {
	s := startServer(t, actors.Config{Conn: actors.ConnConfig{CommandRate: 50, CommandBurst: 50, MaxStrikes: 200}}, transport.Config{})
	good := connect(t, s.URL, wire.Proto, "good")
	good.join("shared", nil)
	flood := connect(t, s.URL, wire.Proto, "flood")
	for i := 0; i < 2000; i++ {
		flood.send(publishFrame("shared", "spam", ""))
	}
	var accepted, limited int
	var retryHint bool
	for f := flood.read(waitFor); f != nil; f = flood.read(waitFor) {
		switch {
		case f.GetPublish() != nil:
			accepted++
		case errCode(f) == hubbubv1.ErrorCode_ERROR_CODE_RATE_LIMITED:
			limited++
			retryHint = retryHint || f.GetError().GetRetryAfterMs() > 0
		}
	}
	if closeCode(flood.err()) != wire.ClosePolicy || limited == 0 || !retryHint {
		t.Fatalf("flooder: close %v, acks seen %d, limited %d", flood.err(), accepted, limited)
	}
	// The good client's publishes all go through, in order after the flood's
	// (whose acks were cut off by the close: count them from the offsets).
	first := good.publish("shared", "good 0").GetOffset()
	accepted = int(first) - 1
	if accepted < 40 || accepted > 250 { // the burst, less the connect command, plus refill
		t.Fatalf("flood accepted %d publishes at 50/s with a burst of 50", accepted)
	}
	for i := 1; i < 20; i++ {
		if r := good.publish("shared", fmt.Sprint("good ", i)); r.GetOffset() != uint64(accepted+i+1) {
			t.Fatalf("good publish %d: %v (flood accepted %d)", i, r, accepted)
		}
	}
	for k := 0; k < accepted+20; k++ {
		if m := good.nextMessage(); m.GetOffset() != uint64(k+1) {
			t.Fatalf("stream gap at %d: %v", k, m)
		}
	}
	// The rejection that closes the connection gets no error frame of its own.
	if n := s.node.Counters().RateLimited.Load(); n != int64(limited) && n != int64(limited+1) {
		t.Fatalf("rate limits counted %d, seen %d", s.node.Counters().RateLimited.Load(), limited)
	}
}

func TestRoomPublishRate(t *testing.T) {
	s := startServer(t, actors.Config{Room: actors.RoomConfig{PublishRate: 5, PublishBurst: 5}}, transport.Config{})
	c := connect(t, s.URL, wire.Proto, "p")
	var limited int
	for i := 0; i < 10; i++ {
		r := c.request(publishFrame("slowroom", "x", ""))
		if errCode(r) == hubbubv1.ErrorCode_ERROR_CODE_RATE_LIMITED && r.GetError().GetRetryAfterMs() > 0 {
			limited++
		}
	}
	if limited < 4 {
		t.Fatalf("limited %d of 10", limited)
	}
	// Another room is unaffected.
	if r := c.request(publishFrame("fastroom", "x", "")); r.GetPublish() == nil {
		t.Fatalf("other room %v", r)
	}
}

func TestConnectionLimits(t *testing.T) {
	t.Run("attempts per IP", func(t *testing.T) {
		s := startServer(t, actors.Config{}, transport.Config{ConnectRatePerIP: 1, ConnectBurstPerIP: 3})
		var tooMany int
		for i := 0; i < 6; i++ {
			d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolProto}}
			ws, resp, _ := d.Dial(s.URL, nil)
			if ws != nil {
				ws.Close()
			}
			if resp != nil && resp.StatusCode == http.StatusTooManyRequests {
				tooMany++
			}
		}
		if tooMany < 2 || s.node.Counters().RateLimited.Load() != int64(tooMany) {
			t.Fatalf("429s %d, counted %d", tooMany, s.node.Counters().RateLimited.Load())
		}
	})
	t.Run("total", func(t *testing.T) {
		s := startServer(t, actors.Config{}, transport.Config{MaxConnections: 2})
		connect(t, s.URL, wire.Proto, "a")
		connect(t, s.URL, wire.Proto, "b")
		d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolProto}}
		_, resp, err := d.Dial(s.URL, nil)
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("third connection: %v %v", resp, err)
		}
		resp.Body.Close()
	})
	t.Run("per user", func(t *testing.T) {
		s := authServer(t, actors.Config{Conn: actors.ConnConfig{MaxConnsPerUser: 2}}, transport.Config{})
		tok := token(t, jwt.SigningMethodHS256, testSecret, userClaims("busy", time.Hour))
		for i := 0; i < 2; i++ {
			if r := dial(t, s.URL, wire.Proto).request(connectFrame(tok, "")); r.GetConnect() == nil {
				t.Fatalf("connection %d: %v", i, r)
			}
		}
		c := dial(t, s.URL, wire.Proto)
		if r := c.request(connectFrame(tok, "")); errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED {
			t.Fatalf("third: %v", r)
		}
		for c.read(waitFor) != nil {
		}
		if closeCode(c.err()) != wire.CloseTooManyConnections {
			t.Fatalf("close %v", c.err())
		}
	})
}

// selfSigned writes a certificate and key for 127.0.0.1.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hubbub test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// `hubbub serve --tls-cert --tls-key` serves wss://.
func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	p := startProcess(t, append(apiArgs(t), "--tls-cert", certFile, "--tls-key", keyFile)...)
	if !strings.HasPrefix(p.URL, "wss://") {
		t.Fatalf("url %s", p.URL)
	}
	d := &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	c, err := tryDial(t, p.URL, wire.JSON, d)
	if err != nil {
		t.Fatal(err)
	}
	r := c.request(connectFrame("", "tls"))
	if r.GetConnect() == nil {
		t.Fatalf("connect over TLS: %v", r)
	}
	c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "secure"}}})
	if ack := c.publish("secure", strings.Repeat("z", 20000)); ack.GetOffset() != 1 {
		t.Fatalf("publish %v", ack)
	}
	if m := c.nextMessage(); len(m.GetBody().GetText()) != 20000 {
		t.Fatalf("message over TLS: %d bytes", len(m.GetBody().GetText()))
	}
	// The server API takes the same certificate, over HTTP/2 (gRPC) and HTTP/1.1.
	conn, err := grpc.NewClient(strings.TrimPrefix(p.API, "http://"), grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(pool, "")))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+pubKey)
	res, err := apiv1.NewServerAPIClient(conn).Publish(ctx, &apiv1.PublishRequest{Room: "secure", Body: &hubbubv1.Body{Kind: &hubbubv1.Body_Text{Text: "api"}}})
	if err != nil || res.GetOffset() != 2 {
		t.Fatalf("API publish over TLS: %v %v", res, err)
	}
	if m := c.nextMessage(); m.GetBody().GetText() != "api" || m.GetSender().GetServer() != "billing" {
		t.Fatalf("API message over TLS: %v", m)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Post("https"+strings.TrimPrefix(p.API, "http")+"/hubbub.api.v1.ServerAPI/Info", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized { // no key: refused, but over TLS
		t.Fatalf("HTTP/1.1 over TLS: %d", resp.StatusCode)
	}
}

func TestRoomMemberLimit(t *testing.T) {
	s := startServer(t, actors.Config{Room: actors.RoomConfig{MaxMembers: 2}}, transport.Config{})
	connect(t, s.URL, wire.Proto, "a").join("small", nil)
	connect(t, s.URL, wire.Proto, "b").join("small", nil)
	c := connect(t, s.URL, wire.JSON, "c")
	r := c.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Join{Join: &hubbubv1.JoinRequest{Room: "small"}}})
	if errCode(r) != hubbubv1.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED || !r.GetError().GetTemporary() {
		t.Fatalf("third member: %v", r)
	}
	// The refused join left no trace: the client may join elsewhere and retry later.
	c.join("big", nil)
}
