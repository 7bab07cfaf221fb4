//! Early writeback while layers unpack: a thread that syncs the store's file system every
//! [`EVERY`], so that the disk writes the files already made while the next ones are
//! made, and each layer's own `syncfs` (which its row waits for) finds little left: on
//! this machine kind that wait was a third of a cold 74 MiB layer (docs/design.md, "Cold
//! unpack").
//!
//! One such thread per store, however many layers unpack at once: 100 sandboxes asking
//! for one cold image must not mean 100 threads each calling `syncfs` (whose cost grows
//! with the inodes of the file system) 25 times a second.

use crate::locks::lock;
use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::Duration;

/// How often the thread starts writing back what the unpacks wrote so far.
const EVERY: Duration = Duration::from_millis(40);

/// The store's writeback thread, running while anyone holds it.
#[derive(Default)]
pub(super) struct Writeback {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    holders: usize,
    /// Dropping it stops the thread.
    stop: Option<Sender<()>>,
}

/// Keeps the writeback running until dropped.
pub(super) struct Held<'a>(&'a Writeback);

impl Writeback {
    /// Keep the file system holding `dir` written back early until the guard is dropped;
    /// starts the thread if none runs. Best effort: without a thread, each layer's own
    /// `syncfs` still makes it durable, only later.
    pub(super) fn hold(&self, dir: &Path) -> Held<'_> {
        let mut state = lock(&self.state);
        state.holders += 1;
        if state.stop.is_none() {
            state.stop = start(dir);
        }
        Held(self)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.holders -= 1;
        if state.holders == 0 {
            state.stop = None;
        }
    }
}

/// The thread, or `None` when it could not start.
fn start(dir: &Path) -> Option<Sender<()>> {
    let dir = File::open(dir).ok()?;
    let (stop, stopped) = mpsc::channel::<()>();
    // Not joined: it ends as soon as `stop` is dropped (or its syncfs returns).
    std::thread::Builder::new()
        .name("imv-writeback".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                // Only early: each layer syncs itself before its row is committed.
                let _ = rustix::fs::syncfs(&dir);
            }
        })
        .ok()?;
    Some(stop)
}
