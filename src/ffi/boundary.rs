//! The mechanics of the C boundary, kept apart from the API so `mod.rs` reads as a list of
//! functions: panic guards, the error object, and reading C strings, arrays and
//! versioned (`struct_size`-first) structs without trusting them.

use std::any::Any;
use std::ffi::{c_char, CStr, CString};
use std::mem::{align_of, size_of, MaybeUninit};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{imv_error, imv_status};
use crate::error::{Error, ErrorKind};

/// An error on its way to C: a status and a message.
pub(crate) struct FfiError {
    pub(crate) status: imv_status,
    pub(crate) message: String,
}

pub(crate) type FfiResult<T> = Result<T, FfiError>;

impl FfiError {
    pub(crate) fn null(name: &str) -> Self {
        FfiError {
            status: imv_status::IMV_NULL_ARGUMENT,
            message: format!("{name} is NULL"),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        FfiError {
            status: imv_status::IMV_INVALID_ARGUMENT,
            message: message.into(),
        }
    }
}

impl From<Error> for FfiError {
    fn from(e: Error) -> Self {
        FfiError {
            status: status_of(e.kind()),
            message: e.message().to_owned(),
        }
    }
}

/// The C status of an error kind. Spelled out rather than cast so that a new kind cannot
/// reach C as a number the header does not define.
pub(crate) fn status_of(kind: ErrorKind) -> imv_status {
    match kind {
        ErrorKind::InvalidArgument => imv_status::IMV_INVALID_ARGUMENT,
        ErrorKind::NotFound => imv_status::IMV_NOT_FOUND,
        ErrorKind::AlreadyExists => imv_status::IMV_ALREADY_EXISTS,
        ErrorKind::PermissionDenied => imv_status::IMV_PERMISSION_DENIED,
        ErrorKind::FailedPrecondition => imv_status::IMV_FAILED_PRECONDITION,
        ErrorKind::Unavailable => imv_status::IMV_UNAVAILABLE,
        ErrorKind::Internal => imv_status::IMV_INTERNAL,
    }
}

/// Run the body of a status-returning entry point: a panic becomes `IMV_PANIC` instead of
/// unwinding into C (undefined behaviour before Rust 1.81, an abort of the host process
/// since), and any failure is stored in `*err` when the caller asked for it.
///
/// `AssertUnwindSafe`: after a panic the caller gets IMV_PANIC and the engine's locks
/// ignore poisoning, so no broken invariant is observed through a later call.
pub(crate) fn guard(err: *mut *mut imv_error, body: impl FnOnce() -> FfiResult<()>) -> imv_status {
    let result = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        Err(FfiError {
            status: imv_status::IMV_PANIC,
            message: format!("panic inside imv: {}", panic_message(&*payload)),
        })
    });
    match result {
        Ok(()) => imv_status::IMV_OK,
        Err(e) => {
            let status = e.status;
            // Building the error object allocates; keep even that from unwinding into C.
            let _ = catch_unwind(AssertUnwindSafe(|| store_error(err, e)));
            status
        }
    }
}

/// Run the body of an entry point that returns a value rather than a status (accessors,
/// free functions): a panic returns `fallback`.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

fn store_error(err: *mut *mut imv_error, e: FfiError) {
    if err.is_null() {
        return;
    }
    let boxed = Box::new(imv_error {
        status: e.status,
        message: c_string_lossy(e.message),
    });
    // SAFETY: the caller passed a writable `imv_error **` (documented on every function).
    unsafe { err.write(Box::into_raw(boxed)) };
}

/// A C string of `s`; an interior NUL (possible only in a panic message) becomes U+FFFD so
/// the message is never lost.
pub(crate) fn c_string_lossy(s: String) -> CString {
    CString::new(s).unwrap_or_else(|e| {
        let s = String::from_utf8_lossy(&e.into_vec()).replace('\0', "\u{FFFD}");
        CString::new(s).expect("NULs replaced")
    })
}

/// `p` as a reference, or NULL_ARGUMENT naming `name`.
///
/// # Safety
/// `p` is NULL or points to a live `T` for `'a`.
pub(crate) unsafe fn required<'a, T>(p: *const T, name: &str) -> FfiResult<&'a T> {
    // SAFETY: `p` is NULL or points to a live `T` for `'a` (this function's contract).
    unsafe { p.as_ref() }.ok_or_else(|| FfiError::null(name))
}

/// A required string argument: NULL is NULL_ARGUMENT, invalid UTF-8 INVALID_ARGUMENT.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that lives for `'a`.
pub(crate) unsafe fn required_str<'a>(p: *const c_char, name: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(FfiError::null(name));
    }
    // SAFETY: not NULL (checked above), so a NUL-terminated string live for `'a` (contract).
    utf8(unsafe { CStr::from_ptr(p) }, name)
}

/// An optional string: NULL reads as the empty string.
///
/// # Safety
/// As [`required_str`].
pub(crate) unsafe fn optional_str<'a>(p: *const c_char, name: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Ok("");
    }
    // SAFETY: not NULL (checked above), so a NUL-terminated string live for `'a` (contract).
    utf8(unsafe { CStr::from_ptr(p) }, name)
}

fn utf8<'a>(s: &'a CStr, name: &str) -> FfiResult<&'a str> {
    s.to_str().map_err(|e| {
        FfiError::invalid(format!(
            "{name} is not valid UTF-8 (bad byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// A C array as a slice: NULL is fine with length 0 and NULL_ARGUMENT otherwise.
///
/// # Safety
/// `p` is NULL or points to `len` initialized `T`s that live for `'a`.
pub(crate) unsafe fn c_slice<'a, T>(p: *const T, len: usize, name: &str) -> FfiResult<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(FfiError::null(&format!("{name} (with length {len})")));
    }
    // `from_raw_parts` requires the slice to fit in isize; a length that large is garbage.
    if len
        .checked_mul(size_of::<T>())
        .is_none_or(|n| n > isize::MAX as usize)
    {
        return Err(FfiError::invalid(format!(
            "{name}: length {len} is too large"
        )));
    }
    // SAFETY: not NULL and `len` within isize (both checked above), so `len` live elements
    // (contract).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A C struct whose first field is `size_t struct_size`, so fields can be appended in later
/// ABI minor versions without breaking compiled callers.
///
/// # Safety
/// Implementors are `#[repr(C)]`, start with a `usize` `struct_size`, have only scalar fields
/// (integers, bools, raw pointers), and all-zero bytes are a valid value of every field.
/// Scalars are aligned to their size, which divides the struct's alignment, so a prefix
/// whose length is a multiple of that alignment never cuts a field in two.
pub(crate) unsafe trait Versioned: Copy {
    /// The C name, for messages.
    const C_NAME: &'static str;
    /// The smallest `struct_size` accepted: the fields every version has had.
    const MIN_SIZE: usize;
}

/// Largest `struct_size` even looked at: a bigger one is an uninitialized field, not a
/// struct from a newer header, and scanning its "tail" would read far out of bounds.
const MAX_STRUCT_SIZE: usize = 4096;

/// Read a versioned struct from a caller that may have been compiled against an older or a
/// newer header:
/// - `struct_size` smaller than ours (an older caller): accepted when at least
///   `T::MIN_SIZE` and a multiple of the struct's alignment; the fields it does not cover
///   read as zero (NULL, 0, false), which is every field's default.
/// - larger (a newer caller): accepted when every byte we do not know is zero, i.e. the
///   newer fields are at their defaults, as Linux does for `clone3` and `openat2`; otherwise
///   INVALID_ARGUMENT, since silently ignoring a field the caller set could change the
///   meaning of the request.
///
/// Only the `struct_size` bytes the caller vouched for are read.
///
/// # Safety
/// `p` is NULL or points to at least `struct_size` readable bytes, `struct_size` being
/// its first field.
pub(crate) unsafe fn read_versioned<T: Versioned>(p: *const T, name: &str) -> FfiResult<T> {
    if p.is_null() {
        return Err(FfiError::null(name));
    }
    // SAFETY: not NULL (checked above); the struct starts with its `usize` size (contract).
    let size = unsafe { p.cast::<usize>().read() };
    let ours = size_of::<T>();
    let bad =
        |why: String| FfiError::invalid(format!("{name}: {}.struct_size {size}: {why}", T::C_NAME));
    if size < T::MIN_SIZE {
        return Err(bad(format!(
            "smaller than the smallest known ({})",
            T::MIN_SIZE
        )));
    }
    if size > MAX_STRUCT_SIZE {
        return Err(bad("not a struct size (is struct_size set?)".to_owned()));
    }
    if size % align_of::<T>() != 0 {
        return Err(bad(format!(
            "not a multiple of the alignment ({}): set it to sizeof({})",
            align_of::<T>(),
            T::C_NAME
        )));
    }
    if size > ours {
        // SAFETY: the caller vouched for `size` bytes at `p` (contract), and `size > ours`.
        let tail = unsafe { std::slice::from_raw_parts(p.cast::<u8>().add(ours), size - ours) };
        if let Some(at) = tail.iter().position(|&b| b != 0) {
            return Err(bad(format!(
                "this library (ABI {}.{}) knows {ours} bytes of it, and byte {} is set: \
                 the caller uses a field this library does not have",
                super::IMV_ABI_VERSION_MAJOR,
                super::IMV_ABI_VERSION_MINOR,
                ours + at
            )));
        }
    }
    let mut out = MaybeUninit::<T>::zeroed();
    // SAFETY: at most `size` bytes, which the caller vouched for, into `out`, `ours` bytes
    // long; the two do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            p.cast::<u8>(),
            out.as_mut_ptr().cast::<u8>(),
            size.min(ours),
        )
    };
    // SAFETY: zero is valid for every field (trait contract) and the copied prefix holds
    // whole fields written by the caller.
    Ok(unsafe { out.assume_init() })
}
