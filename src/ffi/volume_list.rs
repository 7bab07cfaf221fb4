//! `imv_volume_list`: a snapshot of the volumes, read with its accessors.

use super::*;

/// A snapshot of the image volumes under the state directory, made by `imv_volumes`.
/// Opaque; read with the `imv_volume_list_*` accessors; freed by `imv_volume_list_free`.
/// Immutable, so it may be read from many threads at once.
pub struct imv_volume_list {
    volumes: Vec<VolumeEntry>,
}

struct VolumeEntry {
    sandbox_id: CString,
    target: CString,
    image_digest: CString,
    image: Option<CString>,
    mounted: bool,
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
