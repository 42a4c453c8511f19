package integration

import (
	"testing"
	"time"

	"github.com/hubbub-chat/hubbub/actors"
	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
	"github.com/hubbub-chat/hubbub/store"
	"github.com/hubbub-chat/hubbub/transport"
	"github.com/hubbub-chat/hubbub/wire"
)

func typingFrame(room string) *hubbubv1.ClientFrame {
	return &hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_Typing{Typing: &hubbubv1.TypingRequest{Room: room, Typing: true}}}
}

// Each profile setting takes effect in the rooms its pattern matches, the
// first matching profile wins, and the join reply shows the profile.
func TestRoomProfilesTakeEffect(t *testing.T) {
	st, err := store.OpenEmbedded(t.TempDir(), store.Retention{MaxLen: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rc := actors.RoomConfig{Store: st, PresenceInterval: 20 * time.Millisecond}
	def := rc.DefaultProfile()
	profile := func(pattern string, change func(*actors.RoomProfile)) actors.RoomProfile {
		p := def
		p.Name, p.Pattern = pattern, pattern
		change(&p)
		return p
	}
	rc.Profiles = []actors.RoomProfile{
		profile("a:b*", func(p *actors.RoomProfile) { p.Name = "first" }),
		profile("a:*", func(p *actors.RoomProfile) { p.Name = "second" }),
		profile("counts:*", func(p *actors.RoomProfile) { p.Presence = actors.PresenceCounts }),
		profile("quiet:*", func(p *actors.RoomProfile) { p.Presence = actors.PresenceOff }),
		profile("nojl:*", func(p *actors.RoomProfile) { p.JoinLeave = false }),
		profile("news:*", func(p *actors.RoomProfile) { p.Publish = actors.PublishNone }),
		profile("stage:*", func(p *actors.RoomProfile) { p.Publish, p.Publishers = actors.PublishListed, []string{"host*"} }),
		profile("notype:*", func(p *actors.RoomProfile) { p.Typing = false }),
		profile("small:*", func(p *actors.RoomProfile) { p.MaxMembers = 1 }),
		profile("short:*", func(p *actors.RoomProfile) { p.HistorySize, p.Durable = 2, false }),
		profile("slow:*", func(p *actors.RoomProfile) { p.PublishRate, p.PublishBurst = 1, 1 }),
	}
	s := startServer(t, actors.Config{Room: rc}, transport.Config{})
	host := connect(t, s.URL, wire.Proto, "host1")
	guest := connect(t, s.URL, wire.JSON, "guest")

	for room, want := range map[string]string{"a:bc": "first", "a:c": "second", "zzz": "default"} {
		if got := host.join(room, nil).GetInfo().GetProfile(); got != want {
			t.Errorf("room %q: profile %q, want %q", room, got, want)
		}
	}
	if info := host.join("zzz2", nil).GetInfo(); !info.GetDurable() || info.GetHistorySize() != 100 || !info.GetTyping() ||
		!info.GetCanPublish() || info.GetPresence() != actors.PresenceFull || info.GetPresenceIntervalMs() != 20 {
		t.Errorf("default profile info %v", info)
	}

	t.Run("counts", func(t *testing.T) {
		pos := host.join("counts:1", nil).GetPresence().GetPosition()
		guest.join("counts:1", nil)
		d := host.diffsUntil("counts:1", pos, func(d *hubbubv1.PresenceDiff) bool { return d.GetUsers() == 2 })[0]
		if len(d.GetJoined()) != 0 || d.GetDigest() != 0 || d.GetReset_() {
			t.Fatalf("counts mode pushed %v", d)
		}
		p := host.request(presenceFrame("counts:1", "", 0)).GetPresence()
		if len(p.GetUsers()) != 0 || p.GetState().GetUsers() != 2 || p.GetState().GetMembers() != 2 {
			t.Fatalf("counts mode page %v", p)
		}
	})
	t.Run("off and no join-leave push nothing", func(t *testing.T) {
		for _, room := range []string{"quiet:1", "nojl:1"} {
			if info := host.join(room, nil).GetInfo(); info.GetJoinLeave() {
				t.Fatalf("%s: info %v", room, info)
			}
			guest.join(room, nil)
			time.Sleep(60 * time.Millisecond) // three presence intervals
			guest.publish(room, "after the joins")
			for {
				f := host.nextPush()
				if d := f.GetPresenceDiff(); d != nil && d.GetRoom() != room {
					continue // the host's other rooms
				}
				if f.GetMessage().GetBody().GetText() != "after the joins" {
					t.Fatalf("%s: first push %v", room, f)
				}
				break
			}
			if p := host.request(presenceFrame(room, "", 0)).GetPresence(); p.GetState().GetUsers() != 2 {
				t.Fatalf("%s: counts %v", room, p)
			}
		}
	})
	t.Run("who may publish", func(t *testing.T) {
		if info := guest.join("news:1", nil).GetInfo(); info.GetCanPublish() {
			t.Fatalf("news info %v", info)
		}
		if got := errCode(guest.request(publishFrame("news:1", "x", ""))); got != hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
			t.Fatalf("publish to a broadcast-only room: %v", got)
		}
		if info := host.join("stage:1", nil).GetInfo(); !info.GetCanPublish() {
			t.Fatalf("host's stage info %v", info)
		}
		if info := guest.join("stage:1", nil).GetInfo(); info.GetCanPublish() {
			t.Fatalf("guest's stage info %v", info)
		}
		host.publish("stage:1", "on stage")
		if got := errCode(guest.request(publishFrame("stage:1", "heckle", ""))); got != hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
			t.Fatalf("guest publish on stage: %v", got)
		}
	})
	t.Run("typing off", func(t *testing.T) {
		if info := host.join("notype:1", nil).GetInfo(); info.GetTyping() {
			t.Fatalf("info %v", info)
		}
		if got := errCode(host.request(typingFrame("notype:1"))); got != hubbubv1.ErrorCode_ERROR_CODE_PERMISSION_DENIED {
			t.Fatalf("typing: %v", got)
		}
	})
	t.Run("max members", func(t *testing.T) {
		host.join("small:1", nil)
		if got := errCode(guest.request(joinFrame("small:1", nil))); got != hubbubv1.ErrorCode_ERROR_CODE_LIMIT_EXCEEDED {
			t.Fatalf("second join: %v", got)
		}
	})
	t.Run("history size and store", func(t *testing.T) {
		if info := host.join("short:1", nil).GetInfo(); info.GetHistorySize() != 2 || info.GetDurable() {
			t.Fatalf("info %v", info)
		}
		for i := 0; i < 5; i++ {
			host.publish("short:1", "m")
		}
		h := host.request(&hubbubv1.ClientFrame{Command: &hubbubv1.ClientFrame_History{History: &hubbubv1.HistoryRequest{Room: "short:1"}}}).GetHistory()
		if len(h.GetMessages()) != 2 || h.GetMessages()[0].GetOffset() != 4 {
			t.Fatalf("history %v", h)
		}
	})
	t.Run("publish rate", func(t *testing.T) {
		host.join("slow:1", nil)
		host.publish("slow:1", "one")
		if got := errCode(host.request(publishFrame("slow:1", "two", ""))); got != hubbubv1.ErrorCode_ERROR_CODE_RATE_LIMITED {
			t.Fatalf("second publish: %v", got)
		}
	})
}
