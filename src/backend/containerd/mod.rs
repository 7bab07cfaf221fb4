//! A real containerd, over its gRPC API: leases, images, content, snapshots and diff.
//!
//! Everything lives in containerd, in one namespace (CRI uses `k8s.io`):
//! - the sandbox's lease is a containerd lease; every snapshot call for the sandbox carries
//!   it in the `containerd-lease` header, so containerd's garbage collector keeps the view
//!   while the lease lives and collects it when the lease goes;
//! - images are containerd's; manifests and configs are read through the content service;
//! - layers are unpacked the way containerd's own unpacker does (see `unpack.rs`), so `ctr`
//!   and the CRI plugin see the image as unpacked and share the layer snapshots;
//! - a volume's view is a `View` snapshot keyed by the volume's path.
//!
//! The client is synchronous to its callers and async inside: see `rpc.rs`.

mod local_apply;
mod local_content;
mod plugins;
mod resolve;
mod rpc;
mod unpack;
mod view_mounts;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, Info as SnapshotInfo, MountsRequest, PrepareSnapshotRequest,
    RemoveSnapshotRequest, StatSnapshotRequest, ViewSnapshotRequest,
};
use containerd_client::services::v1::{
    content_client::ContentClient, diff_client::DiffClient, images_client::ImagesClient,
    leases_client::LeasesClient, ApplyRequest, CreateRequest, DeleteRequest, GetImageRequest,
    Image, Info as ContentInfo, InfoRequest, ListImagesRequest, ListResourcesRequest,
    ReadContentRequest, UpdateRequest,
};
use containerd_client::tonic::metadata::AsciiMetadataValue;
use containerd_client::types::{Descriptor, Mount};

use crate::backend::resolve::ResolveCache;
use crate::backend::{Backend, ImageRecord, LeasedSnapshot, Progress, ResolvedImage, ViewInfo};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::locks::{InFlight, KeyedLocks};
use crate::mount::idmap::LABEL_UID_MAPPING;
use crate::mount::MountSpec;
use crate::platform::Platform;

use rpc::{Rpc, MAX_MESSAGE};

/// containerd's default socket.
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// The namespace the CRI plugin keeps Kubernetes' images in.
pub const DEFAULT_NAMESPACE: &str = "k8s.io";

/// A containerd daemon as the store of images, snapshots and leases.
///
/// Cheap to make: nothing is started or connected until the first call (one small tokio
/// runtime and one connection, both shut down when the backend is dropped). Safe to share
/// between threads.
pub struct ContainerdBackend {
    rpc: Rpc,
    /// One unpack per (snapshotter, chain ID) at a time in this process; other processes
    /// (containerd's own unpacker) are met with containerd's AlreadyExists.
    unpacking: KeyedLocks,
    /// What targets resolve to (immutable: see `ResolveCache`).
    resolved: ResolveCache,
    /// (snapshotter, top chain ID) of the images this process unpacked, or found unpacked
    /// and rooted by their config: a warm mutate asks containerd nothing about them. A view
    /// that finds its parent gone (an rmi, then GC) drops the entry, so the engine's retry
    /// unpacks again.
    unpacked: Mutex<HashSet<(String, Digest)>>,
    /// (snapshotter, top chain ID) of images `is_unpacked` just found missing, and when:
    /// the `unpack` that follows does not ask again (see `take_found_missing`).
    found_missing: Mutex<HashMap<(String, Digest), Instant>>,
    /// Calls running in the background: views being removed (`remove_soon`), configs being
    /// labelled (`label_soon`).
    /// Keys: a view's, or `labels:<digest>`.
    background: Arc<InFlight>,
    /// Labels `label_soon` was asked to set, not yet sent: they go once the view that
    /// follows an unpack is made (see `label_soon`).
    deferred_labels: Mutex<Vec<(Digest, BTreeMap<String, String>)>>,
    /// What views of a parent mount, seen or predicted: see `known_view_mounts`.
    view_mounts: view_mounts::ViewMountsMemo,
    /// Snapshotters known to make idmapped views (see `check_remap`).
    remaps: plugins::RemapMemo,
    /// containerd's local content store, if visible here (see `local_content`); looked up
    /// on the first read of a blob.
    content_root: OnceLock<Option<PathBuf>>,
}

/// How long a "not unpacked" answer of `is_unpacked` spares the unpack that follows a
/// question of its own.
const FOUND_MISSING_FOR: Duration = Duration::from_secs(2);

/// How long a view of a key, a lease deletion or the backend's drop waits for background
/// calls (each is one call to containerd: milliseconds, unless containerd hangs).
const BACKGROUND_WAIT: Duration = Duration::from_secs(10);

impl ContainerdBackend {
    /// A backend for the containerd listening on `address` (a unix socket path; a
    /// `unix://` prefix is accepted), working in `namespace`. InvalidArgument for a
    /// namespace containerd would refuse.
    pub fn new(address: impl AsRef<Path>, namespace: &str) -> Result<Self> {
        let address = address.as_ref();
        let address = match address.to_str().and_then(|a| a.strip_prefix("unix://")) {
            Some(path) => PathBuf::from(path),
            None => address.to_owned(),
        };
        if address.as_os_str().is_empty() {
            return Err(Error::invalid("containerd address is empty"));
        }
        Ok(ContainerdBackend {
            rpc: Rpc::new(&address, namespace)?,
            unpacking: KeyedLocks::new(),
            resolved: ResolveCache::default(),
            unpacked: Mutex::new(HashSet::new()),
            found_missing: Mutex::default(),
            background: Arc::default(),
            deferred_labels: Mutex::default(),
            view_mounts: view_mounts::ViewMountsMemo::default(),
            remaps: plugins::RemapMemo::default(),
            content_root: OnceLock::new(),
        })
    }

    /// Whether this process knows the image whose top chain is `top` to be unpacked and
    /// rooted in `snapshotter`.
    fn known_unpacked(&self, snapshotter: &str, top: &Digest) -> bool {
        let unpacked = self.unpacked.lock().unwrap_or_else(PoisonError::into_inner);
        unpacked.contains(&(snapshotter.to_owned(), top.clone()))
    }

    /// Note that the image whose top chain is `top` was just found not unpacked.
    fn found_missing(&self, snapshotter: &str, top: &Digest) {
        let mut missing = self
            .found_missing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Notes never taken (the call failed before unpacking) go with the next one.
        missing.retain(|_, at| at.elapsed() < FOUND_MISSING_FOR);
        missing.insert((snapshotter.to_owned(), top.clone()), Instant::now());
    }

    /// Whether the image whose top chain is `top` was found not unpacked a moment ago (the
    /// note is taken). A stale answer costs only work: an unpack of layers that are there
    /// meets containerd's AlreadyExists at commit and keeps theirs.
    fn take_found_missing(&self, snapshotter: &str, top: &Digest) -> bool {
        let mut missing = self
            .found_missing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        missing
            .remove(&(snapshotter.to_owned(), top.clone()))
            .is_some_and(|at| at.elapsed() < FOUND_MISSING_FOR)
    }

    fn set_unpacked(&self, snapshotter: &str, top: &Digest, known: bool) {
        let mut unpacked = self.unpacked.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = (snapshotter.to_owned(), top.clone());
        if known {
            unpacked.insert(entry);
        } else {
            // Unpacked anew, its layers get new directories: what views mounted is stale.
            self.view_mounts.forget(snapshotter, top);
            unpacked.remove(&entry);
        }
    }

    /// Wait for background calls on `key` (`None`: on every key, deferred labels sent
    /// first).
    fn wait_for_background(&self, key: Option<&str>) {
        if key.is_none() {
            self.send_deferred_labels();
        }
        if !self.background.wait(key, BACKGROUND_WAIT) {
            tracing::warn!(
                key,
                "calls to containerd still running in the background after {BACKGROUND_WAIT:?}; going on"
            );
        }
    }

    /// Run the call `make` builds in the background under `key`; `failed` says what a
    /// failure means, for the warning it is logged with (NotFound is no failure).
    fn in_background<F, Fut>(
        &self,
        key: String,
        what: String,
        failed: &'static str,
        make: F,
    ) -> Result<()>
    where
        F: FnOnce(containerd_client::tonic::transport::Channel) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), containerd_client::tonic::Status>>
            + Send
            + 'static,
    {
        let background = Arc::clone(&self.background);
        background.begin(&key);
        let key_done = key.clone();
        let started = self.rpc.spawn(what, make, move |outcome| {
            match outcome {
                Err(e) if !e.is_not_found() => {
                    tracing::warn!(key = %key_done, error = %e, "{failed}")
                }
                _ => {}
            }
            background.end(&key_done);
        });
        if started.is_err() {
            self.background.end(&key);
        }
        started
    }

    /// Set `labels` on blob `digest` soon: in the background once the next view is made
    /// (or the next unpack starts, a lease is deleted, this backend is dropped), which all
    /// wait for it. Each label is a metadata commit in containerd, and containerd makes
    /// one commit at a time: sent right away, they would hold up the view the caller is
    /// waiting for, while the layers need no label as long as the lease they were
    /// unpacked under holds them.
    fn label_soon(&self, digest: &Digest, labels: &BTreeMap<String, String>) {
        self.deferred_labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((digest.clone(), labels.clone()));
    }

    /// Send the labels `label_soon` deferred, in the background.
    fn send_deferred_labels(&self) {
        let deferred = std::mem::take(
            &mut *self
                .deferred_labels
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (digest, labels) in deferred {
            let req = self.content_labels_request(&digest, &labels);
            let sent = self.in_background(
                format!("labels:{digest}"),
                format!("labelling blob {digest}"),
                "labelling a blob in the background failed",
                |ch| async move {
                    ContentClient::new(ch).update(req).await?;
                    Ok(())
                },
            );
            if let Err(e) = sent {
                // Only a failure to start the call: set them now instead.
                tracing::debug!(blob = %digest, error = %e, "labelling in the background could not start");
                if let Err(e) = self.set_content_labels(&digest, &labels) {
                    tracing::warn!(blob = %digest, error = %e, "labelling a blob failed");
                }
            }
        }
    }

    /// The socket this backend talks to.
    pub fn address(&self) -> &Path {
        self.rpc.address()
    }

    // --- images and content -------------------------------------------------------------

    /// The image named exactly `name`, if there is one.
    fn get_image(&self, name: &str) -> Result<Option<Image>> {
        let result = self.rpc.call(&format!("getting image {name:?}"), |ch| {
            let req = self.rpc.request(
                GetImageRequest {
                    name: name.to_owned(),
                },
                None,
            );
            async move {
                let mut client = ImagesClient::new(ch).max_decoding_message_size(MAX_MESSAGE);
                Ok(client.get(req).await?.into_inner().image)
            }
        });
        match result {
            Err(e) if e.is_not_found() => Ok(None),
            other => other,
        }
    }

    fn list_images(&self) -> Result<Vec<Image>> {
        self.rpc.call("listing images", |ch| {
            let req = self.rpc.request(ListImagesRequest::default(), None);
            async move {
                let mut client = ImagesClient::new(ch).max_decoding_message_size(MAX_MESSAGE);
                Ok(client.list(req).await?.into_inner().images)
            }
        })
    }

    /// What the content store knows of blob `digest`; `None` when it does not have it.
    fn content_info(&self, digest: &Digest) -> Result<Option<ContentInfo>> {
        let result = self.rpc.call(&format!("content info of {digest}"), |ch| {
            let req = self.rpc.request(
                InfoRequest {
                    digest: digest.to_string(),
                },
                None,
            );
            async move { Ok(ContentClient::new(ch).info(req).await?.into_inner().info) }
        });
        match result {
            Ok(Some(info)) => Ok(Some(info)),
            Ok(None) => Err(Error::internal(format!(
                "content info of {digest}: containerd sent no info"
            ))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The directory of containerd's local content store, when its content plugin names
    /// it and it is visible to this process: blobs are read from there (verified by their
    /// digests) without a call. Asks containerd the first time.
    pub fn content_store(&self) -> Option<&Path> {
        self.content_root
            .get_or_init(|| local_content::discover(self))
            .as_deref()
    }

    /// Blob `digest`, at most `max` bytes, verified against its digest: from containerd's
    /// content store directly when it is visible here, through its content service
    /// otherwise.
    fn read_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>> {
        if let Some(data) = self
            .content_store()
            .and_then(|root| local_content::read(root, digest, max))
        {
            return Ok(data);
        }
        let what = format!("reading blob {digest}");
        let data = self.rpc.call(&what, |ch| {
            let req = self.rpc.request(
                ReadContentRequest {
                    digest: digest.to_string(),
                    offset: 0,
                    size: 0,
                },
                None,
            );
            async move {
                let mut client = ContentClient::new(ch).max_decoding_message_size(MAX_MESSAGE);
                let mut stream = client.read(req).await?.into_inner();
                let mut data = Vec::new();
                while let Some(chunk) = stream.message().await? {
                    data.extend_from_slice(&chunk.data);
                    if data.len() as u64 > max {
                        return Err(containerd_client::tonic::Status::out_of_range(format!(
                            "blob is larger than {max} bytes"
                        )));
                    }
                }
                Ok(data)
            }
        })?;
        let actual = Digest::of(&data);
        if &actual != digest {
            return Err(Error::invalid(format!(
                "{what}: content has digest {actual}"
            )));
        }
        Ok(data)
    }

    /// Blob `digest` parsed as JSON (manifests, indexes and configs are small).
    fn read_json<T: serde::de::DeserializeOwned>(&self, digest: &Digest) -> Result<T> {
        let data = self.read_blob(digest, crate::backend::local::content::MAX_JSON_SIZE)?;
        serde_json::from_slice(&data)
            .map_err(|e| Error::invalid(format!("blob {digest}: not valid JSON: {e}")))
    }

    /// The update that sets `labels` on blob `digest`, leaving its other labels alone.
    fn content_labels_request(
        &self,
        digest: &Digest,
        labels: &BTreeMap<String, String>,
    ) -> containerd_client::tonic::Request<UpdateRequest> {
        let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.rpc.request(
            UpdateRequest {
                info: Some(ContentInfo {
                    digest: digest.to_string(),
                    labels: labels.clone().into_iter().collect(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            },
            None,
        )
    }

    /// Set `labels` on blob `digest`, leaving its other labels alone.
    fn set_content_labels(&self, digest: &Digest, labels: &BTreeMap<String, String>) -> Result<()> {
        self.rpc.call(&format!("labelling blob {digest}"), |ch| {
            let req = self.content_labels_request(digest, labels);
            async move {
                ContentClient::new(ch).update(req).await?;
                Ok(())
            }
        })
    }

    // --- snapshots and diff -------------------------------------------------------------

    fn stat(&self, snapshotter: &str, key: &str) -> Result<Option<SnapshotInfo>> {
        let result = self.rpc.call(
            &format!("stat of snapshot {key:?} in snapshotter {snapshotter:?}"),
            |ch| {
                let req = self.rpc.request(
                    StatSnapshotRequest {
                        snapshotter: snapshotter.to_owned(),
                        key: key.to_owned(),
                    },
                    None,
                );
                async move { Ok(SnapshotsClient::new(ch).stat(req).await?.into_inner().info) }
            },
        );
        match result {
            Err(e) if e.is_not_found() => Ok(None),
            other => other,
        }
    }

    fn prepare(
        &self,
        snapshotter: &str,
        key: &str,
        parent: &str,
        labels: &HashMap<String, String>,
        lease: &AsciiMetadataValue,
    ) -> Result<Vec<Mount>> {
        self.rpc.call(&format!("preparing snapshot {key:?}"), |ch| {
            let req = self.rpc.request(
                PrepareSnapshotRequest {
                    snapshotter: snapshotter.to_owned(),
                    key: key.to_owned(),
                    parent: parent.to_owned(),
                    labels: labels.clone(),
                },
                Some(lease),
            );
            async move {
                Ok(SnapshotsClient::new(ch)
                    .prepare(req)
                    .await?
                    .into_inner()
                    .mounts)
            }
        })
    }

    fn commit(
        &self,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: &HashMap<String, String>,
        lease: &AsciiMetadataValue,
    ) -> Result<()> {
        self.rpc
            .call(&format!("committing snapshot {name:?}"), |ch| {
                let req = self.rpc.request(
                    CommitSnapshotRequest {
                        snapshotter: snapshotter.to_owned(),
                        name: name.to_owned(),
                        key: key.to_owned(),
                        labels: labels.clone(),
                    },
                    Some(lease),
                );
                async move {
                    SnapshotsClient::new(ch).commit(req).await?;
                    Ok(())
                }
            })
    }

    /// Apply the layer `layer` onto `mounts` with containerd's diff service; the digest of
    /// the uncompressed tar it applied.
    fn apply(&self, layer: &crate::backend::Layer, mounts: Vec<Mount>) -> Result<Digest> {
        let applied = self
            .rpc
            .call(&format!("applying layer {}", layer.digest), |ch| {
                let req = self.rpc.request(
                    ApplyRequest {
                        diff: Some(Descriptor {
                            media_type: layer.media_type.clone(),
                            digest: layer.digest.to_string(),
                            size: i64::try_from(layer.size).unwrap_or(i64::MAX),
                            ..Default::default()
                        }),
                        mounts: mounts.clone(),
                        ..Default::default()
                    },
                    None,
                );
                async move { Ok(DiffClient::new(ch).apply(req).await?.into_inner().applied) }
            })?;
        let applied = applied.ok_or_else(|| {
            Error::internal(format!(
                "applying layer {}: containerd sent no descriptor",
                layer.digest
            ))
        })?;
        Digest::parse(&applied.digest)
    }

    /// Delete lease `id`; with `sync`, containerd collects garbage before it answers.
    fn delete_lease_with(&self, id: &str, sync: bool) -> Result<()> {
        self.rpc.call(&format!("deleting lease {id:?}"), |ch| {
            let req = self.rpc.request(
                DeleteRequest {
                    id: id.to_owned(),
                    sync,
                },
                None,
            );
            async move {
                LeasesClient::new(ch).delete(req).await?;
                Ok(())
            }
        })
    }

    /// The request that creates lease `id` with `labels`.
    fn lease_request(
        &self,
        id: &str,
        labels: HashMap<String, String>,
    ) -> containerd_client::tonic::Request<CreateRequest> {
        self.rpc.request(
            CreateRequest {
                id: id.to_owned(),
                labels,
            },
            None,
        )
    }

    fn create_lease_with(&self, id: &str, labels: HashMap<String, String>) -> Result<()> {
        self.rpc.call(&format!("creating lease {id:?}"), |ch| {
            let req = self.lease_request(id, labels.clone());
            async move {
                LeasesClient::new(ch).create(req).await?;
                Ok(())
            }
        })
    }
}

/// containerd's mounts as the engine's.
fn mount_specs(what: &str, mounts: Vec<Mount>) -> Result<Vec<MountSpec>> {
    mounts
        .into_iter()
        .map(|m| {
            // containerd 2.x may ask for a mount at a sub path of the previous one; image
            // volumes never need it and the engine mounts everything at the target.
            if !m.target.is_empty() {
                return Err(Error::precondition(format!(
                    "{what}: containerd returned a {} mount with target {:?}, which imv does not support",
                    m.r#type, m.target
                )));
            }
            Ok(MountSpec {
                kind: m.r#type,
                source: m.source,
                options: m.options,
            })
        })
        .collect()
}

impl Backend for ContainerdBackend {
    fn name(&self) -> &'static str {
        "containerd"
    }

    fn create_lease(&self, id: &str) -> Result<()> {
        self.create_lease_with(id, HashMap::new())
    }

    fn start_create_lease(&self, id: &str) -> Box<dyn FnOnce() -> Result<()> + Send> {
        let req = self.lease_request(id, HashMap::new());
        let started = self
            .rpc
            .start(format!("creating lease {id:?}"), |ch| async move {
                LeasesClient::new(ch).create(req).await?;
                Ok(())
            });
        match started {
            Ok(rx) => Box::new(move || rpc::answer(&rx)),
            Err(e) => Box::new(move || Err(e)),
        }
    }

    fn delete_lease(&self, id: &str) -> Result<()> {
        // The views a cleanup is still removing go first, so that release returns with them
        // gone, and the config labels still being set, so that no layer the lease held is
        // left unrooted. Synchronous: containerd collects what only this lease kept before
        // answering, so the sandbox's views are gone when release returns (as with the
        // local backend).
        self.wait_for_background(None);
        self.delete_lease_with(id, true)
    }

    fn lease_snapshots(&self, id: &str) -> Result<Vec<LeasedSnapshot>> {
        let resources = self
            .rpc
            .call(&format!("listing the resources of lease {id:?}"), |ch| {
                let req = self
                    .rpc
                    .request(ListResourcesRequest { id: id.to_owned() }, None);
                async move {
                    let mut client = LeasesClient::new(ch).max_decoding_message_size(MAX_MESSAGE);
                    Ok(client.list_resources(req).await?.into_inner().resources)
                }
            })?;
        // containerd records every snapshot made under a lease as a resource of type
        // `snapshots/<snapshotter>` (its metadata store does it, whoever made the
        // snapshot); content and ingests are other types.
        Ok(resources
            .into_iter()
            .filter_map(|r| {
                let snapshotter = r.r#type.strip_prefix("snapshots/")?;
                Some(LeasedSnapshot {
                    snapshotter: snapshotter.to_owned(),
                    key: r.id,
                })
            })
            .collect())
    }

    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage> {
        crate::backend::resolve::resolve(self, reference, platform)
    }

    fn unpack(
        &self,
        image: &ResolvedImage,
        snapshotter: &str,
        lease: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<()> {
        unpack::unpack(self, image, snapshotter, lease, progress)
    }

    fn is_unpacked(&self, image: &ResolvedImage, snapshotter: &str, leased: bool) -> Result<bool> {
        unpack::is_unpacked(self, image, snapshotter, leased)
    }

    fn view(
        &self,
        snapshotter: &str,
        key: &str,
        parent: Option<&Digest>,
        lease: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<MountSpec>> {
        let lease = Rpc::lease(lease)?;
        let labels: HashMap<String, String> = labels.into_iter().collect();
        let what = format!("view {key:?} in snapshotter {snapshotter:?}");
        // A cleanup's background removal of this key would otherwise race the new view.
        self.wait_for_background(Some(key));
        let result = self.rpc.call(&what, |ch| {
            let req = self.rpc.request(
                ViewSnapshotRequest {
                    snapshotter: snapshotter.to_owned(),
                    key: key.to_owned(),
                    parent: parent.map(|p| p.to_string()).unwrap_or_default(),
                    labels: labels.clone(),
                },
                Some(&lease),
            );
            async move {
                Ok(SnapshotsClient::new(ch)
                    .view(req)
                    .await?
                    .into_inner()
                    .mounts)
            }
        });
        self.send_deferred_labels();
        match result {
            Ok(mounts) => {
                let mounts = mount_specs(&what, mounts)?;
                // A remapped view mounts otherwise than its parent's other views.
                let remapped = labels.contains_key(LABEL_UID_MAPPING);
                if let (Some(parent), false) = (parent, remapped) {
                    self.view_mounts.saw(snapshotter, parent, &mounts);
                }
                Ok(mounts)
            }
            Err(e) => {
                if let (true, Some(parent)) = (e.is_not_found(), parent) {
                    // The parent (or the lease) is gone: unpack must look again.
                    self.set_unpacked(snapshotter, parent, false);
                }
                Err(e)
            }
        }
    }

    fn check_remap(&self, snapshotter: &str) -> Result<()> {
        self.remaps.check(self, snapshotter)
    }

    fn known_view_mounts(
        &self,
        snapshotter: &str,
        parent: Option<&Digest>,
    ) -> Option<Vec<MountSpec>> {
        let parent = parent?;
        if !self.known_unpacked(snapshotter, parent) {
            return None;
        }
        self.view_mounts.known(snapshotter, parent)
    }

    fn forget_view_mounts(&self, snapshotter: &str, parent: Option<&Digest>) {
        if let Some(parent) = parent {
            self.view_mounts.failed(snapshotter, parent);
            // The layers may be gone: unpack must look again too.
            self.set_unpacked(snapshotter, parent, false);
        }
    }

    fn mounts(&self, snapshotter: &str, key: &str) -> Result<Vec<MountSpec>> {
        let what = format!("mounts of snapshot {key:?} in snapshotter {snapshotter:?}");
        self.wait_for_background(Some(key));
        let mounts = self.rpc.call(&what, |ch| {
            let req = self.rpc.request(
                MountsRequest {
                    snapshotter: snapshotter.to_owned(),
                    key: key.to_owned(),
                },
                None,
            );
            async move {
                Ok(SnapshotsClient::new(ch)
                    .mounts(req)
                    .await?
                    .into_inner()
                    .mounts)
            }
        })?;
        mount_specs(&what, mounts)
    }

    fn view_info(&self, snapshotter: &str, key: &str) -> Result<ViewInfo> {
        let info = self.stat(snapshotter, key)?.ok_or_else(|| {
            Error::not_found(format!("snapshot {key:?} in snapshotter {snapshotter:?}"))
        })?;
        let parent = if info.parent.is_empty() {
            None
        } else {
            Some(Digest::parse(&info.parent)?)
        };
        Ok(ViewInfo {
            key: key.to_owned(),
            parent,
            labels: info.labels.into_iter().collect(),
        })
    }

    fn remove(&self, snapshotter: &str, key: &str) -> Result<()> {
        self.rpc.call(
            &format!("removing snapshot {key:?} from snapshotter {snapshotter:?}"),
            |ch| {
                let req = self.rpc.request(
                    RemoveSnapshotRequest {
                        snapshotter: snapshotter.to_owned(),
                        key: key.to_owned(),
                    },
                    None,
                );
                async move {
                    SnapshotsClient::new(ch).remove(req).await?;
                    Ok(())
                }
            },
        )
    }

    fn remove_soon(&self, snapshotter: &str, key: &str) -> Result<()> {
        // Removing a view is two metadata commits in containerd (its own and the
        // snapshotter's), each an fsync: most of a sandbox stop's time. Nothing needs the
        // view gone before the call returns, so it goes in the background: a view of the
        // same key, a lease deletion and this backend's drop wait for it, and if it fails
        // the sandbox's lease still holds the view until release collects it.
        let req = self.rpc.request(
            RemoveSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                key: key.to_owned(),
            },
            None,
        );
        self.in_background(
            key.to_owned(),
            format!("removing snapshot {key:?} from snapshotter {snapshotter:?}"),
            "removing a view in the background failed; the sandbox's lease keeps it until release",
            |ch| async move {
                SnapshotsClient::new(ch).remove(req).await?;
                Ok(())
            },
        )
    }

    fn images(&self) -> Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        for image in self.list_images()? {
            let Some(target) = image.target else {
                continue;
            };
            let Ok(digest) = Digest::parse(&target.digest) else {
                tracing::warn!(image = %image.name, digest = %target.digest, "skipping an image with a digest imv cannot read");
                continue;
            };
            out.push(ImageRecord {
                name: image.name,
                digest,
                media_type: target.media_type,
                size: u64::try_from(target.size).unwrap_or(0),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

impl Drop for ContainerdBackend {
    fn drop(&mut self) {
        // Background calls get their chance to finish (a command that exits right after a
        // cleanup must not leave views to the lease, nor layers unrooted).
        self.wait_for_background(None);
    }
}
