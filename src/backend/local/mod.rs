//! The embedded default backend: content store, unpacker, overlay snapshots, and a
//! transactional metadata database, all under one root directory, no daemon.
//!
//! Snapshots follow containerd's model: one committed snapshot per layer chain ID
//! (`snapshots/<chain hex>/fs`, an overlay lower dir holding just that layer), shared by
//! every image and sandbox; a view is a row in the database whose mounts are a read-only
//! overlay of its parent chain (a read-only bind for a single layer).

pub(crate) mod content;
pub(crate) mod db;
pub(crate) mod import;
mod resolve;
mod snapshots;
pub(crate) mod unpack;
mod writeback;

/// The kinds of snapshot [`LocalBackend::snapshots`] lists.
pub use db::{LayerFormat, SnapshotKind};

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use crate::backend::resolve::ResolveCache;
use crate::backend::{
    Backend, GcStats, ImageRecord, LeasedSnapshot, Progress, ResolvedImage, ViewInfo,
    DEFAULT_SNAPSHOTTER,
};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::layout::RootLayout;
use crate::locks::lock;
use crate::locks::KeyedLocks;
use crate::mount::MountSpec;
use crate::platform::Platform;

use content::ContentStore;
use db::{Db, LeaseRow, SnapshotRow, Table};

/// The stores open in this process, by canonical root (see `LocalBackend::open_shared`).
static OPEN_STORES: Mutex<BTreeMap<PathBuf, Weak<LocalBackend>>> = Mutex::new(BTreeMap::new());

/// The embedded store.
pub struct LocalBackend {
    layout: RootLayout,
    content: ContentStore,
    db: Db,
    /// One unpack per chain ID at a time; others wait and then find it done.
    unpacking: KeyedLocks,
    /// Syncs the store early while layers unpack (one thread, whoever unpacks).
    writeback: writeback::Writeback,
    /// Garbage collection takes this exclusively; everything that creates blobs or
    /// snapshots not yet referenced by a row (imports, unpacks) holds it shared, so GC
    /// never removes what is being made.
    gc_lock: RwLock<()>,
    /// Whether a garbage collection may find something: set at open, by an import (it may
    /// replace an image) and by a collection that kept a layer for a view or a mount
    /// only; cleared by a collection that found every layer it kept wanted by an image.
    /// While clear, deleting a lease frees nothing (its views stand on layers of images
    /// that are all still there), so a release skips the collection: reading every
    /// image's manifests, the mount tables of every namespace and the content directory.
    gc_wanted: AtomicBool,
    /// What targets resolved to (immutable: see `ResolveCache`).
    resolved: ResolveCache,
    /// The volume directories whose view rows were checked against their mounts (see
    /// `forget_unmounted_views`), once per store and directory in a process.
    views_checked: Mutex<BTreeSet<PathBuf>>,
    /// The format new layers are unpacked into.
    layer_format: LayerFormat,
    /// Taken to look whether EROFS layers are mounted and mount those that are not, so
    /// that two threads never both mount one.
    layer_mounting: Mutex<()>,
}

impl LocalBackend {
    /// Open (creating if needed) the store under `root`. Leftovers of a crash (half-unpacked
    /// layers, layer directories without a database row) are removed.
    pub fn open(root: &Path) -> Result<Self> {
        let root = Self::prepare_root(root)?;
        let db = Db::open(&RootLayout::new(root.clone()).db_path())?;
        Self::with_db(root, db)
    }

    /// The store under `root`, shared with every other handle of this process on it, or
    /// opened, waiting up to `wait` while another process has it (its database admits one
    /// process at a time: commands on one store take turns instead of failing). Unavailable
    /// when the wait runs out.
    pub fn open_shared(root: &Path, wait: Duration) -> Result<Arc<Self>> {
        let root = Self::prepare_root(root)?;
        let db_path = RootLayout::new(root.clone()).db_path();
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(5);
        loop {
            {
                let mut open = lock(&OPEN_STORES);
                if let Some(store) = open.get(&root).and_then(Weak::upgrade) {
                    return Ok(store);
                }
                open.retain(|_, w| w.strong_count() > 0);
            }
            // Not open in this process (or another thread is opening it right now: it is in
            // the map on the next turn).
            if let Some(db) = Db::try_open(&db_path)? {
                let store = Arc::new(Self::with_db(root.clone(), db)?);
                lock(&OPEN_STORES).insert(root, Arc::downgrade(&store));
                return Ok(store);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::unavailable(format!(
                    "the store at {} is in use by another process{} (a long import, or `imv \
                     serve` on this root: `imv --socket ...` goes through it; --lock-timeout \
                     waits longer)",
                    root.display(),
                    if wait.is_zero() {
                        String::new()
                    } else {
                        format!(" after waiting {wait:?}")
                    }
                )));
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Make `root` and its directories; its canonical path.
    fn prepare_root(root: &Path) -> Result<PathBuf> {
        crate::layout::expect_directory(root, "the store root")?;
        fs::create_dir_all(root).at("creating store root", root)?;
        let root = fs::canonicalize(root).at("resolving store root", root)?;
        let layout = RootLayout::new(root.clone());
        for dir in [layout.snapshots_dir(), layout.empty_dir()] {
            fs::create_dir_all(&dir).at("creating", &dir)?;
        }
        Ok(root)
    }

    /// The store under canonical `root`, over its open database: the leftovers of a crash
    /// are removed now that this process holds it.
    fn with_db(root: PathBuf, db: Db) -> Result<Self> {
        let layout = RootLayout::new(root);
        let content = ContentStore::open(&layout.content_dir())?;
        let layer_format = snapshots::layer_format(&layout)?;
        let backend = LocalBackend {
            layout,
            content,
            db,
            unpacking: KeyedLocks::new(),
            writeback: Default::default(),
            gc_lock: RwLock::new(()),
            gc_wanted: AtomicBool::new(true),
            resolved: ResolveCache::default(),
            views_checked: Mutex::default(),
            layer_format,
            layer_mounting: Mutex::default(),
        };
        backend.remove_orphan_snapshot_dirs()?;
        backend.mount_layer_images();
        Ok(backend)
    }

    /// The format new layers are unpacked into (see `IMV_LAYER_FORMAT`).
    pub fn layer_format(&self) -> LayerFormat {
        self.layer_format
    }

    /// Mount every EROFS layer that is not (after a reboot, say). One that fails is logged
    /// and left: a view that needs it tries again and fails with the reason.
    fn mount_layer_images(&self) {
        let layers = match self.db.read(|r| r.list::<SnapshotRow>(Table::Snapshots)) {
            Ok(rows) => rows
                .into_iter()
                .filter(|(_, row)| row.format == LayerFormat::Erofs)
                .filter_map(|(key, _)| Digest::parse(&key).ok())
                .collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(error = %e, "listing layers to mount");
                return;
            }
        };
        if let Err(e) = self.ensure_mounted(&layers) {
            tracing::warn!(error = %e, "an EROFS layer could not be mounted");
        }
    }

    /// Make sure the EROFS layers `chain_ids` are mounted on their `fs` directories: an
    /// overlay or a bind of an empty directory would show an empty volume, not fail. Looked
    /// at every time (a statx per layer), not remembered: whoever unmounts one under us (a
    /// cleanup script, `umount -a`) must not make the next volume silently empty.
    fn ensure_mounted(&self, chain_ids: &[Digest]) -> Result<()> {
        let _mounting = lock(&self.layer_mounting);
        let mut first_error = None;
        for chain_id in chain_ids {
            let key = chain_id.to_string();
            let fs_dir = self.layout.snapshot_fs(chain_id);
            let result = match crate::mount::is_mountpoint(&fs_dir) {
                Ok(true) => Ok(()),
                _ => {
                    tracing::info!(layer = %key, "mounting the layer's EROFS image");
                    snapshots::mount_image(&self.layout, chain_id)
                }
            };
            if let Err(e) = result {
                first_error.get_or_insert(e.context(format!("layer {key}")));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// The content store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.gc_lock.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.gc_lock.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Import the image(s) at `path` (OCI layout directory, OCI archive, `docker save`
    /// tarball), picked and named as `options` say (see [`import::ImportOptions`]). An
    /// image of the same name is replaced, as `ctr images import` does.
    pub fn import(
        &self,
        path: &Path,
        options: &import::ImportOptions,
        progress: &dyn Progress,
    ) -> Result<Vec<ImageRecord>> {
        let shared = self.shared();
        let records = match import::import(&self.content, path, options, progress) {
            Ok(records) => records,
            Err(e) => {
                // Blobs this import stored before it failed (a full disk, a bad layer) are
                // referenced by nothing: collect them now rather than at some later gc.
                drop(shared);
                if let Err(gc) = self.gc() {
                    tracing::warn!(error = %gc, "collecting what a failed import left failed");
                }
                return Err(e);
            }
        };
        let _shared = shared;
        self.db.write(|w| {
            for record in &records {
                w.put(Table::Images, &record.name, record)?;
            }
            Ok(())
        })?;
        // A replaced image may leave layers only views stand on.
        self.gc_wanted.store(true, Ordering::SeqCst);
        for record in &records {
            tracing::info!(image = %record.name, digest = %record.digest, "imported");
        }
        Ok(records)
    }

    /// The leases, sorted by ID.
    pub fn leases(&self) -> Result<Vec<String>> {
        Ok(self
            .db
            .read(|r| r.list::<LeaseRow>(Table::Leases))?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// The snapshots (layers and views), sorted by key.
    pub fn snapshots(&self) -> Result<Vec<(String, SnapshotRow)>> {
        self.db.read(|r| r.list(Table::Snapshots))
    }

    /// The committed layers not in `live` that some mount uses, in any mount namespace of
    /// the host: as the lower dir of an overlay, or as the root of a bind (a container's
    /// view of a volume whose sandbox was released while the container ran). Read only when
    /// there is a layer to collect.
    fn layers_in_use(&self, live: &BTreeSet<String>) -> Result<BTreeSet<String>> {
        let snapshots_dir = self.layout.snapshots_dir();
        // Each candidate with how mounts spell its directory: absolute (an overlay made
        // with lowerdir+), relative to the snapshots directory (a classic overlay mount),
        // and as a bind's root inside its filesystem; and its EROFS image, the source of a
        // bind of an EROFS layer.
        let candidates: Vec<(String, PathBuf, String, String)> = self
            .snapshots()?
            .into_iter()
            .filter(|(key, row)| row.kind == SnapshotKind::Committed && !live.contains(key))
            .filter_map(|(key, _)| {
                let digest = Digest::parse(&key).ok()?;
                let relative = format!("{}/fs", digest.hex());
                let image = snapshots::image_path(&self.layout, &digest);
                let image = image.to_string_lossy().into_owned();
                Some((key, snapshots_dir.join(&relative), relative, image))
            })
            .collect();
        if candidates.is_empty() {
            return Ok(BTreeSet::new());
        }
        let store_dev = fs::metadata(&snapshots_dir)
            .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
            .at("inspecting", &snapshots_dir)?;
        let (major, minor) = (libc::major(store_dev), libc::minor(store_dev));
        // Where the snapshots directory is inside its filesystem (a bind's root is that
        // path): another store on the same filesystem has the same chain IDs for the same
        // images, and its mounts are not this store's.
        let in_fs = crate::mount::mountinfo::read()?
            .into_iter()
            .filter(|m| (m.major, m.minor) == (major, minor))
            .filter(|m| snapshots_dir.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.as_os_str().len())
            .and_then(|m| {
                let rest = snapshots_dir.strip_prefix(&m.mount_point).ok()?;
                Some(m.root.join(rest))
            });
        let mut in_use = BTreeSet::new();
        for (pid, mounts) in crate::mount::mountinfo::all_namespaces() {
            for m in &mounts {
                let lowers = crate::mount::lower_dirs(m.super_options.split(','));
                for (key, absolute, relative, image) in &candidates {
                    let bind = (m.major, m.minor) == (major, minor)
                        && match &in_fs {
                            Some(dir) => m.root == dir.join(relative),
                            None => m.root.to_string_lossy().ends_with(&format!("/{relative}")),
                        };
                    // The layer's own mount of its image on `fs` is not a use.
                    let bind = bind
                        || (m.fs_type == "erofs"
                            && m.source == *image
                            && m.mount_point != *absolute);
                    // A relative lower dir cannot tell which store it is from: kept.
                    let lower = m.fs_type == "overlay"
                        && lowers
                            .iter()
                            .any(|l| Path::new(l) == absolute.as_path() || *l == relative);
                    if (bind || lower) && in_use.insert(key.clone()) {
                        tracing::info!(
                            layer = %key,
                            pid,
                            mountpoint = %m.mount_point.display(),
                            "layer still mounted; garbage collection keeps it"
                        );
                    }
                }
            }
        }
        Ok(in_use)
    }

    /// Remove the image `reference` names, then collect garbage.
    pub fn remove_image(&self, reference: &str) -> Result<ImageRecord> {
        let record = self.db.read(|r| resolve::find_image_record(r, reference))?;
        self.db.write(|w| {
            if !w.delete(Table::Images, &record.name)? {
                return Err(Error::not_found(format!("image {:?}", record.name)));
            }
            Ok(())
        })?;
        self.gc()?;
        Ok(record)
    }

    /// Remove what nothing references: views whose lease is gone, layer snapshots that no
    /// image and no view needs, blobs that no image needs.
    pub fn gc(&self) -> Result<GcStats> {
        let _exclusive = self.exclusive();
        let images: Vec<ImageRecord> = self
            .db
            .read(|r| r.list(Table::Images))?
            .into_iter()
            .map(|(_, v)| v)
            .collect();

        // Cleared before looking: an import or a collection that sets it meanwhile wins.
        self.gc_wanted.store(false, Ordering::SeqCst);
        // Everything each image can reach: its blobs and, per manifest, its layer chains.
        let mut live_blobs = BTreeSet::new();
        let mut live_snapshots = BTreeSet::new();
        for image in &images {
            let reach = resolve::reachable(&self.content, image)?;
            live_blobs.extend(reach.blobs);
            live_snapshots.extend(reach.chain_ids.into_iter().map(|c| c.to_string()));
        }
        let wanted_by_images = live_snapshots.clone();

        // Layers a mount still uses, in any mount namespace (a container's bind of a volume
        // outlives the volume's view, its lease and its image): kept until the last goes.
        let in_use = self.layers_in_use(&live_snapshots)?;
        live_snapshots.extend(in_use);

        let mut stats = GcStats::default();
        let removed_dirs = self.db.write(|w| {
            let leases: BTreeSet<String> = w
                .list::<LeaseRow>(Table::Leases)?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let snapshots: BTreeMap<String, SnapshotRow> =
                w.list(Table::Snapshots)?.into_iter().collect();
            // Views stay while their lease does; what they stand on stays with them.
            for (key, row) in &snapshots {
                if row.kind == SnapshotKind::View
                    && row.lease.as_ref().is_some_and(|l| leases.contains(l))
                {
                    live_snapshots.insert(key.clone());
                }
            }
            // Parents of live snapshots are live (a chain needs every layer below it).
            let mut stack: Vec<String> = live_snapshots.iter().cloned().collect();
            while let Some(key) = stack.pop() {
                if let Some(parent) = snapshots.get(&key).and_then(|r| r.parent.as_ref()) {
                    if live_snapshots.insert(parent.to_string()) {
                        stack.push(parent.to_string());
                    }
                }
            }
            let mut dirs = Vec::new();
            for (key, row) in &snapshots {
                if live_snapshots.contains(key) {
                    continue;
                }
                w.delete(Table::Snapshots, key)?;
                if let Some(lease) = &row.lease {
                    w.delete(Table::LeaseViews, &db::lease_view_key(lease, key))?;
                }
                stats.snapshots += 1;
                if row.kind == SnapshotKind::Committed {
                    dirs.push(Digest::parse(key)?);
                }
            }
            // A layer kept for a view or a mount only goes once they do: a later lease
            // deletion must look again.
            let kept_otherwise = snapshots.iter().any(|(key, row)| {
                row.kind == SnapshotKind::Committed
                    && live_snapshots.contains(key)
                    && !wanted_by_images.contains(key)
            });
            if kept_otherwise {
                self.gc_wanted.store(true, Ordering::SeqCst);
            }
            Ok(dirs)
        })?;
        // Directories go after the rows: a crash in between leaves orphan directories,
        // which open() removes, never a row without its files.
        for chain_id in removed_dirs {
            snapshots::remove_dir(&self.layout.snapshot_dir(&chain_id))?;
        }
        for digest in self.content.list()? {
            if !live_blobs.contains(&digest) {
                match self.content.delete(&digest) {
                    Ok(()) => stats.blobs += 1,
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // Partial files of imports that were killed: any no writer holds (each writer locks
        // its own), not only those past the minute a handle's open waits.
        stats.ingests = self.content.remove_stale_ingests(content::GC_INGEST_AGE)?;
        if stats != GcStats::default() {
            tracing::info!(
                snapshots = stats.snapshots,
                blobs = stats.blobs,
                ingests = stats.ingests,
                "garbage collected"
            );
        }
        Ok(stats)
    }

    /// Layer directories without a row (an unpack or a GC cut short) and temporary
    /// unpack directories are removed.
    fn remove_orphan_snapshot_dirs(&self) -> Result<()> {
        let _exclusive = self.exclusive();
        let known: BTreeSet<String> = self
            .db
            .read(|r| r.list::<SnapshotRow>(Table::Snapshots))?
            .into_iter()
            .filter(|(_, row)| row.kind == SnapshotKind::Committed)
            .filter_map(|(key, _)| Digest::parse(&key).ok().map(|d| d.hex().to_owned()))
            .collect();
        let dir = self.layout.snapshots_dir();
        for entry in fs::read_dir(&dir).at("reading", &dir)? {
            let entry = entry.at("reading", &dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "empty" || known.contains(&name) {
                continue;
            }
            tracing::info!(path = %entry.path().display(), "removing leftover snapshot directory");
            snapshots::remove_dir(&entry.path())?;
        }
        Ok(())
    }

    /// Delete the views whose key (a volume's path) is under `volumes_dir` but not mounted,
    /// once per directory in this process, before any volume there is made: rows a crash
    /// revived (a cleanup's volatile deletion lost with the process, docs/design.md,
    /// "Durability"). The number deleted.
    pub fn forget_unmounted_views(
        &self,
        volumes_dir: &Path,
        is_mounted: impl Fn(&Path) -> Result<bool>,
    ) -> Result<usize> {
        let mut checked = lock(&self.views_checked);
        if !checked.insert(volumes_dir.to_owned()) {
            return Ok(0);
        }
        let mut stale = Vec::new();
        for (key, row) in self.snapshots()? {
            if row.kind == SnapshotKind::View
                && Path::new(&key).starts_with(volumes_dir)
                && !is_mounted(Path::new(&key))?
            {
                stale.push((key, row.lease));
            }
        }
        if stale.is_empty() {
            return Ok(0);
        }
        self.db.write_volatile(|w| {
            for (key, lease) in &stale {
                w.delete(Table::Snapshots, key)?;
                if let Some(lease) = lease {
                    w.delete(Table::LeaseViews, &db::lease_view_key(lease, key))?;
                }
            }
            Ok(())
        })?;
        tracing::info!(views = stale.len(), dir = %volumes_dir.display(), "forgot views of volumes no longer mounted (left by a crash)");
        Ok(stale.len())
    }

    fn check_snapshotter(&self, snapshotter: &str) -> Result<()> {
        if snapshotter.is_empty() || snapshotter == DEFAULT_SNAPSHOTTER {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "snapshotter {snapshotter:?} is not supported by the local backend (it has {DEFAULT_SNAPSHOTTER:?})"
            )))
        }
    }
}

impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn create_lease(&self, id: &str) -> Result<()> {
        self.db.write_volatile(|w| {
            if w.get::<LeaseRow>(Table::Leases, id)?.is_some() {
                return Err(Error::already_exists(format!("lease {id:?}")));
            }
            w.put(Table::Leases, id, &LeaseRow { created: db::now() })
        })
    }

    fn delete_lease(&self, id: &str) -> Result<()> {
        // The lease's views go with it (as a collection would take them): they are only
        // left when a cleanup failed half-way.
        self.db.write_volatile(|w| {
            if !w.delete(Table::Leases, id)? {
                return Err(Error::not_found(format!("lease {id:?}")));
            }
            let prefix = db::lease_view_key(id, "");
            for key in w.keys_after(Table::LeaseViews, &prefix)? {
                w.delete(Table::Snapshots, &key)?;
                w.delete(Table::LeaseViews, &db::lease_view_key(id, &key))?;
            }
            Ok(())
        })?;
        // containerd collects garbage when a lease goes; so do we, so that what only this
        // lease kept is gone when the call returns: when there can be any (`gc_wanted`).
        if self.gc_wanted.load(Ordering::SeqCst) {
            self.gc()?;
        }
        Ok(())
    }

    fn lease_snapshots(&self, id: &str) -> Result<Vec<LeasedSnapshot>> {
        self.db.read(|r| {
            if r.get::<LeaseRow>(Table::Leases, id)?.is_none() {
                return Err(Error::not_found(format!("lease {id:?}")));
            }
            Ok(
                r.keys_after(Table::LeaseViews, &db::lease_view_key(id, ""))?
                    .into_iter()
                    // The one snapshotter this store has.
                    .map(|key| LeasedSnapshot {
                        snapshotter: DEFAULT_SNAPSHOTTER.to_owned(),
                        key,
                    })
                    .collect(),
            )
        })
    }

    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage> {
        self.db.read(|reader| {
            let source = resolve::Source {
                reader,
                content: &self.content,
                resolved: &self.resolved,
            };
            crate::backend::resolve::resolve(&source, reference, platform)
        })
    }

    fn unpack(
        &self,
        image: &ResolvedImage,
        snapshotter: &str,
        // Layers here are kept by the images that use them and by the GC lock an unpack
        // holds, not by leases.
        _lease: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<()> {
        self.check_snapshotter(snapshotter)?;
        let _shared = self.shared();
        snapshots::unpack(self, image, progress)
    }

    fn view(
        &self,
        snapshotter: &str,
        key: &str,
        parent: Option<&Digest>,
        lease: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<MountSpec>> {
        self.check_snapshotter(snapshotter)?;
        let _shared = self.shared();
        self.db.write_volatile(|w| {
            if w.get::<SnapshotRow>(Table::Snapshots, key)?.is_some() {
                return Err(Error::already_exists(format!("snapshot {key:?}")));
            }
            if w.get::<LeaseRow>(Table::Leases, lease)?.is_none() {
                return Err(Error::not_found(format!(
                    "lease {lease:?} for snapshot {key:?}"
                )));
            }
            if let Some(parent) = parent {
                match w.get::<SnapshotRow>(Table::Snapshots, &parent.to_string())? {
                    Some(row) if row.kind == SnapshotKind::Committed => {}
                    _ => {
                        return Err(Error::not_found(format!(
                            "parent snapshot {parent} of view {key:?} (image not unpacked?)"
                        )))
                    }
                }
            }
            let row = SnapshotRow {
                kind: SnapshotKind::View,
                parent: parent.cloned(),
                lease: Some(lease.to_owned()),
                labels,
                created: db::now(),
                format: LayerFormat::default(),
            };
            w.put(Table::Snapshots, key, &row)?;
            w.index(Table::LeaseViews, &db::lease_view_key(lease, key))
        })?;
        self.mounts(snapshotter, key)
    }

    fn mounts(&self, snapshotter: &str, key: &str) -> Result<Vec<MountSpec>> {
        self.check_snapshotter(snapshotter)?;
        let (mounts, images) = self.db.read(|r| snapshots::mounts(&self.layout, r, key))?;
        self.ensure_mounted(&images)?;
        Ok(mounts)
    }

    fn view_info(&self, snapshotter: &str, key: &str) -> Result<ViewInfo> {
        self.check_snapshotter(snapshotter)?;
        let row: SnapshotRow = self
            .db
            .read(|r| r.get(Table::Snapshots, key))?
            .ok_or_else(|| Error::not_found(format!("snapshot {key:?}")))?;
        Ok(ViewInfo {
            key: key.to_owned(),
            parent: row.parent,
            labels: row.labels,
        })
    }

    fn remove(&self, snapshotter: &str, key: &str) -> Result<()> {
        self.check_snapshotter(snapshotter)?;
        let kind = self
            .db
            .read(|r| r.get::<SnapshotRow>(Table::Snapshots, key))?
            .ok_or_else(|| Error::not_found(format!("snapshot {key:?}")))?
            .kind;
        let remove = |w: &mut db::Writer<'_>| {
            let row: SnapshotRow = w
                .get(Table::Snapshots, key)?
                .ok_or_else(|| Error::not_found(format!("snapshot {key:?}")))?;
            // Only a layer can have children: a view is never a parent.
            if row.kind == SnapshotKind::Committed {
                let children = w
                    .list::<SnapshotRow>(Table::Snapshots)?
                    .into_iter()
                    .filter(|(_, r)| r.parent.as_ref().is_some_and(|p| p.to_string() == key))
                    .count();
                if children > 0 {
                    return Err(Error::precondition(format!(
                        "snapshot {key:?} has {children} children"
                    )));
                }
            }
            w.delete(Table::Snapshots, key)?;
            if let Some(lease) = &row.lease {
                w.delete(Table::LeaseViews, &db::lease_view_key(lease, key))?;
            }
            Ok(row)
        };
        // A view is a volume's record (volatile); a layer's row is durable.
        let removed = match kind {
            SnapshotKind::View => self.db.write_volatile(remove)?,
            SnapshotKind::Committed => self.db.write(remove)?,
        };
        if removed.kind == SnapshotKind::Committed {
            snapshots::remove_dir(&self.layout.snapshot_dir(&Digest::parse(key)?))?;
        }
        Ok(())
    }

    fn images(&self) -> Result<Vec<ImageRecord>> {
        Ok(self
            .db
            .read(|r| r.list(Table::Images))?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }
}
