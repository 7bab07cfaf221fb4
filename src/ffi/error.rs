//! `imv_status` and `imv_error`: what every fallible function returns and reports; and
//! `imv_string_free` for the strings the library hands out.

use super::*;

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

/// An error: a status and a message. Created by the library when a call fails and the
/// caller passed a non-NULL `err`; owned by the caller, who frees it with `imv_error_free`.
pub struct imv_error {
    pub(crate) status: imv_status,
    pub(crate) message: CString,
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
