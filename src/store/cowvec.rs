//! `CowVec`: a growable vector stored as fixed-size chunks behind `Arc`.
//!
//! This is what makes `Store::freeze` cheap: cloning a `CowVec` clones only the
//! outer list of chunk pointers (O(len / CHUNK)), and a later write through
//! `get_mut` or `push` copies just the one chunk it touches if a frozen image
//! still shares it (`Arc::make_mut`). Readers of the image keep the old chunk.

use std::sync::Arc;

/// log2 of the number of elements per chunk.
const CHUNK_BITS: usize = 10;
/// Elements per chunk (1024).
pub(crate) const CHUNK: usize = 1 << CHUNK_BITS;
const CHUNK_MASK: usize = CHUNK - 1;

/// A copy-on-write chunked vector. Only appends and in-place updates; no removal
/// except `clear`.
#[derive(Debug)]
pub(crate) struct CowVec<T> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

// Manual impl: cloning never needs `T: Clone` because it only clones `Arc`s.
impl<T> Clone for CowVec<T> {
    fn clone(&self) -> Self {
        Self {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<T> Default for CowVec<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone> CowVec<T> {
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
        self.chunks.get(i >> CHUNK_BITS)?.get(i & CHUNK_MASK)
    }

    /// Mutable access to the element at `i`; copies its chunk first if shared.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        let chunk = self.chunks.get_mut(i >> CHUNK_BITS)?;
        Arc::make_mut(chunk).get_mut(i & CHUNK_MASK)
    }

    /// Appends `value`; copies the last chunk first if shared.
    pub(crate) fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => Arc::make_mut(last).push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
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
        self.chunks.len() * (CHUNK * std::mem::size_of::<T>() + 16)
            + self.chunks.capacity() * std::mem::size_of::<Arc<Vec<T>>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_get_cross_chunk_boundaries() {
        let mut v = CowVec::new();
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
        let mut v = CowVec::new();
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
        let mut v = CowVec::new();
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
    fn get_mut_out_of_range_is_none() {
        let mut v: CowVec<u8> = CowVec::new();
        assert!(v.get_mut(0).is_none());
    }
}
