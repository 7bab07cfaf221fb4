//! Unpacking an image's layers into a containerd snapshotter, leaving what containerd's own
//! unpacker leaves, so `ctr images check`, the CRI plugin and containerd's garbage collector
//! see the same thing as after `ctr images pull`:
//!
//! - one committed snapshot per layer, named by its chain ID, its parent the chain below,
//!   labelled `containerd.io/snapshot.ref=<chain ID>`; made by preparing an active snapshot
//!   `extract-<unique> <chain ID>`, applying the layer with the diff service (which checks
//!   nothing: we compare the digest it reports with the layer's diff ID) and committing it;
//!   an image's first layer is applied by this process when it can (see `local_apply.rs`);
//! - `containerd.io/uncompressed=<diff ID>` on each layer blob;
//! - `containerd.io/gc.ref.snapshot.<snapshotter>=<top chain ID>` on the config blob: this is
//!   what keeps the layer snapshots alive for as long as the image is.
//!
//! All of it happens under a lease, so the garbage collector cannot take a snapshot between
//! its commit and the config label that roots it: the caller's (a sandbox's, as containerd's
//! CRI plugin does; the config is then labelled in the background, and the lease's deletion
//! waits for that), or a short-lived one of our own (with `containerd.io/gc.expire`, in case
//! we die half-way).
//!
//! **The top layer's commit.** Under a caller's lease, the top layer is committed in the
//! background: its commit is one of the few metadata commits (each an fsync in containerd)
//! a cold volume waits for, and nothing the volume mounts needs it. The volume mounts the
//! extraction's directories, which committing keeps (see view_mounts.rs, which mounts from
//! them only once such predictions came true). Whatever needs the committed snapshot waits
//! for the commit: a view of it, another unpack of it, `is_unpacked`, the lease's deletion
//! and the backend's drop. A commit that fails leaves the active extraction snapshot as it
//! is, never removed, since a volume may be mounted from it: the caller's lease keeps it
//! until the sandbox is released. The image is then not noted unpacked, so the next volume
//! of it unpacks again (a commit that found the layer committed by another process meanwhile
//! is such a failure too, as rare as that race). A crash before the commit leaves a volume
//! with no view, as a crash before a deferred view does (volumes/deferred_view.rs).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::{Backend, FilesLayer, Layer, Progress, ResolvedImage, TarLayer};
use crate::digest::Digest;
use crate::error::{Error, Result};

use super::rpc::Rpc;
use super::ContainerdBackend;
use super::{artifact_files, local_apply};

/// Label on an extraction and a layer snapshot: the chain ID it is (to be) committed as.
pub const LABEL_SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";
/// Label on a layer blob: the digest of its uncompressed tar.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// Label prefix on a config blob: the top snapshot of the image in a snapshotter.
pub const LABEL_GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";
/// Label on a lease: when the garbage collector may drop it.
pub const LABEL_GC_EXPIRE: &str = "containerd.io/gc.expire";

/// How long the unpack lease lives if we never delete it (we crashed).
const UNPACK_LEASE_TTL: Duration = Duration::from_secs(3600);

/// Tries to find a free extraction key (they are unique; a clash is near impossible).
const PREPARE_TRIES: usize = 3;

pub(super) fn unpack(
    be: &ContainerdBackend,
    image: &ResolvedImage,
    snapshotter: &str,
    lease: Option<&str>,
    progress: &dyn Progress,
) -> Result<()> {
    let chain = image.chain_ids();
    let Some(top) = chain.last() else {
        // No layers: the view is made with no parent.
        return Ok(());
    };
    // Found missing a moment ago by `is_unpacked` (asked while the lease was being made):
    // not asked again.
    if !be.take_found_missing(snapshotter, top)
        && is_unpacked(be, image, snapshotter, lease.is_some())?
    {
        return Ok(());
    }

    // The caller's lease (a sandbox's: what containerd's CRI plugin does too), or one of our
    // own that expires in case we die half-way. The caller's saves a lease's creation and
    // deletion, and the garbage collection a deletion sets off.
    let own_lease = match lease {
        Some(_) => None,
        None => {
            let id = format!("imv-unpack-{}", unique());
            be.create_lease_with(
                &id,
                HashMap::from([(
                    LABEL_GC_EXPIRE.to_owned(),
                    rfc3339(SystemTime::now() + UNPACK_LEASE_TTL),
                )]),
            )?;
            Some(id)
        }
    };
    // Only a caller's lease holds the extraction until a background commit is done: ours
    // goes when this function returns.
    let commit_soon = own_lease.is_none();
    let lease = Rpc::lease(lease.or(own_lease.as_deref()).expect("one of the two"))?;
    let task = format!("unpack {}", image.name);
    let total: u64 = image.layers.iter().map(Layer::size).sum();
    progress.begin(&task, Some(total));
    let result = (|| {
        let mut extraction = None;
        for (i, layer) in image.layers.iter().enumerate() {
            let parent = if i == 0 {
                String::new()
            } else {
                chain[i - 1].to_string()
            };
            let is_top = i + 1 == chain.len();
            let step = Step {
                chain: &chain[i],
                parent: &parent,
                lease: &lease,
                // The top was just found missing; a layer below may be there.
                just_found_missing: is_top,
                commit_soon: commit_soon && is_top,
            };
            extraction = match layer {
                Layer::Tar(tar) => unpack_layer(be, snapshotter, tar, &step),
                Layer::Files(files) => unpack_files(be, snapshotter, image, files, &step),
            }
            .map_err(|e| e.context(format!("unpacking {layer} of image {:?}", image.name)))?;
            progress.advance(&task, layer.size());
        }
        root_layers(be, image, snapshotter, top, own_lease.is_none())?;
        Ok(extraction)
    })();
    progress.end(&task);
    // The config label roots the snapshots now (or the unpack failed): our lease has done
    // its job either way. A lease we fail to delete expires on its own.
    if let Some(id) = own_lease {
        if let Err(e) = be.delete_lease_with(&id, false) {
            tracing::warn!(lease = %id, error = %e, "could not delete the unpack lease; it expires on its own");
        }
    }
    let extraction = result?;
    // The top's directories, as its extraction mounted them: what its views will mount
    // (see view_mounts.rs).
    if let Some(extraction) = &extraction {
        if let Ok(mounts) = super::mount_specs("extraction", extraction.mounts.clone()) {
            be.view_mounts.extracted(snapshotter, top, &mounts);
        }
    }
    // A top committed in the background is noted unpacked once committed.
    if !extraction.is_some_and(|e| e.commit_pending) {
        be.set_unpacked(snapshotter, top, true);
    }
    tracing::info!(image = %image.name, snapshotter, top = %top, "unpacked");
    Ok(())
}

/// Whether `image` is unpacked in `snapshotter`: known here, or found there (by us, by a
/// pull, by the CRI plugin), which costs one call. Found there, the config is made sure to
/// root it (which repairs an unpack that died before labelling). Found missing, that is
/// noted for the `unpack` that follows.
pub(super) fn is_unpacked(
    be: &ContainerdBackend,
    image: &ResolvedImage,
    snapshotter: &str,
    leased: bool,
) -> Result<bool> {
    // Labels an earlier unpack deferred, if no view followed it (see `label_soon`).
    be.send_deferred_labels();
    let Some(top) = image.top_chain_id() else {
        return Ok(true);
    };
    // Known here to be unpacked and rooted: nothing to ask (a view that finds the parent
    // gone makes this process forget it).
    if be.known_unpacked(snapshotter, &top) {
        return Ok(true);
    }
    // A commit of the top in the background (this process unpacked it a moment ago)
    // answers the question better than containerd would before it is done.
    be.wait_for_commit(snapshotter, &top.to_string());
    if be.known_unpacked(snapshotter, &top) {
        return Ok(true);
    }
    if be.stat(snapshotter, &top.to_string())?.is_some() {
        root_layers(be, image, snapshotter, &top, leased)?;
        be.set_unpacked(snapshotter, &top, true);
        return Ok(true);
    }
    be.found_missing(snapshotter, &top);
    Ok(false)
}

/// Label the image's config with its top snapshot in `snapshotter`: what keeps its layers
/// once no lease does. An artifact's manifest is labelled instead: artifacts share their
/// config (often the same two-byte empty blob), and one label per snapshotter on it would
/// root only the last artifact unpacked. With `caller_lease` (a caller's lease holds the
/// layers, and its deletion waits for the backend's background calls) that happens in the
/// background; otherwise now, because our own lease goes right after.
fn root_layers(
    be: &ContainerdBackend,
    image: &ResolvedImage,
    snapshotter: &str,
    top: &Digest,
    caller_lease: bool,
) -> Result<()> {
    let labels = BTreeMap::from([(
        format!("{LABEL_GC_REF_SNAPSHOT}{snapshotter}"),
        top.to_string(),
    )]);
    let root = match image.artifact_type {
        Some(_) => &image.manifest,
        None => &image.config,
    };
    if caller_lease {
        be.label_soon(root, &labels);
        Ok(())
    } else {
        be.set_content_labels(root, &labels)
    }
}

/// A layer this call extracted.
struct Extracted {
    /// The mounts of the snapshot it was extracted into.
    mounts: Vec<super::api::containerd::types::Mount>,
    /// Committed in the background (see the module's documentation), not yet.
    commit_pending: bool,
}

/// Where one layer of a chain goes, and how.
struct Step<'a> {
    /// Its chain ID, the name it is committed as.
    chain: &'a Digest,
    /// The chain ID below it; empty for a base layer.
    parent: &'a str,
    lease: &'a tonic::metadata::AsciiMetadataValue,
    /// Found missing just before: looked for again only if another unpack ran meanwhile.
    just_found_missing: bool,
    /// Committed in the background (see the module's documentation).
    commit_soon: bool,
}

/// Labels to set on a blob once the layer made from it is committed.
type BlobLabels = Option<(Digest, BTreeMap<String, String>)>;

/// Unpack tar layer `layer` as `step` says, unless it is there already. What this call
/// extracted, if it did.
fn unpack_layer(
    be: &ContainerdBackend,
    snapshotter: &str,
    layer: &TarLayer,
    step: &Step<'_>,
) -> Result<Option<Extracted>> {
    extract(be, snapshotter, step, |mounts| {
        // A first layer is applied here when its directory and blob are at hand (see
        // local_apply.rs); otherwise, or if that fails, by containerd's diff service.
        let applied_here = step.parent.is_empty() && local_apply::apply(be, layer, mounts)?;
        let applied = match applied_here {
            // Checked against the diff ID as it was applied, if the layer has one.
            true => layer.diff_id.clone(),
            false => Some(be.apply(layer, mounts.to_vec())?),
        };
        if let (Some(applied), Some(diff_id)) = (&applied, &layer.diff_id) {
            if applied != diff_id {
                return Err(Error::invalid(format!(
                    "layer {}: its content has diff ID {applied}, the image config says {diff_id}",
                    layer.digest
                )));
            }
        }
        // Only once the diff ID is verified, as containerd's unpacker does. It tells
        // containerd the diff ID without reading the blob.
        Ok(applied.map(|diff_id| {
            (
                layer.digest.clone(),
                BTreeMap::from([(LABEL_UNCOMPRESSED.to_owned(), diff_id.to_string())]),
            )
        }))
    })
}

/// Make the files layer of artifact `image` as `step` says (every layer below committed),
/// unless it is there: its names checked against the tar layers below, then each blob
/// linked from containerd's content store into the snapshot's directory (copied when it
/// cannot be: see `artifact_files`).
fn unpack_files(
    be: &ContainerdBackend,
    snapshotter: &str,
    image: &ResolvedImage,
    files: &FilesLayer,
    step: &Step<'_>,
) -> Result<Option<Extracted>> {
    extract(be, snapshotter, step, |mounts| {
        artifact_files::make(be, image, files, mounts)?;
        Ok(None)
    })
}

/// Extract one layer as snapshot `step.chain` on `step.parent`, unless it is there already:
/// prepare an extraction, have `fill` put the layer in it (given its mounts), and commit
/// it (with `step.commit_soon`, in the background). On failure the extraction is removed.
/// What this call extracted, if it did.
fn extract(
    be: &ContainerdBackend,
    snapshotter: &str,
    step: &Step<'_>,
    fill: impl FnOnce(&[super::api::containerd::types::Mount]) -> Result<BlobLabels>,
) -> Result<Option<Extracted>> {
    let chain = step.chain;
    let chain_id = &chain.to_string();
    let lease = step.lease;
    // Concurrent unpacks in this process of images sharing this layer wait for one another,
    // and for a commit of it in the background.
    let (_unpacking, mut waited) = be
        .unpacking
        .lock_telling(&format!("{snapshotter}/{chain_id}"));
    if be.committing_under(snapshotter, chain).is_some() {
        be.wait_for_commit(snapshotter, chain_id);
        waited = true;
    }
    // Found missing just before taking the lock: look again only if someone held it (an
    // unpack in this process may have made it meanwhile; another process is met below, at
    // prepare or commit, with AlreadyExists).
    if (!step.just_found_missing || waited) && be.stat(snapshotter, chain_id)?.is_some() {
        return Ok(None);
    }
    let labels = HashMap::from([(LABEL_SNAPSHOT_REF.to_owned(), chain_id.to_owned())]);

    let mut prepared = None;
    for _ in 0..PREPARE_TRIES {
        let key = format!("extract-{} {chain_id}", unique());
        match be.prepare(snapshotter, &key, step.parent, &labels, lease) {
            Ok(mounts) => {
                prepared = Some((key, mounts));
                break;
            }
            // Someone else (another process) may have committed the layer meanwhile.
            Err(e) if e.is_already_exists() => {
                if be.stat(snapshotter, chain_id)?.is_some() {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
    let Some((key, mounts)) = prepared else {
        return Err(Error::internal(format!(
            "no free extraction snapshot key for {chain_id} after {PREPARE_TRIES} tries"
        )));
    };

    let abort = |why: Error| {
        if let Err(e) = Backend::remove(be, snapshotter, &key) {
            tracing::warn!(key, error = %e, "could not remove the extraction snapshot");
        }
        why
    };
    let blob_labels = match fill(&mounts) {
        Ok(labels) => labels,
        Err(e) => return Err(abort(e)),
    };
    let label_blob = || {
        // Nothing of ours waits for it (a lease deletion and the backend's drop do).
        if let Some((digest, labels)) = &blob_labels {
            be.label_soon(digest, labels);
        }
    };
    if step.commit_soon {
        match be.commit_soon(snapshotter, chain, &key, &labels, lease) {
            Ok(()) => {
                label_blob();
                return Ok(Some(Extracted {
                    mounts,
                    commit_pending: true,
                }));
            }
            // Only a failure to start the call: committed now instead.
            Err(e) => tracing::debug!(error = %e, "a commit in the background could not start"),
        }
    }
    let extraction = match be.commit(snapshotter, chain_id, &key, &labels, lease) {
        Ok(()) => {
            crate::crash_points::reached(crate::crash_points::LAYER_COMMITTED);
            Some(Extracted {
                mounts,
                commit_pending: false,
            })
        }
        // Committed by someone else meanwhile: theirs is as good as ours (in directories
        // of theirs).
        Err(e) if e.is_already_exists() => {
            abort(e);
            None
        }
        Err(e) => return Err(abort(e)),
    };
    label_blob();
    Ok(extraction)
}

/// Unique enough for a key or a lease ID: time, process and a counter.
fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `t` as RFC 3339 in UTC, second precision (what containerd's `gc.expire` label holds),
/// as prost-types writes a protobuf Timestamp.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    prost_types::Timestamp {
        seconds: i64::try_from(secs).unwrap_or(i64::MAX),
        nanos: 0,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_767_225_599)),
            "2025-12-31T23:59:59Z"
        );
    }

    #[test]
    fn unique_parts_differ() {
        assert_ne!(unique(), unique());
    }
}
