//! Crash points: named places between the steps of a mutate or a cleanup where the
//! recovery tests kill the process, so that every half-done state a SIGKILL can leave is
//! made on purpose rather than hoped for with random timing (cli/tests/recovery.rs).
//!
//! A debug build whose environment has `IMV_CRASH_AT=<name>` sends itself SIGKILL the first
//! time it reaches the point of that name. Release builds compile the points to nothing.
//! (The `fail` crate does the same job behind a cargo feature every test command would
//! have to pass, and panics rather than dying as a SIGKILL does.)

/// Every crash point, in the order a mutate, then a cleanup, reaches them.
#[doc(hidden)]
pub const CRASH_POINTS: &[&str] = &[
    // mutate
    LEASE_CREATED,
    LAYER_COMMITTED,
    VOLUME_DIR_CREATED,
    VIEW_CREATED,
    IDMAP_LAYER_STAGED,
    MOUNTED_BEFORE_VIEW,
    MOUNTED,
    // cleanup, release
    UNMOUNTED,
    VOLUMES_REMOVED,
    CLEANED_UP,
];

/// The sandbox's lease is made; nothing unpacked for the call yet.
pub(crate) const LEASE_CREATED: &str = "lease-created";
/// A layer of the image (the embedded store: the layers unpacked together) is unpacked
/// and committed, the image's views not made.
pub(crate) const LAYER_COMMITTED: &str = "layer-committed";
/// The volume's directory exists; no view, no mount.
pub(crate) const VOLUME_DIR_CREATED: &str = "volume-dir-created";
/// The volume's view is made, nothing mounted.
pub(crate) const VIEW_CREATED: &str = "view-created";
/// One layer of an idmapped overlay is attached in its staging directory, the overlay is
/// not made.
pub(crate) const IDMAP_LAYER_STAGED: &str = "idmap-layer-staged";
/// The volume is mounted the quick way (what the image's views mount), its view not made
/// yet (volumes/making.rs, `mount_known_view`).
pub(crate) const MOUNTED_BEFORE_VIEW: &str = "mounted-before-view";
/// The volume is mounted after its view; the call has not answered.
pub(crate) const MOUNTED: &str = "mounted";
/// A cleanup unmounted a volume; its directory and view are still there.
pub(crate) const UNMOUNTED: &str = "unmounted";
/// A cleanup unmounted and removed the sandbox's volumes and directory; their views are
/// still there (they go last).
pub(crate) const VOLUMES_REMOVED: &str = "volumes-removed";
/// A release cleaned the sandbox up; its lease is still there.
pub(crate) const CLEANED_UP: &str = "cleaned-up";

/// Die here, as a SIGKILL kills, if the environment names this point.
#[cfg(debug_assertions)]
pub(crate) fn reached(point: &'static str) {
    use std::sync::OnceLock;
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("IMV_CRASH_AT").ok());
    if at.as_deref() == Some(point) {
        debug_assert!(CRASH_POINTS.contains(&point), "{point} is not listed");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn reached(_point: &'static str) {}
