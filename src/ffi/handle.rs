//! `imv_handle`: opening and closing one, and the calls on it that are not a mutate or
//! the volume list (import, cleanup, release).

use super::*;

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

/// An open set of image volumes over one backend: the handle every call takes. Opaque;
/// made by `imv_open`, freed by `imv_close`. Thread-safe: any number of threads may call
/// functions on one handle at once (only `imv_close` must not race with other calls).
pub struct imv_handle {
    pub(crate) volumes: ImageVolumes,
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
