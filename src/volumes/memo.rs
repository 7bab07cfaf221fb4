//! What the engine remembers of the volumes it mounted, to answer later calls without
//! asking the kernel or the backend again: one kind of map, one size policy.
//!
//! Keys are bytes, ordered, so that everything of one sandbox is one range (volume paths
//! are `<state>/image-volumes/<sandbox>/...`; other keys begin with the sandbox's ID): a
//! cleanup forgets its sandbox in O(log n) whatever the number of other volumes. Each memo
//! has a mutex of its own, held only inside these methods: never across another lock, a
//! backend call or a mount.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

use super::call::MountedVolume;
use super::ImageVolumes;
use crate::error::{Error, Result};
use crate::locks::lock;
use crate::mount::MountRoot;
use crate::platform::Platform;
use crate::reference;

/// Most entries a memo keeps; past that it starts afresh. A node runs a few hundred pods,
/// so a full memo means something is wrong, and forgetting only costs the checks the memo
/// saves.
pub(super) const MAX_ENTRIES: usize = 65_536;

/// A bounded map from byte keys to small values.
pub(super) struct Memo<V> {
    entries: Mutex<BTreeMap<Vec<u8>, V>>,
}

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Memo {
            entries: Mutex::default(),
        }
    }
}

/// The key of a path.
pub(super) fn path_key(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

impl<V: Clone> Memo<V> {
    pub fn get(&self, key: &[u8]) -> Option<V> {
        lock(&self.entries).get(key).cloned()
    }

    pub fn insert(&self, key: Vec<u8>, value: V) {
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(key, value);
    }

    pub fn remove(&self, key: &[u8]) {
        lock(&self.entries).remove(key);
    }

    /// Forget every key that starts with `prefix`.
    pub fn remove_prefix(&self, prefix: &[u8]) {
        let mut entries = lock(&self.entries);
        let keys: Vec<Vec<u8>> = entries
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            entries.remove(&k);
        }
    }

    /// Forget the path `dir` and every path under it.
    pub fn remove_under(&self, dir: &Path) {
        self.remove(path_key(dir));
        let mut prefix = path_key(dir).to_vec();
        prefix.push(b'/');
        self.remove_prefix(&prefix);
    }

    #[cfg(test)]
    fn keys(&self) -> Vec<String> {
        lock(&self.entries)
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }
}

/// The key of `ImageVolumes::mounted`: the sandbox (whose IDs have no NUL), the reference
/// and the platform (Debug: every field counts).
fn mounted_key(sandbox_id: &str, reference: &str, platform: &Platform) -> Vec<u8> {
    format!("{sandbox_id}\0{reference}\0{platform:?}").into_bytes()
}

impl ImageVolumes {
    /// The volume this process mounted for `reference` in `sandbox_id`, when `reference`
    /// names its image by content (a digest or an image ID, which cannot come to mean
    /// another image) and that volume is still a mountpoint.
    pub(super) fn mounted_for(
        &self,
        sandbox_id: &str,
        reference: &str,
        platform: &Platform,
    ) -> Result<Option<MountedVolume>> {
        if !reference::is_content_addressed(reference) {
            return Ok(None);
        }
        match self
            .mounted
            .get(&mounted_key(sandbox_id, reference, platform))
        {
            Some(v) if self.known_mount(&v.target)? => Ok(Some(v)),
            _ => Ok(None),
        }
    }

    /// Remember the volume mounted for `reference` (see `mounted_for`).
    pub(super) fn remember_mounted(
        &self,
        sandbox_id: &str,
        reference: &str,
        platform: &Platform,
        volume: MountedVolume,
    ) {
        if reference::is_content_addressed(reference) {
            let key = mounted_key(sandbox_id, reference, platform);
            self.mounted.insert(key, volume);
        }
    }

    /// Forget everything remembered of the sandbox's volumes.
    pub(super) fn forget_mounted(&self, sandbox_id: &str) {
        self.mounted
            .remove_prefix(format!("{sandbox_id}\0").as_bytes());
        let dir = self.layout.sandbox_dir(sandbox_id);
        self.mount_ids.remove_under(&dir);
        self.shapes.remove_under(&dir);
    }

    /// Note the mount ID of the volume just mounted at `target`.
    pub(super) fn remember_mount(&self, target: &Path) -> Result<()> {
        let Some(root) = self.mount_table.mount_root(target)? else {
            return Err(Error::internal(format!(
                "{} is no mountpoint right after mounting it",
                target.display()
            )));
        };
        self.note_mount_id(target, root);
        Ok(())
    }

    /// Remember that the mount `root` at `target` is a volume of this process's.
    pub(super) fn note_mount_id(&self, target: &Path, root: MountRoot) {
        self.mount_ids.insert(path_key(target).to_vec(), root);
    }

    /// Whether `target` is still the mount this process made or checked there.
    pub(super) fn known_mount(&self, target: &Path) -> Result<bool> {
        let Some(root) = self.mount_table.mount_root(target)? else {
            return Ok(false);
        };
        Ok(self.mount_ids.get(path_key(target)) == Some(root))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn remove_under_takes_one_sandbox_only() {
        let m = Memo::default();
        for p in [
            "/s/v/a/1",
            "/s/v/a/2",
            "/s/v/a1/1",
            "/s/v/a-/1",
            "/s/v/b/1",
            "/s/v/a",
        ] {
            m.insert(path_key(&PathBuf::from(p)).to_vec(), ());
        }
        m.remove_under(Path::new("/s/v/a"));
        assert_eq!(m.keys(), ["/s/v/a-/1", "/s/v/a1/1", "/s/v/b/1"]);
    }

    #[test]
    fn remove_prefix_takes_exactly_the_prefixed_keys() {
        let m = Memo::default();
        for k in ["sb\0ref\0p", "sb\0ref2\0p", "sb2\0ref\0p", "sa\0x"] {
            m.insert(k.as_bytes().to_vec(), 1);
        }
        m.remove_prefix(b"sb\0");
        assert_eq!(m.keys(), ["sa\0x", "sb2\0ref\0p"]);
    }

    #[test]
    fn a_full_memo_starts_afresh_but_replacing_an_entry_keeps_it() {
        let m = Memo::default();
        for i in 0..MAX_ENTRIES {
            m.insert(i.to_be_bytes().to_vec(), i);
        }
        m.insert(0usize.to_be_bytes().to_vec(), 7);
        assert_eq!(
            m.get(&1usize.to_be_bytes()),
            Some(1),
            "a replacement cleared the memo"
        );
        m.insert(b"new".to_vec(), 9);
        assert_eq!(m.keys(), ["new"]);
        assert_eq!(m.get(b"new"), Some(9));
    }
}
