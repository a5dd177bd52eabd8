// SPDX-License-Identifier: Apache-2.0

package qcow2

import (
	"fmt"
	"sync"
)

// cacheBytes bounds the L2 tables kept in memory per image: 8 MiB maps
// 64 GiB of disk with 64 KiB clusters. At least minCacheTables and at most
// maxCacheTables are kept (the bound on the linear eviction scan).
const (
	cacheBytes     = 8 << 20
	minCacheTables = 8
	maxCacheTables = 1024
)

// l2Table is a cached L2 table, one cluster in file format.
type l2Table struct {
	data  []byte
	dirty bool   // changed since written; pinned until flushMeta writes it
	used  uint64 // cache clock at the last use, for LRU eviction
}

// cache holds L2 tables and the last inflated compressed cluster.
//
// Readers (holding Image.mu shared) insert clean tables; writers (holding
// Image.mu exclusively) also change table data and dirty them. Table data
// is therefore only written while no reader runs, and mu below protects
// the map and bookkeeping against concurrent readers.
type cache struct {
	mu     sync.Mutex // guards the fields below
	tables map[uint64]*l2Table
	max    int
	clock  uint64
	ndirty int
	zEntry uint64 // L2 entry of the inflated cluster in zData; 0 if none
	zData  []byte
}

func (c *cache) init(cs uint64) {
	c.tables = make(map[uint64]*l2Table)
	c.max = min(max(int(cacheBytes/cs), minCacheTables), maxCacheTables)
}

// get returns the cached table at off, or nil.
func (c *cache) get(off uint64) *l2Table {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.tables[off]
	if t != nil {
		c.clock++
		t.used = c.clock
	}
	return t
}

// insert caches data as the table at off and returns the cached table: an
// existing one if another reader got there first, or nil when the cache
// is full of dirty tables.
func (c *cache) insert(off uint64, data []byte) *l2Table {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.tables[off]; t != nil {
		return t
	}
	if len(c.tables) >= c.max && !c.evictLocked() {
		return nil
	}
	c.clock++
	t := &l2Table{data: data, used: c.clock}
	c.tables[off] = t
	return t
}

// evictLocked drops the least recently used clean table and reports
// whether there was one. The caller holds c.mu.
func (c *cache) evictLocked() bool {
	var (
		victim uint64
		oldest *l2Table
	)
	for off, t := range c.tables {
		if !t.dirty && (oldest == nil || t.used < oldest.used) {
			victim, oldest = off, t
		}
	}
	if oldest == nil {
		return false
	}
	delete(c.tables, victim)
	return true
}

// full reports whether inserting needs a flush first: every slot holds a
// dirty table.
func (c *cache) full() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ndirty >= c.max
}

// markDirty marks t changed. The caller holds Image.mu exclusively.
func (c *cache) markDirty(t *l2Table) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !t.dirty {
		t.dirty = true
		c.ndirty++
	}
}

// dirty returns the offsets and tables not yet written. The caller holds
// Image.mu exclusively.
func (c *cache) dirty() map[uint64]*l2Table {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := make(map[uint64]*l2Table, c.ndirty)
	for off, t := range c.tables {
		if t.dirty {
			d[off] = t
		}
	}
	return d
}

// markClean marks t written. The caller holds Image.mu exclusively.
func (c *cache) markClean(t *l2Table) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.dirty {
		t.dirty = false
		c.ndirty--
	}
}

// inflated returns the cached cluster inflated from the compressed L2
// entry e, or nil.
func (c *cache) inflated(e uint64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e != 0 && c.zEntry == e {
		return c.zData
	}
	return nil
}

// setInflated caches data as the cluster inflated from entry e; e == 0
// drops the cached one.
func (c *cache) setInflated(e uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.zEntry, c.zData = e, data
}

// reset drops everything.
func (c *cache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.tables)
	c.ndirty = 0
	c.zEntry, c.zData = 0, nil
}

// l2Read returns the L2 table at off, which an L1 entry checked to lie
// inside the file, from the cache or the file. The caller holds Image.mu.
func (im *Image) l2Read(off uint64) ([]byte, error) {
	if t := im.cache.get(off); t != nil {
		return t.data, nil
	}
	data := make([]byte, im.cs)
	if err := readFull(im.f, data, off, "L2 table"); err != nil {
		return nil, err
	}
	if t := im.cache.insert(off, data); t != nil {
		return t.data, nil
	}
	return data, nil // cache full of dirty tables: serve uncached
}

// l2Write returns the cached L2 table at off for changing, loading it if
// needed and making room by writing dirty tables out when the cache is
// full of them. The caller holds Image.mu exclusively.
func (im *Image) l2Write(off uint64) (*l2Table, error) {
	if t := im.cache.get(off); t != nil {
		return t, nil
	}
	data := make([]byte, im.cs)
	if err := readFull(im.f, data, off, "L2 table"); err != nil {
		return nil, err
	}
	return im.cacheNew(off, data)
}

// cacheNew inserts data as the table at off, flushing dirty tables first
// when there is no clean one to evict. The caller holds Image.mu
// exclusively.
func (im *Image) cacheNew(off uint64, data []byte) (*l2Table, error) {
	if im.cache.full() {
		if err := im.flushMeta(); err != nil {
			return nil, im.fail(err)
		}
	}
	t := im.cache.insert(off, data)
	if t == nil {
		// Cannot happen: after flushMeta every table is clean.
		return nil, im.fail(fmt.Errorf("qcow2: L2 cache full of dirty tables after a flush"))
	}
	return t, nil
}
