//! Calls to containerd run in the background: views removed soon (`remove_soon`), labels
//! deferred until the next view (`label_soon`), top layers committed in flight
//! (`commit_soon`), and the waits for them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::AsciiMetadataValue;

use super::api::containerd::services::content::v1::content_client::ContentClient;
use super::api::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use super::{test_hooks, ContainerdBackend};
use crate::digest::Digest;
use crate::error::Result;
use crate::locks::lock;

/// How long a view of a key, a lease deletion or the backend's drop waits for background
/// calls (each is one call to containerd: milliseconds, unless containerd hangs).
const BACKGROUND_WAIT: Duration = Duration::from_secs(10);

impl ContainerdBackend {
    /// Wait for background calls on `key` (`None`: on every key, deferred labels sent
    /// first).
    pub(super) fn wait_for_background(&self, key: Option<&str>) {
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
    pub(super) fn in_background<F, Fut>(
        &self,
        key: String,
        what: String,
        failed: &'static str,
        make: F,
    ) -> Result<()>
    where
        F: FnOnce(tonic::transport::Channel) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), tonic::Status>> + Send + 'static,
    {
        self.in_background_then(key, what, failed, make, |_| {})
    }

    /// [`in_background`](Self::in_background), and `then` told whether the call
    /// succeeded once it is done (before those waiting for `key` go on). Not run when the
    /// call cannot start (an error then).
    fn in_background_then<F, Fut, T>(
        &self,
        key: String,
        what: String,
        failed: &'static str,
        make: F,
        then: T,
    ) -> Result<()>
    where
        F: FnOnce(tonic::transport::Channel) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), tonic::Status>> + Send + 'static,
        T: FnOnce(bool) + Send + 'static,
    {
        let background = Arc::clone(&self.background);
        background.begin(&key);
        let key_done = key.clone();
        let started = self.rpc.spawn(what, make, move |outcome| {
            match &outcome {
                Err(e) if !e.is_not_found() => {
                    tracing::warn!(key = %key_done, error = %e, "{failed}")
                }
                _ => {}
            }
            then(outcome.is_ok());
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
    pub(super) fn label_soon(&self, digest: &Digest, labels: &BTreeMap<String, String>) {
        lock(&self.deferred_labels).push((digest.clone(), labels.clone()));
    }

    /// Send the labels `label_soon` deferred, in the background.
    pub(super) fn send_deferred_labels(&self) {
        let deferred = std::mem::take(&mut *lock(&self.deferred_labels));
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

    /// Commit the top layer of an image in the background (see unpack.rs, "the top layer's
    /// commit"): once committed, the image whose top chain is `name` is noted unpacked.
    /// Whatever needs the snapshot committed waits for it (`wait_for_commit`).
    pub(super) fn commit_soon(
        &self,
        snapshotter: &str,
        name: &Digest,
        key: &str,
        labels: &HashMap<String, String>,
        lease: &AsciiMetadataValue,
    ) -> Result<()> {
        let req = self.commit_request(
            snapshotter,
            &test_hooks::commit_name(name, key),
            key,
            labels,
            lease,
        );
        let unpacked = Arc::clone(&self.unpacked);
        let committing = Arc::clone(&self.committing);
        let view_mounts = Arc::clone(&self.view_mounts);
        let image = (snapshotter.to_owned(), name.clone());
        let lease_id = lease.to_str().unwrap_or_default().to_owned();
        lock(&committing).insert(image.clone(), lease_id);
        let started = self.in_background_then(
            commit_key(snapshotter, &name.to_string()),
            format!("committing snapshot {name:?}"),
            "committing an image's top layer in the background failed; its volume stays \
             mounted from the extraction snapshot, which the sandbox's lease keeps",
            |ch| async move {
                SnapshotsClient::new(ch).commit(req).await?;
                Ok(())
            },
            {
                let image = image.clone();
                move |committed| {
                    if committed {
                        lock(&unpacked).insert(image.clone());
                    } else {
                        // What the extraction predicted is no view's: the layer is not
                        // committed from it (and one committed by someone else meanwhile
                        // is in other directories). Forgotten before anyone waiting for
                        // this commit goes on, so no other sandbox mounts the extraction,
                        // which only this lease holds.
                        view_mounts.forget(&image.0, &image.1);
                    }
                    lock(&committing).remove(&image);
                }
            },
        );
        if started.is_err() {
            lock(&self.committing).remove(&image);
        }
        started
    }

    /// The lease the top layer `top` was extracted under, while it is being committed in
    /// the background.
    pub(super) fn committing_under(&self, snapshotter: &str, top: &Digest) -> Option<String> {
        lock(&self.committing)
            .get(&(snapshotter.to_owned(), top.clone()))
            .cloned()
    }

    /// Wait for the background commit of snapshot `name` (`commit_soon`), if one runs.
    pub(super) fn wait_for_commit(&self, snapshotter: &str, name: &str) {
        self.wait_for_background(Some(&commit_key(snapshotter, name)));
    }
}

/// The background key of the commit of snapshot `name` (see `commit_soon`).
fn commit_key(snapshotter: &str, name: &str) -> String {
    format!("commit:{snapshotter}/{name}")
}
