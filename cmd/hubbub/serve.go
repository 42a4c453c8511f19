package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hubbub-chat/hubbub/actors"
	"github.com/hubbub-chat/hubbub/auth"
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
	node            actors.Config
	transport       transport.Config
	auth            auth.Config
	tracing         telemetry.TracingConfig
	traceDeliveries string
	metrics         bool
	pprof           bool
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
}

func parseServe(args []string) (*serveConfig, error) {
	c := &serveConfig{}
	f := newEnvFlags("serve")
	f.StringVar(&c.listen, "listen", "127.0.0.1:8080", "address to listen on")
	f.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&c.tlsCert, "tls-cert", "", "TLS certificate file (serves wss:// with --tls-key)")
	f.StringVar(&c.tlsKey, "tls-key", "", "TLS private key file")
	f.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful shutdown may take")
	f.IntVar(&c.transport.MaxFrameBytes, "max-frame-bytes", 64<<10, "largest client frame; larger ones close with 1009")
	f.IntVar(&c.transport.MaxQueuedBytes, "max-queued-bytes", 1<<20, "outbound queue bound per connection; beyond it a client is closed as a slow consumer (4000)")
	f.DurationVar(&c.transport.PingInterval, "ping-interval", 25*time.Second, "interval of server pings")
	f.DurationVar(&c.transport.PongTimeout, "pong-timeout", 10*time.Second, "silence past a ping interval after which a peer is dead")
	f.BoolVar(&c.transport.Compression, "compression", false, "permessage-deflate for clients that offer it (costs server CPU per message and recipient)")
	f.IntVar(&c.transport.CompressionLevel, "compression-level", 1, "flate level 1-9 for --compression")
	f.DurationVar(&c.transport.WriteTimeout, "write-timeout", 10*time.Second, "bound on every socket write")
	f.IntVar(&c.node.Room.HistorySize, "history-size", 100, "messages kept per room (negative: none)")
	f.DurationVar(&c.node.Room.HistoryTTL, "history-ttl", 10*time.Minute, "how long a message stays in history")
	f.DurationVar(&c.node.Room.IdleTimeout, "room-idle-timeout", time.Minute, "an empty room stops after this long without activity")
	f.IntVar(&c.node.Room.MaxMembers, "max-room-members", 0, "members per room (0: unlimited)")
	f.DurationVar(&c.node.Room.TypingTTL, "typing-ttl", 5*time.Second, "how long a typing indicator lasts without a refresh")
	f.IntVar(&c.node.Conn.MaxMessageBytes, "max-message-bytes", 32<<10, "largest published body")
	f.IntVar(&c.node.Conn.MaxRoomNameBytes, "max-room-name-bytes", 128, "longest room name")
	f.IntVar(&c.node.Conn.MaxRooms, "max-rooms-per-conn", 100, "rooms one connection may join")
	f.DurationVar(&c.node.Conn.RequestTimeout, "request-timeout", 5*time.Second, "bound on waiting for a room's answer")
	f.StringVar(&c.node.FaultText, "fault-text", "", "testing only: a publish with this text panics its room")
	f.StringVar(&c.tracing.Exporter, "otel-traces-exporter", "", "traces exporter: otlp, console or none (default $OTEL_TRACES_EXPORTER, else none)")
	f.StringVar(&c.tracing.Endpoint, "otel-endpoint", "", "OTLP endpoint URL, e.g. http://127.0.0.1:4317 (default $OTEL_EXPORTER_OTLP_ENDPOINT)")
	f.StringVar(&c.tracing.Protocol, "otel-protocol", "", "OTLP protocol: grpc or http/protobuf (default $OTEL_EXPORTER_OTLP_PROTOCOL, else grpc)")
	f.StringVar(&c.tracing.Sampler, "otel-sampler", "", "trace sampler as in OTEL_TRACES_SAMPLER (default parentbased_always_on)")
	f.StringVar(&c.tracing.SamplerArg, "otel-sampler-arg", "", "sampler argument as in OTEL_TRACES_SAMPLER_ARG")
	f.StringVar(&c.tracing.ServiceName, "otel-service-name", "", "service.name of traces (default $OTEL_SERVICE_NAME, else hubbub)")
	f.StringVar(&c.traceDeliveries, "trace-deliveries", "counts", "how recipients appear on traces: counts, events (one span event each) or spans (one span each)")
	f.StringVar(&c.overflow, "overflow-policy", "", "comma-separated room-pattern=policy rules for members whose queue is full: disconnect (default), drop-oldest or conflate, e.g. 'market:*=conflate,game:*=drop-oldest'")
	f.StringVar(&c.node.Cluster.Provider, "cluster-provider", "", "cluster membership: empty for a single node, automanaged (static seed list, no external server) or etcd")
	f.StringVar(&c.node.Cluster.Name, "cluster-name", "hubbub", "cluster name; nodes of other clusters do not join")
	f.StringVar(&c.node.Cluster.Bind, "cluster-bind", "127.0.0.1:8090", "host:port of this node's actor transport")
	f.IntVar(&c.node.Cluster.AutoManagePort, "cluster-automanage-port", 6330, "automanaged: this node's membership HTTP port")
	f.StringVar(&c.clusterSeeds, "cluster-seeds", "", "automanaged: comma-separated host:automanage-port of every node")
	f.StringVar(&c.etcdEndpoints, "etcd-endpoints", "127.0.0.1:2379", "etcd: comma-separated etcd endpoints")
	f.BoolVar(&c.metrics, "metrics", true, "serve Prometheus metrics at /metrics")
	f.BoolVar(&c.pprof, "pprof", false, "serve Go profiles at /debug/pprof/ (for profiling; keep it off in production)")
	f.StringVar(&c.auth.Algorithm, "jwt-alg", "", "the one JWT algorithm accepted (HS256, RS256, ES256, ...); setting a key switches on production mode")
	f.StringVar(&c.hmacSecretFile, "jwt-hmac-secret-file", "", "file holding the HMAC secret for HS* tokens")
	f.StringVar(&c.auth.PublicKeyFile, "jwt-public-key-file", "", "PEM RSA or ECDSA public key for RS*, PS* and ES* tokens")
	f.StringVar(&c.auth.JWKSFile, "jwks-file", "", "JSON Web Key Set file; a token's kid picks the key")
	f.StringVar(&c.auth.Issuer, "jwt-issuer", "", "required token issuer (iss)")
	f.StringVar(&c.auth.Audience, "jwt-audience", "", "required token audience (aud)")
	f.StringVar(&c.anonymousRooms, "anonymous-rooms", "", "comma-separated room patterns open to clients without a token (default: all rooms without a key, none with one)")
	f.StringVar(&c.allowedOrigins, "allowed-origins", "", "comma-separated browser origins allowed besides the page's own, e.g. https://*.example.com")
	f.IntVar(&c.transport.MaxConnections, "max-connections", 0, "open WebSockets at most (0: unlimited); beyond it HTTP 503")
	f.Float64Var(&c.transport.ConnectRatePerIP, "conn-rate-per-ip", 0, "upgrade attempts per second per IP (0: unlimited); beyond it HTTP 429")
	f.IntVar(&c.node.Conn.MaxConnsPerUser, "max-conns-per-user", 0, "connections per user on this node (0: unlimited); beyond it close 4003")
	f.Float64Var(&c.node.Conn.CommandRate, "command-rate", 1000, "commands per second per connection (negative: unlimited)")
	f.Float64Var(&c.node.Conn.ByteRate, "byte-rate", 8<<20, "frame bytes per second per connection (negative: unlimited)")
	f.Float64Var(&c.node.Room.PublishRate, "room-publish-rate", 0, "publishes per second per room (0: unlimited)")
	f.StringVar(&c.historyStore, "history-store", "auto", "where room history lives: embedded (on disk under --data-dir, single node), redis (Redis Streams shared by a cluster), memory (lost when a room stops) or auto (embedded on a single node, memory in a cluster)")
	f.StringVar(&c.dataDir, "data-dir", "hubbub-data", "directory of the embedded history store")
	f.StringVar(&c.redis.URL, "redis-url", "redis://127.0.0.1:6379/0", "Redis of the redis history store")
	f.StringVar(&c.redis.Prefix, "redis-prefix", "hubbub:", "prefix of the redis history store's keys")
	f.StringVar(&c.redis.SentinelMaster, "redis-sentinel-master", "", "find the Redis primary through Sentinel under this master name (with --redis-sentinels) and follow its failovers")
	f.StringVar(&c.redisSentinels, "redis-sentinels", "", "comma-separated host:port of the Redis Sentinels")
	f.IntVar(&c.redis.WaitReplicas, "redis-wait-replicas", 0, "acknowledge a publish only once this many Redis replicas have it (Redis WAIT), so a failover loses no acknowledged message")
	f.DurationVar(&c.redis.WaitTimeout, "redis-wait-timeout", time.Second, "how long a publish waits for --redis-wait-replicas before failing (temporarily)")
	f.StringVar(&c.ephemeralRooms, "ephemeral-rooms", "", "comma-separated room patterns whose history stays in memory even with a durable store (faster; lost when the room stops)")
	if err := f.parse(args); err != nil {
		return nil, err
	}
	if f.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %v", f.Args())
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if c.hmacSecretFile != "" {
		secret, err := os.ReadFile(c.hmacSecretFile)
		if err != nil {
			return nil, fmt.Errorf("--jwt-hmac-secret-file: %w", err)
		}
		c.auth.HMACSecret = []byte(strings.TrimSpace(string(secret)))
	}
	if c.anonymousRooms != "" {
		c.auth.AnonymousRooms = splitList(c.anonymousRooms)
	}
	c.transport.AllowedOrigins = splitList(c.allowedOrigins)
	c.node.Room.Ephemeral = splitList(c.ephemeralRooms)
	c.redis.SentinelAddrs = splitList(c.redisSentinels)
	if c.historyStore == "auto" {
		c.historyStore = "embedded"
		if c.node.Cluster.Provider != "" {
			c.historyStore = "memory"
		}
	}
	switch c.historyStore {
	case "embedded":
		if c.node.Cluster.Provider != "" {
			return nil, errors.New("--history-store=embedded keeps history on one node; a cluster needs --history-store=redis (or memory)")
		}
	case "redis", "memory":
	default:
		return nil, fmt.Errorf("--history-store: %q is not auto, embedded, redis or memory", c.historyStore)
	}
	c.node.Cluster.Seeds = splitList(c.clusterSeeds)
	c.node.Cluster.EtcdEndpoints = splitList(c.etcdEndpoints)
	for _, rule := range splitList(c.overflow) {
		pattern, policy, ok := strings.Cut(rule, "=")
		p, valid := actors.ParseOverflow(policy)
		if !ok || !valid || pattern == "" {
			return nil, fmt.Errorf("--overflow-policy: %q is not pattern=disconnect|drop-oldest|conflate", rule)
		}
		c.node.Room.Overflow = append(c.node.Room.Overflow, actors.OverflowRule{Pattern: pattern, Policy: p})
	}
	d, err := telemetry.ParseDeliveryDetail(c.traceDeliveries)
	if err != nil {
		return nil, fmt.Errorf("--trace-deliveries: %w", err)
	}
	c.tracing.Deliveries = d
	c.node.ServerVersion = version
	c.node.PingInterval = c.transport.PingInterval
	c.node.MaxFrameBytes = c.transport.MaxFrameBytes
	c.transport.ShutdownTimeout = c.shutdownTimeout
	return c, nil
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
		fmt.Fprintln(os.Stderr, "hubbub serve:", err)
		return 2
	}
	log, err := newLogger(cfg.logFormat, cfg.logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hubbub serve:", err)
		return 2
	}
	authn, err := auth.New(cfg.auth)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hubbub serve:", err)
		return 2
	}
	tracing, err := telemetry.NewTracing(context.Background(), cfg.tracing)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hubbub serve:", err)
		return 2
	}
	tracing.SetGlobal()
	store.SetRedisLogger(log)
	hist, err := openStore(cfg, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hubbub serve:", err)
		return 1
	}
	if hist != nil {
		defer hist.Close()
		cfg.node.Room.Store = hist
	} else if cfg.node.Cluster.Provider != "" {
		log.Warn("room history is in memory: it is lost when a room moves or its node stops; use --history-store=redis for a durable cluster")
	}
	counters := &telemetry.Counters{}
	node, err := actors.StartNode(cfg.node, actors.Options{Logger: log, Auth: authn, Tracing: tracing, Counters: counters})
	if err != nil {
		fmt.Fprintln(os.Stderr, "hubbub serve:", err)
		return 2
	}
	srv := transport.NewServer(node, cfg.transport, log)
	srv.Handle("/", web.Handler())
	if cfg.pprof {
		srv.Handle("/debug/pprof/", http.HandlerFunc(pprof.Index))
		srv.Handle("/debug/pprof/profile", http.HandlerFunc(pprof.Profile))
		srv.Handle("/debug/pprof/heap", pprof.Handler("heap"))
		srv.Handle("/debug/pprof/goroutine", pprof.Handler("goroutine"))
	}
	var metrics *telemetry.Metrics
	if cfg.metrics {
		if metrics, err = telemetry.NewMetrics(counters); err == nil {
			err = srv.RegisterMetrics(metrics.Meter())
		}
		if err != nil {
			log.Error("metrics", "err", err)
			return 1
		}
		srv.Handle("/metrics", metrics.Handler())
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(ctx); err != nil {
			log.Warn("flushing traces", "err", err)
		}
		if metrics != nil {
			_ = metrics.Shutdown(ctx)
		}
	}()
	l, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		log.Error("listen", "addr", cfg.listen, "err", err)
		_ = node.Shutdown(context.Background())
		return 1
	}
	scheme := "ws"
	if cfg.tlsCert != "" {
		scheme = "wss"
	}
	log.Info("hubbub listening", "version", version, "url", fmt.Sprintf("%s://%s/ws", scheme, l.Addr()), "auth", authn.Enabled(), "tracing", tracing.Enabled,
		"history", cfg.historyStore)
	if authn.AnonymousOpen() && !isLoopback(l.Addr()) {
		log.Warn("anonymous access is open on a non-loopback address; configure a JWT key (--jwt-alg with --jwt-hmac-secret-file, --jwt-public-key-file or --jwks-file) for production",
			"addr", l.Addr().String(), "anonymous_rooms", cfg.auth.AnonymousRooms)
	}

	errc := make(chan error, 1)
	go func() { // owner: serve; joined through errc or after Shutdown
		if cfg.tlsCert != "" {
			errc <- srv.ServeTLS(l, cfg.tlsCert, cfg.tlsKey)
		} else {
			errc <- srv.Serve(l)
		}
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	select {
	case err := <-errc:
		log.Error("serve", "err", err)
		_ = srv.Shutdown(context.Background())
		return 1
	case sig := <-sigs:
		log.Info("shutting down", "signal", sig.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	<-errc
	log.Info("stopped")
	return 0
}

// openStore opens the configured history store, or returns nil for memory.
func openStore(cfg *serveConfig, log *slog.Logger) (store.Store, error) {
	ret := store.Retention{MaxLen: cfg.node.Room.HistorySize, MaxAge: cfg.node.Room.HistoryTTL}
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
