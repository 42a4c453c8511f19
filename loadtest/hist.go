package loadtest

import (
	"math/bits"
	"time"
)

// hist is a log-linear latency histogram: 16 sub-buckets per power of two of
// nanoseconds (about 6% resolution). The zero value is empty.
type hist struct {
	counts [64 * 16]int64
	n      int64
	max    int64
}

func bucketOf(ns int64) int {
	if ns < 1 {
		ns = 1
	}
	e := bits.Len64(uint64(ns)) - 1
	var m int64
	if e >= 4 {
		m = (ns >> (e - 4)) & 15
	} else {
		m = (ns << (4 - e)) & 15
	}
	return e*16 + int(m)
}

func bucketValue(i int) int64 {
	e, m := i/16, int64(i%16)
	if e >= 4 {
		return (16 + m) << (e - 4)
	}
	return (16 + m) >> (4 - e)
}

func (h *hist) record(d time.Duration) {
	ns := int64(d)
	h.counts[bucketOf(ns)]++
	h.n++
	if ns > h.max {
		h.max = ns
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0..1).
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	target := int64(q * float64(h.n))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen > target {
			return time.Duration(min(bucketValue(i), h.max))
		}
	}
	return time.Duration(h.max)
}
