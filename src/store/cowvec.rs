//! `CowVec`: a growable vector stored as fixed-size chunks behind `Arc`.
//!
//! This is what makes `Store::freeze` cheap: cloning a `CowVec` clones only the
//! outer list of chunk pointers (O(len / chunk)), and a later write through
//! `get_mut` or `push` copies just the one chunk it touches if a frozen image
//! still shares it (`Arc::make_mut`). Readers of the image keep the old chunk.
//!
//! The chunk size is a trade: a freeze clones one `Arc` per chunk, and the
//! first write to a chunk after it copies the whole chunk (for chunks of
//! `Arc`s, one atomic increment per element, each a cache miss of its own).

use std::sync::Arc;

/// log2 of the number of elements per chunk, unless a `CowVec` says otherwise.
pub(crate) const CHUNK_BITS: u32 = 10;

/// A copy-on-write chunked vector of chunks of `2^BITS` elements. Only
/// appends and in-place updates; no removal except `clear`.
#[derive(Debug)]
pub(crate) struct CowVec<T, const BITS: u32 = CHUNK_BITS> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

// Manual impl: cloning never needs `T: Clone` because it only clones `Arc`s.
impl<T, const BITS: u32> Clone for CowVec<T, BITS> {
    fn clone(&self) -> Self {
        Self {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<T, const BITS: u32> Default for CowVec<T, BITS> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone, const BITS: u32> CowVec<T, BITS> {
    /// Elements per chunk.
    pub(crate) const CHUNK: usize = 1 << BITS;
    const MASK: usize = Self::CHUNK - 1;

    /// An empty vector.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Number of chunks (what a clone costs).
    #[cfg(test)]
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// The element at `i`, if any.
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i >> BITS)?.get(i & Self::MASK)
    }

    /// Mutable access to the element at `i`; copies its chunk first if shared.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        let chunk = self.chunks.get_mut(i >> BITS)?;
        Arc::make_mut(chunk).get_mut(i & Self::MASK)
    }

    /// Appends `value`; copies the last chunk first if shared.
    pub(crate) fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < Self::CHUNK => Arc::make_mut(last).push(value),
            _ => {
                let mut chunk = Vec::with_capacity(Self::CHUNK);
                chunk.push(value);
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    /// Every element in index order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Calls `f` on every element mutably, copying shared chunks as needed.
    pub(crate) fn for_each_mut(&mut self, mut f: impl FnMut(&mut T)) {
        for chunk in &mut self.chunks {
            Arc::make_mut(chunk).iter_mut().for_each(&mut f);
        }
    }

    /// Bytes held by the chunk lists themselves (not what elements point to).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.chunks.len() * (Self::CHUNK * std::mem::size_of::<T>() + 16)
            + self.chunks.capacity() * std::mem::size_of::<Arc<Vec<T>>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = CowVec::<usize>::CHUNK;

    #[test]
    fn push_and_get_cross_chunk_boundaries() {
        let mut v: CowVec<usize> = CowVec::new();
        for i in 0..(CHUNK * 2 + 5) {
            v.push(i);
        }
        assert_eq!(v.len(), CHUNK * 2 + 5);
        assert_eq!(v.chunk_count(), 3);
        assert_eq!(v.get(CHUNK), Some(&CHUNK));
        assert_eq!(v.get(CHUNK * 2 + 4), Some(&(CHUNK * 2 + 4)));
        assert_eq!(v.get(CHUNK * 2 + 5), None);
        assert!(v.iter().copied().eq(0..(CHUNK * 2 + 5)));
    }

    #[test]
    fn clone_keeps_old_values_after_writes() {
        let mut v: CowVec<usize> = CowVec::new();
        for i in 0..(CHUNK + 3) {
            v.push(i);
        }
        let frozen = v.clone();
        *v.get_mut(1).expect("index 1 exists") = 1000;
        v.push(7);
        assert_eq!(frozen.get(1), Some(&1));
        assert_eq!(frozen.len(), CHUNK + 3);
        assert_eq!(v.get(1), Some(&1000));
        // Both chunks were written to, so both were copied.
        assert!(!Arc::ptr_eq(&v.chunks[0], &frozen.chunks[0]));
        assert!(!Arc::ptr_eq(&v.chunks[1], &frozen.chunks[1]));
    }

    #[test]
    fn untouched_chunks_stay_shared_after_a_write() {
        let mut v: CowVec<usize> = CowVec::new();
        for i in 0..(CHUNK * 3) {
            v.push(i);
        }
        let frozen = v.clone();
        *v.get_mut(CHUNK + 1).expect("exists") = 0;
        assert!(Arc::ptr_eq(&v.chunks[0], &frozen.chunks[0]));
        assert!(!Arc::ptr_eq(&v.chunks[1], &frozen.chunks[1]));
        assert!(Arc::ptr_eq(&v.chunks[2], &frozen.chunks[2]));
    }

    #[test]
    fn small_chunks_copy_only_the_chunk_written() {
        let mut v: CowVec<usize, 2> = CowVec::new();
        for i in 0..10 {
            v.push(i);
        }
        assert_eq!(v.chunk_count(), 3, "chunks of 4");
        let frozen = v.clone();
        *v.get_mut(5).expect("exists") = 50;
        v.push(10);
        assert!(frozen.iter().copied().eq(0..10));
        assert!(v.iter().copied().eq((0..11).map(|i| if i == 5 { 50 } else { i })));
        assert!(Arc::ptr_eq(&v.chunks[0], &frozen.chunks[0]));
        assert!(!Arc::ptr_eq(&v.chunks[1], &frozen.chunks[1]));
        assert!(!Arc::ptr_eq(&v.chunks[2], &frozen.chunks[2]));
    }

    #[test]
    fn get_mut_out_of_range_is_none() {
        let mut v: CowVec<u8> = CowVec::new();
        assert!(v.get_mut(0).is_none());
    }
}
