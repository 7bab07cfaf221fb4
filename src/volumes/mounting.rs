//! Mounting a volume from its view's mounts: read-only always, idmapped or labelled as its
//! shape says, and cloned from a twin when one shows the same files.

use std::fs;
use std::path::Path;

use super::call::{Made, Shape};
use super::memo::path_key;
use super::ImageVolumes;
use crate::error::{Error, Result};
use crate::mount::idmap::IdMap;
use crate::mount::{selinux, MountSpec};

impl ImageVolumes {
    /// Mount a volume from `mounts` at `made.target`, idmapped when their `uidmap=` and
    /// `gidmap=` options say, as containerd mounts them (see mount/idmap.rs; an overlay's
    /// layers are staged at `StateLayout::idmap_staging`), and labelled when its shape says
    /// (see mount/selinux.rs). The mapping must be the one the volume was asked with: the
    /// view was asked for with its remap labels.
    pub(super) fn mount_volume(&self, mounts: &[MountSpec], made: &Made) -> Result<()> {
        let mut mounts = mounts.to_vec();
        let idmap = IdMap::take_from_options(&mut mounts)?;
        if idmap != made.shape.idmap {
            return Err(Error::precondition(format!(
                "{}: the volume's view mounts with {}, asked for with {}: its snapshotter does \
                 not make idmapped views as their remap labels ask, or the view was made \
                 before with other mappings",
                made.target.display(),
                describe_idmap(idmap.as_ref()),
                describe_idmap(made.shape.idmap.as_ref()),
            )));
        }
        if let Some(label) = &made.shape.label {
            let empty = self.layout.empty_lower();
            fs::create_dir_all(&empty).map_err(|e| Error::io("creating", &empty, e))?;
            mounts = selinux::labelled(mounts, label, &empty)?;
        }
        let Some(idmap) = idmap else {
            self.mount_or_clone(&mounts, &made.target)?;
            self.note_shape(&made.target, made.shape.clone());
            return Ok(());
        };
        let [spec] = &mounts[..] else {
            return Err(Error::invalid(format!(
                "an idmapped volume is made of one mount; the image's layers mount as {}",
                mounts.len()
            )));
        };
        let staging = self.layout.idmap_staging(&made.target);
        // Layers a mutate killed while staging them left attached (the volume's lock is
        // held: no other call stages for it).
        self.remove_staged(&staging)?;
        fs::create_dir_all(&staging).map_err(|e| Error::io("creating", &staging, e))?;
        let mounted = self
            .mount_table
            .mount_idmapped(spec, &made.target, &idmap, &staging);
        // Emptied by mount_idmapped; the directory and its sandbox's go (if empty).
        let _ = fs::remove_dir(&staging);
        if let Some(parent) = staging.parent() {
            let _ = fs::remove_dir(parent);
        }
        mounted?;
        self.note_shape(&made.target, made.shape.clone());
        Ok(())
    }

    /// Mount `mounts` at `target`; when they are one overlay that another volume of this
    /// process was mounted from and still is, clone that volume's mount instead
    /// (docs/design.md, "Twin volumes"): the same read-only files without a new overlay.
    fn mount_or_clone(&self, mounts: &[MountSpec], target: &Path) -> Result<()> {
        let spec = match mounts {
            [spec] if spec.kind == "overlay" => spec,
            _ => return self.mount_table.mount_all(mounts, target),
        };
        let key = format!(
            "{}\0{}\0{}",
            spec.kind,
            spec.source,
            spec.options.join("\0")
        )
        .into_bytes();
        if let Some(twin) = self.twins.get(&key) {
            if let Some(root) = self.mount_ids.get(path_key(&twin)) {
                if self.mount_table.mount_twin(&twin, &root, target)? {
                    return Ok(());
                }
            }
        }
        self.mount_table.mount_all(mounts, target)?;
        self.twins.insert(key, target.to_owned());
        Ok(())
    }

    /// Remember the shape the volume at `target` was mounted with (see `shapes`).
    fn note_shape(&self, target: &Path, shape: Shape) {
        self.shapes.insert(path_key(target).to_vec(), shape);
    }

    /// Detach the idmapped layers staged under `dir` and remove it, if it exists.
    pub(super) fn remove_staged(&self, dir: &Path) -> Result<()> {
        if !dir.exists() {
            return Ok(());
        }
        self.mount_table.unmount_recursive(dir)?;
        fs::remove_dir_all(dir).map_err(|e| Error::io("removing", dir, e))
    }
}

/// A mapping, or its absence, for messages.
pub(super) fn describe_idmap(idmap: Option<&IdMap>) -> String {
    match idmap {
        Some(m) => format!("uid mappings {:?}, gid mappings {:?}", m.uid, m.gid),
        None => "no uid/gid mappings".to_owned(),
    }
}

/// The mounts with `ro,nosuid,nodev` enforced: whatever the backend says, a volume is
/// read-only and honours no setuid bits or device nodes.
pub(super) fn read_only(mut mounts: Vec<MountSpec>) -> Vec<MountSpec> {
    for m in &mut mounts {
        m.options.retain(|o| {
            !matches!(
                o.as_str(),
                "rw" | "ro" | "suid" | "dev" | "nosuid" | "nodev"
            )
        });
        m.options.splice(
            0..0,
            ["ro".to_owned(), "nosuid".to_owned(), "nodev".to_owned()],
        );
    }
    mounts
}
