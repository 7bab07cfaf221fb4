//! Where the commands run: on the store here, or on a daemon through `--socket`.
//! Both sides have the same methods and errors, so each command is written once and its
//! output and exit codes are the same either way.

use std::path::Path;

use imv::backend::ImageRecord;
use imv::service::Client;
use imv::{
    Config, GcStats, ImageVolumes, ImportOptions, Mount, MutateOptions, Platform, Result, Status,
    VolumeInfo,
};

/// The store here, or a daemon.
pub enum Engine {
    /// The store under --root / --state, opened by this process.
    Local(Box<ImageVolumes>),
    /// The daemon on --socket.
    Remote(Client),
}

impl Engine {
    /// The daemon on `socket` when given, else the store of `config`.
    pub fn open(socket: Option<&Path>, config: Config) -> Result<Engine> {
        match socket {
            Some(socket) => Ok(Engine::Remote(Client::connect(socket)?)),
            None => Ok(Engine::Local(Box::new(ImageVolumes::open(config)?))),
        }
    }

    pub fn mutate_mounts(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        platform: Option<&Platform>,
        options: &MutateOptions,
        mounts: &mut [Mount],
    ) -> Result<()> {
        match self {
            Engine::Local(v) => {
                v.mutate_mounts_with(sandbox_id, snapshotter, platform, options, mounts)
            }
            Engine::Remote(c) => {
                c.mutate_mounts_with(sandbox_id, snapshotter, platform, options, mounts)
            }
        }
    }

    pub fn cleanup(&self, sandbox_id: &str, snapshotter: &str) -> Result<()> {
        match self {
            Engine::Local(v) => v.cleanup(sandbox_id, snapshotter),
            Engine::Remote(c) => c.cleanup(sandbox_id, snapshotter),
        }
    }

    pub fn release(&self, sandbox_id: &str) -> Result<()> {
        match self {
            Engine::Local(v) => v.release(sandbox_id),
            Engine::Remote(c) => c.release(sandbox_id),
        }
    }

    /// The volumes, only those of `sandbox_id` when given.
    pub fn volumes(&self, sandbox_id: Option<&str>) -> Result<Vec<VolumeInfo>> {
        match self {
            Engine::Local(v) => {
                let mut list = v.volumes()?;
                if let Some(sandbox) = sandbox_id {
                    list.retain(|v| v.sandbox_id == sandbox);
                }
                Ok(list)
            }
            Engine::Remote(c) => c.volumes(sandbox_id),
        }
    }

    pub fn status(&self) -> Result<Status> {
        match self {
            Engine::Local(v) => v.status(0),
            Engine::Remote(c) => c.status(),
        }
    }

    /// Import the image(s) at `path`, which must be absolute for a daemon (it reads the
    /// path on its own host, relative to nothing of ours).
    pub fn import(&self, path: &Path, options: &ImportOptions) -> Result<Vec<ImageRecord>> {
        match self {
            Engine::Local(v) => v.import_with(path, options),
            Engine::Remote(c) => c.import_with(path, options),
        }
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        match self {
            Engine::Local(v) => v.images(),
            Engine::Remote(c) => c.images(),
        }
    }

    pub fn remove_image(&self, reference: &str) -> Result<ImageRecord> {
        match self {
            Engine::Local(v) => v.remove_image(reference),
            Engine::Remote(c) => c.remove_image(reference),
        }
    }

    pub fn gc(&self) -> Result<GcStats> {
        match self {
            Engine::Local(v) => v.gc(),
            Engine::Remote(c) => c.gc(),
        }
    }
}
