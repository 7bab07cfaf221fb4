//! The typed calls to containerd's gRPC services (images, content, snapshots, diff and
//! leases), each a small wrapper around one request, and what they share.

use std::collections::{BTreeMap, HashMap};

use tonic::metadata::AsciiMetadataValue;

use super::api::containerd::services::content::v1::{
    content_client::ContentClient, Info as ContentInfo, InfoRequest, ReadContentRequest,
    UpdateRequest,
};
use super::api::containerd::services::diff::v1::{diff_client::DiffClient, ApplyRequest};
use super::api::containerd::services::images::v1::{
    images_client::ImagesClient, GetImageRequest, Image, ListImagesRequest,
};
use super::api::containerd::services::leases::v1::{
    leases_client::LeasesClient, CreateRequest, DeleteRequest,
};
use super::api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use super::api::containerd::services::snapshots::v1::{
    CommitSnapshotRequest, Info as SnapshotInfo, PrepareSnapshotRequest, StatSnapshotRequest,
};
use super::api::containerd::types::{Descriptor, Mount};

use super::rpc::MAX_MESSAGE;
use super::{local_content, ContainerdBackend};
use crate::backend::TarLayer;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::mount::MountSpec;

impl ContainerdBackend {
    // --- images -------------------------------------------------------------------------

    /// The image named exactly `name`, if there is one.
    pub(super) fn get_image(&self, name: &str) -> Result<Option<Image>> {
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

    pub(super) fn list_images(&self) -> Result<Vec<Image>> {
        self.rpc.call("listing images", |ch| {
            let req = self.rpc.request(ListImagesRequest::default(), None);
            async move {
                let mut client = ImagesClient::new(ch).max_decoding_message_size(MAX_MESSAGE);
                Ok(client.list(req).await?.into_inner().images)
            }
        })
    }

    // --- content ------------------------------------------------------------------------

    /// What the content store knows of blob `digest`; `None` when it does not have it.
    pub(super) fn content_info(&self, digest: &Digest) -> Result<Option<ContentInfo>> {
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
        let data = self.read_content(&what, digest, 0, 0, max)?;
        let actual = Digest::of(&data);
        if &actual != digest {
            return Err(Error::invalid(format!(
                "{what}: content has digest {actual}"
            )));
        }
        Ok(data)
    }

    /// Blob `digest` parsed as JSON (manifests, indexes and configs are small).
    pub(super) fn read_json<T: serde::de::DeserializeOwned>(&self, digest: &Digest) -> Result<T> {
        let data = self.read_blob(digest, crate::backend::local::content::MAX_JSON_SIZE)?;
        serde_json::from_slice(&data)
            .map_err(|e| Error::invalid(format!("blob {digest}: not valid JSON: {e}")))
    }

    /// The update that sets `labels` on blob `digest`, leaving its other labels alone.
    pub(super) fn content_labels_request(
        &self,
        digest: &Digest,
        labels: &BTreeMap<String, String>,
    ) -> tonic::Request<UpdateRequest> {
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
    pub(super) fn set_content_labels(
        &self,
        digest: &Digest,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        self.rpc.call(&format!("labelling blob {digest}"), |ch| {
            let req = self.content_labels_request(digest, labels);
            async move {
                ContentClient::new(ch).update(req).await?;
                Ok(())
            }
        })
    }

    /// At most `size` bytes of blob `digest` from `offset`, through the content service
    /// (a blob too large to read at once, not visible in the content store's directory).
    pub(super) fn read_blob_range(
        &self,
        digest: &Digest,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>> {
        let what = format!("reading blob {digest} at {offset}");
        self.read_content(&what, digest, offset, size, size)
    }

    /// `size` bytes (0: to the end) of blob `digest` from `offset`, through the content
    /// service; more than `max` bytes is an error.
    fn read_content(
        &self,
        what: &str,
        digest: &Digest,
        offset: u64,
        size: u64,
        max: u64,
    ) -> Result<Vec<u8>> {
        self.rpc.call(what, |ch| {
            let req = self.rpc.request(
                ReadContentRequest {
                    digest: digest.to_string(),
                    offset: i64::try_from(offset).unwrap_or(i64::MAX),
                    size: i64::try_from(size).unwrap_or(i64::MAX),
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
                        return Err(tonic::Status::out_of_range(format!(
                            "blob is larger than {max} bytes"
                        )));
                    }
                }
                Ok(data)
            }
        })
    }

    // --- snapshots and diff -------------------------------------------------------------

    pub(super) fn stat(&self, snapshotter: &str, key: &str) -> Result<Option<SnapshotInfo>> {
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

    pub(super) fn prepare(
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

    pub(super) fn commit(
        &self,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: &HashMap<String, String>,
        lease: &AsciiMetadataValue,
    ) -> Result<()> {
        self.rpc
            .call(&format!("committing snapshot {name:?}"), |ch| {
                let req = self.commit_request(snapshotter, name, key, labels, lease);
                async move {
                    SnapshotsClient::new(ch).commit(req).await?;
                    Ok(())
                }
            })
    }

    /// The request that commits the active snapshot `key` as `name`, under `lease`.
    pub(super) fn commit_request(
        &self,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: &HashMap<String, String>,
        lease: &AsciiMetadataValue,
    ) -> tonic::Request<CommitSnapshotRequest> {
        self.rpc.request(
            CommitSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                name: name.to_owned(),
                key: key.to_owned(),
                labels: labels.clone(),
            },
            Some(lease),
        )
    }

    /// Apply the layer `layer` onto `mounts` with containerd's diff service; the digest of
    /// the uncompressed tar it applied.
    pub(super) fn apply(&self, layer: &TarLayer, mounts: Vec<Mount>) -> Result<Digest> {
        let applied = self
            .rpc
            .call(&format!("applying layer {}", layer.digest), |ch| {
                let req = self.rpc.request(
                    ApplyRequest {
                        diff: Some(Descriptor {
                            media_type: differ_media_type(layer).to_owned(),
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
            })
            .map_err(bad_content_is_invalid)?;
        let applied = applied.ok_or_else(|| {
            Error::internal(format!(
                "applying layer {}: containerd sent no descriptor",
                layer.digest
            ))
        })?;
        Digest::parse(&applied.digest)
    }

    // --- leases -------------------------------------------------------------------------

    /// Delete lease `id`; with `sync`, containerd collects garbage before it answers.
    pub(super) fn delete_lease_with(&self, id: &str, sync: bool) -> Result<()> {
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
    pub(super) fn lease_request(
        &self,
        id: &str,
        labels: HashMap<String, String>,
    ) -> tonic::Request<CreateRequest> {
        self.rpc.request(
            CreateRequest {
                id: id.to_owned(),
                labels,
            },
            None,
        )
    }

    pub(super) fn create_lease_with(
        &self,
        id: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        self.rpc.call(&format!("creating lease {id:?}"), |ch| {
            let req = self.lease_request(id, labels.clone());
            async move {
                LeasesClient::new(ch).create(req).await?;
                Ok(())
            }
        })
    }
}

/// The media type containerd's differ is told for `layer`. An artifact's tar layer has a
/// media type of its own (ModelPack's `...weight.v1.tar+gzip`, say), which the differ
/// refuses as unknown; what it needs is the compression, which the suffix says.
fn differ_media_type(layer: &TarLayer) -> &str {
    let media_type = layer.media_type.as_str();
    if layer.diff_id.is_some() {
        media_type
    } else if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
        crate::media_type::OCI_LAYER_GZIP
    } else if media_type.ends_with("+zstd") {
        crate::media_type::OCI_LAYER_ZSTD
    } else {
        crate::media_type::OCI_LAYER
    }
}

/// A failure of containerd's differ that says the layer's bytes are bad (Go's archive/tar,
/// gzip or zstd readers, a stream cut short), which containerd answers as Unknown, as the
/// InvalidArgument imv's own unpacker gives for the same layer.
fn bad_content_is_invalid(e: Error) -> Error {
    let bad = [
        "archive/tar: ",
        "gzip: ",
        "zstd: ",
        "flate: ",
        "unexpected EOF",
    ];
    if e.kind() == crate::error::ErrorKind::Internal && bad.iter().any(|b| e.message().contains(b))
    {
        e.with_kind(crate::error::ErrorKind::InvalidArgument)
    } else {
        e
    }
}

/// containerd's mounts as the engine's.
pub(super) fn mount_specs(what: &str, mounts: Vec<Mount>) -> Result<Vec<MountSpec>> {
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
