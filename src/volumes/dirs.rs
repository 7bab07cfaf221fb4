//! The directories imv keeps under `<state>/image-volumes`: made 0711 as containerd
//! makes them, and never followed when something else stands in their place.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::crash_points;
use crate::error::{Error, IoContext, Result};

/// Make a volume's directory (and its sandbox's), as containerd makes them: 0711.
pub(super) fn create_volume_dir(target: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(target)
        .at("creating", target)?;
    crash_points::reached(crash_points::VOLUME_DIR_CREATED);
    Ok(())
}

/// FailedPrecondition unless `path` is a directory (not a link to one) or absent.
pub(super) fn expect_directory_or_nothing(path: &Path, sandbox_id: &str) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) => Err(Error::precondition(format!(
            "{} is {}, where imv keeps a directory of its own; `imv cleanup {sandbox_id}` \
             removes it (without following it)",
            path.display(),
            describe(m.file_type())
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("inspecting", path, e)),
    }
}

fn describe(t: fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a file"
    } else {
        "not a directory"
    }
}

/// Remove what is at `path` if it is not a directory (a link is removed, never followed).
/// Whether there was such a thing.
pub(super) fn remove_if_not_directory(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => {
            tracing::warn!(path = %path.display(), "removing {} found where imv keeps a directory", describe(m.file_type()));
            match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io("removing", path, e))
                }
                _ => Ok(true),
            }
        }
        _ => Ok(false),
    }
}

/// Remove `dir` if it is empty; a failure other than "gone" or "not empty" is logged.
pub(super) fn remove_dir_if_empty(dir: &Path) {
    match fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty
            ) => {}
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "could not remove directory")
        }
    }
}

/// The entries of `dir`, sorted; none when it does not exist.
pub(super) fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                out.push(entry.at("reading", dir)?.path());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("reading", dir, e)),
    }
    out.sort();
    Ok(out)
}
