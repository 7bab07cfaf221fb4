//! Rust-side tests of the C boundary: the checked-in header matches the code, panics become
//! IMV_PANIC, and versioned structs are read as documented. The C tests (ffi/tests.c) test
//! the API as C sees it.

use std::ffi::CStr;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::ptr;

use super::boundary::{guard, read_versioned};
use super::*;

/// `include/imv.h` is what cbindgen makes of this module today. `IMV_BLESS=1` rewrites it.
#[test]
fn header_is_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("ffi/cbindgen.toml")).unwrap();
    let mut fresh = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen failed")
        .write(&mut fresh);
    let path = dir.join("include/imv.h");
    if std::env::var_os("IMV_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "include/imv.h differs from what src/ffi/ generates; run \
         `IMV_BLESS=1 cargo test --lib ffi::tests::header_is_up_to_date` and commit the header"
    );
}

#[test]
fn a_panic_becomes_imv_panic_with_its_message() {
    let mut err: *mut imv_error = ptr::null_mut();
    let status = guard(&mut err, || panic!("boom {}", 42));
    assert_eq!(status, imv_status::IMV_PANIC);
    // SAFETY: the error `guard` stored is this library's, freed once here.
    unsafe {
        assert_eq!(imv_error_code(err), imv_status::IMV_PANIC);
        let message = CStr::from_ptr(imv_error_message(err)).to_str().unwrap();
        assert!(message.contains("boom 42"), "{message}");
        imv_error_free(err);
    }
    // Without an error object the status still tells.
    assert_eq!(
        guard(ptr::null_mut(), || panic!("x")),
        imv_status::IMV_PANIC
    );
}

#[test]
fn status_numbers_are_grpc_codes() {
    use crate::error::ErrorKind::*;
    for kind in [
        InvalidArgument,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        FailedPrecondition,
        Unavailable,
        Internal,
    ] {
        assert_eq!(boundary::status_of(kind) as i32, kind.grpc_code());
    }
}

#[test]
fn abi_version_packs_major_and_minor() {
    assert_eq!(imv_abi_version() >> 16, IMV_ABI_VERSION_MAJOR);
    assert_eq!(imv_abi_version() & 0xffff, IMV_ABI_VERSION_MINOR);
    // SAFETY: `imv_version` returns a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(imv_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

/// Every field of a versioned struct lies wholly inside one alignment unit, so any accepted
/// prefix covers whole fields (what `read_versioned` relies on), and the structs end on a
/// field, so no later field can hide in old trailing padding.
#[test]
fn versioned_structs_have_no_trailing_padding() {
    assert_eq!(
        size_of::<imv_mount>(),
        offset_of!(imv_mount, image_ref) + size_of::<usize>()
    );
    assert_eq!(
        size_of::<imv_image_spec>(),
        offset_of!(imv_image_spec, image_ref) + size_of::<usize>()
    );
    assert_eq!(
        size_of::<imv_options>(),
        offset_of!(imv_options, containerd_namespace) + size_of::<usize>()
    );
}

#[test]
fn versioned_struct_sizes() {
    let spec = |size: usize| imv_image_spec {
        struct_size: size,
        image: c"img".as_ptr(),
        annotations: ptr::null(),
        annotations_len: 0,
        user_specified_image: ptr::null(),
        runtime_handler: ptr::null(),
        image_ref: c"ref".as_ptr(),
    };
    // SAFETY: `s` is a live, fully initialized struct of its own size.
    let read = |s: &imv_image_spec| unsafe { read_versioned(s, "spec").map_err(|e| e.message) };

    let full = read(&spec(size_of::<imv_image_spec>())).unwrap();
    assert!(!full.image_ref.is_null());
    // An older caller: the fields past its struct_size read as zero, even if memory there
    // (here, the rest of our struct) holds something.
    let old = read(&spec(offset_of!(imv_image_spec, annotations))).unwrap();
    assert!(!old.image.is_null() && old.image_ref.is_null());
    // Too small, or not a multiple of the alignment.
    assert!(read(&spec(8)).unwrap_err().contains("smallest"));
    assert!(read(&spec(20)).unwrap_err().contains("alignment"));
    assert!(read(&spec(1 << 20))
        .unwrap_err()
        .contains("not a struct size"));

    // A newer caller: a bigger struct whose extra fields are zero is fine, a set one is not.
    #[repr(C)]
    struct Newer {
        base: imv_image_spec,
        extra: usize,
    }
    let mut newer = Newer {
        base: spec(size_of::<Newer>()),
        extra: 0,
    };
    let p = ptr::addr_of!(newer).cast::<imv_image_spec>();
    // SAFETY: `p` points to `newer`, whose first field is the size it holds.
    assert!(unsafe { read_versioned(p, "spec") }.is_ok());
    newer.extra = 1;
    let p = ptr::addr_of!(newer).cast::<imv_image_spec>();
    // SAFETY: `p` points to `newer`, whose first field is the size it holds.
    let e = unsafe { read_versioned(p, "spec") }.map_err(|e| e.message);
    assert!(e.unwrap_err().contains("does not have"));
}

#[test]
fn handle_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<imv_handle>();
    check::<imv_volume_list>();
}

#[test]
fn the_header_propagation_values_are_the_ones_the_library_reads() {
    use crate::cri::MountPropagation;
    for (value, want) in [
        (
            imv_propagation::IMV_PROPAGATION_PRIVATE,
            MountPropagation::Private,
        ),
        (
            imv_propagation::IMV_PROPAGATION_HOST_TO_CONTAINER,
            MountPropagation::HostToContainer,
        ),
        (
            imv_propagation::IMV_PROPAGATION_BIDIRECTIONAL,
            MountPropagation::Bidirectional,
        ),
    ] {
        assert_eq!(MountPropagation::from_i32(value as i32), Some(want));
    }
}
