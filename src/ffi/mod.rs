//! The C API (`include/imv.h`, generated from this file by cbindgen): a thin layer over
//! [`ImageVolumes`] that translates C arguments to Rust ones and errors to status codes,
//! and holds no logic of its own.
//!
//! Conventions (spelled out in the header's preamble, `ffi/cbindgen.toml`): every
//! fallible function returns an [`imv_status`] and reports details through an optional
//! `imv_error **err`; no panic crosses into C; free functions accept NULL; strings are
//! UTF-8 and NUL-terminated; argument structs start with `struct_size`.
//!
//! Item names are C's (`imv_mount`, `IMV_OK`) so the header and this file read the same.
#![allow(non_camel_case_types)]
// Every `unsafe extern "C" fn` documents its pointer contract in a "Safety" section that
// cbindgen copies to the header, where C callers read it.

mod boundary;
#[cfg(test)]
mod tests;

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

/// Major version of the C ABI. It changes only when a compiled caller could break (a
/// function removed or changed, a struct field moved); it is also the number in the shared
/// library's soname, `libimv.so.<major>`.
pub const IMV_ABI_VERSION_MAJOR: u32 = 0;

/// Minor version of the C ABI: incremented when functions, enum values or struct fields are
/// added. A caller compiled against minor N runs against any library of the same major with
/// minor >= N.
/// (4: `imv_mutate` takes the uid/gid mappings it applied off the mounts it returns.)
/// (5: `imv_mutate_with` and `imv_mutate_options`: an SELinux mount label for the volumes.
/// 6: `imv_import_with` and `imv_import_options`: images picked by tag, named by a base.)
pub const IMV_ABI_VERSION_MINOR: u32 = 6;

/// The result of every fallible function. The numbers of the gRPC codes are those of gRPC
/// and containerd's errdefs (so Go callers map them with `status.Code`), and never change.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum imv_status {
    /// Success. The `err` out-parameter is left untouched.
    IMV_OK = 0,
    /// An argument is malformed or not allowed: a bad sandbox ID, invalid UTF-8, a
    /// read-write or host_path-preset image mount, a bad `struct_size` (gRPC code 3).
    IMV_INVALID_ARGUMENT = 3,
    /// The image, volume, sub path or import source does not exist (gRPC code 5).
    IMV_NOT_FOUND = 5,
    /// The thing to create exists already (gRPC code 6).
    IMV_ALREADY_EXISTS = 6,
    /// The caller may not do this (gRPC code 7). Since ABI 0.3; the library itself does not
    /// return it today (the daemon's clients do, for a peer the daemon refuses).
    IMV_PERMISSION_DENIED = 7,
    /// The system is not in a state that allows the operation, e.g. importing into a
    /// backend that is not the embedded store (gRPC code 9).
    IMV_FAILED_PRECONDITION = 9,
    /// A bug, or an unexpected failure of the system underneath (gRPC code 13).
    IMV_INTERNAL = 13,
    /// The backend (containerd, the daemon) cannot be reached (gRPC code 14).
    IMV_UNAVAILABLE = 14,
    /// A pointer argument that must not be NULL was NULL. Outside gRPC's range: it is a bug
    /// in the caller, not a condition a server reports.
    IMV_NULL_ARGUMENT = 100,
    /// The library panicked (a bug in imv). The panic was caught and did not unwind into the
    /// caller; what the failed call had done is unspecified, and the handle stays usable.
    IMV_PANIC = 101,
}

/// Which store of images and snapshots a handle uses (`imv_options.backend`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum imv_backend {
    /// The embedded store under `imv_options.root`: no daemon needed. Images get in with
    /// `imv_import`.
    IMV_BACKEND_LOCAL = 0,
    /// A containerd daemon at `imv_options.containerd_address`, namespace
    /// `imv_options.containerd_namespace`. `imv_open` does not connect: a daemon that
    /// cannot be reached fails the first call that needs it with IMV_UNAVAILABLE.
    IMV_BACKEND_CONTAINERD = 1,
}

/// CRI `MountPropagation`, for `imv_mount.propagation`; same numbers as the CRI proto.
// For the header: Rust reads the field as an i32 (MountPropagation::from_i32, whose numbers
// a test checks against these).
#[allow(dead_code)]
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum imv_propagation {
    /// No propagation (`rprivate`).
    IMV_PROPAGATION_PRIVATE = 0,
    /// Mounts on the host propagate into the container (`rslave`).
    IMV_PROPAGATION_HOST_TO_CONTAINER = 1,
    /// Propagation both ways (`rshared`).
    IMV_PROPAGATION_BIDIRECTIONAL = 2,
}

/// An error: a status and a message. Created by the library when a call fails and the
/// caller passed a non-NULL `err`; owned by the caller, who frees it with `imv_error_free`.
pub struct imv_error {
    status: imv_status,
    message: CString,
}

/// An open set of image volumes over one backend: the handle every call takes. Opaque;
/// made by `imv_open`, freed by `imv_close`. Thread-safe: any number of threads may call
/// functions on one handle at once (only `imv_close` must not race with other calls).
pub struct imv_handle {
    volumes: ImageVolumes,
}

/// A snapshot of the image volumes under the state directory, made by `imv_volumes`.
/// Opaque; read with the `imv_volume_list_*` accessors; freed by `imv_volume_list_free`.
/// Immutable, so it may be read from many threads at once.
pub struct imv_volume_list {
    volumes: Vec<VolumeEntry>,
}

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

struct VolumeEntry {
    sandbox_id: CString,
    target: CString,
    image_digest: CString,
    image: Option<CString>,
    mounted: bool,
}

/// Options of `imv_open`. Zero-initialize, then set `struct_size` to `sizeof(imv_options)`:
/// `imv_options o = { .struct_size = sizeof o, .root = "/var/lib/imv" };`.
/// NULL strings take the documented defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct imv_options {
    /// `sizeof(imv_options)` as the caller was compiled. An older, smaller struct is
    /// accepted (the fields it lacks take their defaults); a newer, bigger one is accepted
    /// only when the fields this library does not know are all zero.
    pub struct_size: usize,
    /// An `imv_backend` value.
    pub backend: i32,
    /// Root of the embedded store (content, snapshots, database); NULL means
    /// `/var/lib/imv`. Used by IMV_BACKEND_LOCAL.
    pub root: *const c_char,
    /// Runtime state: volumes are mounted under `<state>/image-volumes`; NULL means
    /// `/run/imv`.
    pub state: *const c_char,
    /// containerd's socket; NULL means `/run/containerd/containerd.sock`. Used by
    /// IMV_BACKEND_CONTAINERD only.
    pub containerd_address: *const c_char,
    /// containerd namespace; NULL means `k8s.io` (the CRI plugin's). Used by
    /// IMV_BACKEND_CONTAINERD only.
    pub containerd_namespace: *const c_char,
}

// SAFETY: repr(C), `struct_size` first, scalar fields, zero valid for all.
unsafe impl Versioned for imv_options {
    const C_NAME: &'static str = "imv_options";
    const MIN_SIZE: usize = offset_of!(imv_options, backend) + size_of::<i32>();
}

/// Options of `imv_mutate_with`. Zero-initialize, then set `struct_size` to
/// `sizeof(imv_mutate_options)`; NULL strings read as empty. Same `struct_size` rules as
/// `imv_options`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct imv_mutate_options {
    /// `sizeof(imv_mutate_options)` as the caller was compiled.
    pub struct_size: usize,
    /// The SELinux context every file of the volumes gets (the `context=` mount option),
    /// e.g. the pod's mount label `system_u:object_r:container_file_t:s0:c1,c2`; NULL or
    /// empty for none. `user:role:type[:level]`, printable ASCII without spaces or quotes
    /// (INVALID_ARGUMENT otherwise). On a host without SELinux: FAILED_PRECONDITION,
    /// unless `ignore_label_without_selinux`.
    pub mount_label: *const c_char,
    /// With `mount_label` on a host without SELinux: mount without the label.
    pub ignore_label_without_selinux: bool,
}

// SAFETY: repr(C), `struct_size` first, scalar fields, zero valid for all.
unsafe impl Versioned for imv_mutate_options {
    const C_NAME: &'static str = "imv_mutate_options";
    const MIN_SIZE: usize = size_of::<imv_mutate_options>();
}

/// How `imv_import_with` names the images it finds and which it takes (since ABI 0.6).
/// `struct_size` first: `sizeof(imv_import_options)`; NULL strings read as empty. Same
/// `struct_size` rules as `imv_options`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct imv_import_options {
    /// `sizeof(imv_import_options)` as the caller was compiled.
    pub struct_size: usize,
    /// The name of the one image the source holds (or the one `tag` picks); with more,
    /// INVALID_ARGUMENT. NULL or empty: the names the source gives.
    pub name: *const c_char,
    /// A repository (`example.com/imgs`) naming every image tagged with a bare tag (an
    /// OCI layout's `org.opencontainers.image.ref.name` = `one`, as umoci, skopeo and
    /// buildah write them): `<base_name>:<tag>`, as `ctr images import --base-name` does.
    pub base_name: *const c_char,
    /// Take only the image(s) tagged `tag` (a layout's ref.name, or a `docker save`
    /// RepoTag's tag), as skopeo's `oci:DIR:TAG`; NOT_FOUND, listing the tags, when none is.
    pub tag: *const c_char,
}

// SAFETY: repr(C), `struct_size` first, scalar fields, zero valid for all.
unsafe impl Versioned for imv_import_options {
    const C_NAME: &'static str = "imv_import_options";
    const MIN_SIZE: usize = size_of::<imv_import_options>();
}

/// CRI `IDMapping`: `length` IDs starting at `container_id` inside map to IDs starting at
/// `host_id` outside.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct imv_id_mapping {
    /// First ID on the host.
    pub host_id: u32,
    /// First ID in the container.
    pub container_id: u32,
    /// How many IDs.
    pub length: u32,
}

/// One annotation of an image spec. NULL strings read as empty.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct imv_key_value {
    /// The key (UTF-8).
    pub key: *const c_char,
    /// The value (UTF-8).
    pub value: *const c_char,
}

/// CRI `ImageSpec`: the image an image mount shows. Zero-initialize and set `struct_size`
/// to `sizeof(imv_image_spec)`. NULL strings read as empty.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct imv_image_spec {
    /// `sizeof(imv_image_spec)` as the caller was compiled; at least
    /// `offsetof(imv_image_spec, image) + sizeof(char *)`. Same rules as
    /// `imv_mount.struct_size`.
    pub struct_size: usize,
    /// The image: a name, `name@digest`, or an image ID.
    pub image: *const c_char,
    /// Annotations: an array of `annotations_len` pairs (NULL when the length is 0). A key
    /// given twice keeps the last value.
    pub annotations: *const imv_key_value,
    /// Number of entries in `annotations`.
    pub annotations_len: usize,
    /// The image as the user wrote it in the pod spec.
    pub user_specified_image: *const c_char,
    /// The runtime handler (RuntimeClass) the image was pulled for.
    pub runtime_handler: *const c_char,
    /// The digest of the image used for the volume: the runtime's output in CRI. imv, like
    /// containerd, reads `image` only; this is passed through unchanged.
    pub image_ref: *const c_char,
}

// SAFETY: repr(C), `struct_size` first, scalar fields, zero valid for all.
unsafe impl Versioned for imv_image_spec {
    const C_NAME: &'static str = "imv_image_spec";
    const MIN_SIZE: usize = offset_of!(imv_image_spec, image) + size_of::<*const c_char>();
}

/// CRI `Mount`, field for field. A mount whose `image` is non-NULL is an image volume; the
/// others are passed over untouched. Zero-initialize and set `struct_size` to
/// `sizeof(imv_mount)`. NULL strings read as empty.
///
/// Fields are only ever appended (in groups that keep every older `sizeof` a field
/// boundary), so a caller compiled against an older header keeps working.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct imv_mount {
    /// `sizeof(imv_mount)` as the caller was compiled. Accepted: at least
    /// `offsetof(imv_mount, image_sub_path)` (the fields up to the flags) and a multiple of
    /// the struct's alignment; fields past it read as zero. A bigger struct (from a newer
    /// header) is accepted only when the bytes this library does not know are all zero, and
    /// is INVALID_ARGUMENT otherwise.
    pub struct_size: usize,
    /// Path of the mount in the container.
    pub container_path: *const c_char,
    /// Path of the mount on the host. For an image mount: must be NULL or empty on input
    /// (INVALID_ARGUMENT otherwise); on IMV_OK `imv_mutate` sets it to a string the library
    /// allocated, which the caller frees with `imv_string_free`. Never written on failure,
    /// and never written for a mount without `image`.
    pub host_path: *mut c_char,
    /// The image to mount; NULL for a mount that is not an image volume.
    pub image: *const imv_image_spec,
    /// An `imv_propagation` value.
    pub propagation: i32,
    /// Read-only. Must be true for an image mount (KEP-4639: INVALID_ARGUMENT otherwise).
    pub readonly: CBool,
    /// SELinux relabeling requested.
    pub selinux_relabel: CBool,
    /// Recursively read-only.
    pub recursive_read_only: CBool,
    /// A directory inside the image to mount instead of its root: relative, no `..`, must
    /// exist, be a directory and stay inside the image. NULL or empty: the whole image.
    pub image_sub_path: *const c_char,
    /// User ID mappings: an array of `uid_mappings_len` (NULL when the length is 0). For an
    /// image mount, the volume is mounted with the mappings applied (its owners appear
    /// mapped), and on IMV_OK `imv_mutate` sets `uid_mappings`/`gid_mappings` to NULL and
    /// their lengths to 0, so that a runtime does not map them again; the arrays stay the
    /// caller's, to free through its own pointer.
    pub uid_mappings: *const imv_id_mapping,
    /// Number of entries in `uid_mappings`.
    pub uid_mappings_len: usize,
    /// Group ID mappings: an array of `gid_mappings_len` (NULL when the length is 0).
    pub gid_mappings: *const imv_id_mapping,
    /// Number of entries in `gid_mappings`.
    pub gid_mappings_len: usize,
    /// Extra mount options: an array of `mount_options_len` strings (NULL when the length
    /// is 0).
    pub mount_options: *const *const c_char,
    /// Number of entries in `mount_options`.
    pub mount_options_len: usize,
}

// SAFETY: repr(C), `struct_size` first, scalar fields, zero valid for all.
unsafe impl Versioned for imv_mount {
    const C_NAME: &'static str = "imv_mount";
    const MIN_SIZE: usize = offset_of!(imv_mount, image_sub_path);
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

/// The status of `err`; IMV_NULL_ARGUMENT when `err` is NULL.
///
/// # Safety
/// `err` is NULL or an error from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn imv_error_code(err: *const imv_error) -> imv_status {
    // SAFETY: the pointer is valid for this access, as this function's # Safety section requires.
    guard_value(imv_status::IMV_PANIC, || match unsafe { err.as_ref() } {
        Some(e) => e.status,
        None => imv_status::IMV_NULL_ARGUMENT,
    })
}

/// The message of `err` (UTF-8, without the status name), borrowed: valid until
/// `imv_error_free(err)`. A static empty string when `err` is NULL.
///
/// # Safety
/// `err` is NULL or an error from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn imv_error_message(err: *const imv_error) -> *const c_char {
    // SAFETY: the pointer is valid for this access, as this function's # Safety section requires.
    guard_value(c"".as_ptr(), || match unsafe { err.as_ref() } {
        Some(e) => e.message.as_ptr(),
        None => c"".as_ptr(),
    })
}

/// Free an error. NULL is fine.
///
/// # Safety
/// `err` is NULL or an error from this library, not freed before and not used after.
#[no_mangle]
pub unsafe extern "C" fn imv_error_free(err: *mut imv_error) {
    guard_value((), || {
        if !err.is_null() {
            // SAFETY: the pointer is one this library handed out and the caller gives back once, as this function's # Safety says.
            drop(unsafe { Box::from_raw(err) });
        }
    })
}

/// Free a string the library allocated (an `imv_mount.host_path` set by `imv_mutate`).
/// NULL is fine.
///
/// # Safety
/// `s` is NULL or a string this library allocated and documented as freed here, not freed
/// before and not used after. Never a string the caller allocated.
#[no_mangle]
pub unsafe extern "C" fn imv_string_free(s: *mut c_char) {
    guard_value((), || {
        if !s.is_null() {
            // SAFETY: the pointer is one this library handed out and the caller gives back once, as this function's # Safety says.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

/// Open image volumes as `options` says and store the new handle in `*out` (left untouched
/// on failure). The state directory is created if missing. With IMV_BACKEND_CONTAINERD,
/// NULL or empty `containerd_address` and `containerd_namespace` mean
/// `/run/containerd/containerd.sock` and `k8s.io`; the daemon is first contacted by the
/// first call that needs it. IMV_INVALID_ARGUMENT for an unknown backend.
///
/// # Safety
/// `options` points to an `imv_options` of at least `options->struct_size` bytes with valid
/// strings; `out` is writable; `err` is NULL or a writable `imv_error *` holding NULL, set on
/// failure to an error the caller frees with `imv_error_free`.
#[no_mangle]
pub unsafe extern "C" fn imv_open(
    options: *const imv_options,
    out: *mut *mut imv_handle,
    err: *mut *mut imv_error,
) -> imv_status {
    guard(err, || {
        // SAFETY: `options` is valid as this function's # Safety section requires.
        let options = unsafe { read_versioned(options, "options") }?;
        if out.is_null() {
            return Err(FfiError::null("out"));
        }
        let defaults = Config::default();
        // SAFETY: `options.root` is valid as this function's # Safety section requires.
        let root = unsafe { optional_str(options.root, "options.root") }?;
        // SAFETY: `options.state` is valid as this function's # Safety section requires.
        let state = unsafe { optional_str(options.state, "options.state") }?;
        let mut config = defaults.clone();
        if !root.is_empty() {
            config.root = root.into();
        }
        if !state.is_empty() {
            config.state = state.into();
        }
        config.backend = match options.backend {
            b if b == imv_backend::IMV_BACKEND_LOCAL as i32 => BackendConfig::Local,
            b if b == imv_backend::IMV_BACKEND_CONTAINERD as i32 => {
                let address =
                    // SAFETY: `options.containerd_address` is valid as this function's # Safety section requires.
                    unsafe { optional_str(options.containerd_address, "options.containerd_address") }?;
                let namespace =
                    // SAFETY: `options.containerd_namespace` is valid as this function's # Safety section requires.
                    unsafe { optional_str(options.containerd_namespace, "options.containerd_namespace") }?;
                BackendConfig::Containerd {
                    address: match address {
                        "" => containerd::DEFAULT_ADDRESS.into(),
                        a => a.into(),
                    },
                    namespace: match namespace {
                        "" => containerd::DEFAULT_NAMESPACE.to_owned(),
                        n => n.to_owned(),
                    },
                }
            }
            b => {
                return Err(FfiError::invalid(format!(
                    "options.backend {b} is not an imv_backend"
                )))
            }
        };
        let volumes = ImageVolumes::open(config)?;
        // SAFETY: the pointer is valid for this access, as this function's # Safety section requires.
        unsafe { out.write(Box::into_raw(Box::new(imv_handle { volumes }))) };
        Ok(())
    })
}

/// Close a handle: volumes stay mounted (they belong to sandboxes, not to the handle).
/// NULL is fine.
///
/// # Safety
/// `handle` is NULL or from `imv_open`, not closed before, with no call on it running or
/// starting.
#[no_mangle]
pub unsafe extern "C" fn imv_close(handle: *mut imv_handle) {
    guard_value((), || {
        if !handle.is_null() {
            // SAFETY: the pointer is one this library handed out and the caller gives back once, as this function's # Safety says.
            drop(unsafe { Box::from_raw(handle) });
        }
    })
}

/// Import the image(s) at `path` into the embedded store: an OCI image layout directory,
/// an OCI archive, or a `docker save` tarball (plain, gzip or zstd). `name` (NULL or empty
/// for none) names the image when the source holds exactly one; an image of the same name
/// is replaced. IMV_FAILED_PRECONDITION when the handle's backend is not the embedded store.
///
/// # Safety
/// `handle` is from `imv_open`; `path` and `name` are NULL or NUL-terminated strings;
/// `err` as for `imv_open`.
#[no_mangle]
pub unsafe extern "C" fn imv_import(
    handle: *const imv_handle,
    path: *const c_char,
    name: *const c_char,
    err: *mut *mut imv_error,
) -> imv_status {
    let options = imv_import_options {
        struct_size: size_of::<imv_import_options>(),
        name,
        base_name: ptr::null(),
        tag: ptr::null(),
    };
    // SAFETY: the arguments are valid as this function's # Safety section requires, and
    // `options` is a whole imv_import_options whose strings are NULL or `name`.
    unsafe { imv_import_with(handle, path, &options, err) }
}

/// [`imv_import`] with `options`: images picked by tag and named by a base name (a layout
/// of several images tagged `one`, `two` imports with a `base_name`, or one of them with a
/// `tag`). NULL `options` is `imv_import` without a name. Since ABI 0.6.
///
/// # Safety
/// As for `imv_import`; `options` is NULL or points to an `imv_import_options` of at least
/// its `struct_size` bytes, whose strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn imv_import_with(
    handle: *const imv_handle,
    path: *const c_char,
    options: *const imv_import_options,
    err: *mut *mut imv_error,
) -> imv_status {
    guard(err, || {
        // SAFETY: `handle` is valid as this function's # Safety section requires.
        let h = unsafe { required(handle, "handle") }?;
        // SAFETY: `path` is valid as this function's # Safety section requires.
        let path = unsafe { required_str(path, "path") }?;
        let mut import = crate::ImportOptions::default();
        if !options.is_null() {
            // SAFETY: `options` is valid as this function's # Safety section requires.
            let o = unsafe { read_versioned(options, "options") }?;
            let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            // SAFETY: the strings of `o` are valid as this function's # Safety section requires.
            import.name = text(unsafe { optional_str(o.name, "options.name") }?);
            // SAFETY: as above.
            import.base_name = text(unsafe { optional_str(o.base_name, "options.base_name") }?);
            // SAFETY: as above.
            import.tag = text(unsafe { optional_str(o.tag, "options.tag") }?);
        }
        // Through the engine, which refuses a handle on containerd (FAILED_PRECONDITION).
        h.volumes.import_with(Path::new(path), &import)?;
        Ok(())
    })
}

/// For every mount in `mounts` that has an `image`: mount the image read-only for sandbox
/// `sandbox_id` (or reuse the volume mounted already) and set the mount's `host_path`
/// (see `imv_mount.host_path` for who frees it). Mounts without an image are left alone.
///
/// All image mounts are checked before anything is done. On failure nothing is written to
/// `mounts`, and what this call mounted is undone; volumes of earlier calls stay.
///
/// `sandbox_id`: letters and digits with single `.`, `_` or `-` between them, at most 76
/// bytes. `snapshotter`: NULL or empty for the default (`overlayfs`). `platform`:
/// `os/arch[/variant]`, NULL or empty for the host's. `mounts`: an array of `mounts_len`
/// pointers to mounts (an array of pointers, not of structs, so each mount carries its own
/// `struct_size`); NULL only when `mounts_len` is 0.
///
/// # Safety
/// `handle` is from `imv_open`; strings are NULL or NUL-terminated; each `mounts[i]` points
/// to a writable mount of at least its `struct_size` bytes, not used by another thread
/// during the call, and appears once in `mounts` (a mount listed twice would have its
/// host_path written twice, leaking the first); `err` as for `imv_open`.
#[no_mangle]
pub unsafe extern "C" fn imv_mutate(
    handle: *const imv_handle,
    sandbox_id: *const c_char,
    snapshotter: *const c_char,
    platform: *const c_char,
    mounts: *const *mut imv_mount,
    mounts_len: usize,
    err: *mut *mut imv_error,
) -> imv_status {
    // SAFETY: the arguments are passed on unchanged, under this function's own contract.
    unsafe {
        imv_mutate_with(
            handle,
            sandbox_id,
            snapshotter,
            platform,
            ptr::null(),
            mounts,
            mounts_len,
            err,
        )
    }
}

/// `imv_mutate` with `options` (NULL for none): the volumes get its SELinux mount label. A
/// pod's volumes share one label: a volume mounted with another, or none, is
/// FAILED_PRECONDITION.
///
/// # Safety
/// As for `imv_mutate`; `options` is NULL or points to an `imv_mutate_options` of at least
/// its `struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn imv_mutate_with(
    handle: *const imv_handle,
    sandbox_id: *const c_char,
    snapshotter: *const c_char,
    platform: *const c_char,
    options: *const imv_mutate_options,
    mounts: *const *mut imv_mount,
    mounts_len: usize,
    err: *mut *mut imv_error,
) -> imv_status {
    guard(err, || {
        // SAFETY: `handle` is valid as this function's # Safety section requires.
        let h = unsafe { required(handle, "handle") }?;
        // SAFETY: `sandbox_id` is valid as this function's # Safety section requires.
        let sandbox_id = unsafe { required_str(sandbox_id, "sandbox_id") }?;
        // SAFETY: `snapshotter` is valid as this function's # Safety section requires.
        let snapshotter = unsafe { optional_str(snapshotter, "snapshotter") }?;
        // SAFETY: `platform` is valid as this function's # Safety section requires.
        let platform = match unsafe { optional_str(platform, "platform") }? {
            "" => None,
            p => Some(Platform::parse(p)?),
        };
        // Checked before any mount is read: a million of them would take seconds to convert.
        if mounts_len > crate::MAX_MOUNTS {
            return Err(FfiError::invalid(format!(
                "mounts_len {mounts_len}: at most {} mounts in one call",
                crate::MAX_MOUNTS
            )));
        }
        let options = if options.is_null() {
            crate::MutateOptions::default()
        } else {
            // SAFETY: `options` is valid as this function's # Safety section requires.
            let o = unsafe { read_versioned(options, "options") }?;
            crate::MutateOptions {
                // SAFETY: `o.mount_label` is valid as this function's # Safety section requires.
                mount_label: unsafe { optional_str(o.mount_label, "options.mount_label") }?
                    .to_owned(),
                ignore_label_without_selinux: o.ignore_label_without_selinux,
            }
        };
        // SAFETY: `mounts` is valid as this function's # Safety section requires.
        let c_mounts = unsafe { c_slice(mounts, mounts_len, "mounts") }?;
        let mut rust_mounts = Vec::with_capacity(c_mounts.len());
        for (i, &m) in c_mounts.iter().enumerate() {
            // SAFETY: `m` is valid as this function's # Safety section requires.
            rust_mounts.push(unsafe { mount_from_c(m, &format!("mounts[{i}]")) }?);
        }
        h.volumes.mutate_mounts_with(
            sandbox_id,
            snapshotter,
            platform.as_ref(),
            &options,
            &mut rust_mounts,
        )?;
        // Make every string before writing any, so the caller sees all host paths or none.
        let mut host_paths = Vec::new();
        for (i, m) in rust_mounts.into_iter().enumerate() {
            if m.image.is_some() {
                let applied = m.uid_mappings.is_empty() && m.gid_mappings.is_empty();
                host_paths.push((i, c_string_lossy(m.host_path), applied));
            }
        }
        for (i, path, mappings_taken) in host_paths {
            let m = c_mounts[i];
            // SAFETY: `m` is a writable mount of the caller's (contract), and `host_path` lies
            // within every accepted struct_size (it precedes MIN_SIZE).
            unsafe { ptr::addr_of_mut!((*m).host_path).write(path.into_raw()) };
            // The mappings lie past MIN_SIZE: written only where the caller's struct has
            // them (an older, shorter struct had none to take off).
            // SAFETY: `struct_size` is the first field of a readable mount (contract).
            let size = unsafe { ptr::addr_of!((*m).struct_size).read() };
            if mappings_taken && size >= offset_of!(imv_mount, mount_options) {
                // SAFETY: the caller's struct is writable and, by its size (checked just
                // above), has these four fields.
                unsafe {
                    ptr::addr_of_mut!((*m).uid_mappings).write(ptr::null());
                    ptr::addr_of_mut!((*m).uid_mappings_len).write(0);
                    ptr::addr_of_mut!((*m).gid_mappings).write(ptr::null());
                    ptr::addr_of_mut!((*m).gid_mappings_len).write(0);
                }
            }
        }
        Ok(())
    })
}

/// Unmount and remove every image volume of sandbox `sandbox_id` (recursively, so mounts
/// nested under a volume do not make it fail), then its directory. Idempotent: cleaning a
/// sandbox with no volumes is IMV_OK. `snapshotter`: NULL or empty for the default. The
/// sandbox's lease stays (see `imv_release`).
///
/// # Safety
/// `handle` is from `imv_open`; strings are NULL or NUL-terminated; `err` as for `imv_open`.
#[no_mangle]
pub unsafe extern "C" fn imv_cleanup(
    handle: *const imv_handle,
    sandbox_id: *const c_char,
    snapshotter: *const c_char,
    err: *mut *mut imv_error,
) -> imv_status {
    guard(err, || {
        // SAFETY: `handle` is valid as this function's # Safety section requires.
        let h = unsafe { required(handle, "handle") }?;
        // SAFETY: `sandbox_id` is valid as this function's # Safety section requires.
        let sandbox_id = unsafe { required_str(sandbox_id, "sandbox_id") }?;
        // SAFETY: `snapshotter` is valid as this function's # Safety section requires.
        let snapshotter = unsafe { optional_str(snapshotter, "snapshotter") }?;
        h.volumes.cleanup(sandbox_id, snapshotter)?;
        Ok(())
    })
}

/// Clean up sandbox `sandbox_id` as `imv_cleanup` does, each view removed from the
/// snapshotter it was made in (the sandbox's lease records it), then drop its lease so what
/// only it kept becomes garbage: call when the sandbox is removed. Idempotent.
///
/// # Safety
/// `handle` is from `imv_open`; `sandbox_id` is NULL or NUL-terminated; `err` as for
/// `imv_open`.
#[no_mangle]
pub unsafe extern "C" fn imv_release(
    handle: *const imv_handle,
    sandbox_id: *const c_char,
    err: *mut *mut imv_error,
) -> imv_status {
    guard(err, || {
        // SAFETY: `handle` is valid as this function's # Safety section requires.
        let h = unsafe { required(handle, "handle") }?;
        // SAFETY: `sandbox_id` is valid as this function's # Safety section requires.
        let sandbox_id = unsafe { required_str(sandbox_id, "sandbox_id") }?;
        h.volumes.release(sandbox_id)?;
        Ok(())
    })
}

/// List the image volumes under the state directory, sorted by sandbox then target, into a
/// new list stored in `*out` (left untouched on failure); the caller frees it with
/// `imv_volume_list_free`.
///
/// # Safety
/// `handle` is from `imv_open`; `out` is writable; `err` as for `imv_open`.
#[no_mangle]
pub unsafe extern "C" fn imv_volumes(
    handle: *const imv_handle,
    out: *mut *mut imv_volume_list,
    err: *mut *mut imv_error,
) -> imv_status {
    guard(err, || {
        // SAFETY: `handle` is valid as this function's # Safety section requires.
        let h = unsafe { required(handle, "handle") }?;
        if out.is_null() {
            return Err(FfiError::null("out"));
        }
        let volumes = h.volumes.volumes()?.into_iter().map(volume_entry).collect();
        // SAFETY: the pointer is valid for this access, as this function's # Safety section requires.
        unsafe { out.write(Box::into_raw(Box::new(imv_volume_list { volumes }))) };
        Ok(())
    })
}

/// Number of volumes in `list`; 0 when `list` is NULL.
///
/// # Safety
/// `list` is NULL or from `imv_volumes`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn imv_volume_list_len(list: *const imv_volume_list) -> usize {
    guard_value(0, || {
        // SAFETY: `list` is NULL or a live list, as this function's # Safety section requires.
        unsafe { list.as_ref() }.map_or(0, |l| l.volumes.len())
    })
}

/// The sandbox of volume `index`, borrowed from `list` (valid until it is freed); NULL when
/// `list` is NULL or `index` out of range.
///
/// # Safety
/// `list` is NULL or from `imv_volumes`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn imv_volume_list_sandbox_id(
    list: *const imv_volume_list,
    index: usize,
) -> *const c_char {
    // SAFETY: `list` is valid as this function's # Safety section requires.
    unsafe { list_str(list, index, |v| Some(&v.sandbox_id)) }
}

/// The host directory of volume `index` (`<state>/image-volumes/<sandbox>/<image digest
/// hex>`), borrowed from `list`; NULL when `list` is NULL or `index` out of range.
///
/// # Safety
/// `list` is NULL or from `imv_volumes`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn imv_volume_list_target(
    list: *const imv_volume_list,
    index: usize,
) -> *const c_char {
    // SAFETY: `list` is valid as this function's # Safety section requires.
    unsafe { list_str(list, index, |v| Some(&v.target)) }
}

/// The digest (`sha256:...`) of the image volume `index` was made from, borrowed from
/// `list`; NULL when `list` is NULL or `index` out of range. It is the digest the image's
/// name points at (its target: the index of a multi-platform image, not the platform's
/// manifest), and its hex names the volume's directory. Since ABI 0.2.
///
/// # Safety
/// `list` is NULL or from `imv_volumes`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn imv_volume_list_image_digest(
    list: *const imv_volume_list,
    index: usize,
) -> *const c_char {
    // SAFETY: `list` is valid as this function's # Safety section requires.
    unsafe { list_str(list, index, |v| Some(&v.image_digest)) }
}

/// Deprecated: use `imv_volume_list_image_digest`, which returns the same string. Kept so
/// that callers built against ABI 0.1 still link. Despite its name it is the image's
/// digest (the index of a multi-platform image), not the platform's manifest's: volumes
/// are named by the image's digest, as containerd's CRI plugin names them.
///
/// # Safety
/// `list` is NULL or from `imv_volumes`, not yet freed.
#[deprecated(note = "use imv_volume_list_image_digest, which returns the same string")]
#[no_mangle]
pub unsafe extern "C" fn imv_volume_list_manifest(
    list: *const imv_volume_list,
    index: usize,
) -> *const c_char {
    // SAFETY: the arguments are passed on unchanged, under this function's own contract.
    unsafe { imv_volume_list_image_digest(list, index) }
}

/// The image reference volume `index` was requested by, borrowed from `list`; NULL when the
/// backend does not know it, `list` is NULL or `index` out of range.
///
/// # Safety
/// `list` is NULL or from `imv_volumes`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn imv_volume_list_image(
    list: *const imv_volume_list,
    index: usize,
) -> *const c_char {
    // SAFETY: `list` is valid as this function's # Safety section requires.
    unsafe { list_str(list, index, |v| v.image.as_ref()) }
}

/// Whether volume `index` was a mountpoint when the list was made; false when `list` is
/// NULL or `index` out of range.
///
/// # Safety
/// `list` is NULL or from `imv_volumes`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn imv_volume_list_mounted(
    list: *const imv_volume_list,
    index: usize,
) -> bool {
    guard_value(false, || {
        // SAFETY: the pointer is valid for this access, as this function's # Safety section requires.
        unsafe { list.as_ref() }
            .and_then(|l| l.volumes.get(index))
            .is_some_and(|v| v.mounted)
    })
}

/// Free a volume list (and every string borrowed from it). NULL is fine.
///
/// # Safety
/// `list` is NULL or from `imv_volumes`, not freed before and not used after.
#[no_mangle]
pub unsafe extern "C" fn imv_volume_list_free(list: *mut imv_volume_list) {
    guard_value((), || {
        if !list.is_null() {
            // SAFETY: the pointer is one this library handed out and the caller gives back once, as this function's # Safety says.
            drop(unsafe { Box::from_raw(list) });
        }
    })
}

unsafe fn list_str(
    list: *const imv_volume_list,
    index: usize,
    field: impl FnOnce(&VolumeEntry) -> Option<&CString>,
) -> *const c_char {
    guard_value(ptr::null(), || {
        // SAFETY: the pointer is valid for this access, as this function's # Safety section requires.
        unsafe { list.as_ref() }
            .and_then(|l| l.volumes.get(index))
            .and_then(field)
            .map_or(ptr::null(), |s| s.as_ptr())
    })
}

fn volume_entry(v: VolumeInfo) -> VolumeEntry {
    VolumeEntry {
        sandbox_id: c_string_lossy(v.sandbox_id),
        target: c_string_lossy(v.target.to_string_lossy().into_owned()),
        image_digest: c_string_lossy(v.image_digest.to_string()),
        image: v.image.map(c_string_lossy),
        mounted: v.mounted,
    }
}

/// A C mount as the engine's [`Mount`]; `name` (`mounts[3]`) prefixes every message.
///
/// # Safety
/// As `imv_mutate`'s `mounts[i]`.
unsafe fn mount_from_c(p: *const imv_mount, name: &str) -> FfiResult<Mount> {
    // SAFETY: `p` is valid as this function's # Safety section requires.
    let m = unsafe { read_versioned(p, name) }?;
    let field = |f: &str| format!("{name}.{f}");
    let propagation = MountPropagation::from_i32(m.propagation).ok_or_else(|| {
        FfiError::invalid(format!(
            "{} {} is not an imv_propagation",
            field("propagation"),
            m.propagation
        ))
    })?;
    let image = if m.image.is_null() {
        None
    } else {
        // SAFETY: `m.image` is valid as this function's # Safety section requires.
        Some(unsafe { image_spec_from_c(m.image, &field("image")) }?)
    };
    // SAFETY: `m.mount_options` is valid as this function's # Safety section requires.
    let mount_options = unsafe {
        c_slice(
            m.mount_options,
            m.mount_options_len,
            &field("mount_options"),
        )
    }?
    .iter()
    .enumerate()
    .map(|(j, &o)| {
        // SAFETY: each option is NULL or a NUL-terminated string, as this function's # Safety
        // section requires.
        unsafe { optional_str(o, &format!("{}[{j}]", field("mount_options"))) }.map(str::to_owned)
    })
    .collect::<FfiResult<_>>()?;
    Ok(Mount {
        // SAFETY: `m.container_path` is valid as this function's # Safety section requires.
        container_path: unsafe { optional_str(m.container_path, &field("container_path")) }?
            .to_owned(),
        // SAFETY: `m.host_path` is valid as this function's # Safety section requires.
        host_path: unsafe { optional_str(m.host_path, &field("host_path")) }?.to_owned(),
        readonly: m.readonly.get(),
        selinux_relabel: m.selinux_relabel.get(),
        propagation,
        // SAFETY: `m.uid_mappings` is valid as this function's # Safety section requires.
        uid_mappings: unsafe {
            id_mappings(m.uid_mappings, m.uid_mappings_len, &field("uid_mappings"))
        }?,
        // SAFETY: `m.gid_mappings` is valid as this function's # Safety section requires.
        gid_mappings: unsafe {
            id_mappings(m.gid_mappings, m.gid_mappings_len, &field("gid_mappings"))
        }?,
        recursive_read_only: m.recursive_read_only.get(),
        image,
        // SAFETY: `m.image_sub_path` is valid as this function's # Safety section requires.
        image_sub_path: unsafe { optional_str(m.image_sub_path, &field("image_sub_path")) }?
            .to_owned(),
        mount_options,
    })
}

unsafe fn image_spec_from_c(p: *const imv_image_spec, name: &str) -> FfiResult<ImageSpec> {
    // SAFETY: `p` is valid as this function's # Safety section requires.
    let s = unsafe { read_versioned(p, name) }?;
    let field = |f: &str| format!("{name}.{f}");
    let mut annotations = BTreeMap::new();
    // SAFETY: `s.annotations` is valid as this function's # Safety section requires.
    for (j, kv) in unsafe { c_slice(s.annotations, s.annotations_len, &field("annotations")) }?
        .iter()
        .enumerate()
    {
        let at = |f: &str| format!("{}[{j}].{f}", field("annotations"));
        annotations.insert(
            // SAFETY: `kv.key` is valid as this function's # Safety section requires.
            unsafe { optional_str(kv.key, &at("key")) }?.to_owned(),
            // SAFETY: `kv.value` is valid as this function's # Safety section requires.
            unsafe { optional_str(kv.value, &at("value")) }?.to_owned(),
        );
    }
    Ok(ImageSpec {
        // SAFETY: `s.image` is valid as this function's # Safety section requires.
        image: unsafe { optional_str(s.image, &field("image")) }?.to_owned(),
        annotations,
        // SAFETY: `s.user_specified_image` is valid as this function's # Safety section requires.
        user_specified_image: unsafe {
            optional_str(s.user_specified_image, &field("user_specified_image"))
        }?
        .to_owned(),
        // SAFETY: `s.runtime_handler` is valid as this function's # Safety section requires.
        runtime_handler: unsafe { optional_str(s.runtime_handler, &field("runtime_handler")) }?
            .to_owned(),
        // SAFETY: `s.image_ref` is valid as this function's # Safety section requires.
        image_ref: unsafe { optional_str(s.image_ref, &field("image_ref")) }?.to_owned(),
    })
}

unsafe fn id_mappings(
    p: *const imv_id_mapping,
    len: usize,
    name: &str,
) -> FfiResult<Vec<IdMapping>> {
    // SAFETY: `p` is valid as this function's # Safety section requires.
    Ok(unsafe { c_slice(p, len, name) }?
        .iter()
        .map(|m| IdMapping {
            host_id: m.host_id,
            container_id: m.container_id,
            length: m.length,
        })
        .collect())
}
