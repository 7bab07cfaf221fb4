//! A client of a running daemon with the engine's own signatures and errors, so a caller
//! (the `imv --socket` command line) can use either the same way.

use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::api;
use super::convert;
use crate::backend::GcStats;
use crate::backend::ImageRecord;
use crate::cri::Mount;
use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::status::Status;
use crate::volumes::VolumeInfo;

/// A connection to an `imv serve` daemon.
///
/// Errors carry the [`ErrorKind`](crate::ErrorKind) the daemon's engine reported (status codes are the kinds'
/// numbers); a daemon that cannot be reached, or that hung up, is Unavailable. See
/// `kind_of_code` in this module's source for codes the engine never sends.
pub struct Client {
    raw: api::ImageVolumesClient,
    socket: PathBuf,
    timeout: Option<Duration>,
}

impl Client {
    /// Connect to the daemon at `socket`. Unavailable when no daemon answers there.
    pub fn connect(socket: impl AsRef<Path>) -> Result<Client> {
        let socket = socket.as_ref().to_path_buf();
        let stream = UnixStream::connect(&socket).map_err(|e| {
            Error::unavailable(format!(
                "connecting to the imv daemon at {}: {e}",
                socket.display()
            ))
        })?;
        let raw = ttrpc::Client::new(stream.into_raw_fd()).map_err(|e| {
            Error::unavailable(format!(
                "setting up a ttrpc client on {}: {e}",
                socket.display()
            ))
        })?;
        Ok(Client {
            raw: api::ImageVolumesClient::new(raw),
            socket,
            timeout: None,
        })
    }

    /// Give every request this deadline (the daemon does not start work past it, and the
    /// client stops waiting). Default: none.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The generated client, for the wire messages themselves.
    pub fn raw(&self) -> &api::ImageVolumesClient {
        &self.raw
    }

    fn context(&self) -> ttrpc::context::Context {
        match self.timeout {
            Some(t) => ttrpc::context::with_duration(t),
            None => ttrpc::context::Context::default(),
        }
    }

    fn error(&self, e: ttrpc::Error) -> Error {
        match e {
            ttrpc::Error::RpcStatus(s) => {
                Error::new(convert::kind_of_code(s.code.value()), s.message)
            }
            other => Error::unavailable(format!(
                "the imv daemon at {}: {other}",
                self.socket.display()
            )),
        }
    }

    /// [`ImageVolumes::mutate_mounts`](crate::ImageVolumes::mutate_mounts) on the daemon:
    /// on success, the image mounts of `mounts` have `host_path` set.
    pub fn mutate_mounts(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        platform: Option<&Platform>,
        mounts: &mut [Mount],
    ) -> Result<()> {
        let options = crate::MutateOptions::default();
        self.mutate_mounts_with(sandbox_id, snapshotter, platform, &options, mounts)
            .map(drop)
    }

    /// [`ImageVolumes::mutate_mounts_with`](crate::ImageVolumes::mutate_mounts_with) on
    /// the daemon.
    pub fn mutate_mounts_with(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        platform: Option<&Platform>,
        options: &crate::MutateOptions,
        mounts: &mut [Mount],
    ) -> Result<Vec<crate::MountOutcome>> {
        let mut req = api::MutateMountsRequest::new();
        req.mount_label = options.mount_label.clone();
        req.ignore_label_without_selinux = options.ignore_label_without_selinux;
        req.sandbox_id = sandbox_id.to_string();
        req.snapshotter = snapshotter.to_string();
        req.platform = platform.map(|p| p.to_string()).unwrap_or_default();
        req.mounts = mounts.iter().map(convert::mount_to_proto).collect();
        let res = self
            .raw
            .mutate_mounts(self.context(), &req)
            .map_err(|e| self.error(e))?;
        if res.mounts.len() != mounts.len() {
            return Err(Error::internal(format!(
                "the daemon answered {} mounts for {}",
                res.mounts.len(),
                mounts.len()
            )));
        }
        let mut outcomes = Vec::new();
        for (index, (m, wire)) in mounts.iter_mut().zip(res.mounts).enumerate() {
            if m.image.is_none() {
                continue;
            }
            // The daemon takes the mappings a volume applied off the mount it answers.
            let mappings_applied = (!m.uid_mappings.is_empty() || !m.gid_mappings.is_empty())
                && wire.uidMappings.is_empty()
                && wire.gidMappings.is_empty();
            if mappings_applied {
                m.uid_mappings.clear();
                m.gid_mappings.clear();
            }
            m.host_path = wire.host_path;
            let image_ref = wire.image.into_option().unwrap_or_default().image_ref;
            if let Some(spec) = m.image.as_mut() {
                spec.image_ref.clone_from(&image_ref);
            }
            outcomes.push(crate::MountOutcome {
                index,
                host_path: m.host_path.clone().into(),
                image_ref,
                mappings_applied,
            });
        }
        Ok(outcomes)
    }

    /// [`ImageVolumes::cleanup`](crate::ImageVolumes::cleanup) on the daemon.
    pub fn cleanup(&self, sandbox_id: &str, snapshotter: &str) -> Result<()> {
        let mut req = api::CleanupRequest::new();
        req.sandbox_id = sandbox_id.to_string();
        req.snapshotter = snapshotter.to_string();
        self.raw
            .cleanup(self.context(), &req)
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// [`ImageVolumes::release`](crate::ImageVolumes::release) on the daemon.
    pub fn release(&self, sandbox_id: &str) -> Result<()> {
        let mut req = api::ReleaseRequest::new();
        req.sandbox_id = sandbox_id.to_string();
        self.raw
            .release(self.context(), &req)
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// [`ImageVolumes::volumes`](crate::ImageVolumes::volumes) on the daemon, only those of
    /// `sandbox_id` when given.
    pub fn volumes(&self, sandbox_id: Option<&str>) -> Result<Vec<VolumeInfo>> {
        let mut req = api::ListRequest::new();
        req.sandbox_id = sandbox_id.unwrap_or_default().to_string();
        let res = self
            .raw
            .list(self.context(), &req)
            .map_err(|e| self.error(e))?;
        res.volumes.iter().map(convert::volume_from_proto).collect()
    }

    /// The daemon's [`Status`].
    pub fn status(&self) -> Result<Status> {
        let res = self
            .raw
            .status(self.context(), &api::StatusRequest::new())
            .map_err(|e| self.error(e))?;
        Ok(convert::status_from_proto(&res))
    }

    /// [`ImageVolumes::import`](crate::ImageVolumes::import) on the daemon: the daemon
    /// reads `path` on its host, with its privileges. `path` is sent as given, and the
    /// daemon refuses a relative one (InvalidArgument): make it absolute first (the socket
    /// is local, so the caller's absolute path is, as a rule, the daemon's too).
    pub fn import(&self, path: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>> {
        self.import_with(path, &crate::ImportOptions::named(name))
    }

    /// [`ImageVolumes::import_with`](crate::ImageVolumes::import_with) on the daemon (see
    /// [`import`](Self::import) for the path).
    pub fn import_with(
        &self,
        path: &Path,
        options: &crate::ImportOptions,
    ) -> Result<Vec<ImageRecord>> {
        let mut req = api::ImportRequest::new();
        req.path = path
            .to_str()
            .ok_or_else(|| {
                Error::invalid(format!(
                    "import path {path:?} is not UTF-8, which the daemon's API requires"
                ))
            })?
            .to_string();
        req.name = options.name.clone().unwrap_or_default();
        req.base_name = options.base_name.clone().unwrap_or_default();
        req.tag = options.tag.clone().unwrap_or_default();
        let res = self
            .raw
            .import(self.context(), &req)
            .map_err(|e| self.error(e))?;
        res.images.iter().map(convert::image_from_proto).collect()
    }

    /// [`ImageVolumes::images`](crate::ImageVolumes::images) on the daemon.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let res = self
            .raw
            .images(self.context(), &api::ImagesRequest::new())
            .map_err(|e| self.error(e))?;
        res.images.iter().map(convert::image_from_proto).collect()
    }

    /// [`ImageVolumes::remove_image`](crate::ImageVolumes::remove_image) on the daemon.
    pub fn remove_image(&self, reference: &str) -> Result<ImageRecord> {
        let mut req = api::RemoveImageRequest::new();
        req.reference = reference.to_string();
        let res = self
            .raw
            .remove_image(self.context(), &req)
            .map_err(|e| self.error(e))?;
        let image = res.image.as_ref().ok_or_else(|| {
            Error::internal(format!(
                "the daemon removed {reference:?} but did not say which image it was"
            ))
        })?;
        convert::image_from_proto(image)
    }

    /// [`ImageVolumes::gc`](crate::ImageVolumes::gc) on the daemon.
    pub fn gc(&self) -> Result<GcStats> {
        let res = self
            .raw
            .gc(self.context(), &api::GcRequest::new())
            .map_err(|e| self.error(e))?;
        Ok(convert::gc_from_proto(&res))
    }
}
