//! The `Backend` trait, implemented with containerd.

use std::collections::{BTreeMap, HashMap};

use super::api::containerd::services::leases::v1::{
    leases_client::LeasesClient, ListResourcesRequest,
};
use super::api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use super::api::containerd::services::snapshots::v1::{
    MountsRequest, RemoveSnapshotRequest, ViewSnapshotRequest,
};
use super::rpc::{self, Rpc, MAX_MESSAGE};
use super::{mount_specs, unpack, ContainerdBackend};
use crate::backend::{Backend, ImageRecord, LeasedSnapshot, Progress, ResolvedImage, ViewInfo};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::mount::idmap::LABEL_UID_MAPPING;
use crate::mount::MountSpec;
use crate::platform::Platform;

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
        // A cleanup's background removal of this key would otherwise race the new view, and
        // the parent may still be being committed.
        self.wait_for_background(Some(key));
        if let Some(parent) = parent {
            self.wait_for_commit(snapshotter, &parent.to_string());
        }
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
        lease: &str,
    ) -> Option<Vec<MountSpec>> {
        let parent = parent?;
        // A parent still being committed counts only for the lease it was extracted under:
        // should the commit fail, that lease is what keeps the extraction's directories.
        if !self.known_unpacked(snapshotter, parent)
            && self.committing_under(snapshotter, parent).as_deref() != Some(lease)
        {
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
            let artifact_type =
                crate::backend::resolve::target_artifact_type(|d| self.read_json(d), &digest);
            out.push(ImageRecord {
                name: image.name,
                digest,
                media_type: target.media_type,
                size: u64::try_from(target.size).unwrap_or(0),
                artifact_type,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
