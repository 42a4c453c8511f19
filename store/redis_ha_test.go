package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hubbub-chat/hubbub/internal/testredis"
	"github.com/hubbub-chat/hubbub/store"
)

// waitSynced waits until n replicas of primary acknowledge a fresh write
// (the primary's own replica list can still show a replica that just died).
func waitSynced(t *testing.T, primary *testredis.Server, n int) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: primary.Addr})
	defer c.Close()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		pipe := c.Pipeline() // one connection: WAIT counts replicas of this write
		pipe.Set(ctx, "hubbub-test-probe", time.Now().UnixNano(), 0)
		wait := pipe.Do(ctx, "WAIT", n, 200)
		_, _ = pipe.Exec(ctx)
		got, err := wait.Int()
		if err == nil && got >= n {
			return
		}
		if time.Now().After(deadline) {
			info, _ := c.Info(ctx, "replication").Result()
			t.Fatalf("replicas not in sync (%d of %d, %v):\n%s", got, n, err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// With WaitReplicas an append is acknowledged only once a replica has it;
// without a replica it fails (not a conflict), and the room's next append
// finds the stream moved on (the message may be on the primary) and reloads.
func TestRedisWaitsForReplicas(t *testing.T) {
	primary := testredis.New(t)
	replica := primary.Replica()
	waitSynced(t, primary, 1)
	ctx := context.Background()
	st, err := store.OpenRedis(ctx, store.RedisOptions{URL: primary.URL, WaitReplicas: 1, WaitTimeout: 300 * time.Millisecond},
		store.Retention{MaxLen: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pos, _, err := st.Load(ctx, "r", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Append(ctx, "r", pos.Epoch, msgs(1, 1, pos.Epoch, time.Now())); err != nil {
		t.Fatal(err)
	}
	onReplica := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer onReplica.Close()
	if n, err := onReplica.XLen(ctx, "hubbub:{r}:s").Result(); err != nil || n != 1 {
		t.Fatalf("acknowledged append not on the replica: %d entries, %v", n, err)
	}

	replica.Stop()
	err = st.Append(ctx, "r", pos.Epoch, msgs(2, 1, pos.Epoch, time.Now()))
	if err == nil || errors.Is(err, store.ErrConflict) {
		t.Fatalf("append with no replica: %v, want a replication error", err)
	}
	if err := st.Append(ctx, "r", pos.Epoch, msgs(2, 1, pos.Epoch, time.Now())); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("retry at the same offset: %v, want a conflict (the primary has it)", err)
	}

	replica.Restart()
	waitSynced(t, primary, 1)
	p, _, _ := st.Load(ctx, "r", 0)
	if err := st.Append(ctx, "r", p.Epoch, msgs(p.Offset+1, 1, p.Epoch, time.Now())); err != nil {
		t.Fatalf("append with the replica back: %v", err)
	}
}

// Through Sentinel, a kill -9 of the primary fails over to a replica and
// every append acknowledged before (each waited for a replica) survives.
func TestRedisSentinelFailover(t *testing.T) {
	primary := testredis.New(t)
	replicas := []*testredis.Server{primary.Replica(), primary.Replica()}
	waitSynced(t, primary, 2)
	sentinel := testredis.StartSentinel(t, "hubbub-test", primary)
	ctx := context.Background()
	st, err := store.OpenRedis(ctx, store.RedisOptions{SentinelMaster: "hubbub-test", SentinelAddrs: []string{sentinel},
		WaitReplicas: 1, WaitTimeout: 300 * time.Millisecond}, store.Retention{MaxLen: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pos, _, err := st.Load(ctx, "r", 0)
	if err != nil {
		t.Fatal(err)
	}
	for off := uint64(1); off <= 20; off++ {
		if err := st.Append(ctx, "r", pos.Epoch, msgs(off, 1, pos.Epoch, time.Now())); err != nil {
			t.Fatal(err)
		}
	}

	primary.Stop()
	// Sentinel promotes one replica and points the other at it, so appends
	// can wait for a replica again.
	deadline := time.Now().Add(60 * time.Second)
	for {
		p, _, err := st.Load(ctx, "r", 0)
		if err == nil {
			if err = st.Append(ctx, "r", p.Epoch, msgs(p.Offset+1, 1, p.Epoch, time.Now())); err == nil {
				if p.Epoch != pos.Epoch || p.Offset < 20 {
					t.Fatalf("after failover the room is at %+v, was epoch %s offset 20", p, pos.Epoch)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no append after the failover: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	all, err := st.Read(ctx, "r", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 20 {
		t.Fatalf("%d messages after the failover, 20 were acknowledged", len(all))
	}
	wantOffsets(t, "after failover", all[:20], 1, 20)
	masters := 0
	for _, r := range replicas {
		c := redis.NewClient(&redis.Options{Addr: r.Addr})
		if role, _ := c.Do(ctx, "ROLE").Slice(); len(role) > 0 && role[0] == "master" {
			masters++
		}
		_ = c.Close()
	}
	if masters != 1 {
		t.Fatalf("%d replicas promoted, want 1", masters)
	}
}
