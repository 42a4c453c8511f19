// Package auth verifies connection tokens and answers what an identity may do
// in which room.
//
// Tokens are JWTs (github.com/golang-jwt/jwt/v5) signed with HMAC (a shared
// secret), RSA or ECDSA (a PEM public key file), or any key of a JWKS file.
// The algorithm is fixed by configuration and never taken from the token, so
// "alg": "none" and algorithm confusion (an HMAC token checked with an RSA
// public key as its secret) are rejected. Claims: "sub" (the user), "exp"
// (required) and "rooms", the room-name patterns the user may join, publish
// to and read (history and presence):
//
//	{"sub": "alice", "exp": 1767225600,
//	 "rooms": {"join": ["lobby", "team:*"], "publish": ["lobby"], "read": ["*"]}}
//
// Patterns match whole room names; "*" matches any run of characters and "?"
// any one character.
//
// # Concurrency
//
// An Authenticator and the Identities it returns are immutable and safe for
// concurrent use.
package auth
