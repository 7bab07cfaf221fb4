//! A backend in memory, for the engine's root-free tests: images, leases, layers and views
//! as the `Backend` contract describes them (NotFound, AlreadyExists where it says), each
//! layer a real directory under the test's temp dir so that a bind of it has a device and
//! an inode. Any operation can be told to fail on its next call, and every call is
//! counted, so a test says what the engine asked for, not only what it got.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::backend::{
    Backend, ImageRecord, Layer, LeasedSnapshot, Progress, ResolvedImage, TarLayer, ViewInfo,
};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::locks::lock;
use crate::mount::MountSpec;
use crate::platform::Platform;

struct View {
    lease: String,
    parent: Option<Digest>,
    mounts: Vec<MountSpec>,
    labels: BTreeMap<String, String>,
}

#[derive(Default)]
struct Store {
    images: BTreeMap<String, ResolvedImage>,
    /// Unpacked layers by chain ID: their directory, and the chain below.
    layers: BTreeMap<Digest, (PathBuf, Option<Digest>)>,
    leases: BTreeSet<String>,
    /// By (snapshotter, key).
    views: BTreeMap<(String, String), View>,
    failures: VecDeque<(&'static str, Error)>,
    calls: BTreeMap<&'static str, usize>,
    /// Whether `known_view_mounts` answers (the quick way) for unpacked parents.
    predicts_views: bool,
}

/// The fake. Operations are named as the trait's methods.
pub struct FakeBackend {
    store: Mutex<Store>,
    layers_dir: PathBuf,
}

/// An image of `layers` layers named `name`, its digests derived from the name.
pub fn image(name: &str, layers: usize) -> ResolvedImage {
    let digest = |what: &str| Digest::of(format!("{name} {what}").as_bytes());
    ResolvedImage {
        name: name.to_owned(),
        digest: digest("index"),
        manifest: digest("manifest"),
        config: digest("config"),
        artifact_type: None,
        layers: (0..layers)
            .map(|i| {
                Layer::Tar(TarLayer {
                    digest: digest(&format!("blob {i}")),
                    media_type: "application/vnd.oci.image.layer.v1.tar".to_owned(),
                    size: 1,
                    diff_id: Some(digest(&format!("diff {i}"))),
                })
            })
            .collect(),
    }
}

impl FakeBackend {
    pub fn new(layers_dir: PathBuf) -> Self {
        FakeBackend {
            store: Mutex::default(),
            layers_dir,
        }
    }

    /// Add `image` under its name and its name@digest.
    pub fn add(&self, image: &ResolvedImage) {
        let mut store = lock(&self.store);
        let pinned = format!("{}@{}", image.name, image.digest);
        store.images.insert(image.name.clone(), image.clone());
        store.images.insert(pinned, image.clone());
    }

    /// The next call of `op` fails with `error`.
    pub fn fail_next(&self, op: &'static str, error: Error) {
        lock(&self.store).failures.push_back((op, error));
    }

    /// How many times `op` was called.
    pub fn calls(&self, op: &str) -> usize {
        lock(&self.store).calls.get(op).copied().unwrap_or(0)
    }

    pub fn leases(&self) -> Vec<String> {
        lock(&self.store).leases.iter().cloned().collect()
    }

    /// The views' keys, sorted.
    pub fn views(&self) -> Vec<String> {
        let store = lock(&self.store);
        store.views.keys().map(|(_, k)| k.clone()).collect()
    }

    /// The labels of view `key`.
    pub fn labels(&self, key: &str) -> BTreeMap<String, String> {
        let store = lock(&self.store);
        let view = store.views.iter().find(|((_, k), _)| k == key);
        view.map(|(_, v)| v.labels.clone()).unwrap_or_default()
    }

    /// Delete lease `id` behind the engine's back (as `ctr leases rm` would).
    pub fn drop_lease(&self, id: &str) {
        lock(&self.store).leases.remove(id);
    }

    /// Make `known_view_mounts` answer for unpacked parents, as containerd's backend does
    /// once it has seen views of them.
    pub fn predict_views(&self) {
        lock(&self.store).predicts_views = true;
    }

    fn begin(&self, op: &'static str) -> Result<std::sync::MutexGuard<'_, Store>> {
        let mut store = lock(&self.store);
        *store.calls.entry(op).or_default() += 1;
        if let Some(i) = store.failures.iter().position(|(o, _)| *o == op) {
            let (_, e) = store.failures.remove(i).expect("found above");
            return Err(e);
        }
        Ok(store)
    }
}

/// What a view of `parent` mounts: a bind of a one-layer chain, an overlay of more, as
/// containerd's overlayfs snapshotter makes them.
fn view_mounts(store: &Store, parent: Option<&Digest>) -> Result<Vec<MountSpec>> {
    let mut dirs = Vec::new();
    let mut next = parent.cloned();
    while let Some(chain) = next {
        let Some((dir, below)) = store.layers.get(&chain) else {
            return Err(Error::not_found(format!(
                "fake: parent snapshot {chain} not found"
            )));
        };
        dirs.push(dir.to_string_lossy().into_owned());
        next = below.clone();
    }
    Ok(match &dirs[..] {
        [] => Vec::new(),
        [one] => vec![MountSpec {
            kind: "bind".to_owned(),
            source: one.clone(),
            options: vec!["ro".to_owned(), "rbind".to_owned()],
        }],
        many => vec![MountSpec {
            kind: "overlay".to_owned(),
            source: "overlay".to_owned(),
            options: vec![format!("lowerdir={}", many.join(":"))],
        }],
    })
}

impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn create_lease(&self, id: &str) -> Result<()> {
        let mut store = self.begin("create_lease")?;
        if !store.leases.insert(id.to_owned()) {
            return Err(Error::already_exists(format!("fake: lease {id:?} exists")));
        }
        Ok(())
    }

    fn delete_lease(&self, id: &str) -> Result<()> {
        let mut store = self.begin("delete_lease")?;
        if !store.leases.remove(id) {
            return Err(Error::not_found(format!("fake: lease {id:?} not found")));
        }
        Ok(())
    }

    fn lease_snapshots(&self, id: &str) -> Result<Vec<LeasedSnapshot>> {
        let store = self.begin("lease_snapshots")?;
        if !store.leases.contains(id) {
            return Err(Error::not_found(format!("fake: lease {id:?} not found")));
        }
        Ok(store
            .views
            .iter()
            .filter(|(_, v)| v.lease == id)
            .map(|((snapshotter, key), _)| LeasedSnapshot {
                snapshotter: snapshotter.clone(),
                key: key.clone(),
            })
            .collect())
    }

    fn resolve(&self, reference: &str, _platform: &Platform) -> Result<ResolvedImage> {
        let store = self.begin("resolve")?;
        store
            .images
            .get(reference)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("fake: image {reference:?} not found")))
    }

    fn is_unpacked(&self, image: &ResolvedImage, _: &str, _: bool) -> Result<bool> {
        let store = self.begin("is_unpacked")?;
        Ok(image
            .top_chain_id()
            .is_none_or(|top| store.layers.contains_key(&top)))
    }

    fn unpack(
        &self,
        image: &ResolvedImage,
        _snapshotter: &str,
        lease: Option<&str>,
        _progress: &dyn Progress,
    ) -> Result<()> {
        let mut store = self.begin("unpack")?;
        if let Some(lease) = lease.filter(|l| !store.leases.contains(*l)) {
            return Err(Error::not_found(format!("fake: lease {lease:?} not found")));
        }
        let mut below = None;
        for chain in image.chain_ids() {
            let dir = self.layers_dir.join(chain.hex());
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
            store.layers.insert(chain.clone(), (dir, below));
            below = Some(chain);
        }
        Ok(())
    }

    fn view(
        &self,
        snapshotter: &str,
        key: &str,
        parent: Option<&Digest>,
        lease: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<MountSpec>> {
        let mut store = self.begin("view")?;
        if !store.leases.contains(lease) {
            return Err(Error::not_found(format!("fake: lease {lease:?} not found")));
        }
        let id = (snapshotter.to_owned(), key.to_owned());
        if store.views.contains_key(&id) {
            return Err(Error::already_exists(format!(
                "fake: snapshot {key:?} exists"
            )));
        }
        let mut mounts = view_mounts(&store, parent)?;
        if let Some(uid) = labels.get("containerd.io/snapshot/uidmapping") {
            let gid = labels.get("containerd.io/snapshot/gidmapping").cloned();
            for m in &mut mounts {
                m.options.push(format!("uidmap={uid}"));
                m.options
                    .push(format!("gidmap={}", gid.clone().unwrap_or_default()));
            }
        }
        let view = View {
            lease: lease.to_owned(),
            parent: parent.cloned(),
            mounts: mounts.clone(),
            labels,
        };
        store.views.insert(id, view);
        Ok(mounts)
    }

    fn mounts(&self, snapshotter: &str, key: &str) -> Result<Vec<MountSpec>> {
        let store = self.begin("mounts")?;
        let id = (snapshotter.to_owned(), key.to_owned());
        store
            .views
            .get(&id)
            .map(|v| v.mounts.clone())
            .ok_or_else(|| Error::not_found(format!("fake: snapshot {key:?} not found")))
    }

    fn view_info(&self, snapshotter: &str, key: &str) -> Result<ViewInfo> {
        let store = self.begin("view_info")?;
        let id = (snapshotter.to_owned(), key.to_owned());
        let view = store
            .views
            .get(&id)
            .ok_or_else(|| Error::not_found(format!("fake: snapshot {key:?} not found")))?;
        Ok(ViewInfo {
            key: key.to_owned(),
            parent: view.parent.clone(),
            labels: view.labels.clone(),
        })
    }

    fn remove(&self, snapshotter: &str, key: &str) -> Result<()> {
        let mut store = self.begin("remove")?;
        let id = (snapshotter.to_owned(), key.to_owned());
        match store.views.remove(&id) {
            Some(_) => Ok(()),
            None => Err(Error::not_found(format!(
                "fake: snapshot {key:?} not found"
            ))),
        }
    }

    fn known_view_mounts(
        &self,
        _snapshotter: &str,
        parent: Option<&Digest>,
        _lease: &str,
    ) -> Option<Vec<MountSpec>> {
        let store = self.begin("known_view_mounts").ok()?;
        if !store.predicts_views {
            return None;
        }
        view_mounts(&store, parent).ok()
    }

    fn images(&self) -> Result<Vec<ImageRecord>> {
        let store = self.begin("images")?;
        Ok(store
            .images
            .iter()
            .filter(|(name, _)| !name.contains('@'))
            .map(|(name, image)| ImageRecord {
                name: name.clone(),
                digest: image.digest.clone(),
                media_type: "application/vnd.oci.image.index.v1+json".to_owned(),
                size: 1,
                artifact_type: None,
            })
            .collect())
    }
}
