package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

type keys struct {
	rsa    *rsa.PrivateKey
	ec     *ecdsa.PrivateKey
	secret []byte
	dir    string
}

func newKeys(t *testing.T) *keys {
	t.Helper()
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &keys{rsa: r, ec: e, secret: []byte("a shared secret of enough length!"), dir: t.TempDir()}
}

func (k *keys) pemFile(t *testing.T, name string, pub any) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(k.dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func (k *keys) jwksFile(t *testing.T) string {
	set := map[string]any{"keys": []map[string]any{
		{"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig", "n": b64(k.rsa.N.Bytes()), "e": b64(big.NewInt(int64(k.rsa.E)).Bytes())},
		{"kty": "EC", "kid": "e1", "alg": "ES256", "use": "sig", "crv": "P-256", "x": b64(k.ec.X.FillBytes(make([]byte, 32))), "y": b64(k.ec.Y.FillBytes(make([]byte, 32)))},
	}}
	b, _ := json.Marshal(set)
	p := filepath.Join(k.dir, "jwks.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func sign(t *testing.T, method jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claimsFor(sub string, exp time.Duration) jwt.MapClaims {
	c := jwt.MapClaims{"rooms": map[string]any{"join": []string{"lobby", "team:*"}, "publish": []string{"lobby"}, "read": []string{"*"}}}
	if sub != "" {
		c["sub"] = sub
	}
	if exp != 0 {
		c["exp"] = time.Now().Add(exp).Unix()
	}
	return c
}

func TestTokenMatrix(t *testing.T) {
	k := newKeys(t)
	hs, err := New(Config{Algorithm: "HS256", HMACSecret: k.secret})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := New(Config{Algorithm: "RS256", PublicKeyFile: k.pemFile(t, "rsa.pem", &k.rsa.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	es, err := New(Config{Algorithm: "ES256", PublicKeyFile: k.pemFile(t, "ec.pem", &k.ec.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := New(Config{Algorithm: "RS256", JWKSFile: k.jwksFile(t)})
	if err != nil {
		t.Fatal(err)
	}
	rsaPubPEM, _ := os.ReadFile(filepath.Join(k.dir, "rsa.pem"))
	unsigned, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claimsFor("mallory", time.Hour)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	other := []byte("another secret of the same length!")
	cases := []struct {
		name  string
		a     *Authenticator
		token string
		want  error
	}{
		{"hmac valid", hs, sign(t, jwt.SigningMethodHS256, k.secret, "", claimsFor("alice", time.Hour)), nil},
		{"hmac expired", hs, sign(t, jwt.SigningMethodHS256, k.secret, "", claimsFor("alice", -time.Hour)), ErrExpired},
		{"hmac wrong signature", hs, sign(t, jwt.SigningMethodHS256, other, "", claimsFor("alice", time.Hour)), ErrUnauthorized},
		{"hmac wrong algorithm", hs, sign(t, jwt.SigningMethodHS512, k.secret, "", claimsFor("alice", time.Hour)), ErrUnauthorized},
		{"hmac no sub", hs, sign(t, jwt.SigningMethodHS256, k.secret, "", claimsFor("", time.Hour)), ErrUnauthorized},
		{"hmac no exp", hs, sign(t, jwt.SigningMethodHS256, k.secret, "", claimsFor("alice", 0)), ErrUnauthorized},
		{"alg none", hs, unsigned, ErrUnauthorized},
		{"garbage", hs, "not.a.token", ErrUnauthorized},
		{"rsa valid", rs, sign(t, jwt.SigningMethodRS256, k.rsa, "", claimsFor("bob", time.Hour)), nil},
		{"rsa key confusion: HS256 signed with the public key", rs, sign(t, jwt.SigningMethodHS256, rsaPubPEM, "", claimsFor("bob", time.Hour)), ErrUnauthorized},
		{"rsa signed by ecdsa", rs, sign(t, jwt.SigningMethodES256, k.ec, "", claimsFor("bob", time.Hour)), ErrUnauthorized},
		{"ecdsa valid", es, sign(t, jwt.SigningMethodES256, k.ec, "", claimsFor("carol", time.Hour)), nil},
		{"ecdsa expired", es, sign(t, jwt.SigningMethodES256, k.ec, "", claimsFor("carol", -time.Minute)), ErrExpired},
		{"jwks valid by kid", jwks, sign(t, jwt.SigningMethodRS256, k.rsa, "r1", claimsFor("dave", time.Hour)), nil},
		{"jwks unknown kid", jwks, sign(t, jwt.SigningMethodRS256, k.rsa, "r9", claimsFor("dave", time.Hour)), ErrUnauthorized},
		{"jwks ES key under RS256", jwks, sign(t, jwt.SigningMethodES256, k.ec, "e1", claimsFor("dave", time.Hour)), ErrUnauthorized},
		{"production server without token", hs, "", ErrUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.a.Authenticate(tc.token, "x")
			if tc.want == nil {
				if err != nil || id.User == "" || id.Expires.IsZero() {
					t.Fatalf("id %+v err %v", id, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

func TestPermissions(t *testing.T) {
	k := newKeys(t)
	a, err := New(Config{Algorithm: "HS256", HMACSecret: k.secret, AnonymousRooms: []string{"public:*"}})
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.Authenticate(sign(t, jwt.SigningMethodHS256, k.secret, "", claimsFor("alice", time.Hour)), "")
	if err != nil {
		t.Fatal(err)
	}
	anon, err := a.Authenticate("", "alice")
	if err != nil || anon.User != "anon:alice" || !anon.Anonymous {
		t.Fatalf("anonymous %+v %v", anon, err)
	}
	cases := []struct {
		who  *Identity
		act  Action
		room string
		want bool
	}{
		{id, Join, "lobby", true}, {id, Join, "team:red", true}, {id, Join, "secret", false},
		{id, Publish, "lobby", true}, {id, Publish, "team:red", false},
		{id, Read, "anything", true},
		{id, Join, "public:x", true}, {id, Publish, "public:x", true},
		{anon, Join, "public:x", true}, {anon, Publish, "public:y", true}, {anon, Read, "public:z", true},
		{anon, Join, "lobby", false}, {anon, Read, "lobby", false},
	}
	for _, tc := range cases {
		if got := tc.who.Can(tc.act, tc.room); got != tc.want {
			t.Errorf("%s %d %s: %v", tc.who.User, tc.act, tc.room, got)
		}
	}
}

func TestDevelopmentModeIsOpen(t *testing.T) {
	a, err := New(Config{})
	if err != nil || a.Enabled() || !a.AnonymousOpen() {
		t.Fatalf("%v %v", a, err)
	}
	id, err := a.Authenticate("", "alice")
	if err != nil || id.User != "alice" || !id.Can(Publish, "any") {
		t.Fatalf("%+v %v", id, err)
	}
	if _, err := a.Authenticate("some.token.here", "alice"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("token in development mode: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	k := newKeys(t)
	for name, cfg := range map[string]Config{
		"no algorithm":       {HMACSecret: k.secret},
		"alg none":           {Algorithm: "none", HMACSecret: k.secret},
		"secret with RS":     {Algorithm: "RS256", HMACSecret: k.secret},
		"two keys":           {Algorithm: "HS256", HMACSecret: k.secret, JWKSFile: "x"},
		"missing key file":   {Algorithm: "RS256", PublicKeyFile: filepath.Join(k.dir, "nope.pem")},
		"rsa key for ES":     {Algorithm: "ES256", PublicKeyFile: k.pemFile(t, "r.pem", &k.rsa.PublicKey)},
		"jwks without match": {Algorithm: "PS256", JWKSFile: filepath.Join(k.dir, "missing.json")},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"*", "", true}, {"*", "anything:at/all", true}, {"lobby", "lobby", true}, {"lobby", "lobby2", false},
		{"team:*", "team:", true}, {"team:*", "team:red", true}, {"team:*", "teams", false},
		{"a?c", "abc", true}, {"a?c", "ac", false}, {"*:eu", "game:42:eu", true}, {"*:eu", "game:42:us", false},
		{"é*", "école", true},
	} {
		if got := Match(tc.p, tc.s); got != tc.want {
			t.Errorf("Match(%q, %q) = %v", tc.p, tc.s, got)
		}
	}
}
