//! A load's waiting entries: for each co-occurrence row not built yet, the
//! entries of the pairs that name its item second (see `StoreBuilder`).
//!
//! Every list lives in blocks of [`BLOCK`] entries chained per item, all
//! drawn from one pool that grows a slab at a time, and a list's blocks go
//! back to the pool when its row is built. Before, each item had a `Vec` of
//! its own, grown by doubling and freed when its row was built: hundreds of
//! thousands of `malloc`/`realloc`/`free` calls per large LOAD, interleaved
//! with the rows' own allocations. In a server whose heap had held an
//! earlier state, glibc spent ~10 % of such a LOAD in `_int_malloc`,
//! `unlink_chunk` and `realloc` (`perf`), and LOADs of the bench's large
//! file from a server's third state on took 5.9–8.0 s; with the pool they
//! take 5.3–6.3 s, like the first two (BENCHMARKS.md, table "the waiting
//! lists, the idle vCPU").

/// Entries per block: two cache lines.
const BLOCK: usize = 16;
/// log2 of the blocks in a slab of the pool (512 KiB): the pool grows a slab
/// at a time, never by more than it needs.
const SLAB_BITS: u32 = 12;
const SLAB: usize = 1 << SLAB_BITS;
const SLAB_MASK: usize = SLAB - 1;
type Block = [Entry; BLOCK];
/// No block.
const NONE: u32 = u32::MAX;

/// A neighbour's item number and the pair's score.
pub(crate) type Entry = (u32, f32);

/// One item's list: its first and last blocks and its length.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: u32,
}

const EMPTY: List = List {
    head: NONE,
    tail: NONE,
    len: 0,
};

/// The lists, by item number.
#[derive(Debug)]
pub(crate) struct Waiting {
    lists: Vec<List>,
    /// The pool: block `k` is `slabs[k / SLAB][k % SLAB]`.
    slabs: Vec<Box<[Block]>>,
    /// The block after each block of the pool in its list (or in the free
    /// list); its length is the number of blocks handed out so far.
    next: Vec<u32>,
    /// First free block.
    free: u32,
}

/// The pool or a list reached `u32::MAX` blocks or entries: more pairs than
/// a load can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

impl Default for Waiting {
    fn default() -> Self {
        Waiting {
            lists: Vec::new(),
            slabs: Vec::new(),
            next: Vec::new(),
            free: NONE,
        }
    }
}

impl Waiting {
    pub(crate) fn new() -> Self {
        Waiting::default()
    }

    /// Makes room for items below `end`.
    pub(crate) fn reach(&mut self, end: usize) {
        if self.lists.len() < end {
            self.lists.resize(end, EMPTY);
        }
    }

    /// Hints that `item`'s list header is needed soon.
    pub(crate) fn prefetch_list(&self, item: u32) {
        super::prefetch::prefetch(self.lists.as_ptr().wrapping_add(item as usize));
    }

    /// Hints that the place `item`'s next entry goes to is needed soon.
    pub(crate) fn prefetch_end(&self, item: u32) {
        if let Some(l) = self.lists.get(item as usize) {
            if l.tail != NONE {
                if let Some(block) = self.block(l.tail) {
                    super::prefetch::prefetch(block.as_ptr().wrapping_add(l.len as usize % BLOCK));
                }
            }
        }
    }

    /// Appends `e` to `item`'s list; an item beyond `reach` is ignored.
    pub(crate) fn push(&mut self, item: u32, e: Entry) -> Result<(), Full> {
        let Some(&List { head, tail, len }) = self.lists.get(item as usize) else {
            return Ok(());
        };
        let at = len as usize % BLOCK;
        let len = len.checked_add(1).ok_or(Full)?;
        let tail = if at == 0 {
            let fresh = self.take_block()?;
            if let Some(n) = self.next.get_mut(tail as usize) {
                *n = fresh;
            }
            fresh
        } else {
            tail
        };
        if let Some(slot) = self.block_mut(tail).and_then(|b| b.get_mut(at)) {
            *slot = e;
        }
        if let Some(l) = self.lists.get_mut(item as usize) {
            *l = List {
                head: if head == NONE { tail } else { head },
                tail,
                len,
            };
        }
        Ok(())
    }

    /// Appends `item`'s entries, in the order pushed, to `out` and empties
    /// its list.
    pub(crate) fn take_into(&mut self, item: u32, out: &mut Vec<Entry>) {
        let Some(l) = self.lists.get_mut(item as usize) else {
            return;
        };
        let List { head, tail, len } = std::mem::replace(l, EMPTY);
        if len == 0 {
            return;
        }
        out.reserve(len as usize);
        let mut left = len as usize;
        let mut block = head;
        while left > 0 {
            let Some(entries) = self.block(block) else {
                break;
            };
            let n = left.min(BLOCK);
            out.extend_from_slice(&entries[..n]);
            left -= n;
            let after = self.next.get(block as usize).copied().unwrap_or(NONE);
            if block == tail {
                break;
            }
            block = after;
        }
        // The whole chain goes back to the pool at once.
        if let Some(n) = self.next.get_mut(tail as usize) {
            *n = self.free;
            self.free = head;
        }
    }

    /// Items whose lists are not empty, in increasing order.
    pub(crate) fn items(&self) -> impl Iterator<Item = u32> + '_ {
        self.lists
            .iter()
            .enumerate()
            .filter(|(_, l)| l.len > 0)
            .filter_map(|(i, _)| u32::try_from(i).ok())
    }

    /// A free block, from the free list or new.
    fn take_block(&mut self) -> Result<u32, Full> {
        if self.free != NONE {
            let b = self.free;
            self.free = self.next.get(b as usize).copied().unwrap_or(NONE);
            if let Some(n) = self.next.get_mut(b as usize) {
                *n = NONE;
            }
            return Ok(b);
        }
        let b = u32::try_from(self.next.len())
            .ok()
            .filter(|&b| b != NONE)
            .ok_or(Full)?;
        if self.next.len() & SLAB_MASK == 0 {
            self.slabs.push(vec![[(0, 0.0); BLOCK]; SLAB].into_boxed_slice());
        }
        self.next.push(NONE);
        Ok(b)
    }

    fn block(&self, b: u32) -> Option<&Block> {
        let b = b as usize;
        self.slabs.get(b >> SLAB_BITS)?.get(b & SLAB_MASK)
    }

    fn block_mut(&mut self, b: u32) -> Option<&mut Block> {
        let b = b as usize;
        self.slabs.get_mut(b >> SLAB_BITS)?.get_mut(b & SLAB_MASK)
    }

    /// Blocks in the pool (for tests).
    #[cfg(test)]
    fn pool_blocks(&self) -> usize {
        self.next.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(w: &mut Waiting, item: u32) -> Vec<Entry> {
        let mut out = Vec::new();
        w.take_into(item, &mut out);
        out
    }

    #[test]
    fn lists_keep_their_entries_in_order_across_blocks() {
        // `default` is `new`: no block is free before one was taken.
        let mut w = Waiting::default();
        w.reach(4);
        for k in 0..40u32 {
            w.push(k % 3, (k, k as f32)).unwrap();
        }
        let want = |r: u32| {
            (0..40u32)
                .filter(|k| k % 3 == r)
                .map(|k| (k, k as f32))
                .collect::<Vec<_>>()
        };
        assert_eq!(w.items().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(take(&mut w, 1), want(1));
        assert_eq!(take(&mut w, 1), vec![], "taken lists are empty");
        assert_eq!(take(&mut w, 3), vec![]);
        assert_eq!(take(&mut w, 0), want(0));
        assert_eq!(take(&mut w, 2), want(2));
        assert_eq!(w.items().count(), 0);
    }

    #[test]
    fn taken_blocks_are_used_again() {
        let mut w = Waiting::new();
        w.reach(2);
        for k in 0..(3 * BLOCK as u32 + 1) {
            w.push(0, (k, 1.0)).unwrap();
        }
        assert_eq!(w.pool_blocks(), 4);
        assert_eq!(take(&mut w, 0).len(), 3 * BLOCK + 1);
        for k in 0..(4 * BLOCK as u32) {
            w.push(1, (k, 2.0)).unwrap();
        }
        assert_eq!(w.pool_blocks(), 4, "the four freed blocks served the second list");
        let got = take(&mut w, 1);
        assert_eq!(got, (0..(4 * BLOCK as u32)).map(|k| (k, 2.0)).collect::<Vec<_>>());
        // And again, a list interleaved with another.
        for k in 0..(2 * BLOCK as u32) {
            w.push(k % 2, (k, 3.0)).unwrap();
        }
        assert_eq!(w.pool_blocks(), 4);
        assert_eq!(take(&mut w, 0).len(), BLOCK);
        assert_eq!(take(&mut w, 1).len(), BLOCK);
    }

    #[test]
    fn a_list_runs_across_slabs() {
        let mut w = Waiting::new();
        w.reach(2);
        let n = (SLAB * BLOCK + 3) as u32;
        for k in 0..n {
            w.push(k % 2, (k, k as f32)).unwrap();
        }
        assert_eq!(w.slabs.len(), 2);
        for r in 0..2 {
            let want: Vec<Entry> = (0..n).filter(|k| k % 2 == r).map(|k| (k, k as f32)).collect();
            assert_eq!(take(&mut w, r), want);
        }
    }

    #[test]
    fn items_beyond_reach_are_ignored() {
        let mut w = Waiting::new();
        w.reach(1);
        w.push(5, (1, 1.0)).unwrap();
        w.prefetch_list(5);
        w.prefetch_end(5);
        assert_eq!(take(&mut w, 5), vec![]);
        assert_eq!(w.pool_blocks(), 0);
    }
}
