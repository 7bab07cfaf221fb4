//! What this process knows of which images are unpacked: the images it unpacked or found
//! unpacked (`unpacked`), and those `is_unpacked` just found missing (`found_missing`).

use std::time::{Duration, Instant};

use super::ContainerdBackend;
use crate::digest::Digest;
use crate::locks::lock;

/// How long a "not unpacked" answer of `is_unpacked` spares the unpack that follows a
/// question of its own.
const FOUND_MISSING_FOR: Duration = Duration::from_secs(2);

impl ContainerdBackend {
    /// Whether this process knows the image whose top chain is `top` to be unpacked and
    /// rooted in `snapshotter`.
    pub(super) fn known_unpacked(&self, snapshotter: &str, top: &Digest) -> bool {
        let unpacked = lock(&self.unpacked);
        unpacked.contains(&(snapshotter.to_owned(), top.clone()))
    }

    /// Note that the image whose top chain is `top` was just found not unpacked.
    pub(super) fn found_missing(&self, snapshotter: &str, top: &Digest) {
        let mut missing = lock(&self.found_missing);
        // Notes never taken (the call failed before unpacking) go with the next one.
        missing.retain(|_, at| at.elapsed() < FOUND_MISSING_FOR);
        missing.insert((snapshotter.to_owned(), top.clone()), Instant::now());
    }

    /// Whether the image whose top chain is `top` was found not unpacked a moment ago (the
    /// note is taken). A stale answer costs only work: an unpack of layers that are there
    /// meets containerd's AlreadyExists at commit and keeps theirs.
    pub(super) fn take_found_missing(&self, snapshotter: &str, top: &Digest) -> bool {
        let mut missing = lock(&self.found_missing);
        missing
            .remove(&(snapshotter.to_owned(), top.clone()))
            .is_some_and(|at| at.elapsed() < FOUND_MISSING_FOR)
    }

    pub(super) fn set_unpacked(&self, snapshotter: &str, top: &Digest, known: bool) {
        let mut unpacked = lock(&self.unpacked);
        let entry = (snapshotter.to_owned(), top.clone());
        if known {
            unpacked.insert(entry);
        } else {
            // Unpacked anew, its layers get new directories: what views mounted is stale.
            self.view_mounts.forget(snapshotter, top);
            unpacked.remove(&entry);
        }
    }
}
