//! `image_sub_path`: resolve a path inside a mounted volume without escaping it.
//!
//! TO BE IMPLEMENTED (helper).

use std::path::{Path, PathBuf};

use crate::error::Result;

/// Resolve `sub_path` (relative, no `..`) inside the directory `root` and return the host
/// path of what it names (a directory or a file). Absolute paths, `..` components,
/// symlinks that lead out of `root` and missing paths are errors (InvalidArgument for the
/// first three, NotFound for the last), each naming `sub_path` and `root`.
pub fn resolve(root: &Path, sub_path: &str) -> Result<PathBuf> {
    let _ = (root, sub_path);
    unimplemented!()
}
