package transport

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"sync"
	"testing"
)

func inflate(t *testing.T, z []byte) []byte {
	t.Helper()
	r := flate.NewReader(io.MultiReader(bytes.NewReader(z), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff})))
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A push is compressed once for all its recipients; payloads with the same
// bytes at other addresses, and payloads past the budget, are their own.
func TestPushCompressionCache(t *testing.T) {
	var z zcache
	d := getDeflater(1)
	defer d.release()
	p := bytes.Repeat([]byte("hubbub "), 100)
	first := z.get(p, 1, d)
	if got := inflate(t, first); !bytes.Equal(got, p) {
		t.Fatalf("inflated %q", got)
	}
	if again := z.get(p, 1, d); &again[0] != &first[0] {
		t.Fatal("the same push compressed twice")
	}
	if other := z.get(bytes.Clone(p), 1, d); &other[0] == &first[0] {
		t.Fatal("a payload at another address hit the cache")
	}
	if l9 := z.get(p, 9, d); &l9[0] == &first[0] {
		t.Fatal("another level hit the cache")
	}
	// Concurrent recipients of many pushes all get what was pushed.
	var pushes [][]byte
	for i := range 2000 {
		pushes = append(pushes, []byte(fmt.Sprintf("message %d %s", i, bytes.Repeat([]byte{'x'}, i%300))))
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			d := getDeflater(1)
			defer d.release()
			for _, p := range pushes {
				if got := inflate(t, z.get(p, 1, d)); !bytes.Equal(got, p) {
					t.Errorf("inflated %q, want %q", got, p)
					return
				}
			}
		})
	}
	wg.Wait()
	for i := range z.shards {
		s := &z.shards[i]
		if s.bytes > zShardBudget+2*len(pushes[len(pushes)-1])+1024 || len(s.m) != len(s.order) || len(s.src) != len(s.m) {
			t.Fatalf("shard %d: %d bytes, %d entries, %d in order", i, s.bytes, len(s.m), len(s.order))
		}
	}
}
