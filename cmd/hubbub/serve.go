package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hubbub-chat/hubbub/actors"
	"github.com/hubbub-chat/hubbub/api"
	"github.com/hubbub-chat/hubbub/auth"
	"github.com/hubbub-chat/hubbub/hooks"
	"github.com/hubbub-chat/hubbub/internal/gcfloor"
	"github.com/hubbub-chat/hubbub/server"
	"github.com/hubbub-chat/hubbub/store"
	"github.com/hubbub-chat/hubbub/telemetry"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/web"
)

// serveConfig is everything `hubbub serve` reads from flags and environment.
type serveConfig struct {
	listen          string
	logFormat       string
	logLevel        string
	tlsCert, tlsKey string
	shutdownTimeout time.Duration
	server          server.Config
	auth            auth.Config
	tracing         telemetry.TracingConfig
	traceDeliveries string
	overflow        string
	clusterSeeds    string
	etcdEndpoints   string
	hmacSecretFile  string
	anonymousRooms  string
	allowedOrigins  string
	historyStore    string
	dataDir         string
	redis           store.RedisOptions
	ephemeralRooms  string
	redisSentinels  string
	stallLimit      time.Duration
	presence        string
	joinLeave       bool
	typing          bool
	configFile      string
	printConfig     bool
	gcHeapFloor     int // MiB
	apiListen       string
	apiKeyFile      string
	hooks           hooks.Config
	hookSecretFile  string
	hookHeaders     string
	hookEnabled     string
	hookURLs        string
	hookTimeouts    string
	hookCAFile      string
	hookCertFile    string
	hookKeyFile     string
	rooms           []roomSpec // the config file's profiles
	flags           *envFlags
}

func parseServe(args []string) (*serveConfig, error) {
	c := &serveConfig{}
	f := newEnvFlags("serve")
	tc, nc := &c.server.Transport, &c.server.Node
	f.group("Server")
	f.str(&c.configFile, "config", "", "YAML file of settings (any flag below, without its dashes) and room profiles (rooms:); flags and HUBBUB_* variables override it")
	f.boolean(&c.printConfig, "print-config", false, "print the effective configuration as a config file and exit")
	f.str(&c.listen, "listen", "127.0.0.1:8080", "address to listen on")
	f.str(&c.tlsCert, "tls-cert", "", "TLS certificate file (serves wss:// with --tls-key)")
	f.str(&c.tlsKey, "tls-key", "", "TLS private key file")
	f.duration(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful shutdown may take")
	f.str(&c.logFormat, "log-format", "text", "log format: text or json")
	f.str(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.boolean(&c.server.Metrics, "metrics", true, "serve Prometheus metrics at /metrics")
	f.boolean(&c.server.Pprof, "pprof", false, "serve Go profiles at /debug/pprof/ (for profiling; keep it off in production)")
	f.integer(&c.gcHeapFloor, "gc-heap-floor", 128, "MiB the Go heap may reach before its collector runs, while the live heap is small (a node just started, taking its clients' reconnects); at most a quarter of the memory the process may use (GOMEMLIMIT, cgroup limit, machine); 0 leaves GOGC alone. GOGC and GOMEMLIMIT apply as usual")
	f.nonNegative("gc-heap-floor", func() float64 { return float64(c.gcHeapFloor) })

	f.group("Server API")
	f.str(&c.apiListen, "api-listen", "", "address of the server API for backends (gRPC, gRPC-Web and HTTP+JSON), e.g. 127.0.0.1:8081; off when empty. TLS with --tls-cert")
	f.str(&c.apiKeyFile, "api-key-file", "", "the server API's keys, one per line: NAME KEY SCOPES (scopes comma-separated from publish, read, admin; # comments)")

	f.group("Backend hooks")
	f.str(&c.hooks.URL, "hook-url", "", "base URL of the backend implementing hubbub.hooks.v1.Hooks (connect, join, publish, rpc); off when empty")
	f.str(&c.hooks.Protocol, "hook-protocol", "json", "how to call the hooks: json (HTTP+JSON), proto (Connect, binary) or grpc")
	f.str(&c.hookSecretFile, "hook-secret-file", "", "file holding the secret sent to the backend as Authorization: Bearer <secret>")
	f.duration(&c.hooks.Timeout, "hook-timeout", 2*time.Second, "bound on one hook call; past it the command gets a temporary UNAVAILABLE (a connect: close 1013)")
	f.integer(&c.hooks.MaxConcurrent, "hook-max-concurrent", 256, "hook calls in flight at most; more wait within their timeout")
	f.str(&c.hookEnabled, "hooks", "connect,join,publish,rpc,notify", "the hooks called, comma-separated from connect, join, publish, rpc and notify; the others act as without a backend")
	f.str(&c.hookURLs, "hook-urls", "", "hooks with a backend of their own, e.g. join=http://10.0.0.5:9000,publish=http://10.0.0.6:9000; the others call --hook-url")
	f.str(&c.hookTimeouts, "hook-timeouts", "", "hooks with a timeout of their own, e.g. publish=300ms,connect=5s; the others take --hook-timeout")
	f.str(&c.hookCAFile, "hook-ca-file", "", "PEM CAs trusted for https hook URLs (default: the system's)")
	f.str(&c.hookCertFile, "hook-cert", "", "PEM certificate Hubbub presents to a backend asking for one (mutual TLS), with --hook-key")
	f.str(&c.hookKeyFile, "hook-key", "", "PEM key of --hook-cert")
	f.str(&c.hookHeaders, "hook-headers", "Cookie,User-Agent,Origin,X-Forwarded-For", "HTTP headers of the WebSocket upgrade passed to the connect hook, comma-separated")
	f.duration(&nc.Notify.Grace, "hook-disconnect-grace", 2*time.Second, "a disconnect and its leaves are notified this long after they happen; a reconnect of the same user to this node drops the disconnect, a rejoin of a room its leave")
	f.integer(&nc.Notify.MaxQueue, "hook-notify-queue", 10000, "leave and disconnect notifications waiting for the backend at most; beyond it the oldest are dropped (counted)")

	f.group("Connections")
	f.integer(&tc.MaxFrameBytes, "max-frame-bytes", 64<<10, "largest client frame; larger ones close with 1009")
	f.integer(&tc.SocketSendBuffer, "socket-send-buffer", 0, "each connection's kernel send buffer in bytes (0: the kernel's autotuning); small values make a client that stopped reading meet its queue bound and overflow policy sooner")
	f.integer(&tc.MaxQueuedBytes, "max-queued-bytes", 1<<20, "outbound queue bound per connection; beyond it a client is closed as a slow consumer (4000)")
	f.duration(&tc.SlowConsumerGrace, "slow-consumer-grace", time.Second, "how long a client closed as a slow consumer has to take the Disconnect push and close 4000 before it is dropped without them")
	f.duration(&tc.PingInterval, "ping-interval", 25*time.Second, "interval of server pings")
	f.duration(&tc.PongTimeout, "pong-timeout", 10*time.Second, "silence past a ping interval after which a peer is dead")
	f.duration(&tc.WriteTimeout, "write-timeout", 10*time.Second, "bound on every socket write")
	f.duration(&nc.Conn.ConnectTimeout, "connect-timeout", 10*time.Second, "a connection that has not completed connect this long after opening is closed with 4005")
	f.boolean(&tc.Compression, "compression", false, "permessage-deflate for clients that offer it (costs server CPU per message and recipient)")
	f.integer(&tc.CompressionLevel, "compression-level", 1, "flate level 1-9 for --compression")
	f.duration(&nc.Conn.RequestTimeout, "request-timeout", 5*time.Second, "bound on waiting for a room's answer")
	f.str(&tc.Reader, "reader", transport.ReaderEpoll, "how connections are read: epoll (Linux: idle connections hold no goroutine; a reader runs while a socket has input) or goroutine (one per connection; always so elsewhere and with --tls-cert)")

	f.group("Rooms and history")
	f.integer(&nc.Room.HistorySize, "history-size", 100, "messages kept per room (negative: none)")
	f.duration(&nc.Room.HistoryTTL, "history-ttl", 10*time.Minute, "how long a message stays in history")
	f.integer(&nc.Room.UserHistorySize, "user-history-size", 100, "direct messages kept per user's personal stream for devices that were away (negative: none)")
	f.duration(&nc.Room.UserHistoryTTL, "user-history-ttl", 24*time.Hour, "how long a direct message stays in a personal stream (within the store's retention)")
	f.str(&c.historyStore, "history-store", "auto", "where room history lives: embedded (on disk under --data-dir, single node), redis (Redis Streams shared by a cluster), memory (lost when a room stops) or auto (embedded on a single node, memory in a cluster)")
	f.str(&c.dataDir, "data-dir", "hubbub-data", "directory of the embedded history store")
	f.str(&c.ephemeralRooms, "ephemeral-rooms", "", "comma-separated room patterns whose history stays in memory even with a durable store (faster; lost when the room stops)")
	f.duration(&nc.Room.IdleTimeout, "room-idle-timeout", time.Minute, "an empty room stops after this long without activity")
	f.integer(&nc.Room.MaxMembers, "max-room-members", 0, "members per room (0: unlimited)")
	f.integer(&nc.RelayShards, "relay-shards", 0, "relay actors that fan a node's pushes out to its connections (0: one per core)")
	f.boolean(&nc.Ledger, "delivery-ledger", true, "count what became of each recent message's deliveries (queued, written, acked, dropped, conflated, disconnected) for the server API's Ledger and the fan-out spans")
	f.duration(&nc.Room.TypingTTL, "typing-ttl", 5*time.Second, "how long a typing indicator lasts without a refresh")
	f.integer(&nc.Conn.MaxMessageBytes, "max-message-bytes", 32<<10, "largest published body: bytes of a text or binary body, of a data body's compact JSON")
	f.integer(&nc.Conn.MaxRoomNameBytes, "max-room-name-bytes", 128, "longest room name")
	f.integer(&nc.Conn.MaxRooms, "max-rooms-per-conn", 100, "rooms one connection may join")
	f.str(&c.overflow, "overflow-policy", "", "shorthand for room profiles that change only the overflow policy: comma-separated room-pattern=policy rules for members whose queue is full: disconnect (default), drop-oldest or conflate, e.g. 'market:*=conflate,game:*=drop-oldest'")
	f.str(&c.presence, "presence", "full", "presence mode of rooms: full (paged member list and diffs), counts (member and user counts only) or off (counts on request, nothing pushed)")
	f.boolean(&c.joinLeave, "join-leave", true, "push presence changes (diffs, or counts in counts mode) to room members; --join-leave=false turns them off")
	f.duration(&nc.Room.PresenceInterval, "presence-interval", time.Second, "how often a room pushes its presence changes at most, coalesced into one diff")
	f.integer(&nc.Room.PresenceMaxDiff, "presence-max-diff", 100, "most users one presence diff lists; more changes push a reset with the counts")
	f.integer(&nc.Room.PresenceMaxUsers, "presence-max-users", 1000, "rooms with more users than this push counts only (clients page the member list on demand)")
	f.boolean(&c.typing, "typing", true, "typing indicators; --typing=false turns them off")

	f.group("Redis history store")
	f.str(&c.redis.URL, "redis-url", "redis://127.0.0.1:6379/0", "Redis of the redis history store")
	f.str(&c.redis.Prefix, "redis-prefix", "hubbub:", "prefix of the redis history store's keys")
	f.str(&c.redis.SentinelMaster, "redis-sentinel-master", "", "find the Redis primary through Sentinel under this master name (with --redis-sentinels) and follow its failovers")
	f.str(&c.redisSentinels, "redis-sentinels", "", "comma-separated host:port of the Redis Sentinels")
	f.integer(&c.redis.WaitReplicas, "redis-wait-replicas", 0, "acknowledge a publish only once this many Redis replicas have it (Redis WAIT), so a failover loses no acknowledged message")
	f.duration(&c.redis.WaitTimeout, "redis-wait-timeout", time.Second, "how long a publish waits for --redis-wait-replicas before failing (temporarily)")

	f.group("Security and limits")
	f.str(&c.auth.Algorithm, "jwt-alg", "", "the one JWT algorithm accepted (HS256, RS256, ES256, ...); needs a key, and a key switches on production mode")
	f.str(&c.hmacSecretFile, "jwt-hmac-secret-file", "", "file holding the HMAC secret for HS* tokens")
	f.str(&c.auth.PublicKeyFile, "jwt-public-key-file", "", "PEM RSA or ECDSA public key for RS*, PS* and ES* tokens")
	f.str(&c.auth.JWKSFile, "jwks-file", "", "JSON Web Key Set file; a token's kid picks the key")
	f.str(&c.auth.Issuer, "jwt-issuer", "", "required token issuer (iss)")
	f.str(&c.auth.Audience, "jwt-audience", "", "required token audience (aud)")
	f.str(&c.anonymousRooms, "anonymous-rooms", "", "comma-separated room patterns open to clients without a token (default: all rooms without a key, none with one)")
	f.str(&c.allowedOrigins, "allowed-origins", "", "comma-separated browser origins allowed besides the page's own, e.g. https://*.example.com")
	f.integer(&tc.MaxConnections, "max-connections", 0, "open WebSockets at most (0: unlimited); beyond it HTTP 503")
	f.float(&tc.ConnectRatePerIP, "conn-rate-per-ip", 0, "upgrade attempts per second per IP (0: unlimited); beyond it HTTP 429")
	f.integer(&nc.Conn.MaxConnsPerUser, "max-conns-per-user", 0, "connections per user on this node (0: unlimited); beyond it close 4003")
	f.float(&nc.Conn.CommandRate, "command-rate", 1000, "commands per second per connection (negative: unlimited)")
	f.float(&nc.Conn.ByteRate, "byte-rate", 8<<20, "frame bytes per second per connection (negative: unlimited)")
	f.float(&nc.Room.PublishRate, "room-publish-rate", 0, "publishes per second per room (0: unlimited)")

	f.group("Cluster")
	f.str(&nc.Cluster.Provider, "cluster-provider", "", "cluster membership: empty for a single node, automanaged (static seed list, no external server) or etcd")
	f.str(&nc.Cluster.Name, "cluster-name", "hubbub", "cluster name; nodes of other clusters do not join")
	f.str(&nc.Cluster.Bind, "cluster-bind", "127.0.0.1:8090", "host:port of this node's actor transport")
	f.integer(&nc.Cluster.AutoManagePort, "cluster-automanage-port", 6330, "automanaged: this node's membership HTTP port")
	f.str(&c.clusterSeeds, "cluster-seeds", "", "automanaged: comma-separated host:automanage-port of every node")
	f.str(&c.etcdEndpoints, "etcd-endpoints", "127.0.0.1:2379", "etcd: comma-separated etcd endpoints")
	f.duration(&c.stallLimit, "cluster-stall-limit", time.Second, "a cluster node frozen longer than this (the others may have evicted it) closes its connections with 1001 and exits with status 3, to be restarted fresh")

	f.group("Tracing (OpenTelemetry)")
	f.str(&c.tracing.Exporter, "otel-traces-exporter", "", "traces exporter: otlp, console or none (default $OTEL_TRACES_EXPORTER, else none)")
	f.str(&c.tracing.Endpoint, "otel-endpoint", "", "OTLP endpoint URL, e.g. http://127.0.0.1:4317 (default $OTEL_EXPORTER_OTLP_ENDPOINT)")
	f.str(&c.tracing.Protocol, "otel-protocol", "", "OTLP protocol: grpc or http/protobuf (default $OTEL_EXPORTER_OTLP_PROTOCOL, else grpc)")
	f.str(&c.tracing.Sampler, "otel-sampler", "", "trace sampler as in OTEL_TRACES_SAMPLER (default parentbased_always_on)")
	f.str(&c.tracing.SamplerArg, "otel-sampler-arg", "", "sampler argument as in OTEL_TRACES_SAMPLER_ARG")
	f.str(&c.tracing.ServiceName, "otel-service-name", "", "service.name of traces (default $OTEL_SERVICE_NAME, else hubbub)")
	f.str(&c.traceDeliveries, "trace-deliveries", "counts", "how recipients appear on traces: counts, events (one span event each) or spans (one span each)")
	checkServeFlags(f, c)
	c.flags = f
	if path := configPath(args); path != "" {
		rooms, err := loadConfigFile(path, f.FlagSet)
		if err != nil {
			return nil, err
		}
		c.rooms = rooms
	}
	if err := f.parse(args); err != nil {
		return nil, err
	}
	if f.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %v", f.Args())
	}
	return c, c.resolve()
}

// checkServeFlags refuses nonsense values with the flag named: sizes and
// durations that must be positive, counts and rates that must not be negative.
func checkServeFlags(f *envFlags, c *serveConfig) {
	tc, nc := &c.server.Transport, &c.server.Node
	i := func(p *int) func() float64 { return func() float64 { return float64(*p) } }
	d := func(p *time.Duration) func() float64 { return func() float64 { return float64(*p) } }
	fl := func(p *float64) func() float64 { return func() float64 { return *p } }
	for name, v := range map[string]func() float64{
		"max-frame-bytes": i(&tc.MaxFrameBytes), "max-queued-bytes": i(&tc.MaxQueuedBytes),
		"max-message-bytes": i(&nc.Conn.MaxMessageBytes), "max-room-name-bytes": i(&nc.Conn.MaxRoomNameBytes),
		"max-rooms-per-conn": i(&nc.Conn.MaxRooms), "ping-interval": d(&tc.PingInterval), "pong-timeout": d(&tc.PongTimeout),
		"write-timeout": d(&tc.WriteTimeout), "slow-consumer-grace": d(&tc.SlowConsumerGrace), "connect-timeout": d(&nc.Conn.ConnectTimeout), "request-timeout": d(&nc.Conn.RequestTimeout),
		"history-ttl": d(&nc.Room.HistoryTTL), "user-history-ttl": d(&nc.Room.UserHistoryTTL), "presence-interval": d(&nc.Room.PresenceInterval), "presence-max-diff": i(&nc.Room.PresenceMaxDiff), "presence-max-users": i(&nc.Room.PresenceMaxUsers), "room-idle-timeout": d(&nc.Room.IdleTimeout), "typing-ttl": d(&nc.Room.TypingTTL),
		"shutdown-timeout": d(&c.shutdownTimeout), "cluster-stall-limit": d(&c.stallLimit), "redis-wait-timeout": d(&c.redis.WaitTimeout),
	} {
		f.positive(name, v)
	}
	for name, v := range map[string]func() float64{
		"max-room-members": i(&nc.Room.MaxMembers), "socket-send-buffer": i(&tc.SocketSendBuffer), "max-connections": i(&tc.MaxConnections),
		"conn-rate-per-ip": fl(&tc.ConnectRatePerIP), "max-conns-per-user": i(&nc.Conn.MaxConnsPerUser),
		"room-publish-rate": fl(&nc.Room.PublishRate), "redis-wait-replicas": i(&c.redis.WaitReplicas),
	} {
		f.nonNegative(name, v)
	}
	f.between("compression-level", 1, 9, i(&tc.CompressionLevel))
	f.between("cluster-automanage-port", 1, 65535, i(&nc.Cluster.AutoManagePort))
	f.checks = append(f.checks, func() error {
		if nc.Conn.MaxMessageBytes > tc.MaxFrameBytes {
			return fmt.Errorf("--max-message-bytes (%d) cannot exceed --max-frame-bytes (%d)", nc.Conn.MaxMessageBytes, tc.MaxFrameBytes)
		}
		return nil
	})
}

// resolve turns the parsed flags into the node's configuration.
func (c *serveConfig) resolve() error {
	tc, nc := &c.server.Transport, &c.server.Node
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.hmacSecretFile != "" {
		secret, err := os.ReadFile(c.hmacSecretFile)
		if err != nil {
			return fmt.Errorf("--jwt-hmac-secret-file: %w", err)
		}
		c.auth.HMACSecret = []byte(strings.TrimSpace(string(secret)))
	}
	if c.auth.Algorithm != "" && c.hmacSecretFile == "" && c.auth.PublicKeyFile == "" && c.auth.JWKSFile == "" {
		return fmt.Errorf("--jwt-alg %s needs a key (--jwt-hmac-secret-file, --jwt-public-key-file or --jwks-file); without one there is no authentication", c.auth.Algorithm)
	}
	if c.anonymousRooms != "" {
		c.auth.AnonymousRooms = splitList(c.anonymousRooms)
	}
	if (c.apiListen == "") != (c.apiKeyFile == "") {
		return errors.New("--api-listen and --api-key-file go together: the server API refuses calls without a key")
	}
	if c.hookSecretFile != "" && c.hooks.URL == "" {
		return errors.New("--hook-secret-file needs --hook-url")
	}
	if c.hooks.URL != "" {
		if c.hookSecretFile != "" {
			secret, err := os.ReadFile(c.hookSecretFile)
			if err != nil {
				return fmt.Errorf("--hook-secret-file: %w", err)
			}
			c.hooks.Secret = strings.TrimSpace(string(secret))
		}
		c.hooks.Headers = splitList(c.hookHeaders)
		if err := c.hookSettings(); err != nil {
			return err
		}
		if _, err := hooks.New(c.hooks, hooks.Options{}); err != nil {
			return fmt.Errorf("--hook-url/--hook-protocol/--hooks: %w", err)
		}
		nc.Notify.JournalDir = filepath.Join(c.dataDir, "notify")
		c.server.Hooks = &c.hooks
	}
	if c.apiKeyFile != "" {
		keys, err := api.LoadKeys(c.apiKeyFile)
		if err != nil {
			return fmt.Errorf("--api-key-file: %w", err)
		}
		c.server.API = &api.Config{Keys: keys}
	}
	tc.AllowedOrigins = splitList(c.allowedOrigins)
	nc.Room.Ephemeral = splitList(c.ephemeralRooms)
	mode, err := actors.ParsePresenceMode(c.presence)
	if err != nil {
		return fmt.Errorf("--presence: %w", err)
	}
	nc.Room.Presence = mode
	nc.Room.NoJoinLeave, nc.Room.NoTyping = !c.joinLeave, !c.typing
	c.redis.SentinelAddrs = splitList(c.redisSentinels)
	if c.historyStore == "auto" {
		c.historyStore = "embedded"
		if nc.Cluster.Provider != "" {
			c.historyStore = "memory"
		}
	}
	if r := c.server.Transport.Reader; r != transport.ReaderEpoll && r != transport.ReaderGoroutine {
		return fmt.Errorf("--reader: %q is not epoll or goroutine", r)
	}
	switch c.historyStore {
	case "embedded":
		if nc.Cluster.Provider != "" {
			return errors.New("--history-store=embedded keeps history on one node; a cluster needs --history-store=redis (or memory)")
		}
	case "redis", "memory":
	default:
		return fmt.Errorf("--history-store: %q is not auto, embedded, redis or memory", c.historyStore)
	}
	nc.Cluster.Seeds = splitList(c.clusterSeeds)
	nc.Cluster.EtcdEndpoints = splitList(c.etcdEndpoints)
	for _, rule := range splitList(c.overflow) {
		pattern, policy, ok := strings.Cut(rule, "=")
		p, valid := actors.ParseOverflow(policy)
		if !ok || !valid || pattern == "" {
			return fmt.Errorf("--overflow-policy: %q is not pattern=disconnect|drop-oldest|conflate", rule)
		}
		nc.Room.Overflow = append(nc.Room.Overflow, actors.OverflowRule{Pattern: pattern, Policy: p})
	}
	resolveProfiles(c.rooms, &nc.Room)
	d, err := telemetry.ParseDeliveryDetail(c.traceDeliveries)
	if err != nil {
		return fmt.Errorf("--trace-deliveries: %w", err)
	}
	c.tracing.Deliveries = d
	c.tracing.ServiceVersion = versionString()
	c.tracing.NodeAddress = c.listen
	if nc.Cluster.Provider != "" {
		c.tracing.NodeAddress = nc.Cluster.Bind // the address that names this node in fan-out spans
	}
	nc.ServerVersion = versionString()
	tc.ShutdownTimeout = c.shutdownTimeout
	return nil
}

// hookSettings reads --hooks, --hook-urls, --hook-timeouts and the hook TLS files.
func (c *serveConfig) hookSettings() error {
	c.hooks.Enabled = []string{}
	for _, h := range splitList(c.hookEnabled) {
		name, ok := hooks.Name(h)
		if !ok {
			return fmt.Errorf("--hooks: no hook %q (connect, join, publish, rpc, notify)", h)
		}
		c.hooks.Enabled = append(c.hooks.Enabled, name)
	}
	if len(c.hooks.Enabled) == 0 {
		return errors.New("--hooks: none named; to call no hooks leave --hook-url empty")
	}
	pairs := func(flag, list string, set func(name, v string) error) error {
		for _, kv := range splitList(list) {
			k, v, ok := strings.Cut(kv, "=")
			name, known := hooks.Name(k)
			if !ok || !known || v == "" {
				return fmt.Errorf("--%s: %q is not HOOK=VALUE with a hook from connect, join, publish, rpc, notify", flag, kv)
			}
			if err := set(name, strings.TrimSpace(v)); err != nil {
				return fmt.Errorf("--%s: %s: %w", flag, name, err)
			}
		}
		return nil
	}
	c.hooks.URLs, c.hooks.Timeouts = map[string]string{}, map[string]time.Duration{}
	if err := pairs("hook-urls", c.hookURLs, func(name, v string) error { c.hooks.URLs[name] = v; return nil }); err != nil {
		return err
	}
	if err := pairs("hook-timeouts", c.hookTimeouts, func(name, v string) error {
		d, err := time.ParseDuration(v)
		if err == nil && d <= 0 {
			err = errors.New("not positive")
		}
		c.hooks.Timeouts[name] = d
		return err
	}); err != nil {
		return err
	}
	if c.hookCAFile == "" && c.hookCertFile == "" && c.hookKeyFile == "" {
		return nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.hookCAFile != "" {
		pem, err := os.ReadFile(c.hookCAFile)
		if err != nil {
			return fmt.Errorf("--hook-ca-file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--hook-ca-file: no PEM certificate in %s", c.hookCAFile)
		}
	}
	if (c.hookCertFile == "") != (c.hookKeyFile == "") {
		return errors.New("--hook-cert and --hook-key go together")
	}
	if c.hookCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.hookCertFile, c.hookKeyFile)
		if err != nil {
			return fmt.Errorf("--hook-cert/--hook-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	c.hooks.TLS = tc
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is neither text nor json", format)
}

func serve(args []string) int {
	cfg, err := parseServe(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return usageError("serve", err)
	}
	if cfg.printConfig {
		if err := printConfig(os.Stdout, cfg.flags, cfg.server.Node.Room); err != nil {
			fmt.Fprintln(os.Stderr, "hubbub serve:", err)
			return 1
		}
		return 0
	}
	log, err := newLogger(cfg.logFormat, cfg.logLevel)
	if err != nil {
		return usageError("serve", err)
	}
	heapFloor := gcfloor.Keep(uint64(cfg.gcHeapFloor) << 20)
	defer heapFloor.Stop()
	authn, err := auth.New(cfg.auth)
	if err != nil {
		return usageError("serve", err)
	}
	tracing, err := telemetry.NewTracing(context.Background(), cfg.tracing)
	if err != nil {
		return usageError("serve", err)
	}
	tracing.SetGlobal()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(ctx); err != nil {
			log.Warn("flushing traces", "err", err)
		}
	}()
	store.SetRedisLogger(log)
	hist, err := openStore(cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hubbub serve:", err)
		return 1
	}
	if hist != nil {
		defer hist.Close()
		cfg.server.Node.Room.Store = hist
	} else if cfg.server.Node.Cluster.Provider != "" {
		log.Warn("room history is in memory: it is lost when a room moves or its node stops; use --history-store=redis for a durable cluster")
	}
	// A cluster node that was frozen longer than the stall limit may have
	// been evicted by the others, which then serve its rooms and will not
	// take it back under the same member id: it leaves and exits (status 3)
	// so that its supervisor restarts it as a new member, as Orleans silos
	// declared dead do. Its clients reconnect elsewhere and recover.
	stalled := make(chan time.Duration, 1)
	var onStall func(time.Duration)
	if cfg.server.Node.Cluster.Provider != "" {
		onStall = func(gap time.Duration) {
			if gap > cfg.stallLimit {
				select {
				case stalled <- gap:
				default:
				}
			}
		}
	}
	srv, err := server.New(cfg.server, server.Options{Logger: log, Auth: authn, Tracing: tracing, Inject: faultInjector, OnStall: onStall})
	if err != nil {
		fmt.Fprintln(os.Stderr, "hubbub serve:", err)
		return 1
	}
	srv.Handle("/", web.Handler())
	if cfg.apiListen != "" {
		srv.HandleAPI("/admin/", web.Admin())
	}
	if !web.Built() {
		log.Warn("this binary was built without its web pages (chat page, admin console): run ./scripts/build-web.sh, then build again")
	}
	// No TCP keep-alive on the WebSocket listener: the server's own pings
	// find a silent peer (PingInterval, PongTimeout), and turning it on costs
	// four system calls per accepted connection.
	l, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), "tcp", cfg.listen)
	if err != nil {
		log.Error("listen", "addr", cfg.listen, "err", err)
		_ = srv.Shutdown(context.Background())
		return 1
	}
	scheme := "ws"
	if cfg.tlsCert != "" {
		scheme = "wss"
	}
	log.Info("hubbub listening", "version", versionString(), "url", fmt.Sprintf("%s://%s/ws", scheme, l.Addr()), "auth", authn.Enabled(), "tracing", tracing.Enabled,
		"history", cfg.historyStore, "gc_heap_floor_mib", heapFloor.Floor()>>20)
	if authn.AnonymousOpen() && !isLoopback(l.Addr()) {
		log.Warn("anonymous access is open on a non-loopback address; configure a JWT key (--jwt-alg with --jwt-hmac-secret-file, --jwt-public-key-file or --jwks-file) for production",
			"addr", l.Addr().String(), "anonymous_rooms", cfg.auth.AnonymousRooms)
	}

	errc := make(chan error, 2)
	go func() { // owner: serve; joined through errc or after Shutdown
		if cfg.tlsCert != "" {
			errc <- srv.ServeTLS(l, cfg.tlsCert, cfg.tlsKey)
		} else {
			errc <- srv.Serve(l)
		}
	}()
	serving := 1
	if cfg.apiListen != "" {
		al, err := net.Listen("tcp", cfg.apiListen)
		if err != nil {
			log.Error("listen", "addr", cfg.apiListen, "err", err)
			_ = srv.Shutdown(context.Background())
			<-errc
			return 1
		}
		log.Info("server API listening", "addr", al.Addr().String(), "keys", len(cfg.server.API.Keys), "console", apiScheme(cfg.tlsCert)+al.Addr().String()+"/admin/")
		serving++
		go func() { // owner: serve; joined through errc or after Shutdown
			if cfg.tlsCert != "" {
				errc <- srv.ServeAPITLS(al, cfg.tlsCert, cfg.tlsKey)
			} else {
				errc <- srv.ServeAPI(al)
			}
		}()
	}
	code := 0
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	select {
	case err := <-errc:
		log.Error("serve", "err", err)
		_ = srv.Shutdown(context.Background())
		for range serving - 1 {
			<-errc
		}
		return 1
	case sig := <-sigs:
		log.Info("shutting down", "signal", sig.String())
	case gap := <-stalled:
		log.Error("this node was frozen longer than --cluster-stall-limit; the cluster may have evicted it: leaving, restart it to rejoin",
			"gap", gap.Round(time.Millisecond), "limit", cfg.stallLimit)
		code = exitStalled
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	for range serving {
		<-errc
	}
	log.Info("stopped")
	return code
}

func apiScheme(tlsCert string) string {
	if tlsCert != "" {
		return "https://"
	}
	return "http://"
}

// exitStalled is the exit status of a cluster node that left after a stall.
const exitStalled = 3

// openStore opens the configured history store, or returns nil for memory.
func openStore(cfg *serveConfig, log *slog.Logger) (store.Store, error) {
	// The store keeps what the most demanding profile serves.
	rc := cfg.server.Node.Room
	ret := store.Retention{MaxLen: rc.HistorySize, MaxAge: rc.HistoryTTL}
	for _, p := range rc.Profiles {
		ret.MaxLen, ret.MaxAge = max(ret.MaxLen, p.HistorySize), max(ret.MaxAge, p.HistoryTTL)
	}
	switch cfg.historyStore {
	case "embedded":
		return store.OpenEmbedded(cfg.dataDir, ret, log)
	case "redis":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return store.OpenRedis(ctx, cfg.redis, ret)
	}
	return nil, nil
}
