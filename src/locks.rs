//! In-process locks keyed by a string: one holder per key at a time, others wait; and
//! a count of work in flight per key, to wait for.
//!
//! Used for "one mount per (sandbox, image)", "one unpack per chain ID" and "no new view
//! of a key while its removal runs in the background". Entries exist only while held (or
//! in flight), so the maps do not grow with the number of keys ever used.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Lock `mutex`, whether or not a thread panicked while holding it. imv's mutexes guard
/// maps and sets changed by one call at a time (an insert, a remove, a clear), which a
/// panic cannot leave half done, so a poisoned one is as good as any: taking it keeps one
/// failed call from failing every later one.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

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
        lock(&self.held)
    }

    /// Whether someone holds `key` now (a hint: it may change right after).
    pub fn is_held(&self, key: &str) -> bool {
        self.held().contains(key)
    }

    /// Wait until nobody holds `key`, without holding it: for a caller that then finds
    /// done what the holder was doing, so that many such callers do not take the key in
    /// turn (each release waking all the others) only to let it go again.
    pub fn wait_free(&self, key: &str) {
        let mut held = self.held();
        while held.contains(key) {
            held = self
                .released
                .wait(held)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Hold `key` if nobody does; `None` otherwise, without waiting.
    pub fn try_lock(&self, key: &str) -> Option<KeyedGuard<'_>> {
        if !self.held().insert(key.to_owned()) {
            return None;
        }
        Some(KeyedGuard {
            locks: self,
            key: key.to_owned(),
        })
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
    fn wait_free_waits_for_the_holder_and_takes_nothing() {
        let locks = KeyedLocks::new();
        let released = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let guard = locks.lock("k");
            let waiter = s.spawn(|| {
                locks.wait_free("k");
                released.load(Ordering::SeqCst)
            });
            std::thread::sleep(std::time::Duration::from_millis(20));
            released.store(1, Ordering::SeqCst);
            drop(guard);
            assert_eq!(waiter.join().unwrap(), 1, "returned while the key was held");
        });
        assert!(!locks.is_held("k"));
        locks.wait_free("k"); // free: returns at once
    }

    #[test]
    fn different_keys_do_not_block() {
        let locks = KeyedLocks::new();
        let _a = locks.lock("a");
        let _b = locks.lock("b");
    }
}

/// Work in flight (calls running in the background), counted per key.
#[derive(Default)]
pub struct InFlight {
    keys: Mutex<HashMap<String, usize>>,
    done: Condvar,
}

impl InFlight {
    /// One more piece of work on `key`.
    pub fn begin(&self, key: &str) {
        let mut keys = lock(&self.keys);
        *keys.entry(key.to_owned()).or_default() += 1;
    }

    /// One piece of work on `key` is done.
    pub fn end(&self, key: &str) {
        let mut keys = lock(&self.keys);
        if let Some(n) = keys.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                keys.remove(key);
            }
        }
        self.done.notify_all();
    }

    /// Wait until no work on `key` (or, with `None`, on any key) is in flight, at most
    /// `limit`. Whether that happened.
    pub fn wait(&self, key: Option<&str>, limit: Duration) -> bool {
        let keys = lock(&self.keys);
        let (_keys, timeout) = self
            .done
            .wait_timeout_while(keys, limit, |keys| match key {
                Some(k) => keys.contains_key(k),
                None => !keys.is_empty(),
            })
            .unwrap_or_else(PoisonError::into_inner);
        !timeout.timed_out()
    }
}
