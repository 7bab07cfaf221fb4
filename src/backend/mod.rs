//! Where images, snapshots and leases live. The engine
//! ([`ImageVolumes`](crate::ImageVolumes)) drives a backend; a backend knows nothing of
//! CRI, sandboxes or volumes.
//!
//! Two implementations: [`local`] (the embedded default, no daemon) and [`containerd`]
//! (a real daemon over its gRPC API).

pub mod artifact;
pub mod containerd;
pub mod local;
pub(crate) mod resolve;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::Result;
use crate::mount::MountSpec;
use crate::platform::Platform;

pub use artifact::{ArtifactFile, FilesLayer};

/// The snapshotter used when the caller names none (containerd's default).
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// One layer of a resolved image: what one snapshot of its chain holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layer {
    /// A tar blob, compressed or not, unpacked with the layer rules: a layer of an image,
    /// or a tar layer of an artifact.
    Tar(TarLayer),
    /// An artifact's raw layers, each shown as a file (see [`artifact`]); always the top
    /// of its chain.
    Files(FilesLayer),
}

/// A layer that is a tar blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarLayer {
    /// Digest of the blob as stored (compressed or not).
    pub digest: Digest,
    /// Its media type (said in messages; the compression is read from the content).
    pub media_type: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar, from the image config's `rootfs.diff_ids`, checked
    /// to the end of the stream when the layer is unpacked. `None` for an artifact's tar
    /// layer: an artifact's config lists no diff IDs, and the blob's digest, checked when
    /// the blob was stored, names the layer instead.
    pub diff_id: Option<Digest>,
}

impl Layer {
    /// What names the layer in its chain: an image layer's diff ID, an artifact tar
    /// layer's blob digest (the same bytes unpack the same whatever their media type
    /// says: the compression is read from them), a files layer's ID.
    pub fn id(&self) -> &Digest {
        match self {
            Layer::Tar(t) => t.diff_id.as_ref().unwrap_or(&t.digest),
            Layer::Files(f) => &f.id,
        }
    }

    /// The bytes of its blobs.
    pub fn size(&self) -> u64 {
        match self {
            Layer::Tar(t) => t.size,
            Layer::Files(f) => f.size(),
        }
    }

    /// The tar blob, for a tar layer.
    pub fn tar(&self) -> Option<&TarLayer> {
        match self {
            Layer::Tar(t) => Some(t),
            Layer::Files(_) => None,
        }
    }
}

impl std::fmt::Display for Layer {
    /// How messages name the layer: `layer <blob digest>`, or the files of an artifact.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layer::Tar(t) => write!(f, "layer {}", t.digest),
            Layer::Files(files) => write!(
                f,
                "the files of {} raw artifact layers ({})",
                files.files.len(),
                files.id
            ),
        }
    }
}

/// An image reference resolved to one manifest for one platform.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedImage {
    /// The image's name in the store (or the reference it was found by).
    pub name: String,
    /// The image's digest: that of its target, the blob its name points at (the index of
    /// a multi-platform image, else the manifest itself), as [`ImageRecord::digest`]. It
    /// names the volume directory, as containerd's CRI plugin names it.
    pub digest: Digest,
    /// The platform-specific manifest the layers come from.
    pub manifest: Digest,
    /// The config blob (for an image, its digest is the image ID).
    pub config: Digest,
    /// For an OCI artifact (see [`artifact`]), what it is: its `artifactType`, else its
    /// config's media type. `None` for an image.
    pub artifact_type: Option<String>,
    /// Layers, base first: the snapshots the volume stacks.
    pub layers: Vec<Layer>,
}

impl ResolvedImage {
    /// The chain IDs of the layers, base first (OCI image spec: ChainID(L0) = DiffID(L0),
    /// ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)), with each layer's
    /// [`Layer::id`] as its DiffID). The last one names the snapshot a view of the whole
    /// image is made from.
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(self.layers.iter().map(Layer::id))
    }

    /// The chain ID of the whole image; `None` for an image with no layers.
    pub fn top_chain_id(&self) -> Option<Digest> {
        self.chain_ids().pop()
    }

    /// The image's ID, as the CRI reports it and references may name it: the config's
    /// digest for an image; for an artifact, whose config is often the same empty blob as
    /// every other artifact's, the digest of its target (as the kit's containerd reports
    /// it: integration/containerd).
    pub fn id(&self) -> &Digest {
        match self.artifact_type {
            Some(_) => &self.digest,
            None => &self.config,
        }
    }
}

/// Chain IDs of a stack of diff IDs, base first.
pub fn chain_ids<'a>(diff_ids: impl IntoIterator<Item = &'a Digest>) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::new();
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// An image as the store lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Name (a reference such as `example.com/app:1`).
    pub name: String,
    /// Digest of the target: a manifest, or an index for a multi-platform image.
    pub digest: Digest,
    /// Media type of the target.
    pub media_type: String,
    /// Size of the target blob.
    pub size: u64,
    /// For an OCI artifact, what it is (see [`ResolvedImage::artifact_type`]; for an index,
    /// its own `artifactType`, else its first artifact manifest's). `None` for an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// What a backend knows about a view snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewInfo {
    /// The snapshot key (for image volumes: the volume's target path).
    pub key: String,
    /// The chain ID it is a view of; `None` for an image without layers.
    pub parent: Option<Digest>,
    /// Labels given when the view was made.
    pub labels: BTreeMap<String, String>,
}

/// A snapshot a lease holds, and the snapshotter it is in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedSnapshot {
    /// The snapshotter.
    pub snapshotter: String,
    /// The snapshot's key (for image volumes: the volume's target path).
    pub key: String,
}

/// Progress of long work (imports, unpacks), for a terminal or a log. The library reports;
/// the host decides what to show. All methods default to doing nothing.
pub trait Progress: Send + Sync {
    /// A task began; `total` is its size in bytes when known.
    fn begin(&self, task: &str, total: Option<u64>) {
        let _ = (task, total);
    }
    /// `bytes` more of `task` are done.
    fn advance(&self, task: &str, bytes: u64) {
        let _ = (task, bytes);
    }
    /// `task` ended (successfully or not).
    fn end(&self, task: &str) {
        let _ = task;
    }
}

/// What a garbage collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcStats {
    /// Snapshots removed.
    pub snapshots: usize,
    /// Blobs removed.
    pub blobs: usize,
    /// Partial files of interrupted imports (`content/ingest/`) removed.
    pub ingests: usize,
}

/// Progress that shows nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// A store of images, snapshots and leases.
///
/// Every method is safe to call from many threads at once. Errors use the crate's kinds:
/// NotFound for a missing image, snapshot or lease; AlreadyExists where noted;
/// InvalidArgument for an unknown snapshotter.
pub trait Backend: Send + Sync {
    /// Short name of the backend (`local`, `containerd`), for messages.
    fn name(&self) -> &'static str;

    /// Create lease `id`. AlreadyExists when it exists.
    fn create_lease(&self, id: &str) -> Result<()>;

    /// Start creating lease `id` and return what waits for the outcome (that of
    /// [`create_lease`](Self::create_lease)), for a caller with other work to do meanwhile.
    /// By default the lease is created right away.
    fn start_create_lease(&self, id: &str) -> Box<dyn FnOnce() -> Result<()> + Send> {
        let created = self.create_lease(id);
        Box::new(move || created)
    }

    /// Delete lease `id`; what only it kept alive becomes garbage. NotFound when absent.
    fn delete_lease(&self, id: &str) -> Result<()>;

    /// The snapshots lease `id` holds, each with its snapshotter: the views made under it,
    /// and (containerd) the layers an unpack under it made. NotFound when the lease is
    /// absent.
    fn lease_snapshots(&self, id: &str) -> Result<Vec<LeasedSnapshot>>;

    /// Resolve `reference` (a name, `name@digest`, a digest, or an image ID, i.e. the config
    /// digest, in full or as a unique hex prefix of at least 12 digits) to the manifest
    /// for `platform`. NotFound when there is no such image or no manifest for `platform`.
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage>;

    /// Whether every layer of `image` is known or found to be unpacked into `snapshotter`
    /// already (then [`unpack`](Self::unpack) has nothing to do). Needs no lease: the
    /// engine asks while the sandbox's lease is still being made. With `leased`, a caller's
    /// lease will hold what follows (as for `unpack`). False by default: unpack finds out.
    fn is_unpacked(
        &self,
        _image: &ResolvedImage,
        _snapshotter: &str,
        _leased: bool,
    ) -> Result<bool> {
        Ok(false)
    }

    /// Make sure every layer of `image` is unpacked into `snapshotter`, each once per chain
    /// ID; concurrent calls for the same layers wait for the one unpack. With `lease`, what
    /// the unpack makes is held by that lease until the image roots it (a backend without
    /// leases on layers ignores it); without, the backend protects it its own way.
    /// NotFound when the lease does not exist.
    fn unpack(
        &self,
        image: &ResolvedImage,
        snapshotter: &str,
        lease: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<()>;

    /// Create a read-only view snapshot `key` of `parent` under `lease` and return how to
    /// mount it. AlreadyExists when `key` exists.
    fn view(
        &self,
        snapshotter: &str,
        key: &str,
        parent: Option<&Digest>,
        lease: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<MountSpec>>;

    /// Check that views in `snapshotter` can be asked for with an ID mapping: made with
    /// the remap labels (`containerd.io/snapshot/uidmapping`, `.../gidmapping`, see
    /// mount/idmap.rs), their mounts then carry `uidmap=`/`gidmap=` options that the
    /// engine mounts idmapped. FailedPrecondition, naming the snapshotter, when it cannot.
    /// Every snapshotter can by default.
    fn check_remap(&self, _snapshotter: &str) -> Result<()> {
        Ok(())
    }

    /// How to mount the existing snapshot `key`. NotFound when absent.
    fn mounts(&self, snapshotter: &str, key: &str) -> Result<Vec<MountSpec>>;

    /// What is known of the view `key`. NotFound when absent.
    fn view_info(&self, snapshotter: &str, key: &str) -> Result<ViewInfo>;

    /// Remove snapshot `key`. NotFound when absent.
    fn remove(&self, snapshotter: &str, key: &str) -> Result<()>;

    /// Remove the view `key` of a volume that is unmounted and gone, now or soon: a backend
    /// may finish it in the background, as long as a later `view` or `mounts` of the same
    /// key, `delete_lease` and its own drop wait for it. A view already absent is fine.
    fn remove_soon(&self, snapshotter: &str, key: &str) -> Result<()> {
        match self.remove(snapshotter, key) {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }

    /// What a new view of `parent` in `snapshotter` will mount, when this backend knows it
    /// without making one: it has seen two views of that parent mount alike (so the mounts
    /// do not depend on the view's key), and the parent is known to be there. The engine
    /// then mounts first and makes the view right after (see volumes/deferred_view.rs).
    /// Whatever the view's labels (but the remap labels), the mounts must be the same.
    /// `lease` is the one the view will be made under: a parent that lease itself holds
    /// (just unpacked under it, its commit still under way) counts as there. None by
    /// default.
    fn known_view_mounts(
        &self,
        _snapshotter: &str,
        _parent: Option<&Digest>,
        _lease: &str,
    ) -> Option<Vec<MountSpec>> {
        None
    }

    /// Forget what [`known_view_mounts`](Self::known_view_mounts) said for `parent`:
    /// mounting it failed.
    fn forget_view_mounts(&self, _snapshotter: &str, _parent: Option<&Digest>) {}

    /// The images in the store, sorted by name.
    fn images(&self) -> Result<Vec<ImageRecord>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let ids = chain_ids([&a, &b]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(std::iter::empty()).is_empty());
    }
}
