//! The C API (`include/imv.h`, generated from this module by cbindgen): a thin layer over
//! [`ImageVolumes`] that translates C arguments to Rust ones and errors to status codes,
//! and holds no logic of its own.
//!
//! Conventions (spelled out in the header's preamble, `ffi/cbindgen.toml`): every
//! fallible function returns an [`imv_status`] and reports details through an optional
//! `imv_error **err`; no panic crosses into C; free functions accept NULL; strings are
//! UTF-8 and NUL-terminated; argument structs start with `struct_size`.
//!
//! Item names are C's (`imv_mount`, `IMV_OK`) so the header and this module read the same.
//! One file per C object: `error.rs` (`imv_status`, `imv_error`), `handle.rs`
//! (`imv_handle`: open, close, import, cleanup, release), `mutate.rs` (`imv_mount` and what
//! it carries), `volume_list.rs` (`imv_volume_list`), `log.rs` (`imv_set_log`, the
//! process's log); `abi_version.rs` holds only the
//! version constants, which build.rs includes for the soname; `boundary.rs` is the one
//! place where C pointers and panics are handled.
#![allow(non_camel_case_types)]
// Every `unsafe extern "C" fn` documents its pointer contract in a "Safety" section that
// cbindgen copies to the header, where C callers read it.

mod abi_version;
mod boundary;
mod error;
mod handle;
mod log;
mod mutate;
#[cfg(test)]
mod tests;
mod volume_list;

pub use abi_version::*;
pub use error::*;
pub use handle::*;
// Read by the tests; C reaches these through the header only.
#[cfg(test)]
use mutate::*;
#[cfg(test)]
use volume_list::*;

use std::collections::BTreeMap;
use std::ffi::{c_char, CString};
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::ptr;

use boundary::{
    c_slice, c_string_lossy, guard, guard_value, optional_str, read_versioned, required,
    required_str, FfiError, FfiResult, Versioned,
};

use crate::backend::containerd;
use crate::cri::{IdMapping, ImageSpec, Mount, MountPropagation};
use crate::platform::Platform;
use crate::volumes::BackendConfig;
use crate::volumes::{Config, ImageVolumes, VolumeInfo};

/// A C `bool` field of a struct the caller passes in, read as its byte: zero is false,
/// any other value true. Read as Rust's `bool`, a byte other than 0 or 1 (left by memset,
/// or written by another language) would be undefined behaviour inside the library. The
/// header declares these fields `bool` (ffi/cbindgen.toml renames the type), so callers
/// see no change; the layout is the same one byte.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CBool(u8);

impl CBool {
    /// The field's truth: any non-zero byte.
    pub fn get(self) -> bool {
        self.0 != 0
    }
}

impl From<bool> for CBool {
    fn from(b: bool) -> Self {
        CBool(u8::from(b))
    }
}

/// The library's version (the crate's semver, e.g. `"0.1.0"`): a static string, never freed.
#[no_mangle]
pub extern "C" fn imv_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The ABI version of the loaded library: `IMV_ABI_VERSION_MAJOR << 16 |
/// IMV_ABI_VERSION_MINOR`. A caller compiled against the header can check at run time that
/// the major is equal and the minor at least its own.
#[no_mangle]
pub extern "C" fn imv_abi_version() -> u32 {
    (IMV_ABI_VERSION_MAJOR << 16) | IMV_ABI_VERSION_MINOR
}
