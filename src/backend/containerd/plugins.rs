//! What containerd says of its plugins (its introspection service): where the content
//! store is (see `local_content`), and whether a snapshotter can make idmapped views.

use std::collections::HashSet;
use std::sync::Mutex;

use super::api::containerd::services::introspection::v1::introspection_client::IntrospectionClient;
use super::api::containerd::services::introspection::v1::{Plugin, PluginsRequest};

use super::ContainerdBackend;
use crate::error::{Error, Result};
use crate::locks::lock;

/// The type of containerd's snapshotter plugins.
const SNAPSHOTTER_PLUGIN_TYPE: &str = "io.containerd.snapshotter.v1";

/// The capability a snapshotter declares when it honours the remap labels with idmapped
/// mounts (containerd's `capaRemapIDs`; overlayfs in containerd 2 on a kernel that can
/// idmap its layers). `only-remap-ids` alone says the opposite: it would refuse.
const REMAP_IDS: &str = "remap-ids";

/// The plugins `filter` selects (containerd's filter syntax, e.g. `type==...`).
pub(super) fn list(be: &ContainerdBackend, what: &str, filter: String) -> Result<Vec<Plugin>> {
    be.rpc.call(what, |ch| {
        let req = be.rpc.request(
            PluginsRequest {
                filters: vec![filter.clone()],
            },
            None,
        );
        async move {
            Ok(IntrospectionClient::new(ch)
                .plugins(req)
                .await?
                .into_inner()
                .plugins)
        }
    })
}

/// Snapshotters found to declare [`REMAP_IDS`]. A plugin's capabilities are fixed while
/// containerd runs; a "no" is asked again (a restarted containerd may say otherwise).
#[derive(Default)]
pub(super) struct RemapMemo {
    remapping: Mutex<HashSet<String>>,
}

impl RemapMemo {
    /// Ok when `snapshotter` declares [`REMAP_IDS`]; FailedPrecondition saying what it
    /// declares otherwise, InvalidArgument when containerd has no such snapshotter.
    pub(super) fn check(&self, be: &ContainerdBackend, snapshotter: &str) -> Result<()> {
        let remapping = || lock(&self.remapping);
        if remapping().contains(snapshotter) {
            return Ok(());
        }
        let plugins = list(
            be,
            &format!("asking containerd what snapshotter {snapshotter:?} can do"),
            format!("type=={SNAPSHOTTER_PLUGIN_TYPE}"),
        )?;
        let Some(plugin) = plugins
            .iter()
            .find(|p| p.r#type == SNAPSHOTTER_PLUGIN_TYPE && p.id == snapshotter)
        else {
            return Err(Error::invalid(format!(
                "snapshotter {snapshotter:?}: containerd has no such snapshotter"
            )));
        };
        if let Some(e) = &plugin.init_err {
            return Err(Error::precondition(format!(
                "snapshotter {snapshotter:?} did not start in containerd: {}",
                e.message
            )));
        }
        if !plugin.capabilities.iter().any(|c| c == REMAP_IDS) {
            return Err(Error::precondition(format!(
                "snapshotter {snapshotter:?} cannot make idmapped views for a pod in a user \
                 namespace: containerd lists its capabilities as {:?}, without {REMAP_IDS:?} \
                 (overlayfs has it from containerd 2.0, on a kernel that idmaps overlay layers)",
                plugin.capabilities
            )));
        }
        remapping().insert(snapshotter.to_owned());
        Ok(())
    }
}
