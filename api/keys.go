package api

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Scope is what an API key may do.
type Scope string

// The scopes. Admin allows every method.
const (
	ScopePublish Scope = "publish" // Publish, BatchPublish, Broadcast
	ScopeRead    Scope = "read"    // History, Presence, RoomInfo, ListRooms, Connections, Info
	ScopeAdmin   Scope = "admin"   // everything, Disconnect and Tail included
)

// minKeyBytes is the shortest key accepted: guessing one must be hopeless.
const minKeyBytes = 12

// Key is one API key: a name (shown to members as the sender of what the key
// publishes, and in metrics and logs), the secret and its scopes.
type Key struct {
	Name   string
	Secret string
	Scopes []Scope
}

// Allows reports whether the key has scope s (admin has every scope).
func (k *Key) Allows(s Scope) bool {
	return slices.Contains(k.Scopes, s) || slices.Contains(k.Scopes, ScopeAdmin)
}

// LoadKeys reads a key file (see ParseKeys).
func LoadKeys(path string) ([]Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseKeys(f, path)
}

// ParseKeys reads one key per line as "NAME KEY SCOPES", separated by spaces
// or tabs, SCOPES comma-separated from publish, read and admin; blank lines
// and lines starting with # are skipped. Errors name the file and line, never
// the key.
func ParseKeys(r io.Reader, file string) ([]Key, error) {
	var keys []Key
	names, secrets := map[string]bool{}, map[string]bool{}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%s:%d: %s", file, line, fmt.Sprintf(format, args...))
		}
		f := strings.Fields(text)
		if len(f) != 3 {
			return nil, bad("want NAME KEY SCOPES, got %d fields", len(f))
		}
		k := Key{Name: f[0], Secret: f[1]}
		if !validKeyName(k.Name) {
			return nil, bad("key name %q: letters, digits, '-', '_' and '.' only", k.Name)
		}
		if len(k.Secret) < minKeyBytes {
			return nil, bad("key %q is shorter than %d characters", k.Name, minKeyBytes)
		}
		if names[k.Name] {
			return nil, bad("key name %q used twice", k.Name)
		}
		if secrets[k.Secret] {
			return nil, bad("key %q repeats another key's secret", k.Name)
		}
		for _, s := range strings.Split(f[2], ",") {
			switch sc := Scope(s); sc {
			case ScopePublish, ScopeRead, ScopeAdmin:
				k.Scopes = append(k.Scopes, sc)
			default:
				return nil, bad("key %q: unknown scope %q (publish, read, admin)", k.Name, s)
			}
		}
		names[k.Name], secrets[k.Secret] = true, true
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: %w", file, ErrNoKeys)
	}
	return keys, nil
}

// ErrNoKeys is a key file without keys: the API would refuse every call.
var ErrNoKeys = errors.New("no API keys")

func validKeyName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// keyring finds the key of a bearer token in time that does not depend on
// which key (if any) matches, nor on how much of one matches: every key's
// digest is compared with the token's, in constant time.
type keyring struct {
	keys    []Key
	digests [][sha256.Size]byte
}

func newKeyring(keys []Key) *keyring {
	k := &keyring{keys: keys}
	for _, key := range keys {
		k.digests = append(k.digests, sha256.Sum256([]byte(key.Secret)))
	}
	return k
}

func (k *keyring) find(token string) *Key {
	d := sha256.Sum256([]byte(token))
	found := -1
	for i := range k.digests {
		if subtle.ConstantTimeCompare(d[:], k.digests[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return nil
	}
	return &k.keys[found]
}
