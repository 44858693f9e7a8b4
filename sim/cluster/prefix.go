package cluster

import (
	"container/list"

	"github.com/tokenscale/tokenscale/sim/trace"
)

// prefixCache is a prefill instance's cache of prompt blocks (vLLM's automatic prefix caching): the
// hashes of the 512-token blocks it computed, least recently used evicted first once its KV is full.
type prefixCache struct {
	capacity int // blocks
	order    *list.List
	at       map[uint64]*list.Element
}

func newPrefixCache(kvTokens float64) *prefixCache {
	return &prefixCache{capacity: max(1, int(kvTokens)/trace.BlockTokens), order: list.New(), at: map[uint64]*list.Element{}}
}

// hit is how many of a prompt's tokens its cached leading blocks cover; at least one token is always
// computed, as vLLM does to produce the first token. touch marks the blocks used.
func (c *prefixCache) hit(blocks []uint64, promptTokens int, touch bool) int {
	if c == nil {
		return 0
	}
	n := 0
	for _, b := range blocks {
		e, ok := c.at[b]
		if !ok {
			break
		}
		if touch {
			c.order.MoveToFront(e)
		}
		n++
	}
	return max(0, min(n*trace.BlockTokens, promptTokens-1))
}

// add caches a computed prompt's blocks.
func (c *prefixCache) add(blocks []uint64) {
	for _, b := range blocks {
		if e, ok := c.at[b]; ok {
			c.order.MoveToFront(e)
			continue
		}
		c.at[b] = c.order.PushFront(b)
		if c.order.Len() > c.capacity {
			old := c.order.Back()
			c.order.Remove(old)
			delete(c.at, old.Value.(uint64))
		}
	}
}
