//! A map from volume paths, ordered by their bytes, so that everything of one sandbox is
//! one range (`<state>/image-volumes/<sandbox>/...`): a cleanup forgets its volumes in
//! O(log n) whatever the number of other volumes, and a lookup compares bytes rather than
//! path components.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub(super) struct PathMap<V>(BTreeMap<Vec<u8>, V>);

impl<V> Default for PathMap<V> {
    fn default() -> Self {
        PathMap(BTreeMap::new())
    }
}

fn key(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

impl<V> PathMap<V> {
    pub fn get(&self, path: &Path) -> Option<&V> {
        self.0.get(key(path))
    }

    pub fn insert(&mut self, path: PathBuf, value: V) {
        self.0.insert(key(&path).to_vec(), value);
    }

    pub fn remove(&mut self, path: &Path) -> Option<V> {
        self.0.remove(key(path))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Remove `dir` and every path under it.
    pub fn remove_under(&mut self, dir: &Path) {
        self.remove(dir);
        let mut prefix = key(dir).to_vec();
        prefix.push(b'/');
        let keys: Vec<Vec<u8>> = self
            .0
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.0.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_under_takes_one_sandbox_only() {
        let mut m = PathMap::default();
        for p in [
            "/s/v/a/1",
            "/s/v/a/2",
            "/s/v/a1/1",
            "/s/v/a-/1",
            "/s/v/b/1",
            "/s/v/a",
        ] {
            m.insert(PathBuf::from(p), ());
        }
        m.remove_under(Path::new("/s/v/a"));
        let left: Vec<String> =
            m.0.keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
        assert_eq!(left, ["/s/v/a-/1", "/s/v/a1/1", "/s/v/b/1"]);
    }
}
