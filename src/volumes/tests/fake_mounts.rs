//! A mount table in memory, for the engine's root-free tests (the seam is
//! mount/table.rs). It answers as the kernel's does where the engine looks: a mount's
//! root, its mountinfo line (type, source, super options spelled as the real mount makes
//! them), stacked mounts, recursive unmounts, clones of a twin. A bind's root is its
//! source directory's device and inode, as the kernel reports it, so the engine's own
//! ownership checks (`mount::is_mounted_from`) run unchanged against it.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::locks::lock;
use crate::mount::idmap::IdMap;
use crate::mount::mountinfo::MountInfo;
use crate::mount::{lower_dirs, MountRoot, MountSpec, MountTable};

#[derive(Clone)]
struct Entry {
    root: MountRoot,
    info: MountInfo,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    /// Bottom first, as the kernel lists them.
    entries: Vec<Entry>,
    /// Operations told to fail, with how many of their calls succeed first, and the error.
    failures: VecDeque<(&'static str, usize, Error)>,
    /// Calls by operation.
    calls: BTreeMap<&'static str, usize>,
}

/// The fake table. Operations: `mount_all`, `mount_twin`, `mount_idmapped`,
/// `unmount_recursive`.
#[derive(Default)]
pub struct FakeMounts {
    table: Mutex<Table>,
}

impl FakeMounts {
    /// The next call of `op` fails with `error`.
    pub fn fail_next(&self, op: &'static str, error: Error) {
        self.fail_next_after(op, 0, error);
    }

    /// The call of `op` after the next `calls` fails with `error`.
    pub fn fail_next_after(&self, op: &'static str, calls: usize, error: Error) {
        lock(&self.table).failures.push_back((op, calls, error));
    }

    /// How many times `op` was called.
    pub fn calls(&self, op: &str) -> usize {
        lock(&self.table).calls.get(op).copied().unwrap_or(0)
    }

    /// The mountpoints, bottom first.
    pub fn mountpoints(&self) -> Vec<PathBuf> {
        let table = lock(&self.table);
        table
            .entries
            .iter()
            .map(|e| e.info.mount_point.clone())
            .collect()
    }

    /// The type of what is mounted on top at `path`.
    pub fn fs_type_at(&self, path: &Path) -> Option<String> {
        let table = lock(&self.table);
        top(&table, path).map(|e| e.info.fs_type.clone())
    }

    /// Mount something at `path` that is not a volume (a test plants it).
    pub fn plant(&self, path: &Path, spec: &MountSpec) {
        let mut table = lock(&self.table);
        let entry = new_entry(&mut table, path, spec, "rw").expect("planting a mount");
        table.entries.push(entry);
    }

    fn begin(&self, op: &'static str) -> Result<std::sync::MutexGuard<'_, Table>> {
        let mut table = lock(&self.table);
        *table.calls.entry(op).or_default() += 1;
        if let Some(i) = table.failures.iter().position(|(o, _, _)| *o == op) {
            if table.failures[i].1 > 0 {
                table.failures[i].1 -= 1;
            } else {
                let (_, _, e) = table.failures.remove(i).expect("found above");
                return Err(e);
            }
        }
        Ok(table)
    }
}

fn top<'a>(table: &'a Table, path: &Path) -> Option<&'a Entry> {
    table
        .entries
        .iter()
        .rev()
        .find(|e| e.info.mount_point == path)
}

/// The entry mounting `spec` at `target` makes; the target must be a directory, as the
/// kernel wants it.
fn new_entry(table: &mut Table, target: &Path, spec: &MountSpec, flags: &str) -> Result<Entry> {
    if !target.is_dir() {
        return Err(Error::not_found(format!(
            "fake mount: {} is no directory",
            target.display()
        )));
    }
    table.next_id += 1;
    let id = 100 + table.next_id;
    let root = if spec.is_bind() {
        let m = std::fs::metadata(&spec.source)
            .map_err(|e| Error::io("fake bind of", Path::new(&spec.source), e))?;
        MountRoot {
            id,
            dev: (libc::major(m.dev()), libc::minor(m.dev())),
            ino: m.ino(),
        }
    } else {
        MountRoot {
            id,
            dev: (0, id as u32),
            ino: 1,
        }
    };
    let fs_type = if spec.is_bind() { "fakefs" } else { &spec.kind };
    let info = MountInfo {
        id,
        parent: 1,
        major: root.dev.0,
        minor: root.dev.1,
        root: PathBuf::from("/"),
        mount_point: target.to_owned(),
        mount_options: flags.to_owned(),
        optional: Vec::new(),
        fs_type: fs_type.to_owned(),
        source: spec.source.clone(),
        super_options: spec.options.join(","),
    };
    Ok(Entry { root, info })
}

impl MountTable for FakeMounts {
    fn mount_all(&self, mounts: &[MountSpec], target: &Path) -> Result<()> {
        let mut table = self.begin("mount_all")?;
        let mut made = Vec::new();
        for spec in mounts {
            made.push(new_entry(&mut table, target, spec, "ro,nosuid,nodev")?);
        }
        table.entries.extend(made);
        Ok(())
    }

    fn mount_twin(&self, twin: &Path, root: &MountRoot, target: &Path) -> Result<bool> {
        let mut table = self.begin("mount_twin")?;
        let Some(found) = top(&table, twin).filter(|e| e.root == *root).cloned() else {
            return Ok(false);
        };
        table.next_id += 1;
        let id = 100 + table.next_id;
        let mut clone = found;
        clone.root.id = id;
        clone.info.id = id;
        clone.info.mount_point = target.to_owned();
        table.entries.push(clone);
        Ok(true)
    }

    fn mount_idmapped(
        &self,
        spec: &MountSpec,
        target: &Path,
        _idmap: &IdMap,
        staging: &Path,
    ) -> Result<()> {
        let mut table = self.begin("mount_idmapped")?;
        if spec.kind != "overlay" {
            let entry = new_entry(&mut table, target, spec, "ro,nosuid,nodev,idmapped")?;
            table.entries.push(entry);
            return Ok(());
        }
        // The layers are staged idmapped, the overlay is made of the staged copies, and
        // the staged mounts are detached again: only the overlay stays.
        let staged: Vec<String> = (0..lower_dirs(spec.options.iter().map(String::as_str)).len())
            .map(|i| staging.join(i.to_string()).to_string_lossy().into_owned())
            .collect();
        let overlay = MountSpec {
            kind: "overlay".to_owned(),
            source: spec.source.clone(),
            options: vec!["ro".to_owned(), format!("lowerdir={}", staged.join(":"))],
        };
        let entry = new_entry(&mut table, target, &overlay, "ro,nosuid,nodev")?;
        table.entries.push(entry);
        Ok(())
    }

    fn unmount_recursive(&self, target: &Path) -> Result<()> {
        let mut table = self.begin("unmount_recursive")?;
        table
            .entries
            .retain(|e| !e.info.mount_point.starts_with(target));
        Ok(())
    }

    fn mount_root(&self, path: &Path) -> Result<Option<MountRoot>> {
        let table = lock(&self.table);
        Ok(top(&table, path).map(|e| e.root))
    }

    fn is_mountpoint(&self, path: &Path) -> Result<bool> {
        Ok(self.mount_root(path)?.is_some())
    }

    fn info(&self, id: u64) -> Result<Option<MountInfo>> {
        let table = lock(&self.table);
        Ok(table
            .entries
            .iter()
            .rev()
            .find(|e| e.info.id == id)
            .map(|e| e.info.clone()))
    }

    fn under(&self, path: &Path) -> Result<Vec<MountInfo>> {
        let table = lock(&self.table);
        Ok(table
            .entries
            .iter()
            .filter(|e| e.info.mount_point.starts_with(path))
            .map(|e| e.info.clone())
            .collect())
    }
}
