//! Layer snapshots of the embedded store: unpacking an image's layers, once per chain ID
//! and in parallel, and describing how a snapshot is mounted.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::backend::{artifact, FilesLayer, Layer, Progress, ResolvedImage};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::layout::RootLayout;
use crate::locks::lock;
use crate::locks::KeyedGuard;
use crate::mount::idmap::{LABEL_GID_MAPPING, LABEL_UID_MAPPING};
use crate::mount::MountSpec;

use super::db::{self, LayerFormat, Reader, SnapshotKind, SnapshotRow, Table};
use super::{unpack, LocalBackend};

/// The name of a layer's EROFS image in its snapshot directory.
const IMAGE: &str = "layer.erofs";

/// Most layers unpacked at once by one call: decompression is CPU-bound, and a runtime
/// shares the node with its pods.
const MAX_PARALLEL_UNPACKS: usize = 4;

/// How many layers one call unpacks at once: the CPUs this process may use (asked once:
/// the answer reads cgroup files), at most [`MAX_PARALLEL_UNPACKS`].
fn parallelism() -> usize {
    static PARALLELISM: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PARALLELISM.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_PARALLEL_UNPACKS)
    })
}

/// Makes temporary directory names unique within the process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Unpack every layer of `image` that has no committed snapshot yet. Each layer goes into
/// its own directory (overlay lower dirs do not depend on the layers below), so the
/// missing layers are unpacked in parallel; then all of them are made durable with one
/// sync and committed in one transaction (a sync per layer was a wait each, one after
/// another on each unpacking thread).
///
/// A layer another call is unpacking is not waited for while this call holds layers of
/// its own (two calls each waiting for the other's layer would wait forever): it is
/// waited for after this call's layers are committed, and unpacked here if that call
/// failed.
pub(super) fn unpack(
    backend: &LocalBackend,
    image: &ResolvedImage,
    progress: &dyn Progress,
) -> Result<()> {
    let chain = image.chain_ids();
    // An artifact's files are its top layer, made once the tar layers below are there:
    // their names are checked against those layers' trees first.
    let files = match image.layers.last() {
        Some(Layer::Files(files)) => Some(files),
        _ => None,
    };
    let tars = chain.len() - usize::from(files.is_some());
    unpack_tars(backend, image, &chain, tars, progress)?;
    match files {
        Some(files) => make_files(backend, image, &chain, files, progress),
        None => Ok(()),
    }
}

/// Unpack the first `tars` layers of `image` (tar layers; `chain` its chain IDs), those
/// not committed yet, as [`unpack`] says.
fn unpack_tars(
    backend: &LocalBackend,
    image: &ResolvedImage,
    chain: &[Digest],
    tars: usize,
    progress: &dyn Progress,
) -> Result<()> {
    loop {
        let mut missing = Vec::new();
        for (i, chain_id) in chain[..tars].iter().enumerate() {
            if !committed(backend, &chain_id.to_string())? {
                missing.push(i);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let (unpacked, elsewhere) = unpack_missing(backend, image, chain, &missing, progress)?;
        if !unpacked.is_empty() {
            commit(backend, image, chain, unpacked)?;
            crate::crash_points::reached(crate::crash_points::LAYER_COMMITTED);
        }
        // Holding nothing now: wait for the layers other calls are unpacking, then look
        // again (one that failed is unpacked by the next turn).
        for i in elsewhere {
            backend.unpacking.wait_free(&chain[i].to_string());
        }
    }
}

/// Make the files layer of an artifact (the top of `chain`, every layer below it
/// committed), unless it is committed: check its names against the tar layers below (a
/// committed files layer was checked against the very layers its chain ID names), link
/// each blob of the content store into a new layer directory, and commit it as the tar
/// layers are committed.
fn make_files(
    backend: &LocalBackend,
    image: &ResolvedImage,
    chain: &[Digest],
    files: &FilesLayer,
    progress: &dyn Progress,
) -> Result<()> {
    let i = chain.len() - 1;
    let key = chain[i].to_string();
    let lock = loop {
        if committed(backend, &key)? {
            return Ok(());
        }
        match backend.unpacking.try_lock(&key) {
            Some(lock) if !committed(backend, &key)? => break lock,
            Some(_) => return Ok(()), // another call did it just now
            None => backend.unpacking.wait_free(&key),
        }
    };
    let context = || layer_context(image, i);
    let below = tar_layer_dirs(backend, image, chain, i)?;
    artifact::check_collisions(files, &below)
        .map_err(|e| e.context(format!("image {:?}", image.name)))?;

    let tmp = backend
        .layout
        .snapshot_tmp(&chain[i], TMP_COUNTER.fetch_add(1, Ordering::Relaxed));
    let tmp_fs = tmp.join("fs");
    let task = format!("files {}", short(&files.id));
    progress.begin(&task, Some(files.size()));
    let placed = (|| {
        fs::create_dir_all(&tmp_fs).at("creating", &tmp_fs)?;
        artifact::place(&tmp_fs, files, |f| {
            if !backend.content.contains(&f.digest) {
                return Err(Error::not_found(format!(
                    "blob {} ({}, the file {}) is not in the local store",
                    f.digest,
                    f.media_type,
                    crate::error::shown(&f.path)
                )));
            }
            progress.advance(&task, f.size);
            Ok(artifact::BlobSource::Path(
                backend.content.blob_path(&f.digest),
            ))
        })
    })();
    progress.end(&task);
    let placed = match placed {
        Ok(placed) => placed,
        Err(e) => {
            remove_failed(&tmp);
            return Err(e.context(context()));
        }
    };
    let copied = placed
        .iter()
        .filter(|p| **p != artifact::Placed::Linked)
        .count();
    if copied > 0 {
        tracing::warn!(image = %image.name, files = copied, "artifact files could not be linked to their blobs (another filesystem?): cloned or copied");
    }
    tracing::debug!(image = %image.name, chain_id = %chain[i], files = files.files.len(), "artifact files linked");
    commit(
        backend,
        image,
        chain,
        vec![Unpacked {
            i,
            tmp,
            format: LayerFormat::Directory,
            _lock: lock,
        }],
    )
}

/// The directories of the committed layers `chain[..top]` of `image`, with how messages
/// name each; EROFS ones mounted (they are what is looked into).
fn tar_layer_dirs(
    backend: &LocalBackend,
    image: &ResolvedImage,
    chain: &[Digest],
    top: usize,
) -> Result<Vec<(PathBuf, String)>> {
    let mut images = Vec::new();
    for chain_id in &chain[..top] {
        let row: Option<SnapshotRow> = backend
            .db
            .read(|r| r.get(Table::Snapshots, &chain_id.to_string()))?;
        if row.is_some_and(|r| r.format == LayerFormat::Erofs) {
            images.push(chain_id.clone());
        }
    }
    backend.ensure_mounted(&images)?;
    Ok((0..top)
        .map(|j| {
            (
                backend.layout.snapshot_fs(&chain[j]),
                format!("the tar {}", image.layers[j]),
            )
        })
        .collect())
}

/// A layer unpacked into its temporary directory, neither durable nor visible yet; its
/// unpacking lock is held until it is committed or discarded.
struct Unpacked<'a> {
    i: usize,
    tmp: PathBuf,
    /// What the layer was made as.
    format: LayerFormat,
    _lock: KeyedGuard<'a>,
}

/// Unpack the layers `missing` (indexes into `chain`) that no other call is unpacking, in
/// parallel; returns them, and the layers left to other calls. On error, what was
/// unpacked is removed.
fn unpack_missing<'a>(
    backend: &'a LocalBackend,
    image: &ResolvedImage,
    chain: &[Digest],
    missing: &[usize],
    progress: &dyn Progress,
) -> Result<(Vec<Unpacked<'a>>, Vec<usize>)> {
    // A layer another call is unpacking needs no thread here: 100 sandboxes asking at once
    // for one cold image are one call unpacking and 99 waiting, not 200 threads.
    let free = missing
        .iter()
        .filter(|&&i| !backend.unpacking.is_held(&chain[i].to_string()))
        .count();
    let workers = parallelism().min(free).max(1);
    let _writeback = backend.writeback.hold(&backend.layout.snapshots_dir());
    let next = AtomicUsize::new(0);
    let unpacked = Mutex::new(Vec::new());
    let elsewhere = Mutex::new(Vec::new());
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let work = || {
        while lock(&first_error).is_none() {
            let n = next.fetch_add(1, Ordering::SeqCst);
            let Some(&i) = missing.get(n) else { break };
            match unpack_layer(backend, image, chain, i, progress) {
                Ok(Some(u)) => lock(&unpacked).push(u),
                Ok(None) => lock(&elsewhere).push(i),
                Err(e) => {
                    lock(&first_error).get_or_insert(e);
                }
            }
        }
    };
    if workers == 1 {
        work();
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers).map(|_| scope.spawn(work)).collect();
            for handle in handles {
                // A panic in a worker is the scope's to propagate; it does so after this.
                let _ = handle.join();
            }
        });
    }
    let unpacked = unpacked
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = first_error
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        discard(&unpacked);
        return Err(e);
    }
    let elsewhere = elsewhere
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    Ok((unpacked, elsewhere))
}

/// Whether the layer snapshot `chain_id` is committed.
fn committed(backend: &LocalBackend, chain_id: &str) -> Result<bool> {
    Ok(backend
        .db
        .read(|r| r.get::<SnapshotRow>(Table::Snapshots, chain_id))?
        .is_some())
}

/// Unpack layer `i` into a temporary directory, unless another call is unpacking it or
/// has committed it (`None`).
fn unpack_layer<'a>(
    backend: &'a LocalBackend,
    image: &ResolvedImage,
    chain: &[Digest],
    i: usize,
    progress: &dyn Progress,
) -> Result<Option<Unpacked<'a>>> {
    let chain_id = &chain[i];
    let key = chain_id.to_string();
    let Some(lock) = backend.unpacking.try_lock(&key) else {
        return Ok(None);
    };
    if committed(backend, &key)? {
        return Ok(None); // another call did it just now
    }
    let Some(layer) = image.layers[i].tar() else {
        return Err(Error::internal(format!(
            "{} is no tar layer",
            image.layers[i]
        )));
    };
    let context = || layer_context(image, i);
    let format = backend.layer_format;
    let tmp = backend
        .layout
        .snapshot_tmp(chain_id, TMP_COUNTER.fetch_add(1, Ordering::Relaxed));
    let tmp_fs = tmp.join("fs");
    let result = (|| {
        fs::create_dir_all(&tmp_fs).at("creating", &tmp_fs)?;
        let blob = backend
            .content
            .open_blob(&layer.digest)
            .map_err(|e| e.context(context()))?;
        let task = format!("unpack {}", short(&layer.digest));
        progress.begin(&task, Some(layer.size));
        // The blob is unbuffered: the unpacker reads it through a buffer of its own.
        let stats = match format {
            LayerFormat::Directory => unpack::unpack_layer(
                blob,
                &layer.media_type,
                layer.diff_id.as_ref(),
                &tmp_fs,
                &mut |n| progress.advance(&task, n),
            ),
            LayerFormat::Erofs => unpack::unpack_layer_image(
                blob,
                &layer.media_type,
                layer.diff_id.as_ref(),
                &tmp.join(IMAGE),
                &mut |n| progress.advance(&task, n),
            ),
        };
        progress.end(&task);
        let stats = stats.map_err(|e| e.context(context()))?;
        tracing::debug!(layer = %layer.digest, chain_id = %chain_id, entries = stats.entries, ?format, "unpacked");
        Ok(())
    })();
    match result {
        Ok(()) => Ok(Some(Unpacked {
            i,
            tmp,
            format,
            _lock: lock,
        })),
        Err(e) => {
            remove_failed(&tmp);
            Err(e)
        }
    }
}

/// Make the layers `unpacked` durable (one sync of the store's filesystem), move them
/// into place, mount their images, and commit their rows in one transaction: a row is
/// committed only after its layer's files are on disk, and an image the kernel refuses
/// is never a layer. On error, the layers are removed.
fn commit(
    backend: &LocalBackend,
    image: &ResolvedImage,
    chain: &[Digest],
    unpacked: Vec<Unpacked<'_>>,
) -> Result<()> {
    let layout = &backend.layout;
    let mut placed = Vec::new();
    let result = (|| {
        let dir = layout.snapshots_dir();
        let file = fs::File::open(&dir).at("opening", &dir)?;
        rustix::fs::syncfs(&file).at("syncing", &dir)?;
        for u in &unpacked {
            let chain_id = &chain[u.i];
            let dest = layout.snapshot_dir(chain_id);
            fs::rename(&u.tmp, &dest).at("moving unpacked layer to", &dest)?;
            placed.push(dest);
            if u.format == LayerFormat::Erofs {
                mount_image(layout, chain_id).map_err(|e| e.context(layer_context(image, u.i)))?;
            }
        }
        backend.db.write(|w| {
            for u in &unpacked {
                let row = SnapshotRow {
                    kind: SnapshotKind::Committed,
                    parent: u.i.checked_sub(1).map(|p| chain[p].clone()),
                    lease: None,
                    labels: Default::default(),
                    created: db::now(),
                    format: u.format,
                };
                w.put(Table::Snapshots, &chain[u.i].to_string(), &row)?;
            }
            Ok(())
        })
    })();
    if result.is_err() {
        for dest in &placed {
            let _ = remove_dir(dest);
        }
        discard(&unpacked);
    }
    result
}

/// Remove the temporary directories of layers that will not be committed.
fn discard(unpacked: &[Unpacked<'_>]) {
    for u in unpacked {
        remove_failed(&u.tmp);
    }
}

/// Remove the temporary directory of an unpack that failed or will not be committed; a
/// failure is only logged (open removes what is left).
fn remove_failed(tmp: &Path) {
    if let Err(e) = remove_dir(tmp) {
        tracing::warn!(path = %tmp.display(), error = %e, "could not remove a failed unpack");
    }
}

/// How messages name layer `i` of `image`.
fn layer_context(image: &ResolvedImage, i: usize) -> String {
    format!(
        "{} ({} of {}) of image {:?}",
        image.layers[i],
        i + 1,
        image.layers.len(),
        image.name
    )
}

/// Mount the EROFS image of layer `chain_id` read-only on its `fs` directory, where
/// overlay lower dirs and binds find its files.
pub(super) fn mount_image(layout: &RootLayout, chain_id: &Digest) -> Result<()> {
    mount_image_at(&image_path(layout, chain_id), &layout.snapshot_fs(chain_id))
}

/// Mount the EROFS image `image` read-only at `target`, as every layer is mounted.
fn mount_image_at(image: &Path, target: &Path) -> Result<()> {
    let spec = MountSpec {
        kind: "erofs".into(),
        source: image.to_string_lossy().into_owned(),
        options: vec!["ro".into(), "nodev".into(), "private".into()],
    };
    crate::mount::mount_all(&[spec], target)
}

/// The image of layer `chain_id` (whether it is one or not).
pub(super) fn image_path(layout: &RootLayout, chain_id: &Digest) -> PathBuf {
    layout.snapshot_dir(chain_id).join(IMAGE)
}

/// The format `IMV_LAYER_FORMAT` names (`erofs`, `directory`), if set.
fn layer_format_from_env() -> Result<Option<LayerFormat>> {
    match std::env::var("IMV_LAYER_FORMAT") {
        Err(_) => Ok(None),
        Ok(v) if v == "erofs" => Ok(Some(LayerFormat::Erofs)),
        Ok(v) if v == "directory" => Ok(Some(LayerFormat::Directory)),
        Ok(v) => Err(Error::invalid(format!(
            "IMV_LAYER_FORMAT={v:?}: the layer formats are \"erofs\" and \"directory\""
        ))),
    }
}

/// The format new layers get: `IMV_LAYER_FORMAT` if set, else EROFS when this kernel
/// mounts an EROFS image from a file on the store's filesystem (Linux 6.12 and later,
/// with CONFIG_EROFS_FS_BACKED_BY_FILE, and a filesystem with a page cache of its own:
/// not tmpfs), else directories. Asked once per filesystem in a process: the probe makes an
/// empty image in the snapshots directory and mounts it.
pub(super) fn layer_format(layout: &RootLayout) -> Result<LayerFormat> {
    if let Some(format) = layer_format_from_env()? {
        return Ok(format);
    }
    static PROBED: Mutex<std::collections::BTreeMap<u64, LayerFormat>> =
        Mutex::new(std::collections::BTreeMap::new());
    let dir = layout.snapshots_dir();
    let dev = std::os::unix::fs::MetadataExt::dev(&fs::metadata(&dir).at("inspecting", &dir)?);
    let mut probed = lock(&PROBED);
    if let Some(format) = probed.get(&dev) {
        return Ok(*format);
    }
    let tmp = layout.snapshot_tmp(
        &Digest::of(b"erofs probe"),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed),
    );
    let probe = (|| {
        fs::create_dir_all(tmp.join("fs")).at("creating", &tmp)?;
        let image = tmp.join(IMAGE);
        unpack::empty_image(&image)?;
        mount_image_at(&image, &tmp.join("fs"))
    })();
    let format = match probe {
        Ok(()) => LayerFormat::Erofs,
        Err(e) => {
            tracing::info!(dir = %dir.display(), error = %e, "EROFS images cannot be mounted from files here: layers are directories");
            LayerFormat::Directory
        }
    };
    remove_dir(&tmp)?;
    probed.insert(dev, format);
    Ok(format)
}

/// How to mount snapshot `key`: a view is a read-only overlay of its parent chain (a
/// read-only bind of the one layer, or of an empty directory for an image without
/// layers); a committed snapshot is a read-only bind of its own files. With the mounts,
/// the layers among them that are EROFS images, which must be mounted first.
pub(super) fn mounts(
    layout: &RootLayout,
    reader: &Reader<'_>,
    key: &str,
) -> Result<(Vec<MountSpec>, Vec<Digest>)> {
    let row: SnapshotRow = reader
        .get(Table::Snapshots, key)?
        .ok_or_else(|| Error::not_found(format!("snapshot {key:?}")))?;
    let mut lowers = Vec::new();
    let mut images = Vec::new();
    let mut next = match row.kind {
        SnapshotKind::Committed => Some(Digest::parse(key)?),
        SnapshotKind::View => row.parent,
    };
    while let Some(chain_id) = next {
        let parent: SnapshotRow = reader
            .get(Table::Snapshots, &chain_id.to_string())?
            .ok_or_else(|| Error::not_found(format!("snapshot {chain_id} below {key:?}")))?;
        lowers.push(layout.snapshot_fs(&chain_id));
        if parent.format == LayerFormat::Erofs {
            images.push(chain_id.clone());
        }
        next = parent.parent;
        if lowers.len() > 4096 {
            return Err(Error::internal(format!(
                "snapshot {key:?}: parent chain loops"
            )));
        }
    }
    let bind = |dir: &Path| MountSpec {
        kind: "bind".into(),
        source: dir.to_string_lossy().into_owned(),
        options: vec!["ro".into(), "rbind".into()],
    };
    let mut mounts = match lowers.len() {
        0 => vec![bind(&layout.empty_dir())],
        1 => vec![bind(&lowers[0])],
        _ => {
            // Topmost first, as overlayfs wants; a colon in a path would be escaped, but
            // these paths are ours and hold none.
            let lowerdir: Vec<String> = lowers
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            vec![MountSpec {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: vec!["ro".into(), format!("lowerdir={}", lowerdir.join(":"))],
            }]
        }
    };
    // A view asked for with remap labels mounts idmapped, said the way containerd's
    // overlay snapshotter says it: `uidmap=` and `gidmap=` options (see mount/idmap.rs).
    for (label, option) in [(LABEL_UID_MAPPING, "uidmap"), (LABEL_GID_MAPPING, "gidmap")] {
        if let Some(value) = row.labels.get(label) {
            for m in &mut mounts {
                m.options.push(format!("{option}={value}"));
            }
        }
    }
    Ok((mounts, images))
}

/// Remove a snapshot directory and everything in it (its image unmounted first); a
/// missing one is fine.
pub(super) fn remove_dir(path: &Path) -> Result<()> {
    let fs_dir = path.join("fs");
    if crate::mount::is_mountpoint(&fs_dir).unwrap_or(false) {
        crate::mount::unmount_recursive(&fs_dir)?;
    }
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing", path, e)),
        _ => Ok(()),
    }
}

fn short(d: &Digest) -> String {
    format!("{}…", &d.to_string()[..19])
}
