//! `Interner`: maps names (item ids, context names) to dense `u32` numbers.
//!
//! Names are append-only in a `CowVec` so a frozen image can resolve numbers
//! to names; the reverse map is live-only (an image never needs it). The map
//! uses std's `RandomState` hasher because names are untrusted input.

use std::collections::HashMap;
use std::sync::Arc;

use super::cowvec::CowVec;

/// Number <-> name table. Numbers are never reused or removed.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    names: CowVec<Arc<str>>,
    /// Keyed with per-process random keys (ahash): names are untrusted input,
    /// so the table must resist chosen-collision floods; SipHash does too but
    /// costs several times more per lookup on the ingest path.
    map: HashMap<Arc<str>, u32, ahash::RandomState>,
    name_bytes: usize,
}

impl Interner {
    /// An empty table.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The number of `name`, if it was ever interned.
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        self.map.get(name).copied()
    }

    /// The number of `name`, interning it if new.
    pub(crate) fn intern(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.map.get(name) {
            return n;
        }
        // u32::MAX stays unused: the co-occurrence rows use it as their free key.
        let n = u32::try_from(self.names.len())
            .ok()
            .filter(|&n| n != u32::MAX)
            .expect("fewer than 2^32 - 1 distinct names");
        let name: Arc<str> = Arc::from(name);
        self.name_bytes += name.len();
        self.names.push(name.clone());
        self.map.insert(name, n);
        n
    }

    /// Number of names.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// The append-only name list (cheap to clone).
    pub(crate) fn names(&self) -> &CowVec<Arc<str>> {
        &self.names
    }

    /// Rough heap bytes: the strings, the chunk list and the map.
    pub(crate) fn heap_bytes(&self) -> usize {
        // Arc header (16) per string, map slot (16-byte key + 4 + control byte) ~ 24.
        self.name_bytes + self.names.len() * 40 + self.names.heap_bytes()
    }
}

/// Resolves a number through a (possibly frozen) name list.
pub(crate) fn name_of(names: &CowVec<Arc<str>>, n: u32) -> &Arc<str> {
    names.get(n as usize).expect("every stored number was interned")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_the_same_name_twice_gives_the_same_number() {
        let mut i = Interner::new();
        let a = i.intern("a");
        let b = i.intern("b");
        assert_ne!(a, b);
        assert_eq!(i.intern("a"), a);
        assert_eq!(i.get("b"), Some(b));
        assert_eq!(i.get("c"), None);
        assert_eq!(i.len(), 2);
        assert_eq!(&**name_of(i.names(), b), "b");
    }
}
