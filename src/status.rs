//! What `imv status` shows: how much a store holds and who answers, the same from a
//! daemon (the Status RPC, src/service/) as from the store on this machine.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::Result;
use crate::volumes::ImageVolumes;

/// What a daemon (or a local store) is and how much it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The imv version that answers.
    pub version: String,
    /// The backend's name (`local`, `containerd`).
    pub backend: String,
    /// The persistent store, when the backend keeps one on this machine.
    pub root: Option<PathBuf>,
    /// The state directory; volumes live under `<state>/image-volumes`.
    pub state: PathBuf,
    /// Image volumes found under the state directory.
    pub volumes: u32,
    /// How many of them are mounted right now.
    pub mounted: u32,
    /// Sandboxes with at least one image volume.
    pub sandboxes: u32,
    /// Requests being served right now, this one included (0 for a local store).
    pub requests_in_flight: u32,
}

impl ImageVolumes {
    /// What this handle is and how much its state directory holds, with
    /// `requests_in_flight` requests being served (by a daemon; 0 in process).
    pub fn status(&self, requests_in_flight: usize) -> Result<Status> {
        let volumes = self;
        let list = volumes.volumes()?;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let dir = volumes.volumes_dir();
        Ok(Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            backend: volumes.backend().name().to_string(),
            root: volumes.local().map(|l| l.root().to_path_buf()),
            state: dir.parent().map(PathBuf::from).unwrap_or(dir),
            volumes: count(list.len()),
            mounted: count(list.iter().filter(|v| v.mounted).count()),
            sandboxes: count(
                list.iter()
                    .map(|v| v.sandbox_id.as_str())
                    .collect::<BTreeSet<_>>()
                    .len(),
            ),
            requests_in_flight: count(requests_in_flight),
        })
    }
}
