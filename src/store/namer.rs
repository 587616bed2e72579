//! `ItemNamer`: numbers the item names of a snapshot load's events and
//! pairs (see `ContextBatch` and `PairBatch`), one lookup per record.
//!
//! The load's hot loop looks up ~60 million names among ~200,000 distinct
//! ones, so the table is built for it: open addressing with linear probing,
//! each 32-byte slot holding the name's hash, number, length and its first
//! `INLINE` bytes, so a short name is found with one cache line and no
//! pointer to follow. A caller that knows many names ahead hashes them first
//! and `touch`es their slots, so the cache misses of many lookups overlap
//! instead of following one another. Names are untrusted file bytes: the
//! hash is keyed per process (ahash), and longer names are compared in full.

/// Name bytes held in the slot itself.
const INLINE: usize = 20;

#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct Slot {
    /// Low 32 bits of the name's hash.
    hash: u32,
    id: u32,
    /// Name length; 0 marks an empty slot (empty names are kept apart).
    len: u32,
    key: [u8; INLINE],
}

/// Numbers names for `ContextBatch`es and `PairBatch`es (the reader, and
/// tests that build batches).
/// Holds one copy of each distinct name met, as it is met.
#[derive(Default)]
pub struct ItemNamer {
    slots: Vec<Slot>,
    used: usize,
    /// Every name, for comparing names longer than `INLINE` in full.
    arena: Vec<u8>,
    starts: Vec<usize>,
    /// The number of the empty name, if it was met (never in a valid file).
    empty: Option<u32>,
    hasher: ahash::RandomState,
}

impl std::fmt::Debug for ItemNamer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemNamer")
            .field("names", &self.starts.len())
            .finish()
    }
}

impl ItemNamer {
    /// The number of `name`, appending it to `new_names` when it is new;
    /// `None` past `u32::MAX` names.
    pub fn id(&mut self, name: &str, new_names: &mut Vec<String>) -> Option<u32> {
        self.id_bytes(name.as_bytes(), new_names)
    }

    /// `id` for a name as bytes (the reader has checked them as UTF-8; any
    /// other bytes are named by their lossy UTF-8 form).
    pub fn id_bytes(&mut self, name: &[u8], new_names: &mut Vec<String>) -> Option<u32> {
        let hash = self.hash(name);
        self.id_hashed(name, hash, new_names)
    }

    /// The hash `id_hashed` wants for `name`.
    pub fn hash(&self, name: &[u8]) -> u64 {
        self.hasher.hash_one(name)
    }

    /// Reads the slot where a lookup of `hash` starts, so that a lookup soon
    /// after finds it in cache; returns a value only so the read is kept.
    pub fn touch(&self, hash: u64) -> u32 {
        let mask = self.slots.len().wrapping_sub(1);
        self.slots.get(hash as usize & mask).map_or(0, |s| s.hash)
    }

    /// `id_bytes` with the name's `hash` computed beforehand.
    pub fn id_hashed(&mut self, name: &[u8], hash: u64, new_names: &mut Vec<String>) -> Option<u32> {
        if name.is_empty() {
            if self.empty.is_none() {
                self.empty = Some(self.next_id()?);
                self.remember(name, new_names);
            }
            return self.empty;
        }
        if (self.used + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let h = hash as u32;
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let slot = self.slots.get(i)?;
            if slot.len == 0 {
                break;
            }
            if slot.hash == h && slot.len as usize == name.len() && self.same(slot, name) {
                return Some(slot.id);
            }
            i = (i + 1) & mask;
        }
        let id = self.next_id()?;
        let len = u32::try_from(name.len()).ok()?;
        let mut slot = Slot {
            hash: h,
            id,
            len,
            key: [0; INLINE],
        };
        let head = name.len().min(INLINE);
        slot.key[..head].copy_from_slice(&name[..head]);
        *self.slots.get_mut(i)? = slot;
        self.used += 1;
        self.remember(name, new_names);
        Some(id)
    }

    fn next_id(&self) -> Option<u32> {
        u32::try_from(self.starts.len()).ok()
    }

    fn remember(&mut self, name: &[u8], new_names: &mut Vec<String>) {
        self.starts.push(self.arena.len());
        self.arena.extend_from_slice(name);
        new_names.push(String::from_utf8_lossy(name).into_owned());
    }

    /// Whether `slot` (same hash and length) holds `name`.
    fn same(&self, slot: &Slot, name: &[u8]) -> bool {
        if name.len() <= INLINE {
            return slot.key.get(..name.len()) == Some(name);
        }
        let start = self.starts.get(slot.id as usize).copied().unwrap_or(usize::MAX);
        slot.key[..] == name[..INLINE]
            && self.arena.get(start..start.saturating_add(name.len())) == Some(name)
    }

    /// Doubles the table (the first time: 1,024 slots), re-placing every
    /// name by its stored hash.
    fn grow(&mut self) {
        let cap = (self.slots.len() * 2).max(1024);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); cap]);
        let mask = cap - 1;
        for slot in old.into_iter().filter(|s| s.len != 0) {
            let mut i = slot.hash as usize & mask;
            while self.slots.get(i).is_some_and(|s| s.len != 0) {
                i = (i + 1) & mask;
            }
            if let Some(free) = self.slots.get_mut(i) {
                *free = slot;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_dense_numbers_in_order_of_first_use() {
        let mut n = ItemNamer::default();
        let mut new = Vec::new();
        let long_a = "x".repeat(INLINE) + "a";
        let long_b = "x".repeat(INLINE) + "b";
        let names = ["a", "b", "", &long_a, &long_b, "ü", "a", &long_b, "", "b"];
        let ids: Vec<u32> = names.iter().map(|s| n.id(s, &mut new).unwrap()).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4, 5, 0, 4, 2, 1]);
        assert_eq!(new, ["a", "b", "", long_a.as_str(), long_b.as_str(), "ü"]);
    }

    #[test]
    fn many_names_survive_growth_and_share_no_numbers() {
        let mut n = ItemNamer::default();
        let mut new = Vec::new();
        let names: Vec<String> = (0..50_000).map(|k| format!("item{k}")).collect();
        for (k, name) in names.iter().enumerate() {
            assert_eq!(n.id(name, &mut new), Some(k as u32));
        }
        for (k, name) in names.iter().enumerate().rev() {
            let hash = n.hash(name.as_bytes());
            n.touch(hash);
            assert_eq!(n.id_hashed(name.as_bytes(), hash, &mut new), Some(k as u32));
        }
        assert_eq!(new, names);
    }
}
