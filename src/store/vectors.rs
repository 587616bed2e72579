//! Vector store: one `f32` vector per item, all of one dimension.
//!
//! Storage is contiguous per chunk: a `VecChunk` holds up to `CHUNK_VECS`
//! vectors back to back, their precomputed norms and the item number of each
//! slot. Chunks sit behind `Arc`, so a freeze clones one pointer per chunk and a
//! later write copies only the chunk it touches. The item -> slot map is
//! live-only. Deletion is swap-remove (the last slot moves into the hole).
//!
//! Dimension rule: `default_dimension` if non-zero; otherwise the first stored
//! vector fixes it, and deleting the last vector unfixes it again (0), which is
//! what a snapshot of the empty store restores.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::quant::{quantize, QInfo, MAX_DIM};
use super::similarity::norm;
use super::StoreError;

/// Vectors per chunk. 256 keeps a copy-on-write copy small (1 MiB at 1024 dims).
pub(crate) const CHUNK_VECS: usize = 256;

/// Up to `CHUNK_VECS` vectors stored back to back.
#[derive(Debug, Clone, Default)]
pub(crate) struct VecChunk {
    /// `ids.len() * dim` floats.
    pub(crate) data: Vec<f32>,
    pub(crate) norms: Vec<f32>,
    /// Item number of each slot.
    pub(crate) ids: Vec<u32>,
    /// `ids.len() * code_len(dim)` codes: the values rounded to `i8`
    /// (`quant.rs`).
    pub(crate) codes: Vec<i8>,
    /// Each slot's rounding.
    pub(crate) quant: Vec<QInfo>,
}

/// Codes per vector: none above `quant::MAX_DIM`, where they would give no
/// bound (such vectors are always scored in full).
pub(crate) fn code_len(dim: usize) -> usize {
    if dim <= MAX_DIM {
        dim
    } else {
        0
    }
}

impl VecChunk {
    /// Sets slot `i` (which exists) to `values` with norm `n`, rounding them.
    fn set(&mut self, i: usize, dim: usize, values: &[f32], n: f32) {
        self.data[i * dim..(i + 1) * dim].copy_from_slice(values);
        self.norms[i] = n;
        let cl = code_len(dim);
        self.quant[i] = quantize(values, &mut self.codes[i * cl..(i + 1) * cl]);
    }
}

/// The frozen part of a `VectorStore`: enough to scan and list vectors.
#[derive(Debug, Clone, Default)]
pub(crate) struct VectorChunks {
    pub(crate) dim: usize,
    pub(crate) len: usize,
    pub(crate) chunks: Vec<Arc<VecChunk>>,
}

impl VectorChunks {
    /// Calls `f(item, values, norm)` for every stored vector.
    #[cfg(test)]
    pub(crate) fn scan(&self, f: impl FnMut(u32, &[f32], f32)) {
        self.scan_part(&self.chunks, f);
    }

    /// `scan` over some of the chunks (a part of `self.chunks`).
    #[inline]
    pub(crate) fn scan_part(&self, part: &[Arc<VecChunk>], mut f: impl FnMut(u32, &[f32], f32)) {
        if self.dim == 0 {
            return;
        }
        for chunk in part {
            for ((v, &n), &id) in chunk
                .data
                .chunks_exact(self.dim)
                .zip(&chunk.norms)
                .zip(&chunk.ids)
            {
                f(id, v, n);
            }
        }
    }

    /// The values of slot `slot`.
    pub(crate) fn slot(&self, slot: usize) -> Option<(u32, &[f32])> {
        let chunk = self.chunks.get(slot / CHUNK_VECS)?;
        let i = slot % CHUNK_VECS;
        let id = *chunk.ids.get(i)?;
        let values = chunk.data.get(i * self.dim..(i + 1) * self.dim)?;
        Some((id, values))
    }
}

/// The live vector store.
#[derive(Debug)]
pub(crate) struct VectorStore {
    default_dim: usize,
    frozen: VectorChunks,
    slot_of: FxHashMap<u32, u32>,
}

impl VectorStore {
    /// An empty store; `default_dim` 0 lets the first vector fix the dimension.
    pub(crate) fn new(default_dim: usize) -> Self {
        Self {
            default_dim,
            frozen: VectorChunks {
                dim: default_dim,
                len: 0,
                chunks: Vec::new(),
            },
            slot_of: FxHashMap::default(),
        }
    }

    /// The fixed dimension, 0 while unfixed.
    pub(crate) fn dim(&self) -> usize {
        self.frozen.dim
    }

    /// Fixes the dimension (snapshot load); only valid while empty.
    pub(crate) fn fix_dim(&mut self, dim: usize) {
        debug_assert_eq!(self.frozen.len, 0);
        self.frozen.dim = dim;
    }

    /// Number of vectors.
    pub(crate) fn len(&self) -> usize {
        self.frozen.len
    }

    /// The chunks (cheap to clone, for images and scans).
    pub(crate) fn chunks(&self) -> &VectorChunks {
        &self.frozen
    }

    /// Checks `values` against the dimension rules without storing anything.
    pub(crate) fn check(&self, values: &[f32]) -> Result<(), StoreError> {
        if values.is_empty() {
            return Err(StoreError::InvalidVector);
        }
        let dim = self.frozen.dim;
        if dim != 0 && values.len() != dim {
            return Err(StoreError::DimensionMismatch {
                expected: dim,
                got: values.len(),
            });
        }
        Ok(())
    }

    /// The vector of `item` and its norm.
    pub(crate) fn get(&self, item: u32) -> Option<(&[f32], f32)> {
        let slot = *self.slot_of.get(&item)? as usize;
        let chunk = self.frozen.chunks.get(slot / CHUNK_VECS)?;
        let i = slot % CHUNK_VECS;
        let dim = self.frozen.dim;
        Some((chunk.data.get(i * dim..(i + 1) * dim)?, *chunk.norms.get(i)?))
    }

    /// Stores or replaces the vector of `item`; `values` must have passed `check`.
    pub(crate) fn insert(&mut self, item: u32, values: &[f32]) -> Result<(), StoreError> {
        self.check(values)?;
        let f = &mut self.frozen;
        if f.dim == 0 {
            f.dim = values.len();
        }
        let dim = f.dim;
        let n = norm(values);
        if let Some(&slot) = self.slot_of.get(&item) {
            let slot = slot as usize;
            let chunk = Arc::make_mut(
                f.chunks
                    .get_mut(slot / CHUNK_VECS)
                    .expect("slot_of points at live slots"),
            );
            chunk.set(slot % CHUNK_VECS, dim, values, n);
            return Ok(());
        }
        let slot = u32::try_from(f.len).expect("fewer than 2^32 vectors");
        if f.chunks.last().map_or(true, |c| c.ids.len() == CHUNK_VECS) {
            f.chunks.push(Arc::new(VecChunk {
                data: Vec::with_capacity(CHUNK_VECS * dim),
                norms: Vec::with_capacity(CHUNK_VECS),
                ids: Vec::with_capacity(CHUNK_VECS),
                codes: Vec::with_capacity(CHUNK_VECS * code_len(dim)),
                quant: Vec::with_capacity(CHUNK_VECS),
            }));
        }
        let chunk = Arc::make_mut(f.chunks.last_mut().expect("a chunk was just ensured"));
        chunk.data.extend_from_slice(values);
        chunk.norms.push(n);
        chunk.ids.push(item);
        let cl = code_len(dim);
        chunk.codes.resize(chunk.ids.len() * cl, 0);
        let codes = &mut chunk.codes[(chunk.ids.len() - 1) * cl..];
        chunk.quant.push(quantize(values, codes));
        f.len += 1;
        self.slot_of.insert(item, slot);
        Ok(())
    }

    /// Deletes the vector of `item`; false if it had none.
    pub(crate) fn remove(&mut self, item: u32) -> bool {
        let Some(slot) = self.slot_of.remove(&item) else {
            return false;
        };
        let f = &mut self.frozen;
        let dim = f.dim;
        let slot = slot as usize;
        let last = f.len - 1;
        if slot != last {
            // the last slot moves as it is, its codes and rounding included
            let cl = code_len(dim);
            let (moved_id, moved, moved_norm, moved_codes, moved_quant) = {
                let c = &f.chunks[last / CHUNK_VECS];
                let i = last % CHUNK_VECS;
                (
                    c.ids[i],
                    c.data[i * dim..(i + 1) * dim].to_vec(),
                    c.norms[i],
                    c.codes[i * cl..(i + 1) * cl].to_vec(),
                    c.quant[i],
                )
            };
            let c = Arc::make_mut(&mut f.chunks[slot / CHUNK_VECS]);
            let i = slot % CHUNK_VECS;
            c.data[i * dim..(i + 1) * dim].copy_from_slice(&moved);
            c.norms[i] = moved_norm;
            c.codes[i * cl..(i + 1) * cl].copy_from_slice(&moved_codes);
            c.quant[i] = moved_quant;
            c.ids[i] = moved_id;
            self.slot_of.insert(moved_id, slot as u32);
        }
        let c = Arc::make_mut(f.chunks.last_mut().expect("len > 0 means a chunk"));
        c.ids.pop();
        c.norms.pop();
        c.quant.pop();
        c.data.truncate(c.ids.len() * dim);
        c.codes.truncate(c.ids.len() * code_len(dim));
        if c.ids.is_empty() {
            f.chunks.pop();
        }
        f.len = last;
        if f.len == 0 && self.default_dim == 0 {
            f.dim = 0;
        }
        true
    }

    /// Rough heap bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        let f = &self.frozen;
        f.chunks.len() * CHUNK_VECS * (f.dim * 4 + code_len(f.dim) + 8 + std::mem::size_of::<QInfo>())
            + self.slot_of.capacity() * 9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_remove_keeps_every_other_vector_reachable() {
        let mut s = VectorStore::new(0);
        let n = CHUNK_VECS as u32 + 10;
        for i in 0..n {
            s.insert(i, &[i as f32, 1.0]).expect("valid");
        }
        assert!(s.remove(3));
        assert!(s.remove(n - 1));
        assert!(!s.remove(3));
        assert_eq!(s.len(), n as usize - 2);
        for i in (0..n - 1).filter(|&i| i != 3) {
            assert_eq!(s.get(i).expect("present").0, &[i as f32, 1.0]);
        }
        let mut seen = 0;
        s.chunks().scan(|id, v, _| {
            assert_eq!(v[0], id as f32);
            seen += 1;
        });
        assert_eq!(seen, n - 2);
    }

    /// Every slot's codes and rounding are those of its values, after
    /// inserts, replacements and swap-removes.
    #[test]
    fn codes_follow_the_values_through_replace_and_remove() {
        let mut s = VectorStore::new(0);
        let n = CHUNK_VECS as u32 * 2 + 5;
        let v = |i: u32, r: f32| [i as f32 * r, 1.0, -(i as f32) / 7.0];
        for i in 0..n {
            s.insert(i, &v(i, 1.0)).expect("valid");
        }
        for i in (0..n).step_by(3) {
            s.insert(i, &v(i, -2.5)).expect("valid");
        }
        for i in (0..n).step_by(5) {
            assert!(s.remove(i));
        }
        let f = s.chunks();
        let mut seen = 0;
        for chunk in &f.chunks {
            assert_eq!(chunk.codes.len(), chunk.ids.len() * f.dim);
            assert_eq!(code_len(f.dim), f.dim);
            assert_eq!(chunk.quant.len(), chunk.ids.len());
            for (i, &id) in chunk.ids.iter().enumerate() {
                let values = &chunk.data[i * f.dim..(i + 1) * f.dim];
                assert_eq!(values, v(id, if id % 3 == 0 { -2.5 } else { 1.0 }));
                let mut want = vec![0i8; f.dim];
                assert_eq!(chunk.quant[i], quantize(values, &mut want));
                assert_eq!(&chunk.codes[i * f.dim..(i + 1) * f.dim], &want[..]);
                seen += 1;
            }
        }
        assert_eq!(seen, s.len());
    }

    /// Above `MAX_DIM` a vector keeps no codes, through replace and remove.
    #[test]
    fn vectors_above_the_codes_dimension_keep_none() {
        let dim = MAX_DIM + 1;
        let mut s = VectorStore::new(0);
        for i in 0..3u32 {
            s.insert(i, &vec![i as f32 + 1.0; dim]).expect("valid");
        }
        s.insert(1, &vec![7.0; dim]).expect("valid");
        assert!(s.remove(0));
        let chunk = &s.chunks().chunks[0];
        assert!(chunk.codes.is_empty());
        assert_eq!(chunk.quant, vec![QInfo::UNBOUNDED; 2]);
        assert_eq!(s.get(1).expect("present").0, &vec![7.0; dim][..]);
        assert_eq!(s.get(2).expect("present").0, &vec![3.0; dim][..]);
    }

    #[test]
    fn removing_the_last_vector_unfixes_an_automatic_dimension() {
        let mut s = VectorStore::new(0);
        s.insert(0, &[1.0, 2.0]).expect("valid");
        assert_eq!(s.dim(), 2);
        assert!(s.remove(0));
        assert_eq!(s.dim(), 0);
        s.insert(0, &[1.0, 2.0, 3.0]).expect("dimension is free again");
        assert_eq!(s.dim(), 3);
    }

    #[test]
    fn default_dimension_stays_fixed_when_empty() {
        let mut s = VectorStore::new(2);
        assert_eq!(
            s.check(&[1.0]),
            Err(StoreError::DimensionMismatch { expected: 2, got: 1 })
        );
        s.insert(0, &[1.0, 2.0]).expect("valid");
        s.remove(0);
        assert_eq!(s.dim(), 2);
    }

    #[test]
    fn frozen_chunks_keep_old_values_after_replace_and_delete() {
        let mut s = VectorStore::new(0);
        s.insert(0, &[1.0]).expect("valid");
        s.insert(1, &[2.0]).expect("valid");
        let frozen = s.chunks().clone();
        s.insert(0, &[9.0]).expect("valid");
        s.remove(1);
        assert_eq!(frozen.slot(0), Some((0, &[1.0][..])));
        assert_eq!(frozen.slot(1), Some((1, &[2.0][..])));
        assert_eq!(s.get(0).expect("present").0, &[9.0]);
    }
}
