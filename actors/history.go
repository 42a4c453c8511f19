package actors

import (
	"time"

	hubbubv1 "github.com/hubbub-chat/hubbub/proto/hubbub/v1"
)

// history is a room's in-memory ring of recent messages with consecutive offsets.
type history struct {
	buf   []*hubbubv1.Message
	start int // index of the oldest message
	n     int
	ttl   time.Duration
}

func newHistory(size int, ttl time.Duration) *history {
	return &history{buf: make([]*hubbubv1.Message, size), ttl: ttl}
}

func (h *history) at(i int) *hubbubv1.Message { return h.buf[(h.start+i)%len(h.buf)] }

func (h *history) append(m *hubbubv1.Message) {
	if len(h.buf) == 0 {
		return
	}
	if h.n == len(h.buf) {
		h.buf[h.start] = nil
		h.start = (h.start + 1) % len(h.buf)
		h.n--
	}
	h.buf[(h.start+h.n)%len(h.buf)] = m
	h.n++
}

// trim drops messages older than the TTL.
func (h *history) trim(now time.Time) {
	cutoff := now.Add(-h.ttl).UnixMilli()
	for h.n > 0 && h.at(0).GetTimeUnixMs() < cutoff {
		h.buf[h.start] = nil
		h.start = (h.start + 1) % len(h.buf)
		h.n--
	}
}

// firstOffset is the oldest retained offset, or 0 when empty.
func (h *history) firstOffset() uint64 {
	if h.n == 0 {
		return 0
	}
	return h.at(0).GetOffset()
}

// since returns the retained messages with offset > after, oldest first, at most limit (0: all).
func (h *history) since(after uint64, limit int) []*hubbubv1.Message {
	i := h.indexAfter(after)
	cnt := h.n - i
	if limit > 0 && cnt > limit {
		cnt = limit
	}
	out := make([]*hubbubv1.Message, 0, cnt)
	for k := 0; k < cnt; k++ {
		out = append(out, h.at(i+k))
	}
	return out
}

// newest returns the newest messages with offset > after, newest first, at most limit.
func (h *history) newest(after uint64, limit int) []*hubbubv1.Message {
	i := h.indexAfter(after)
	out := make([]*hubbubv1.Message, 0, max(0, min(limit, h.n-i)))
	for k := h.n - 1; k >= i && len(out) < limit; k-- {
		out = append(out, h.at(k))
	}
	return out
}

// between returns the retained messages with after < offset < before (before
// at least 1), the oldest limit of them in order, or with reverse the newest
// limit of them, newest first.
func (h *history) between(after, before uint64, limit int, reverse bool) []*hubbubv1.Message {
	i, j := h.indexAfter(after), h.indexAfter(before-1)
	j = max(i, j)
	cnt := j - i
	if limit > 0 && cnt > limit {
		cnt = limit
	}
	out := make([]*hubbubv1.Message, 0, cnt)
	for k := range cnt {
		if reverse {
			out = append(out, h.at(j-1-k))
		} else {
			out = append(out, h.at(i+k))
		}
	}
	return out
}

// indexAfter is the ring index of the first message with offset > after.
func (h *history) indexAfter(after uint64) int {
	if h.n == 0 {
		return 0
	}
	first := h.firstOffset()
	if after < first {
		return 0
	}
	// Compare as uint64: after may be any client-chosen value, up to 2^64-1.
	if after-first >= uint64(h.n) {
		return h.n
	}
	return int(after-first) + 1
}

// covers reports whether every message after the offset up to top is retained.
func (h *history) covers(after, top uint64) bool {
	if after == top {
		return true
	}
	return h.n > 0 && h.firstOffset() <= after+1
}
