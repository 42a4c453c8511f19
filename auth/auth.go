package auth

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

var (
	// ErrUnauthorized: no token where one is needed, or a token that does not verify.
	ErrUnauthorized = errors.New("auth: unauthorized")
	// ErrExpired: the token's exp is in the past.
	ErrExpired = errors.New("auth: token expired")
)

// Action is something a connection does in a room.
type Action int

const (
	// Join a room (and so receive its pushes, and send typing indicators).
	Join Action = iota
	// Publish to a room.
	Publish
	// Read a room's history and presence.
	Read
	// Direct: send a direct message to a user (the "room" is the user's name).
	Direct
)

// Config configures an Authenticator. With no key (HMACSecret, PublicKeyFile
// or JWKSFile) tokens are not checked and every client is anonymous:
// development mode.
type Config struct {
	// Algorithm is the only JWT algorithm accepted: HS256/384/512, RS256/384/512,
	// PS256/384/512 or ES256/384/512. Required with a key.
	Algorithm string
	// HMACSecret is the shared secret for HS* algorithms.
	HMACSecret []byte
	// PublicKeyFile is a PEM RSA or ECDSA public key for RS*, PS* and ES*.
	PublicKeyFile string
	// JWKSFile is a JSON Web Key Set file; a token's "kid" picks the key.
	JWKSFile string
	// Issuer and Audience, when set, must match the token's iss and aud.
	Issuer, Audience string
	// AnonymousRooms are the room patterns where clients without a token may
	// join, publish and read. Default: "*" in development mode, none otherwise.
	AnonymousRooms []string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Authenticator verifies tokens.
type Authenticator struct {
	cfg       Config
	enabled   bool
	keys      map[string]any // by kid; "" is the only key without a kid
	anonymous []string
	parser    *jwt.Parser
}

// New loads the keys and returns an Authenticator.
func New(cfg Config) (*Authenticator, error) {
	a := &Authenticator{cfg: cfg, keys: map[string]any{}}
	if cfg.Now == nil {
		a.cfg.Now = time.Now
	}
	if err := a.loadKeys(); err != nil {
		return nil, err
	}
	a.anonymous = cfg.AnonymousRooms
	if !a.enabled && a.anonymous == nil {
		a.anonymous = []string{"*"}
	}
	if a.enabled {
		opts := []jwt.ParserOption{jwt.WithValidMethods([]string{cfg.Algorithm}), jwt.WithExpirationRequired(),
			jwt.WithTimeFunc(a.cfg.Now), jwt.WithLeeway(5 * time.Second)}
		if cfg.Issuer != "" {
			opts = append(opts, jwt.WithIssuer(cfg.Issuer))
		}
		if cfg.Audience != "" {
			opts = append(opts, jwt.WithAudience(cfg.Audience))
		}
		a.parser = jwt.NewParser(opts...)
	}
	return a, nil
}

func (a *Authenticator) loadKeys() error {
	cfg := a.cfg
	n := 0
	for _, set := range []bool{len(cfg.HMACSecret) > 0, cfg.PublicKeyFile != "", cfg.JWKSFile != ""} {
		if set {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if n > 1 {
		return errors.New("auth: configure one of an HMAC secret, a public key file or a JWKS file")
	}
	a.enabled = true
	family := strings.TrimRight(cfg.Algorithm, "0123456789")
	if jwt.GetSigningMethod(cfg.Algorithm) == nil || cfg.Algorithm == "none" {
		return fmt.Errorf("auth: unsupported algorithm %q", cfg.Algorithm)
	}
	switch {
	case len(cfg.HMACSecret) > 0:
		if family != "HS" {
			return fmt.Errorf("auth: an HMAC secret needs an HS algorithm, not %s", cfg.Algorithm)
		}
		a.keys[""] = cfg.HMACSecret
	case cfg.PublicKeyFile != "":
		pem, err := os.ReadFile(cfg.PublicKeyFile)
		if err != nil {
			return fmt.Errorf("auth: %w", err)
		}
		key, err := parsePublicKey(family, pem)
		if err != nil {
			return err
		}
		a.keys[""] = key
	default:
		return a.loadJWKS(family)
	}
	return nil
}

func parsePublicKey(family string, pem []byte) (any, error) {
	switch family {
	case "RS", "PS":
		k, err := jwt.ParseRSAPublicKeyFromPEM(pem)
		if err != nil {
			return nil, fmt.Errorf("auth: RSA public key: %w", err)
		}
		return k, nil
	case "ES":
		k, err := jwt.ParseECPublicKeyFromPEM(pem)
		if err != nil {
			return nil, fmt.Errorf("auth: ECDSA public key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("auth: a public key file needs an RS, PS or ES algorithm, not %s", family)
}

func (a *Authenticator) loadJWKS(family string) error {
	raw, err := os.ReadFile(a.cfg.JWKSFile)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(raw, &set); err != nil {
		return fmt.Errorf("auth: JWKS %s: %w", a.cfg.JWKSFile, err)
	}
	jwks, err := set.JWKSlice()
	if err != nil {
		return fmt.Errorf("auth: JWKS %s: %w", a.cfg.JWKSFile, err)
	}
	for _, k := range jwks {
		key := k.Key()
		switch key.(type) {
		case *rsa.PublicKey:
			if family != "RS" && family != "PS" {
				continue
			}
		case *ecdsa.PublicKey:
			if family != "ES" {
				continue
			}
		default:
			continue // private or symmetric keys have no place in a verification set
		}
		a.keys[k.Marshal().KID] = key
	}
	if len(a.keys) == 0 {
		return fmt.Errorf("auth: JWKS %s has no public key for %s", a.cfg.JWKSFile, a.cfg.Algorithm)
	}
	return nil
}

// Enabled reports whether tokens are checked (production mode).
func (a *Authenticator) Enabled() bool { return a.enabled }

// AnonymousOpen reports whether clients without a token may use some room.
func (a *Authenticator) AnonymousOpen() bool { return len(a.anonymous) > 0 }

type roomClaims struct {
	Join    []string `json:"join"`
	Publish []string `json:"publish"`
	Read    []string `json:"read"`
}

type claims struct {
	jwt.RegisteredClaims
	Rooms *roomClaims `json:"rooms"`
	// Direct lists the users (name patterns) the subject may send direct messages to.
	Direct []string `json:"direct"`
}

// Authenticate verifies a token, or admits an anonymous client by its
// display name where anonymous access is open.
func (a *Authenticator) Authenticate(token, name string) (*Identity, error) {
	if token == "" {
		if !a.AnonymousOpen() {
			return nil, fmt.Errorf("%w: a token is required", ErrUnauthorized)
		}
		user := name
		if a.enabled {
			user = "anon:" + name // never the same as a token's subject
		}
		return &Identity{User: user, Anonymous: true, anonymous: a.anonymous, dev: !a.enabled}, nil
	}
	if !a.enabled {
		return nil, fmt.Errorf("%w: this server accepts no tokens", ErrUnauthorized)
	}
	var c claims
	_, err := a.parser.ParseWithClaims(token, &c, a.key)
	if errors.Is(err, jwt.ErrTokenExpired) {
		return nil, ErrExpired
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnauthorized, err)
	}
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: the token has no sub", ErrUnauthorized)
	}
	id := &Identity{User: c.Subject, anonymous: a.anonymous}
	if c.ExpiresAt != nil {
		id.Expires = c.ExpiresAt.Time
	}
	if c.Rooms != nil {
		id.join, id.publish, id.read = c.Rooms.Join, c.Rooms.Publish, c.Rooms.Read
	}
	id.direct = c.Direct
	return id, nil
}

func (a *Authenticator) key(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	if k, ok := a.keys[kid]; ok {
		return k, nil
	}
	if kid == "" && len(a.keys) == 1 {
		for _, k := range a.keys {
			return k, nil
		}
	}
	return nil, fmt.Errorf("no key %q", kid)
}

// Identity is an authenticated (or anonymous) user and what it may do.
type Identity struct {
	User      string
	Anonymous bool
	// Expires is when the token expires; zero for anonymous clients.
	Expires time.Time

	join, publish, read []string
	direct              []string // user-name patterns
	anonymous           []string
	dev                 bool // development mode: no tokens, everything open
}

// Named reports whether the user name is a real user's: a token's subject,
// a backend's, or any name in development mode (not an anonymous client of
// a server that checks tokens).
func (id *Identity) Named() bool { return !id.Anonymous || id.dev }

// Can reports whether the identity may do the action in the room. What
// anonymous clients may do, everyone may.
// For Direct, room is a user's name: the token's direct patterns allow it,
// and in development mode (every client anonymous, every room open) anyone
// may message anyone.
func (id *Identity) Can(act Action, room string) bool {
	if act == Direct {
		return id.dev || MatchAny(id.direct, room)
	}
	if MatchAny(id.anonymous, room) {
		return true
	}
	switch act {
	case Join:
		return MatchAny(id.join, room)
	case Publish:
		return MatchAny(id.publish, room)
	case Read:
		return MatchAny(id.read, room)
	}
	return false
}

// MatchAny reports whether s matches any of the patterns (see Match).
func MatchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if Match(p, s) {
			return true
		}
	}
	return false
}

// Match reports whether the whole of s matches the pattern, where "*" matches
// any run of characters (including none) and "?" any single character.
func Match(pattern, s string) bool {
	p, str := []rune(pattern), []rune(s)
	pi, si, star, mark := 0, 0, -1, 0
	for si < len(str) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == str[si]):
			pi++
			si++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// BackendIdentity is a user the backend's connect hook named: it may join,
// publish and read everywhere, and the backend's join and publish hooks
// decide each room.
func BackendIdentity(user string, expires time.Time) *Identity {
	all := []string{"*"}
	return &Identity{User: user, Expires: expires, join: all, publish: all, read: all, direct: all}
}
