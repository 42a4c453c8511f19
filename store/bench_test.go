package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubbub-chat/hubbub/internal/testredis"
	"github.com/hubbub-chat/hubbub/store"
)

func benchStores(b *testing.B) map[string]func() store.Store {
	return map[string]func() store.Store{
		"embedded": func() store.Store {
			s, err := store.OpenEmbedded(b.TempDir(), store.Retention{MaxLen: 100}, nil)
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
		"redis": func() store.Store {
			s, err := store.OpenRedis(context.Background(), store.RedisOptions{URL: testredis.Start(b)}, store.Retention{MaxLen: 100})
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
	}
}

// One room appending one message at a time: the latency of a durable append.
func BenchmarkAppendOneRoom(b *testing.B) {
	for name, open := range benchStores(b) {
		b.Run(name, func(b *testing.B) {
			s := open()
			defer s.Close()
			ctx := context.Background()
			pos, _, err := s.Load(ctx, "r", 0)
			if err != nil {
				b.Fatal(err)
			}
			batch := msgs(1, 1, pos.Epoch, time.Now())
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				batch[0].Offset = uint64(i + 1)
				if err := s.Append(ctx, "r", pos.Epoch, batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Many rooms appending at once, one message each time: what group commit
// (embedded) and pipelining (Redis) buy.
func BenchmarkAppendManyRooms(b *testing.B) {
	for name, open := range benchStores(b) {
		b.Run(name, func(b *testing.B) {
			s := open()
			defer s.Close()
			ctx := context.Background()
			var next atomic.Int64
			b.SetParallelism(64) // 64 rooms per core
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				room := fmt.Sprint("room-", next.Add(1))
				pos, _, err := s.Load(ctx, room, 0)
				if err != nil {
					b.Error(err)
					return
				}
				batch := msgs(1, 1, pos.Epoch, time.Now())
				for off := uint64(1); pb.Next(); off++ {
					batch[0].Offset = off
					if err := s.Append(ctx, room, pos.Epoch, batch); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
