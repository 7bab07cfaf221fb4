//! What an engine is opened with, and what a mutate asks beyond CRI's mounts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{NoProgress, Progress};
use crate::events::VolumeEvents;

/// Which store images, snapshots and leases live in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BackendConfig {
    /// The embedded store under [`Config::root`] (no daemon).
    #[default]
    Local,
    /// A containerd daemon, over its gRPC API; [`Config::root`] is not used.
    Containerd {
        /// Its socket, e.g. [`containerd::DEFAULT_ADDRESS`](crate::backend::containerd::DEFAULT_ADDRESS).
        address: PathBuf,
        /// The namespace to work in; the CRI plugin's is `k8s.io`.
        namespace: String,
    },
}

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
    /// The store: the embedded one (default) or containerd.
    pub backend: BackendConfig,
    /// How long opening the embedded store waits while another process has it (its
    /// database admits one process at a time); default [`DEFAULT_LOCK_TIMEOUT`]. Handles of
    /// one process on one root share the store and never wait for each other.
    pub lock_timeout: Duration,
    /// Where to tell what happened to volumes (mounted, taken over after a restart,
    /// cleaned up, released); none by default. `imv serve` publishes them to containerd.
    pub events: Option<Arc<dyn VolumeEvents>>,
}

/// How long opening the embedded store waits for another process by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

impl Config {
    /// A config with the given root and state directories and no progress reporting.
    pub fn new(root: impl Into<PathBuf>, state: impl Into<PathBuf>) -> Self {
        Config {
            root: root.into(),
            state: state.into(),
            progress: Arc::new(NoProgress),
            backend: BackendConfig::Local,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            events: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new("/var/lib/imv", "/run/imv")
    }
}

/// What a mutate asks of its volumes beyond CRI's mounts (see README "SELinux labels").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MutateOptions {
    /// The SELinux context every file of the call's volumes gets (the `context=` mount
    /// option), e.g. the pod's MountLabel `system_u:object_r:container_file_t:s0:c1,c2`.
    /// Empty: none. On a host without SELinux it is FailedPrecondition, unless
    /// `ignore_label_without_selinux`.
    pub mount_label: String,
    /// With a `mount_label` on a host without SELinux: mount without the label (as
    /// containerd's relabel does nothing there) instead of failing.
    pub ignore_label_without_selinux: bool,
}
