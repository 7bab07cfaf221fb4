//! The engine: image volumes over one backend. Mutate a container's mounts (mount image
//! volumes, set `host_path`), clean up a sandbox, release its lease. See docs/design.md,
//! "The job, step by step".
//!
//! Its rooms: [`config`] (what it is opened with), [`validate`] (a mutate's input),
//! [`mutate`] (plan and make sure of each volume), [`making`] (lease, layers, view) and
//! [`mounting`] (the mount itself), [`deferred_view`] (the quick way: the view after the
//! mount), [`found`] (a mount found at a volume's path: ours or not), [`undo`],
//! [`cleanup`], [`release`], [`listing`], and what they share: [`call`] (what one mutate
//! asks for and makes), [`leases`], [`memo`], [`dirs`].
//!
//! # Locks
//!
//! Taken in this order, never the other way round:
//!
//! 1. a volume's lock (`volume_locks`, keyed by its path): one mutate or cleanup per
//!    volume at a time; a mutate takes all of its volumes' locks at once, sorted;
//! 2. a sandbox's lock (`sandbox_locks`): short sections that make the lease, a directory
//!    and a view together, or remove the lease or the sandbox's directory once empty;
//! 3. leaf locks, held only inside one method and never across a backend call, a mount or
//!    another lock: the sets and memos ([`leases::KnownLeases`], [`memo::Memo`]) and the
//!    count of deferred views ([`InFlight`]).
//!
//! The first two are shared by every handle of this process on one state directory
//! (`STATE_LOCKS`), so two handles mutating one volume at once make one mount, as two
//! threads of one handle do.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::backend::containerd::ContainerdBackend;
use crate::backend::local::import::ImportOptions;
use crate::backend::local::LocalBackend;
use crate::backend::{Backend, GcStats, ImageRecord, Progress};
use crate::error::{Error, IoContext, Result};
use crate::events::{VolumeEvent, VolumeEventKind, VolumeEvents};
use crate::layout::StateLayout;
use crate::locks::{lock, InFlight, KeyedLocks};
use crate::mount::{self, Kernel, MountTable};

mod call;
mod cleanup;
mod config;
mod deferred_view;
mod dirs;
mod found;
mod leases;
mod listing;
mod making;
mod memo;
mod mounting;
mod mutate;
mod release;
mod undo;
mod validate;

#[cfg(test)]
mod tests;

pub use config::{BackendConfig, Config, MutateOptions, DEFAULT_LOCK_TIMEOUT};
pub use listing::VolumeInfo;
pub use mutate::MountOutcome;
pub use validate::{MAX_CONTAINER_PATH_LEN, MAX_IMAGE_LEN, MAX_MOUNTS, MAX_SNAPSHOTTER_LEN};

use call::Shape;
use leases::KnownLeases;
use listing::digest_of_target;
use memo::Memo;

/// Label on a view snapshot: the image reference the volume was requested with.
pub const LABEL_IMAGE: &str = "imv.io/image";
/// Label on a view snapshot: the sandbox it belongs to.
pub const LABEL_SANDBOX: &str = "imv.io/sandbox";
/// Label on a view snapshot: the digest of the platform's manifest it was made from (the
/// image's digest is in its key, the volume's path).
pub const LABEL_MANIFEST: &str = "imv.io/manifest";

/// Image volumes over one backend. Share it between threads: every method takes `&self`.
pub struct ImageVolumes {
    layout: StateLayout,
    backend: Arc<dyn Backend>,
    local: Option<Arc<LocalBackend>>,
    progress: Arc<dyn Progress>,
    /// One mutate or cleanup per volume (sandbox, image digest) at a time.
    volume_locks: Arc<KeyedLocks>,
    /// Short sections per sandbox: lease + directory + view creation, and the removal of
    /// the lease or the sandbox directory when they turn out empty.
    sandbox_locks: Arc<KeyedLocks>,
    /// Sandboxes whose lease this process made or found: a sandbox's second volume needs
    /// no call to create it.
    leases: Arc<KnownLeases>,
    /// Keeps this state directory's entry of `STATE_LOCKS` (the two locks above) alive.
    _locks: Arc<StateLocks>,
    /// Views still being made after their volume was mounted, by sandbox (see
    /// `deferred_view`): cleanup, release and the drop wait for them.
    deferred: Arc<InFlight>,
    /// (sandbox, reference, platform) to the volume this process mounted for it, for
    /// references that name an image by content: see `mounted_for`.
    mounted: Memo<call::MountedVolume>,
    /// The mount (ID, and device and inode of its root) of each volume this process mounted
    /// or checked (see `check_volume_is_ours`): a volume still mounted so needs no other
    /// check. The kernel reuses mount IDs, hence the root's identity too, and the entry
    /// goes whenever imv unmounts the volume.
    mount_ids: Memo<mount::MountRoot>,
    /// The shape (mapping, label) of each volume this process mounted: a request with
    /// another does not reuse it.
    shapes: Memo<Shape>,
    /// For each overlay (its type, source and options) this process mounted as a volume,
    /// the volume it mounted last: a new volume of the same overlay is a clone of that one
    /// while it stays mounted (see `mount_or_clone`).
    twins: Memo<PathBuf>,
    /// Where volumes are mounted: the kernel, or a test's table (see mount/table.rs).
    mount_table: Arc<dyn MountTable>,
    /// Where events go (`Config::events`).
    events: Option<Arc<dyn VolumeEvents>>,
}

/// The locks of one state directory, shared by every handle of this process on it.
struct StateLocks {
    volume: Arc<KeyedLocks>,
    sandbox: Arc<KeyedLocks>,
}

/// [`StateLocks`] by volumes directory.
static STATE_LOCKS: Mutex<BTreeMap<PathBuf, std::sync::Weak<StateLocks>>> =
    Mutex::new(BTreeMap::new());

fn state_locks(volumes_dir: &Path) -> Arc<StateLocks> {
    let mut all = lock(&STATE_LOCKS);
    if let Some(locks) = all.get(volumes_dir).and_then(std::sync::Weak::upgrade) {
        return locks;
    }
    all.retain(|_, w| w.strong_count() > 0);
    let locks = Arc::new(StateLocks {
        volume: Arc::default(),
        sandbox: Arc::default(),
    });
    all.insert(volumes_dir.to_owned(), Arc::downgrade(&locks));
    locks
}

impl ImageVolumes {
    /// Open the backend `config.backend` names (the embedded store under `config.root` by
    /// default), volumes under `config.state`. A containerd backend connects on first use.
    pub fn open(config: Config) -> Result<Self> {
        let (backend, local): (Arc<dyn Backend>, _) = match &config.backend {
            BackendConfig::Containerd { address, namespace } => {
                (Arc::new(ContainerdBackend::new(address, namespace)?), None)
            }
            BackendConfig::Local => {
                let local = LocalBackend::open_shared(&config.root, config.lock_timeout)?;
                (local.clone(), Some(local))
            }
        };
        let mut this = Self::with_backend(config.state, backend, config.progress)?;
        if let Some(local) = &local {
            let table = &this.mount_table;
            local.forget_unmounted_views(&this.layout.volumes_dir(), |p| table.is_mountpoint(p))?;
        }
        this.local = local;
        this.events = config.events;
        Ok(this)
    }

    /// Image volumes over any backend, volumes under `state`.
    pub fn with_backend(
        state: PathBuf,
        backend: Arc<dyn Backend>,
        progress: Arc<dyn Progress>,
    ) -> Result<Self> {
        Self::with_mount_table(state, backend, progress, Arc::new(Kernel::default()))
    }

    /// [`with_backend`](Self::with_backend), volumes mounted in `mount_table`.
    pub(crate) fn with_mount_table(
        state: PathBuf,
        backend: Arc<dyn Backend>,
        progress: Arc<dyn Progress>,
        mount_table: Arc<dyn MountTable>,
    ) -> Result<Self> {
        crate::layout::expect_directory(&state, "the state directory")?;
        // 0711 like containerd's state directory: only root lists it, but a runtime's
        // helpers can still reach the volume paths they are given.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&state)
            .at("creating state directory", &state)?;
        let state = fs::canonicalize(&state).at("resolving state directory", &state)?;
        let layout = StateLayout::new(state);
        let volumes = layout.volumes_dir();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&volumes)
            .at("creating", &volumes)?;
        // Handles of this process on one state directory take the same locks: two of them
        // mutating one volume at once make one mount, as two threads of one handle do.
        let locks = state_locks(&volumes);
        Ok(ImageVolumes {
            layout,
            backend,
            local: None,
            progress,
            volume_locks: Arc::clone(&locks.volume),
            sandbox_locks: Arc::clone(&locks.sandbox),
            _locks: locks,
            leases: Arc::default(),
            deferred: Arc::default(),
            mount_ids: Memo::default(),
            mounted: Memo::default(),
            shapes: Memo::default(),
            twins: Memo::default(),
            mount_table,
            events: None,
        })
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The embedded store, when that is the backend (for import, rmi, gc).
    pub fn local(&self) -> Option<&LocalBackend> {
        self.local.as_deref()
    }

    /// The embedded store for `operation`; FailedPrecondition naming containerd's tool for
    /// it when the backend is another (containerd keeps its images itself).
    fn store(&self, operation: &str) -> Result<&LocalBackend> {
        self.local().ok_or_else(|| {
            Error::precondition(format!(
                "{operation} works on the embedded store only, and the backend is {}: \
                 use `ctr images import`, `ctr images rm` and containerd's own garbage collection",
                self.backend.name()
            ))
        })
    }

    /// Import the image(s) at `path` (an OCI layout directory, an OCI archive or a
    /// `docker save` tarball) into the embedded store; `name` names the image when the
    /// source holds one. An image of the same name is replaced. FailedPrecondition with
    /// another backend.
    pub fn import(&self, path: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>> {
        self.import_with(path, &ImportOptions::named(name))
    }

    /// [`import`](Self::import), the images picked by tag and named as `options` say: a
    /// layout of several images tagged `one`, `two` (as umoci, skopeo and buildah write
    /// them) imports with a `base_name`, or one of them with a `tag` (and a `name`).
    pub fn import_with(&self, path: &Path, options: &ImportOptions) -> Result<Vec<ImageRecord>> {
        self.store("import")?
            .import(path, options, self.progress.as_ref())
    }

    /// The images of the backend (either kind), sorted by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        self.backend.images()
    }

    /// Remove the image `reference` names from the embedded store, then collect garbage.
    /// Volumes mounted from it stay mounted: the lease of their sandbox keeps their layers
    /// until cleanup and release (as containerd's leases do). FailedPrecondition with
    /// another backend.
    pub fn remove_image(&self, reference: &str) -> Result<ImageRecord> {
        self.store("image removal")?.remove_image(reference)
    }

    /// Remove from the embedded store what no image, lease or volume references.
    /// FailedPrecondition with another backend.
    pub fn gc(&self) -> Result<GcStats> {
        self.store("garbage collection")?.gc()
    }

    /// The directory volumes are mounted under: `<state>/image-volumes`.
    pub fn volumes_dir(&self) -> PathBuf {
        self.layout.volumes_dir()
    }

    /// Tell the events sink, if any, what happened to the sandbox, or to its volume at
    /// `volume` (target, snapshotter), asked for by `image`.
    fn tell(
        &self,
        kind: VolumeEventKind,
        sandbox_id: &str,
        image: Option<&str>,
        volume: Option<(&Path, &str)>,
    ) {
        if let Some(events) = &self.events {
            events.publish(VolumeEvent {
                kind,
                sandbox_id: sandbox_id.to_owned(),
                image: image.map(str::to_owned),
                image_digest: volume.and_then(|(target, _)| digest_of_target(target)),
                target: volume.map(|(target, _)| target.to_owned()),
                snapshotter: volume.map(|(_, snapshotter)| snapshotter.to_owned()),
            });
        }
    }
}

impl Drop for ImageVolumes {
    fn drop(&mut self) {
        // A command that exits right after a mutate leaves no volume without its view.
        self.wait_deferred(None);
    }
}
