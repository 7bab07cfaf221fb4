//! What one mutate asks for and what it makes: the values its steps pass along, and the
//! record an undo works from.

use std::path::PathBuf;

use super::leases::PendingLease;
use crate::backend::ResolvedImage;
use crate::digest::Digest;
use crate::mount::idmap::IdMap;
use crate::platform::Platform;

/// One image mount to serve, as `plan` found it.
pub(super) struct Plan {
    /// Its index among the call's mounts.
    pub index: usize,
    /// Its image reference.
    pub reference: String,
    /// The image, when it had to be resolved: `None` when the volume this process mounted
    /// for the reference is still there (see `mounted_for`).
    pub image: Option<ResolvedImage>,
    /// The volume's path.
    pub target: PathBuf,
    /// The image's ID (see [`ResolvedImage::id`]): what the mount reports as its
    /// `image_ref`.
    pub image_id: Digest,
}

/// A volume this process mounted for a reference that names an image by content.
#[derive(Clone, Debug)]
pub(super) struct MountedVolume {
    pub target: PathBuf,
    pub image_id: Digest,
}

/// One volume a mutate wants.
pub(super) struct VolumeRequest<'a> {
    pub sandbox_id: &'a str,
    pub snapshotter: &'a str,
    pub platform: &'a Platform,
    pub plan: &'a Plan,
    pub shape: Shape,
}

/// The view a volume is made from: whose, of which image.
pub(super) struct ViewRequest<'a> {
    pub sandbox_id: &'a str,
    pub snapshotter: &'a str,
    pub reference: &'a str,
    pub image: &'a ResolvedImage,
}

/// How a volume is mounted beyond its image: a pod's volumes share one shape, and a
/// mounted volume is reused only for a request of its shape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Shape {
    /// The mapping its owners are shown with (a pod in a user namespace), if any.
    pub idmap: Option<IdMap>,
    /// The SELinux label its files carry, if any.
    pub label: Option<String>,
}

/// What one mutate call made, so a failure can undo exactly that.
#[derive(Default)]
pub(super) struct Call {
    pub made: Vec<Made>,
    pub lease_created: bool,
    /// The sandbox's lease being created while the call resolves its images: what waits
    /// for the outcome. Taken by the first `ensure_lease`, or by `settle_lease`, or handed
    /// to a deferred view.
    pub pending_lease: Option<PendingLease>,
    /// Volumes found mounted by an earlier process and taken over by this call.
    pub taken_over: Vec<PathBuf>,
    /// The threads making the views of volumes this call mounted the quick way; each
    /// tells whether it created the sandbox's lease.
    pub deferred: Vec<std::thread::JoinHandle<bool>>,
}

/// One volume a call made (or began to make).
pub(super) struct Made {
    pub target: PathBuf,
    pub shape: Shape,
    /// Whether its view was made (or is being made by a deferred thread).
    pub view: bool,
    pub mounted: bool,
}
