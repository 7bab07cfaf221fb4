//! What happened to image volumes, told to whoever watches: `imv serve` publishes these to
//! containerd's event service (cli/src/events.rs), so `ctr events` shows them.
//!
//! The engine tells a sink after the fact: a mutate's volumes once the whole call
//! succeeded (a failing call undoes what it made, and that is no event), a cleanup's per
//! volume it removed, a release once the lease is gone. A sink must not block: it is
//! called on the caller's thread, with the volume's lock released.

use std::path::PathBuf;

use crate::digest::Digest;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VolumeEventKind {
    /// A mutate mounted a volume.
    Mounted,
    /// A mutate found a volume mounted by an earlier process (imv or its host restarted),
    /// checked it was made from the image's view, and took it over.
    Reused,
    /// A cleanup (or a release) unmounted a volume and removed its directory.
    CleanedUp,
    /// A release deleted the sandbox's lease.
    Released,
}

/// One thing that happened to a sandbox's volume (or, for [`VolumeEventKind::Released`],
/// to the sandbox).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeEvent {
    /// What happened.
    pub kind: VolumeEventKind,
    /// The sandbox the volume belongs to.
    pub sandbox_id: String,
    /// The image reference the mount asked for (mounted and reused volumes).
    pub image: Option<String>,
    /// The digest the volume is named by (its image's target digest).
    pub image_digest: Option<Digest>,
    /// The volume's path: the mount's host path.
    pub target: Option<PathBuf>,
    /// The snapshotter its view is in (mounted and reused volumes).
    pub snapshotter: Option<String>,
}

/// Where the engine's events go. Called on the caller's thread: return at once (queue the
/// event, drop it when the queue is full); never fail the operation.
pub trait VolumeEvents: Send + Sync {
    /// Take `event` (see the trait's comment).
    fn publish(&self, event: VolumeEvent);
}
