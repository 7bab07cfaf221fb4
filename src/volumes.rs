//! The job: mutate a container's mounts (mount image volumes, set `host_path`), clean up
//! a sandbox, release its lease. See docs/design.md, "The job, step by step".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use crate::backend::containerd::ContainerdBackend;
use crate::backend::local::import::ImportOptions;
use crate::backend::local::LocalBackend;
use crate::backend::{
    Backend, GcStats, ImageRecord, NoProgress, Progress, ResolvedImage, DEFAULT_SNAPSHOTTER,
};
use crate::crash_points;
use crate::cri::Mount;
use crate::digest::Digest;
use crate::error::{shown, Error, IoContext, Result};
use crate::events::{VolumeEvent, VolumeEventKind, VolumeEvents};
use crate::layout::{validate_sandbox_id, StateLayout};
use crate::locks::{InFlight, KeyedLocks};
use crate::mount::idmap::{IdMap, IdRange, UserNamespaces};
use crate::mount::selinux;
use crate::mount::{self, MountSpec};
use crate::platform::Platform;
use crate::reference;
use crate::subpath;

mod deferred_view;
mod found;
mod path_map;
use deferred_view::DeferredView;
use found::{Found, ViewRequest};
use path_map::PathMap;

/// Label on a view snapshot: the image reference the volume was requested with.
pub const LABEL_IMAGE: &str = "imv.io/image";
/// Label on a view snapshot: the sandbox it belongs to.
pub const LABEL_SANDBOX: &str = "imv.io/sandbox";
/// Label on a view snapshot: the digest of the platform's manifest it was made from (the
/// image's digest is in its key, the volume's path).
pub const LABEL_MANIFEST: &str = "imv.io/manifest";

/// Which store images, snapshots and leases live in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BackendConfig {
    /// The embedded store under [`Config::root`] (no daemon).
    #[default]
    Local,
    /// A containerd daemon, over its gRPC API; [`Config::root`] is not used.
    Containerd {
        /// Its socket, e.g. [`containerd::DEFAULT_ADDRESS`](crate::backend::containerd::DEFAULT_ADDRESS).
        address: PathBuf,
        /// The namespace to work in; the CRI plugin's is `k8s.io`.
        namespace: String,
    },
}

/// Where imv keeps things.
#[derive(Clone)]
pub struct Config {
    /// Persistent data of the embedded store (content, snapshots, database).
    /// Default `/var/lib/imv`.
    pub root: PathBuf,
    /// Runtime state: the mounted volumes live under `<state>/image-volumes`.
    /// Default `/run/imv`.
    pub state: PathBuf,
    /// Where progress of long work goes.
    pub progress: Arc<dyn Progress>,
    /// The store: the embedded one (default) or containerd.
    pub backend: BackendConfig,
    /// How long opening the embedded store waits while another process has it (its
    /// database admits one process at a time); default [`DEFAULT_LOCK_TIMEOUT`]. Handles of
    /// one process on one root share the store and never wait for each other.
    pub lock_timeout: Duration,
    /// Where to tell what happened to volumes (mounted, taken over after a restart,
    /// cleaned up, released); none by default. `imv serve` publishes them to containerd.
    pub events: Option<Arc<dyn VolumeEvents>>,
}

/// How long opening the embedded store waits for another process by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

impl Config {
    /// A config with the given root and state directories and no progress reporting.
    pub fn new(root: impl Into<PathBuf>, state: impl Into<PathBuf>) -> Self {
        Config {
            root: root.into(),
            state: state.into(),
            progress: Arc::new(NoProgress),
            backend: BackendConfig::Local,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            events: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new("/var/lib/imv", "/run/imv")
    }
}

/// One mounted (or half-made) image volume, as found under the state directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VolumeInfo {
    /// The sandbox it belongs to.
    pub sandbox_id: String,
    /// The volume's directory: `<state>/image-volumes/<sandbox>/<image digest hex>`.
    pub target: PathBuf,
    /// The digest of the image it was made from (read from the directory's name): that of
    /// the image's target, i.e. the index of a multi-platform image, as
    /// [`ImageRecord::digest`]; not the platform's manifest.
    pub image_digest: Digest,
    /// The image reference it was requested by, when the backend knows it.
    pub image: Option<String>,
    /// Whether the target is a mountpoint right now.
    pub mounted: bool,
}

/// Image volumes over one backend. Share it between threads: every method takes `&self`.
pub struct ImageVolumes {
    layout: StateLayout,
    backend: Arc<dyn Backend>,
    local: Option<Arc<LocalBackend>>,
    progress: Arc<dyn Progress>,
    /// One mutate or cleanup per volume (sandbox, image digest) at a time.
    volume_locks: Arc<KeyedLocks>,
    /// Short sections per sandbox: lease + directory + view creation, and the removal of
    /// the lease or the sandbox directory when they turn out empty. Taken after volume
    /// locks, never before.
    sandbox_locks: Arc<KeyedLocks>,
    /// Sandboxes whose lease this process made or found: a sandbox's second volume needs
    /// no call to create it. Taken under a sandbox lock, never the other way round.
    leases: Arc<Mutex<HashSet<String>>>,
    /// Keeps this state directory's entry of `STATE_LOCKS` (the two locks above) alive.
    _locks: Arc<StateLocks>,
    /// Views still being made after their volume was mounted, by sandbox (see
    /// `deferred_view`): cleanup, release and the drop wait for them.
    deferred: Arc<InFlight>,
    /// (sandbox, reference, platform) to the volume this process mounted for it, for
    /// references that name an image by content: see `mounted_for`.
    mounted: Mutex<BTreeMap<(String, String, String), PathBuf>>,
    /// The mount (ID, and device and inode of its root) of each volume this process mounted
    /// or checked (see `check_volume_is_ours`): a volume still mounted so needs no other
    /// check. The kernel reuses mount IDs, hence the root's identity too, and the entry
    /// goes whenever imv unmounts the volume.
    mount_ids: Mutex<PathMap<mount::MountRoot>>,
    /// The shape (mapping, label) of each volume this process mounted: a request with
    /// another does not reuse it.
    shapes: Mutex<PathMap<Shape>>,
    /// For each overlay (its type, source and options) this process mounted as a volume,
    /// the volume it mounted last: a new volume of the same overlay is a clone of that one
    /// while it stays mounted (see `mount_or_clone`).
    twins: Mutex<HashMap<String, PathBuf>>,
    /// User namespaces for idmapped volumes, by mapping.
    user_namespaces: UserNamespaces,
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
    let mut all = STATE_LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
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

/// The digest a volume's directory is named by (`<state>/image-volumes/<sandbox>/<hex>`).
fn digest_of_target(target: &Path) -> Option<Digest> {
    let hex = target.file_name()?.to_str()?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

/// The key of `ImageVolumes::mounted` (Debug of the platform: every field counts).
fn memo_key(sandbox_id: &str, reference: &str, platform: &Platform) -> (String, String, String) {
    (
        sandbox_id.to_owned(),
        reference.to_owned(),
        format!("{platform:?}"),
    )
}

/// Most (sandbox, reference) pairs `ImageVolumes::mounted` keeps; past that it starts
/// afresh (a node runs a few hundred pods).
const MAX_REMEMBERED: usize = 65_536;

/// What one mutate call made, so a failure can undo exactly that.
#[derive(Default)]
struct Call {
    made: Vec<Made>,
    lease_created: bool,
    /// The sandbox's lease being created while the call resolves its images: what waits
    /// for the outcome. Taken by the first `ensure_lease`, or by `settle_lease`, or handed
    /// to a deferred view.
    pending_lease: Option<PendingLease>,
    /// Volumes found mounted by an earlier process and taken over by this call.
    taken_over: Vec<PathBuf>,
    /// The threads making the views of volumes this call mounted the quick way; each
    /// tells whether it created the sandbox's lease.
    deferred: Vec<std::thread::JoinHandle<bool>>,
}

/// What waits for a lease's creation (see `Backend::start_create_lease`).
type PendingLease = Box<dyn FnOnce() -> Result<()> + Send>;

/// A mount to serve: its index, its image reference, the image when it had to be resolved
/// (`None` when its volume was found mounted without that), and the volume's path.
type Plan = (usize, String, Option<ResolvedImage>, PathBuf);

/// What a mutate asks of its volumes beyond CRI's mounts (see README "SELinux labels").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MutateOptions {
    /// The SELinux context every file of the call's volumes gets (the `context=` mount
    /// option), e.g. the pod's MountLabel `system_u:object_r:container_file_t:s0:c1,c2`.
    /// Empty: none. On a host without SELinux it is FailedPrecondition, unless
    /// `ignore_label_without_selinux`.
    pub mount_label: String,
    /// With a `mount_label` on a host without SELinux: mount without the label (as
    /// containerd's relabel does nothing there) instead of failing.
    pub ignore_label_without_selinux: bool,
}

/// How a volume is mounted beyond its image: a pod's volumes share one shape, and a
/// mounted volume is reused only for a request of its shape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Shape {
    /// The mapping its owners are shown with (a pod in a user namespace), if any.
    idmap: Option<IdMap>,
    /// The SELinux label its files carry, if any.
    label: Option<String>,
}

/// One volume a call made (or began to make).
struct Made {
    target: PathBuf,
    shape: Shape,
    view: bool,
    mounted: bool,
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
            local.forget_unmounted_views(&this.layout.volumes_dir(), mount::is_mountpoint)?;
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
        let locks = state_locks(layout.volumes_dir().as_path());
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
            mount_ids: Mutex::default(),
            mounted: Mutex::default(),
            shapes: Mutex::default(),
            twins: Mutex::default(),
            user_namespaces: UserNamespaces::default(),
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

    /// For every mount that carries an image: validate it, mount the image's volume for
    /// `sandbox_id` and set `host_path`. Other mounts are left alone. `snapshotter` empty
    /// means the default; `platform` `None` means the host's.
    ///
    /// All image mounts are validated before anything is done. On error, whatever this call
    /// mounted or made is undone and `mounts` is unchanged; volumes made by earlier calls stay.
    pub fn mutate_mounts(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        platform: Option<&Platform>,
        mounts: &mut [Mount],
    ) -> Result<()> {
        self.mutate_mounts_with(
            sandbox_id,
            snapshotter,
            platform,
            &MutateOptions::default(),
            mounts,
        )
    }

    /// [`mutate_mounts`](Self::mutate_mounts) with `options`: the volumes get its SELinux
    /// mount label. A pod's volumes share one label: a volume mounted with another (or
    /// none) is FailedPrecondition, as for mappings.
    pub fn mutate_mounts_with(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        platform: Option<&Platform>,
        options: &MutateOptions,
        mounts: &mut [Mount],
    ) -> Result<()> {
        validate_sandbox_id(sandbox_id)?;
        if !options.mount_label.is_empty() {
            selinux::validate_label(&options.mount_label)?;
        }
        if mounts.len() > MAX_MOUNTS {
            return Err(Error::invalid(format!(
                "{} mounts in one call: at most {MAX_MOUNTS}",
                mounts.len()
            )));
        }
        let snapshotter = snapshotter_or_default(snapshotter)?;
        let host;
        let platform = match platform {
            Some(p) => p,
            None => {
                host = Platform::host();
                &host
            }
        };
        let mut wanted = Vec::new();
        let mut idmaps = HashMap::new();
        for (i, m) in mounts.iter().enumerate() {
            if m.image.is_some() {
                let context =
                    |e: Error| e.context(format!("mount {i} ({})", shown(&m.container_path)));
                validate_mount(m).map_err(context)?;
                if let Some(idmap) = idmap_of(m).map_err(context)? {
                    idmaps.insert(i, idmap);
                }
                wanted.push(i);
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let label = mount_label(options)?;

        // A sandbox this process knows no lease of: its creation (a metadata commit in
        // containerd) goes on while the images are resolved.
        let mut call = Call::default();
        if !self.lease_known(sandbox_id) {
            call.pending_lease = Some(self.backend.start_create_lease(sandbox_id));
        }
        let plans = match self.plan(sandbox_id, platform, mounts, &wanted) {
            Ok(plans) => plans,
            Err(e) => {
                self.undo_call(sandbox_id, snapshotter, &mut call);
                return Err(e);
            }
        };
        let mut targets: Vec<String> = plans
            .iter()
            .map(|(_, _, _, t)| t.to_string_lossy().into_owned())
            .collect();
        targets.sort();
        targets.dedup();
        let _volumes: Vec<_> = targets.iter().map(|t| self.volume_locks.lock(t)).collect();

        let mut host_paths = Vec::with_capacity(plans.len());
        for (i, reference, image, target) in &plans {
            let m = &mounts[*i];
            let result = self
                .ensure_volume(
                    sandbox_id,
                    snapshotter,
                    platform,
                    reference,
                    image.as_ref(),
                    target,
                    &Shape {
                        idmap: idmaps.get(i).cloned(),
                        label: label.clone(),
                    },
                    &mut call,
                )
                .and_then(|()| match m.image_sub_path.as_str() {
                    "" => Ok(target.clone()),
                    sub => subpath::resolve(target, sub),
                });
            match result {
                Ok(path) => host_paths.push((*i, path)),
                Err(e) => {
                    self.undo_call(sandbox_id, snapshotter, &mut call);
                    return Err(e.context(format!("mount {i} ({})", shown(&m.container_path))));
                }
            }
        }
        // Every volume was there already: the lease's creation only needs its outcome.
        self.settle_lease(sandbox_id, &mut call);
        for (_, reference, _, target) in &plans {
            self.remember_mounted(sandbox_id, reference, platform, target);
        }
        self.tell_mutated(sandbox_id, snapshotter, &plans, &call);
        for (i, path) in host_paths {
            mounts[i].host_path = path.to_string_lossy().into_owned();
            // The volume shows the owners mapped already: a runtime that idmapped the mount
            // again would map them twice (or fail, on an overlay).
            if idmaps.contains_key(&i) {
                mounts[i].uid_mappings.clear();
                mounts[i].gid_mappings.clear();
            }
        }
        Ok(())
    }

    /// Tell the events sink what a successful mutate mounted and took over (once per
    /// volume, however many of the call's mounts share it).
    fn tell_mutated(&self, sandbox_id: &str, snapshotter: &str, plans: &[Plan], call: &Call) {
        if self.events.is_none() {
            return;
        }
        let mut told = HashSet::new();
        for (_, reference, _, target) in plans {
            let kind = if call.made.iter().any(|m| m.mounted && m.target == *target) {
                VolumeEventKind::Mounted
            } else if call.taken_over.contains(target) {
                VolumeEventKind::Reused
            } else {
                continue;
            };
            if told.insert(target) {
                self.tell(
                    kind,
                    sandbox_id,
                    Some(reference),
                    Some((target, snapshotter)),
                );
            }
        }
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

    /// Resolve every image mount first: an unknown image fails the call before anything is
    /// made, and the volumes' paths are known up front so their locks can be taken in one
    /// order (no two calls can deadlock) and held to the end of the call (a volume this
    /// call made is never seen, reused and then undone by a failure later on).
    fn plan(
        &self,
        sandbox_id: &str,
        platform: &Platform,
        mounts: &[Mount],
        wanted: &[usize],
    ) -> Result<Vec<Plan>> {
        let mut plans = Vec::with_capacity(wanted.len());
        for &i in wanted {
            let m = &mounts[i];
            let context = |e: Error| e.context(format!("mount {i} ({})", shown(&m.container_path)));
            let spec = m.image.as_ref().expect("validated: image mounts only");
            // `image` only, as containerd reads it: the kubelet puts the reference it
            // pulled there; `image_ref` is the runtime's to report, not an input.
            let reference = &spec.image;
            // Another container of the pod on an image named by its digest or ID (what the
            // kubelet sends): the volume this process mounted for it is still there, and
            // such a name cannot have come to mean another image: no resolution at all.
            if let Some(target) = self.mounted_for(sandbox_id, reference, platform)? {
                plans.push((i, reference.clone(), None, target));
                continue;
            }
            let image = self.backend.resolve(reference, platform).map_err(context)?;
            // Named by the image, not by the platform's manifest, as containerd's CRI
            // plugin does: two platforms of one image in one sandbox get one directory,
            // and the second request reuses what the first mounted (containerd would too).
            let target = self.layout.target(sandbox_id, &image.digest);
            plans.push((i, reference.clone(), Some(image), target));
        }
        Ok(plans)
    }

    /// The volume this process mounted for `reference` in `sandbox_id`, when `reference`
    /// names its image by content (a digest or an image ID, which cannot come to mean
    /// another image) and that volume is still a mountpoint.
    fn mounted_for(
        &self,
        sandbox_id: &str,
        reference: &str,
        platform: &Platform,
    ) -> Result<Option<PathBuf>> {
        if !reference::is_content_addressed(reference) {
            return Ok(None);
        }
        let target = {
            let memo = self.mounted.lock().unwrap_or_else(PoisonError::into_inner);
            memo.get(&memo_key(sandbox_id, reference, platform))
                .cloned()
        };
        match target {
            Some(t) if self.known_mount(&t)? => Ok(Some(t)),
            _ => Ok(None),
        }
    }

    fn remember_mounted(
        &self,
        sandbox_id: &str,
        reference: &str,
        platform: &Platform,
        target: &Path,
    ) {
        if !reference::is_content_addressed(reference) {
            return;
        }
        let mut memo = self.mounted.lock().unwrap_or_else(PoisonError::into_inner);
        if memo.len() >= MAX_REMEMBERED {
            memo.clear();
        }
        memo.insert(memo_key(sandbox_id, reference, platform), target.to_owned());
    }

    fn forget_mounted(&self, sandbox_id: &str) {
        // Ordered maps, so a sandbox's entries are one range: a cleanup costs the same
        // with a thousand other volumes mounted.
        let mut memo = self.mounted.lock().unwrap_or_else(PoisonError::into_inner);
        let first = (sandbox_id.to_owned(), String::new(), String::new());
        let keys: Vec<_> = memo
            .range(first..)
            .take_while(|((sandbox, _, _), _)| sandbox == sandbox_id)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            memo.remove(&k);
        }
        drop(memo);
        let dir = self.layout.sandbox_dir(sandbox_id);
        self.mount_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove_under(&dir);
        self.shapes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove_under(&dir);
    }

    /// Mount a volume from `mounts` at `made.target`, idmapped when their `uidmap=` and
    /// `gidmap=` options say, as containerd mounts them (see mount/idmap.rs; an overlay's
    /// layers are staged at `StateLayout::idmap_staging`), and labelled when its shape says
    /// (see mount/selinux.rs). The mapping must be the one the volume was asked with: the
    /// view was asked for with its remap labels.
    fn mount_volume(&self, mounts: &[MountSpec], made: &Made) -> Result<()> {
        let mut mounts = mounts.to_vec();
        let idmap = IdMap::take_from_options(&mut mounts)?;
        if idmap != made.shape.idmap {
            return Err(Error::precondition(format!(
                "{}: the volume's view mounts with {}, asked for with {}: its snapshotter does \
                 not make idmapped views as their remap labels ask, or the view was made \
                 before with other mappings",
                made.target.display(),
                describe_idmap(idmap.as_ref()),
                describe_idmap(made.shape.idmap.as_ref()),
            )));
        }
        if let Some(label) = &made.shape.label {
            let empty = self.layout.empty_lower();
            fs::create_dir_all(&empty).map_err(|e| Error::io("creating", &empty, e))?;
            mounts = selinux::labelled(mounts, label, &empty)?;
        }
        let Some(idmap) = idmap else {
            self.mount_or_clone(&mounts, &made.target)?;
            self.note_shape(&made.target, made.shape.clone());
            return Ok(());
        };
        let [spec] = &mounts[..] else {
            return Err(Error::invalid(format!(
                "an idmapped volume is made of one mount; the image's layers mount as {}",
                mounts.len()
            )));
        };
        let userns = self.user_namespaces.get(&idmap)?;
        let staging = self.layout.idmap_staging(&made.target);
        // Layers a mutate killed while staging them left attached (the volume's lock is
        // held: no other call stages for it).
        remove_staged(&staging)?;
        fs::create_dir_all(&staging).map_err(|e| Error::io("creating", &staging, e))?;
        let mounted = mount::idmap::mount_idmapped(
            spec,
            &made.target,
            std::os::fd::AsFd::as_fd(&*userns),
            &staging,
        );
        // Emptied by mount_idmapped; the directory and its sandbox's go (if empty).
        let _ = fs::remove_dir(&staging);
        if let Some(parent) = staging.parent() {
            let _ = fs::remove_dir(parent);
        }
        mounted?;
        self.note_shape(&made.target, made.shape.clone());
        Ok(())
    }

    /// Mount `mounts` at `target`; when they are one overlay that another volume of this
    /// process was mounted from and still is, clone that volume's mount instead
    /// (docs/design.md, "Twin volumes"): the same read-only files without a new overlay.
    fn mount_or_clone(&self, mounts: &[MountSpec], target: &Path) -> Result<()> {
        let spec = match mounts {
            [spec] if spec.kind == "overlay" => spec,
            _ => return mount::mount_all(mounts, target),
        };
        let key = format!(
            "{}\0{}\0{}",
            spec.kind,
            spec.source,
            spec.options.join("\0")
        );
        let twin = self
            .twins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(twin) = twin {
            let root = self
                .mount_ids
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&twin)
                .copied();
            if let Some(root) = root {
                if mount::mount_twin(&twin, &root, target)? {
                    return Ok(());
                }
            }
        }
        mount::mount_all(mounts, target)?;
        let mut twins = self.twins.lock().unwrap_or_else(PoisonError::into_inner);
        if twins.len() >= MAX_REMEMBERED {
            twins.clear();
        }
        twins.insert(key, target.to_owned());
        Ok(())
    }

    /// Remember the shape the volume at `target` was mounted with (see `shapes`).
    fn note_shape(&self, target: &Path, shape: Shape) {
        let mut shapes = self.shapes.lock().unwrap_or_else(PoisonError::into_inner);
        if shapes.len() >= MAX_REMEMBERED {
            shapes.clear();
        }
        shapes.insert(target.to_owned(), shape);
    }

    /// Note the mount ID of the volume just mounted at `target`.
    fn remember_mount(&self, target: &Path) -> Result<()> {
        let Some(root) = mount::mount_root(target)? else {
            return Err(Error::internal(format!(
                "{} is no mountpoint right after mounting it",
                target.display()
            )));
        };
        self.note_mount_id(target, root);
        Ok(())
    }

    /// Remember that the mount `root` at `target` is a volume of this process's.
    fn note_mount_id(&self, target: &Path, root: mount::MountRoot) {
        let mut ids = self
            .mount_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if ids.len() >= MAX_REMEMBERED {
            ids.clear();
        }
        ids.insert(target.to_owned(), root);
    }

    /// Whether `target` is still the mount this process made or checked there.
    fn known_mount(&self, target: &Path) -> Result<bool> {
        let Some(root) = mount::mount_root(target)? else {
            return Ok(false);
        };
        let ids = self
            .mount_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(ids.get(target) == Some(&root))
    }

    /// Make sure the volume at `target` is mounted: reuse it when it is a mountpoint (or
    /// this call mounted it already), make it otherwise. The caller holds its lock.
    #[allow(clippy::too_many_arguments)]
    fn ensure_volume(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        platform: &Platform,
        reference: &str,
        image: Option<&ResolvedImage>,
        target: &Path,
        shape: &Shape,
        call: &mut Call,
    ) -> Result<()> {
        // The sandbox's directory and the volume's are imv's to make: anything else found
        // there (a symbolic link, a file) is refused, never followed or mounted over.
        expect_directory_or_nothing(&self.layout.sandbox_dir(sandbox_id), sandbox_id)?;
        expect_directory_or_nothing(target, sandbox_id)?;
        if call.made.iter().any(|m| m.target == target) {
            return Ok(());
        }
        let mut made = Made {
            target: target.to_owned(),
            shape: shape.clone(),
            view: false,
            mounted: false,
        };
        let found = match mount::mount_root(target)? {
            Some(root) => Some(self.check_volume_is_ours(sandbox_id, snapshotter, target, root)?),
            None => None,
        };
        if let Some(Found::Known | Found::TakenOver) = found {
            self.check_same_shape(target, shape)?;
            if let Some(Found::TakenOver) = found {
                call.taken_over.push(target.to_owned());
            }
            tracing::debug!(sandbox = sandbox_id, target = %target.display(), "reusing mounted volume");
            return Ok(());
        }
        // Found mounted without resolving: either without its view, or unmounted since (a
        // cleanup of the same sandbox ran meanwhile). Resolve now.
        let resolved;
        let image = match image {
            Some(image) => image,
            None => {
                resolved = self.backend.resolve(reference, platform)?;
                if self.layout.target(sandbox_id, &resolved.digest) != target {
                    return Err(Error::unavailable(format!(
                        "image {reference:?} changed while its volume was reused; try again"
                    )));
                }
                &resolved
            }
        };
        if let Some(Found::Viewless(mount)) = found {
            self.check_same_shape(target, shape)?;
            let request = ViewRequest {
                sandbox_id,
                snapshotter,
                reference,
                image,
            };
            self.adopt_viewless(&request, &made, mount, call)?;
            call.taken_over.push(target.to_owned());
            return Ok(());
        }
        if shape.idmap.is_some() {
            // Before anything is made: a snapshotter that cannot idmap fails the call clean.
            self.backend.check_remap(snapshotter)?;
        }
        let result = self.make_volume(sandbox_id, snapshotter, reference, image, &mut made, call);
        call.made.push(made);
        result
    }

    /// Make sure of the sandbox's lease, unpack under it (as containerd's CRI plugin does:
    /// nothing extra to create, delete and collect), then create the target and the view,
    /// and mount. Lease, directory and view are made under the sandbox's lock, so a failing
    /// call cannot drop the lease between another call's lease check and its view. Every
    /// step is recorded in `made` and `call`.
    ///
    /// A NotFound on the way means that what this process believed is gone: the lease
    /// (deleted by another process, by hand, or by a failing call of this sandbox undoing
    /// what it made) or the image's layers (an rmi, then garbage collection). Then both are
    /// made sure of for real and everything is tried once more.
    fn make_volume(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        reference: &str,
        image: &ResolvedImage,
        made: &mut Made,
        call: &mut Call,
    ) -> Result<()> {
        if self.mount_known_view(sandbox_id, snapshotter, reference, image, made, call)? {
            tracing::info!(sandbox = sandbox_id, image = reference, target = %made.target.display(), "mounted image volume (its view follows)");
            return Ok(());
        }
        let mounts = match self.lease_unpack_view(
            sandbox_id,
            snapshotter,
            reference,
            image,
            made,
            call,
        ) {
            Err(e) if e.is_not_found() => {
                tracing::debug!(sandbox = sandbox_id, error = %e, "making sure of the lease and the layers again");
                self.forget_lease(sandbox_id);
                self.lease_unpack_view(sandbox_id, snapshotter, reference, image, made, call)?
            }
            other => other?,
        };
        let Some(mounts) = mounts else {
            tracing::info!(sandbox = sandbox_id, image = reference, target = %made.target.display(), "mounted image volume (its view follows)");
            return Ok(());
        };
        made.view = true;
        crash_points::reached(crash_points::VIEW_CREATED);
        self.mount_volume(&read_only(mounts), made)?;
        made.mounted = true;
        crash_points::reached(crash_points::MOUNTED);
        self.remember_mount(&made.target)?;
        tracing::info!(sandbox = sandbox_id, image = reference, target = %made.target.display(), "mounted image volume");
        Ok(())
    }

    /// The quick way (see `deferred_view`): mount what the backend knows a view of the
    /// image's layers mounts, and leave the lease and the view to a thread. False, with
    /// nothing left mounted, when the backend knows no such mounts, they do not mount
    /// (the layers were collected and unpacked anew: the backend forgets them then), or
    /// no thread can be had.
    fn mount_known_view(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        reference: &str,
        image: &ResolvedImage,
        made: &mut Made,
        call: &mut Call,
    ) -> Result<bool> {
        // What a view will mount is known for views without remap labels only.
        if made.shape.idmap.is_some() {
            return Ok(false);
        }
        let parent = image.top_chain_id();
        let Some(mounts) = self
            .backend
            .known_view_mounts(snapshotter, parent.as_ref(), sandbox_id)
        else {
            return Ok(false);
        };
        {
            let _sandbox = self.sandbox_locks.lock(sandbox_id);
            create_volume_dir(&made.target)?;
        }
        if let Err(e) = self.mount_volume(&read_only(mounts.clone()), made) {
            tracing::debug!(target = %made.target.display(), error = %e, "what the image's views mounted does not mount now; making a view first");
            self.backend
                .forget_view_mounts(snapshotter, parent.as_ref());
            return Ok(false);
        }
        crash_points::reached(crash_points::MOUNTED_BEFORE_VIEW);
        let job = DeferredView {
            backend: Arc::clone(&self.backend),
            sandbox_locks: Arc::clone(&self.sandbox_locks),
            leases: Arc::clone(&self.leases),
            sandbox_id: sandbox_id.to_owned(),
            snapshotter: snapshotter.to_owned(),
            key: made.target.to_string_lossy().into_owned(),
            parent,
            labels: view_labels(sandbox_id, reference, image, None),
            pending_lease: call.pending_lease.take(),
            mounted: mounts,
        };
        self.deferred.begin(sandbox_id);
        let deferred = Arc::clone(&self.deferred);
        let sandbox = sandbox_id.to_owned();
        let spawned = std::thread::Builder::new()
            .name("imv-view".to_owned())
            .spawn(move || {
                let created = job.run();
                deferred.end(&sandbox);
                created
            });
        match spawned {
            Ok(handle) => {
                call.deferred.push(handle);
                made.mounted = true;
                // Made by the thread; an undo waits for it, then removes the view.
                made.view = true;
                self.remember_mount(&made.target)?;
                Ok(true)
            }
            Err(e) => {
                // The pending lease went with the job: the careful way makes it anew.
                self.deferred.end(sandbox_id);
                tracing::debug!(error = %e, "no thread for a deferred view; making it now");
                mount::unmount_recursive(&made.target)?;
                Ok(false)
            }
        }
    }

    /// One try of [`make_volume`](Self::make_volume)'s steps up to the view: its mounts, or
    /// None when the unpack taught the backend what the view will mount and the volume was
    /// mounted the quick way (see `deferred_view`).
    fn lease_unpack_view(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        reference: &str,
        image: &ResolvedImage,
        made: &mut Made,
        call: &mut Call,
    ) -> Result<Option<Vec<MountSpec>>> {
        self.lease_and_unpack(sandbox_id, snapshotter, image, call)?;
        if self.mount_known_view(sandbox_id, snapshotter, reference, image, made, call)? {
            return Ok(None);
        }
        let _sandbox = self.sandbox_locks.lock(sandbox_id);
        // Again: a failing call of this sandbox may have dropped the lease meanwhile.
        self.ensure_lease(sandbox_id, call)?;
        create_volume_dir(&made.target)?;
        let request = ViewRequest {
            sandbox_id,
            snapshotter,
            reference,
            image,
        };
        // One left by a mutate that died before mounting, or mounted before a reboot, is
        // ours to reuse.
        self.view_or_existing(&request, made)
            .map(|(mounts, _)| Some(mounts))
    }

    /// Make sure of the sandbox's lease, then of the image's layers under it.
    fn lease_and_unpack(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        image: &ResolvedImage,
        call: &mut Call,
    ) -> Result<()> {
        // Asked while the lease this call started is still being made (the question needs
        // none): one round trip less before an unpack.
        let unpacked = self.backend.is_unpacked(image, snapshotter, true)?;
        {
            let _sandbox = self.sandbox_locks.lock(sandbox_id);
            self.ensure_lease(sandbox_id, call)?;
        }
        if !unpacked {
            self.backend
                .unpack(image, snapshotter, Some(sandbox_id), self.progress.as_ref())?;
        }
        Ok(())
    }

    /// Create the view of the volume `made` under the sandbox's lease, or take the one
    /// that exists already; with whether it was created here. The caller holds the
    /// sandbox's lock and has made sure of the lease.
    fn view_or_existing(
        &self,
        request: &ViewRequest<'_>,
        made: &Made,
    ) -> Result<(Vec<MountSpec>, bool)> {
        let &ViewRequest {
            sandbox_id,
            snapshotter,
            reference,
            image,
        } = request;
        let key = made.target.to_string_lossy();
        let top = image.top_chain_id();
        let labels = view_labels(sandbox_id, reference, image, made.shape.idmap.as_ref());
        match self
            .backend
            .view(snapshotter, &key, top.as_ref(), sandbox_id, labels)
        {
            Ok(view) => Ok((view, true)),
            Err(e) if e.is_already_exists() => Ok((self.backend.mounts(snapshotter, &key)?, false)),
            Err(e) => Err(e),
        }
    }

    /// Make sure the sandbox's lease exists: created once, then known (until this process
    /// deletes it, or a view finds it gone). The caller holds the sandbox's lock.
    fn ensure_lease(&self, sandbox_id: &str, call: &mut Call) -> Result<()> {
        // The creation this call started, if any: its outcome first.
        if let Some(pending) = call.pending_lease.take() {
            match self.lease_outcome(sandbox_id, call, pending()) {
                Ok(()) => return Ok(()),
                // Deleted meanwhile (a failing call of this sandbox): make it anew below.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        // The set's lock is not held across the call: other sandboxes go on meanwhile.
        if self.lease_known(sandbox_id) {
            return Ok(());
        }
        let created = self.backend.create_lease(sandbox_id);
        self.lease_outcome(sandbox_id, call, created)
    }

    /// Record the outcome of creating the sandbox's lease.
    fn lease_outcome(&self, sandbox_id: &str, call: &mut Call, created: Result<()>) -> Result<()> {
        let created = record_lease(&self.leases, sandbox_id, created)
            .map_err(|e| e.context(format!("creating lease for sandbox {sandbox_id:?}")))?;
        if created {
            crash_points::reached(crash_points::LEASE_CREATED);
        }
        call.lease_created |= created;
        Ok(())
    }

    /// Wait for a lease creation this call started and never needed; a failure to create
    /// it is only logged (nothing of this call depended on it).
    fn settle_lease(&self, sandbox_id: &str, call: &mut Call) {
        if let Some(pending) = call.pending_lease.take() {
            if let Err(e) = self.lease_outcome(sandbox_id, call, pending()) {
                tracing::debug!(sandbox = sandbox_id, error = %e, "the lease started alongside was not made");
            }
        }
    }

    /// Whether this process knows the sandbox's lease to exist.
    fn lease_known(&self, sandbox_id: &str) -> bool {
        self.leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(sandbox_id)
    }

    /// Forget that the sandbox's lease exists (it was deleted, or may have been).
    fn forget_lease(&self, sandbox_id: &str) {
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        leases.remove(sandbox_id);
    }

    /// Undo what a failed call made, newest first; then, if this call created the lease
    /// and the sandbox has no volume left, the lease and the sandbox directory. Errors are
    /// logged: the caller's error is the one that matters.
    fn undo_call(&self, sandbox_id: &str, snapshotter: &str, call: &mut Call) {
        // The views still being made come first: they are this call's to remove, and may
        // have made the lease.
        for job in call.deferred.drain(..) {
            call.lease_created |= job.join().unwrap_or(false);
        }
        // A lease this call was still creating counts as made by it if it was.
        self.settle_lease(sandbox_id, call);
        for made in call.made.iter().rev() {
            self.undo(snapshotter, made);
        }
        let _sandbox = self.sandbox_locks.lock(sandbox_id);
        let dir = self.layout.sandbox_dir(sandbox_id);
        self.remove_dir_if_empty(&dir);
        if call.lease_created && !dir.exists() {
            self.forget_lease(sandbox_id);
            match self.backend.delete_lease(sandbox_id) {
                Err(e) if !e.is_not_found() => {
                    tracing::warn!(sandbox = sandbox_id, error = %e, "undo: could not remove the lease this call made")
                }
                _ => {}
            }
        }
    }

    /// Undo what one volume's making did, in reverse; errors are logged.
    fn undo(&self, snapshotter: &str, made: &Made) {
        self.mount_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&made.target);
        if made.mounted {
            if let Err(e) = mount::unmount_recursive(&made.target) {
                tracing::warn!(target = %made.target.display(), error = %e, "undo: unmount failed");
            }
        }
        if made.view {
            match self
                .backend
                .remove(snapshotter, &made.target.to_string_lossy())
            {
                Err(e) if !e.is_not_found() => {
                    tracing::warn!(target = %made.target.display(), error = %e, "undo: removing the view failed")
                }
                _ => {}
            }
        }
        self.remove_dir_if_empty(&made.target);
    }

    fn remove_dir_if_empty(&self, dir: &Path) {
        match fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty
                ) => {}
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "could not remove directory")
            }
        }
    }

    /// Unmount and remove every image volume of `sandbox_id`: for each, unmount
    /// recursively, remove the view (NotFound is fine), remove the directory; then the
    /// sandbox directory. Idempotent, and converges after a crash half-way. Every volume
    /// is tried; the first error is returned.
    pub fn cleanup(&self, sandbox_id: &str, snapshotter: &str) -> Result<()> {
        validate_sandbox_id(sandbox_id)?;
        let snapshotter = snapshotter_or_default(snapshotter)?;
        self.cleanup_with(sandbox_id, |_| snapshotter)
    }

    /// [`cleanup`](Self::cleanup), each volume's view removed from the snapshotter
    /// `snapshotter_of` names for its target. `sandbox_id` must be validated.
    fn cleanup_with<'a>(
        &self,
        sandbox_id: &str,
        snapshotter_of: impl Fn(&Path) -> &'a str,
    ) -> Result<()> {
        self.wait_deferred(Some(sandbox_id));
        self.forget_mounted(sandbox_id);
        let dir = self.layout.sandbox_dir(sandbox_id);
        // A link in place of the sandbox's directory goes, and what it points at stays.
        if remove_if_not_directory(&dir)? {
            return Ok(());
        }
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("reading", &dir, e)),
        };
        let mut first_error = None;
        let mut failed = 0;
        // The views go last, once every mount and directory is gone: a backend may remove
        // them in the background, and on a small machine that work would otherwise take
        // the processor from the unmounts the caller waits for. Each volume's lock is kept
        // until its view's removal is under way, so no mutate makes a view of that key
        // in between.
        let mut views = Vec::new();
        for entry in entries {
            let target = match entry {
                Ok(entry) => entry.path(),
                Err(e) => return Err(Error::io("reading", &dir, e)),
            };
            let lock = self.volume_locks.lock(&target.to_string_lossy());
            match unmount_and_remove(&target) {
                Ok(()) => views.push((lock, snapshotter_of(&target), target)),
                Err(e) => {
                    tracing::warn!(target = %target.display(), error = %e, "cleanup of a volume failed");
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        // Idmapped layers a crash left staged (normally there is nothing).
        let staging = self.layout.idmap_staging_dir(sandbox_id);
        if let Err(e) = remove_staged(&staging) {
            tracing::warn!(dir = %staging.display(), error = %e, "could not remove staged idmapped layers");
        }
        let removed = {
            let _sandbox = self.sandbox_locks.lock(sandbox_id);
            match fs::remove_dir(&dir) {
                // NotEmpty: a mutate for this sandbox made a new volume after the listing
                // above; that mutate came after this cleanup, and its volume is not this
                // call's to take. A volume that failed leaves its directory too.
                Err(e)
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty
                    ) =>
                {
                    Err(Error::io("removing", &dir, e))
                }
                _ => Ok(()),
            }
        };
        crash_points::reached(crash_points::VOLUMES_REMOVED);
        for (_lock, snapshotter, target) in views {
            // Unmounted and removed: that is the event, whatever becomes of the view.
            self.tell(
                VolumeEventKind::CleanedUp,
                sandbox_id,
                None,
                Some((&target, snapshotter)),
            );
            if let Err(e) = self
                .backend
                .remove_soon(snapshotter, &target.to_string_lossy())
            {
                tracing::warn!(target = %target.display(), error = %e, "cleanup of a volume failed");
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e.context(format!(
                "cleanup of sandbox {sandbox_id:?} ({failed} volumes failed)"
            )));
        }
        removed
    }

    /// Wait until the views of volumes mounted the quick way are made: those of
    /// `sandbox_id`, or all. With the containerd backend a mutate may return before its
    /// volume's view and the sandbox's lease exist (README.md, "Design in brief": the view
    /// after the mount); this is for callers that look at the backend's snapshots or
    /// leases themselves. Cleanup, release and dropping the engine wait by themselves.
    pub fn wait_deferred(&self, sandbox_id: Option<&str>) {
        if !self.deferred.wait(sandbox_id, DEFERRED_WAIT) {
            tracing::warn!(
                sandbox = sandbox_id,
                "views still being made after {DEFERRED_WAIT:?}; going on"
            );
        }
    }

    /// Clean up the sandbox (as [`cleanup`](Self::cleanup), each view removed from the
    /// snapshotter it was made in) and drop its lease, so what only it kept becomes
    /// garbage. Idempotent.
    pub fn release(&self, sandbox_id: &str) -> Result<()> {
        validate_sandbox_id(sandbox_id)?;
        // With nothing on disk there is nothing to look up (and no need of the backend
        // before the lease's deletion).
        let made_in = if self.layout.sandbox_dir(sandbox_id).exists() {
            self.view_snapshotters(sandbox_id)?
        } else {
            HashMap::new()
        };
        self.cleanup_with(sandbox_id, |target| {
            made_in
                .get(target.to_string_lossy().as_ref())
                .map_or(DEFAULT_SNAPSHOTTER, String::as_str)
        })?;
        crash_points::reached(crash_points::CLEANED_UP);
        self.forget_lease(sandbox_id);
        match self.backend.delete_lease(sandbox_id) {
            Err(e) if !e.is_not_found() => {
                Err(e.context(format!("releasing sandbox {sandbox_id:?}")))
            }
            // A sandbox without a lease had nothing to release: no event.
            Err(_) => Ok(()),
            Ok(()) => {
                self.tell(VolumeEventKind::Released, sandbox_id, None, None);
                Ok(())
            }
        }
    }

    /// The snapshotter each view of `sandbox_id` was made in, by key, as the backend keeps
    /// it: the snapshots the sandbox's lease holds. The lease is the record because it
    /// lives exactly as long as the views matter, persistently in the store (containerd's
    /// metadata, the local database), so it survives a restart of imv and of containerd;
    /// and because containerd adds every snapshot made under a lease to it itself, it
    /// covers volumes made by earlier versions of imv. Other places do not work: the volume's
    /// directory is the mountpoint (a file in it is hidden by the mount), a view's labels
    /// cannot be read without knowing its snapshotter, and a containerd lease's labels
    /// cannot be changed after it is made (no Update call), while a sandbox may get
    /// volumes in more than one snapshotter. Empty when the lease is gone: its views were
    /// garbage then.
    fn view_snapshotters(&self, sandbox_id: &str) -> Result<HashMap<String, String>> {
        match self.backend.lease_snapshots(sandbox_id) {
            Ok(snapshots) => Ok(snapshots
                .into_iter()
                .map(|s| (s.key, s.snapshotter))
                .collect()),
            Err(e) if e.is_not_found() => Ok(HashMap::new()),
            Err(e) => Err(e.context(format!(
                "finding the snapshotters of sandbox {sandbox_id:?}"
            ))),
        }
    }

    /// The image volumes under the state directory, sorted by sandbox then target.
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>> {
        let mut out = Vec::new();
        let root = self.layout.volumes_dir();
        for sandbox in sorted_dir(&root)? {
            let Some(sandbox_id) = sandbox
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
            else {
                continue;
            };
            let targets = sorted_dir(&sandbox)?;
            // The image is a label of the view, which is read where it was made. A backend
            // that cannot say leaves `image` unknown, as a view it cannot read does.
            let made_in = if targets.is_empty() {
                HashMap::new()
            } else {
                self.view_snapshotters(&sandbox_id).unwrap_or_default()
            };
            for target in targets {
                let Some(image_digest) = digest_of_target(&target) else {
                    continue;
                };
                let key = target.to_string_lossy();
                let snapshotter = made_in
                    .get(key.as_ref())
                    .map_or(DEFAULT_SNAPSHOTTER, String::as_str);
                let image = self
                    .backend
                    .view_info(snapshotter, &key)
                    .ok()
                    .and_then(|v| v.labels.get(LABEL_IMAGE).cloned());
                let mounted = mount::is_mountpoint(&target)?;
                out.push(VolumeInfo {
                    sandbox_id: sandbox_id.clone(),
                    target,
                    image_digest,
                    image,
                    mounted,
                });
            }
        }
        Ok(out)
    }
}

impl Drop for ImageVolumes {
    fn drop(&mut self) {
        // A command that exits right after a mutate leaves no volume without its view.
        self.wait_deferred(None);
    }
}

/// Note the outcome of creating `sandbox_id`'s lease in `leases` (the sandboxes known to
/// have one): whether this creation made it (AlreadyExists is a lease made before), or
/// the failure.
fn record_lease(
    leases: &Mutex<HashSet<String>>,
    sandbox_id: &str,
    created: Result<()>,
) -> Result<bool> {
    let made = match created {
        Ok(()) => true,
        Err(e) if e.is_already_exists() => false,
        Err(e) => return Err(e),
    };
    leases
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(sandbox_id.to_owned());
    Ok(made)
}

/// Make a volume's directory (and its sandbox's), as containerd makes them: 0711.
fn create_volume_dir(target: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(target)
        .at("creating", target)?;
    crash_points::reached(crash_points::VOLUME_DIR_CREATED);
    Ok(())
}

/// Detach the idmapped layers staged under `dir` and remove it, if it exists.
fn remove_staged(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    mount::unmount_recursive(dir)?;
    fs::remove_dir_all(dir).map_err(|e| Error::io("removing", dir, e))
}

/// The labels of a volume's view.
fn view_labels(
    sandbox_id: &str,
    reference: &str,
    image: &ResolvedImage,
    idmap: Option<&IdMap>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_IMAGE.to_owned(), reference.to_owned()),
        (LABEL_SANDBOX.to_owned(), sandbox_id.to_owned()),
        (LABEL_MANIFEST.to_owned(), image.manifest.to_string()),
    ]);
    // As containerd's CRI plugin asks for a pod in a user namespace: the snapshotter makes
    // the view idmapped (see `Backend::check_remap`).
    labels.extend(idmap.into_iter().flat_map(IdMap::remap_labels));
    labels
}

/// How long cleanup, release and the engine's drop wait for deferred views (each is a
/// lease and a view: milliseconds, unless the backend hangs).
const DEFERRED_WAIT: Duration = Duration::from_secs(10);

/// FailedPrecondition unless `path` is a directory (not a link to one) or absent.
fn expect_directory_or_nothing(path: &Path, sandbox_id: &str) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) => Err(Error::precondition(format!(
            "{} is {}, where imv keeps a directory of its own; `imv cleanup {sandbox_id}` \
             removes it (without following it)",
            path.display(),
            describe(m.file_type())
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("inspecting", path, e)),
    }
}

fn describe(t: fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a file"
    } else {
        "not a directory"
    }
}

/// Remove what is at `path` if it is not a directory (a link is removed, never followed).
/// Whether there was such a thing.
fn remove_if_not_directory(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => {
            tracing::warn!(path = %path.display(), "removing {} found where imv keeps a directory", describe(m.file_type()));
            match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io("removing", path, e))
                }
                _ => Ok(true),
            }
        }
        _ => Ok(false),
    }
}

/// Unmount a volume and remove its directory (already gone is fine; something else in its
/// place is removed without following it).
fn unmount_and_remove(target: &Path) -> Result<()> {
    if remove_if_not_directory(target)? {
        return Ok(());
    }
    mount::unmount_recursive(target)?;
    crash_points::reached(crash_points::UNMOUNTED);
    match fs::remove_dir(target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing", target, e)),
        _ => Ok(()),
    }
}

fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                out.push(entry.at("reading", dir)?.path());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("reading", dir, e)),
    }
    out.sort();
    Ok(out)
}

/// The mount's uid/gid mappings (CRI `uidMappings`, `gidMappings`), checked; None when it
/// has none (a pod in the host's user namespace).
fn idmap_of(m: &Mount) -> Result<Option<IdMap>> {
    if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
        return Ok(None);
    }
    let ranges = |v: &[crate::cri::IdMapping]| {
        v.iter()
            .map(|r| IdRange {
                container: r.container_id,
                host: r.host_id,
                len: r.length,
            })
            .collect()
    };
    let idmap = IdMap {
        uid: ranges(&m.uid_mappings),
        gid: ranges(&m.gid_mappings),
    };
    idmap.validate()?;
    Ok(Some(idmap))
}

/// The label a call's volumes get: None without one, or when SELinux is off and the caller
/// said to ignore it then; FailedPrecondition when it is off and the caller did not.
fn mount_label(options: &MutateOptions) -> Result<Option<String>> {
    let label = &options.mount_label;
    if label.is_empty() {
        return Ok(None);
    }
    if selinux::is_enabled() {
        return Ok(Some(label.clone()));
    }
    if options.ignore_label_without_selinux {
        tracing::debug!(label = %label, "SELinux is off: the mount label is ignored, as asked");
        return Ok(None);
    }
    Err(Error::precondition(format!(
        "SELinux mount label {label:?}: SELinux is not enabled on this host (no selinuxfs at \
         /sys/fs/selinux), so no filesystem takes a context= option; send no label, or ask \
         for it to be ignored without SELinux (ignore_label_without_selinux; `imv mutate \
         --ignore-label-without-selinux`)"
    )))
}

/// A mapping, or its absence, for messages.
fn describe_idmap(idmap: Option<&IdMap>) -> String {
    match idmap {
        Some(m) => format!("uid mappings {:?}, gid mappings {:?}", m.uid, m.gid),
        None => "no uid/gid mappings".to_owned(),
    }
}

/// Check one image mount before anything is done for it.
fn validate_mount(m: &Mount) -> Result<()> {
    let spec = m.image.as_ref().expect("image mounts only");
    validate_container_path(&m.container_path)?;
    if spec.image.len() > MAX_IMAGE_LEN {
        return Err(Error::invalid(format!(
            "image {}: longer than {MAX_IMAGE_LEN} bytes",
            shown(&spec.image)
        )));
    }
    // The first words are containerd's (container_image_mount.go), so a message matched on
    // stock containerd matches here too.
    if !m.host_path.is_empty() {
        return Err(Error::invalid(format!(
            "hostpath must be empty while mount image: host_path {:?} is set; an image \
             volume's host path is chosen by the runtime",
            m.host_path
        )));
    }
    if !m.readonly {
        return Err(Error::invalid(format!(
            "readonly must be true while mount image: image volume {:?} is read-write; image \
             volumes are read-only (KEP-4639)",
            spec.image
        )));
    }
    if spec.image.is_empty() {
        return Err(Error::invalid(
            "image not specified: the mount's image is empty",
        ));
    }
    if !m.image_sub_path.is_empty() {
        subpath::validate(&m.image_sub_path)?;
    }
    Ok(())
}

/// Longest image reference a mount may carry (a reference is at most 255 bytes of name
/// plus tag and digest; an image ID is 71).
pub const MAX_IMAGE_LEN: usize = 4096;
/// Longest `container_path` (Linux's PATH_MAX).
pub const MAX_CONTAINER_PATH_LEN: usize = 4096;
/// Most mounts one call may carry, image or not (a container has tens).
pub const MAX_MOUNTS: usize = 4096;

/// Longest snapshotter name (containerd's are plugin IDs: `overlayfs`, `native`, ...).
pub const MAX_SNAPSHOTTER_LEN: usize = 255;

/// `snapshotter`, or the default when empty; InvalidArgument for a name no snapshotter
/// can have (too long, or with control characters).
fn snapshotter_or_default(snapshotter: &str) -> Result<&str> {
    if snapshotter.is_empty() {
        return Ok(DEFAULT_SNAPSHOTTER);
    }
    if snapshotter.len() > MAX_SNAPSHOTTER_LEN || snapshotter.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "snapshotter {}: not a snapshotter name (at most {MAX_SNAPSHOTTER_LEN} bytes, no control characters)",
            shown(snapshotter)
        )));
    }
    Ok(snapshotter)
}

/// Where an image volume goes in the container: an absolute path, as the runtime will
/// join it to the container's root.
fn validate_container_path(path: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid(format!("container path {}: {why}", shown(path)));
    if path.is_empty() {
        return Err(Error::invalid(
            "container path is empty: an image volume needs the path it is mounted at",
        ));
    }
    if path.len() > MAX_CONTAINER_PATH_LEN {
        return Err(bad(&format!("longer than {MAX_CONTAINER_PATH_LEN} bytes")));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if !path.starts_with('/') {
        return Err(bad("not absolute"));
    }
    Ok(())
}

/// The mounts with `ro,nosuid,nodev` enforced: whatever the backend says, a volume is
/// read-only and honours no setuid bits or device nodes.
fn read_only(mut mounts: Vec<MountSpec>) -> Vec<MountSpec> {
    for m in &mut mounts {
        m.options.retain(|o| {
            !matches!(
                o.as_str(),
                "rw" | "ro" | "suid" | "dev" | "nosuid" | "nodev"
            )
        });
        m.options.splice(
            0..0,
            ["ro".to_owned(), "nosuid".to_owned(), "nodev".to_owned()],
        );
    }
    mounts
}
