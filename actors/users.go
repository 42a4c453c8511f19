package actors

import "github.com/asynkron/protoactor-go/actor"

// users counts each user's connections on this node, for MaxConnsPerUser.
type users struct {
	count map[string]int
}

// acquireUser asks for one of the user's slots; the answer is a bool.
type acquireUser struct {
	user string
	max  int
}

// releaseUser gives a slot back.
type releaseUser struct{ user string }

func usersProps() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &users{count: map[string]int{}} })
}

func (u *users) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case acquireUser:
		ok := u.count[msg.user] < msg.max
		if ok {
			u.count[msg.user]++
		}
		ctx.Respond(ok)
	case releaseUser:
		if u.count[msg.user]--; u.count[msg.user] <= 0 {
			delete(u.count, msg.user)
		}
	}
}
