package actors

import (
	"context"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hubbub-chat/hubbub/auth"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// FuzzPermissions drives random commands from clients with different
// permissions and checks: no client sees pushes of a room it has not joined,
// no join is granted and no message is published without permission.
func FuzzPermissions(f *testing.F) {
	f.Add([]byte{0x00, 0x01, 0x12, 0x13, 0x24, 0x25, 0x03, 0x14, 0x20, 0x23})
	f.Add([]byte{0x10, 0x11, 0x21, 0x04, 0x13, 0x23, 0x03})
	secret := []byte("fuzz secret of a decent length!!")
	authn, err := auth.New(auth.Config{Algorithm: "HS256", HMACSecret: secret, AnonymousRooms: []string{"c"}})
	if err != nil {
		f.Fatal(err)
	}
	tok := func(sub string, join, publish []string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix(),
			"rooms": map[string]any{"join": join, "publish": publish, "read": join}}).SignedString(secret)
		if err != nil {
			f.Fatal(err)
		}
		return s
	}
	tokens := []string{tok("u0", []string{"*"}, []string{"*"}), tok("u1", []string{"a", "b"}, []string{"a"}), ""}
	idents := make([]*auth.Identity, len(tokens))
	for i, t := range tokens {
		if idents[i], err = authn.Authenticate(t, "anon"); err != nil {
			f.Fatal(err)
		}
	}
	byUser := map[string]*auth.Identity{}
	for _, id := range idents {
		byUser[id.User] = id
	}
	node := NewNode(Config{}, Options{Auth: authn})
	defer func() { _ = node.Shutdown(context.Background()) }()
	connects := make([]*hubbubv1.ConnectRequest, len(tokens))
	for i, tok := range tokens {
		connects[i] = &hubbubv1.ConnectRequest{Token: tok, Name: "anon"}
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		for i, run := range runCommands(t, node, connects, ops, fuzzNums{}) {
			for _, fr := range run.frames {
				if j := fr.GetJoin(); j != nil && !idents[i].Can(auth.Join, j.GetRoom()) {
					t.Fatalf("client %d joined %q without permission", i, j.GetRoom())
				}
				if m := fr.GetMessage(); m != nil {
					sender := byUser[m.GetSender().GetUser()]
					if sender == nil || !sender.Can(auth.Publish, m.GetRoom()) {
						t.Fatalf("message in %q from %q without permission", m.GetRoom(), m.GetSender().GetUser())
					}
				}
				if e := fr.GetError(); e != nil && e.GetCode() == hubbubv1.ErrorCode_ERROR_CODE_INTERNAL {
					t.Fatalf("internal error %v", e)
				}
			}
		}
	})
}
