//! In-process locks keyed by a string: one holder per key at a time, others wait.
//!
//! Used for "one mount per (sandbox, image)" and "one unpack per chain ID". Entries exist
//! only while held, so the map does not grow with the number of keys ever used.

use std::collections::HashSet;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// A set of named locks.
#[derive(Default)]
pub struct KeyedLocks {
    held: Mutex<HashSet<String>>,
    released: Condvar,
}

/// Holds one key of a [`KeyedLocks`] until dropped.
pub struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
}

impl KeyedLocks {
    /// New, with nothing held.
    pub fn new() -> Self {
        Self::default()
    }

    fn held(&self) -> MutexGuard<'_, HashSet<String>> {
        // A panic while the set was locked cannot leave it inconsistent (insert and remove
        // are single calls), so poisoning is ignored.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait until `key` is free, then hold it.
    pub fn lock(&self, key: &str) -> KeyedGuard<'_> {
        self.lock_telling(key).0
    }

    /// [`lock`](Self::lock), also telling whether it had to wait (someone else held `key`,
    /// and may have done meanwhile what the caller was about to do).
    pub fn lock_telling(&self, key: &str) -> (KeyedGuard<'_>, bool) {
        let mut held = self.held();
        let mut waited = false;
        while held.contains(key) {
            waited = true;
            held = self
                .released
                .wait(held)
                .unwrap_or_else(PoisonError::into_inner);
        }
        held.insert(key.to_owned());
        let guard = KeyedGuard {
            locks: self,
            key: key.to_owned(),
        };
        (guard, waited)
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        self.locks.held().remove(&self.key);
        self.locks.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn one_holder_per_key() {
        let locks = KeyedLocks::new();
        let inside = AtomicUsize::new(0);
        let max = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let _g = locks.lock("k");
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(n, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(max.load(Ordering::SeqCst), 1);
        assert!(locks.held().is_empty());
    }

    #[test]
    fn different_keys_do_not_block() {
        let locks = KeyedLocks::new();
        let _a = locks.lock("a");
        let _b = locks.lock("b");
    }
}
