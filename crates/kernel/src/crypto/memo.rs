//! Process-wide memos of public values that cost tens of microseconds to compute again:
//! decoded (and checked) keys and points, messages hashed to a curve, parsed certificates.
//!
//! Only values that passed every check are kept, under a key that determines them (their
//! encoding, or its SHA-256), so a hit is exactly what computing again would give. A memo
//! holds at most its capacity and is emptied when full: an attacker who feeds it fresh values
//! only makes it forget, never return something else.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// A bounded map from a key to the value it determines.
pub(crate) struct Memo<K, V> {
    map: LazyLock<Mutex<HashMap<K, V>>>,
    max: usize,
}

impl<K: std::hash::Hash + Eq, V: Clone> Memo<K, V> {
    /// An empty memo of at most `max` entries.
    pub(crate) const fn new(max: usize) -> Memo<K, V> {
        Memo {
            map: LazyLock::new(|| Mutex::new(HashMap::new())),
            max,
        }
    }

    /// The value for `key`, computed by `make` (and kept, if it is `Ok`) on a miss.
    pub(crate) fn get_or<E>(&self, key: K, make: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        if let Some(known) = self
            .map
            .lock()
            .ok()
            .and_then(|memo| memo.get(&key).cloned())
        {
            return Ok(known);
        }
        let value = make()?;
        if let Ok(mut memo) = self.map.lock() {
            if memo.len() >= self.max {
                memo.clear();
            }
            memo.insert(key, value.clone());
        }
        Ok(value)
    }

    /// The value for `key`, computed by `make` (and kept) on a miss.
    pub(crate) fn get(&self, key: K, make: impl FnOnce() -> V) -> V {
        self.get_or(key, || Ok::<V, std::convert::Infallible>(make()))
            .unwrap_or_else(|never| match never {})
    }

    /// Entries kept now (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().map_or(0, |memo| memo.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly by design.
mod tests {
    use super::*;

    #[test]
    fn keeps_successes_only_and_empties_when_full() {
        static MEMO: Memo<u32, u64> = Memo::new(3);
        let mut computed = 0;
        for _ in 0..2 {
            let v: Result<u64, ()> = MEMO.get_or(1, || {
                computed += 1;
                Ok(10)
            });
            assert_eq!(v, Ok(10));
        }
        assert_eq!(computed, 1, "the second call is a hit");
        for _ in 0..2 {
            assert_eq!(MEMO.get_or(2, || Err::<u64, &str>("bad")), Err("bad"));
        }
        assert_eq!(MEMO.len(), 1, "a failure is not kept");
        for k in 2..=3 {
            MEMO.get_or(k, || Ok::<u64, ()>(u64::from(k))).unwrap();
        }
        assert_eq!(MEMO.len(), 3);
        MEMO.get_or(4, || Ok::<u64, ()>(4)).unwrap();
        assert_eq!(MEMO.len(), 1, "full: emptied, then the new entry");
        assert_eq!(
            MEMO.get_or(1, || Ok::<u64, ()>(11)),
            Ok(11),
            "forgotten, computed again"
        );
        assert_eq!(MEMO.get(1, || 12), 11, "kept, not computed again");
    }
}
