//! The job: mutate a container's mounts (mount image volumes, set `host_path`), clean up
//! a sandbox, release its lease. See DESIGN.md "The job, step by step".

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::backend::local::LocalBackend;
use crate::backend::{Backend, NoProgress, Progress};
use crate::cri::Mount;
use crate::digest::Digest;
use crate::error::Result;
use crate::platform::Platform;

/// Where imv keeps things.
#[derive(Clone)]
pub struct Config {
    /// Persistent data of the embedded store (content, snapshots, database).
    /// Default `/var/lib/imv`.
    pub root: PathBuf,
    /// Runtime state: the mounted volumes live under `<state>/image-volumes`.
    /// Default `/run/imv`.
    pub state: PathBuf,
    /// Where progress of long work goes.
    pub progress: Arc<dyn Progress>,
}

impl Config {
    /// A config with the given root and state directories and no progress reporting.
    pub fn new(root: impl Into<PathBuf>, state: impl Into<PathBuf>) -> Self {
        Config { root: root.into(), state: state.into(), progress: Arc::new(NoProgress) }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new("/var/lib/imv", "/run/imv")
    }
}

/// One mounted (or half-made) image volume, as found under the state directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VolumeInfo {
    /// The sandbox it belongs to.
    pub sandbox_id: String,
    /// The volume's directory: `<state>/image-volumes/<sandbox>/<manifest hex>`.
    pub target: PathBuf,
    /// The manifest it was made from.
    pub manifest: Digest,
    /// The image name it was requested by, when the backend knows it.
    pub image: Option<String>,
    /// Whether the target is a mountpoint right now.
    pub mounted: bool,
}

/// Image volumes over one backend. Cheap to share between threads (`&self` everywhere).
pub struct ImageVolumes {
    _private: (),
}

impl ImageVolumes {
    /// Open the embedded (`local`) store under `config.root`, volumes under `config.state`.
    pub fn open(config: Config) -> Result<Self> {
        let _ = config;
        todo!()
    }

    /// Image volumes over any backend.
    pub fn with_backend(state: PathBuf, backend: Arc<dyn Backend>, progress: Arc<dyn Progress>) -> Result<Self> {
        let _ = (state, backend, progress);
        todo!()
    }

    /// For every mount that carries an image: validate it, mount the image's volume for
    /// `sandbox_id` and set `host_path`. Other mounts are left alone. `snapshotter` empty
    /// means the default; `platform` `None` means the host's. On error, whatever this call
    /// mounted or made is undone; volumes made by earlier calls stay.
    pub fn mutate_mounts(
        &self,
        sandbox_id: &str,
        snapshotter: &str,
        platform: Option<&Platform>,
        mounts: &mut [Mount],
    ) -> Result<()> {
        let _ = (sandbox_id, snapshotter, platform, mounts);
        todo!()
    }

    /// Unmount and remove every image volume of `sandbox_id`. Idempotent.
    pub fn cleanup(&self, sandbox_id: &str, snapshotter: &str) -> Result<()> {
        let _ = (sandbox_id, snapshotter);
        todo!()
    }

    /// Drop the sandbox's lease, so what only it kept becomes garbage. NotFound-tolerant.
    pub fn release(&self, sandbox_id: &str) -> Result<()> {
        let _ = sandbox_id;
        todo!()
    }

    /// The image volumes under the state directory, sorted by sandbox then target.
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>> {
        todo!()
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        todo!()
    }

    /// The embedded store, when that is the backend (for import, rmi, gc).
    pub fn local(&self) -> Option<&LocalBackend> {
        todo!()
    }
}
