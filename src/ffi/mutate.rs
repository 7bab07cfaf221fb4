//! `imv_mutate`: the CRI mounts C passes in (`imv_mount`, `imv_image_spec`,
//! `imv_id_mapping`), read into Rust's and written back with their host paths.

use super::*;

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
    /// The digest of the image used for the volume: the runtime's output in CRI, never
    /// read (imv, like containerd, reads `image` only). `imv_mutate` reports it in
    /// `imv_mount.image_ref`, this struct being the caller's and read-only.
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
    /// The ID of the image mounted (KEP-5365, CRI's `ImageSpec.image_ref`: what a
    /// runtime reports in the container's status): its config's digest, or for an OCI
    /// artifact the digest its name points at, as containerd's PullImage returns it.
    /// Output only (ABI 0.7): for an image mount it must be NULL or empty on input
    /// (INVALID_ARGUMENT otherwise); on IMV_OK `imv_mutate` sets it to a string the library
    /// allocated, which the caller frees with `imv_string_free`, when the caller's
    /// `struct_size` includes it. Never written on failure, nor for a mount without `image`.
    pub image_ref: *mut c_char,
}

// SAFETY: repr(C), `struct_size` first, scalar fields, zero valid for all.
unsafe impl Versioned for imv_mount {
    const C_NAME: &'static str = "imv_mount";
    const MIN_SIZE: usize = offset_of!(imv_mount, image_sub_path);
}

/// For every mount in `mounts` that has an `image`: mount the image read-only for sandbox
/// `sandbox_id` (or reuse the volume mounted already) and set the mount's `host_path` and
/// `image_ref` (see `imv_mount.host_path` for who frees them). Mounts without an image are
/// left alone.
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
        let outcomes = h.volumes.mutate_mounts_with(
            sandbox_id,
            snapshotter,
            platform.as_ref(),
            &options,
            &mut rust_mounts,
        )?;
        // Make every string before writing any, so the caller sees all host paths or none.
        let answers: Vec<_> = outcomes
            .into_iter()
            .map(|o| {
                let path = c_string_lossy(o.host_path.to_string_lossy().into_owned());
                (
                    o.index,
                    path,
                    c_string_lossy(o.image_ref),
                    o.mappings_applied,
                )
            })
            .collect();
        for (i, path, image_ref, mappings_taken) in answers {
            let m = c_mounts[i];
            // SAFETY: `m` is a writable mount of the caller's (contract), and `host_path` lies
            // within every accepted struct_size (it precedes MIN_SIZE).
            unsafe { ptr::addr_of_mut!((*m).host_path).write(path.into_raw()) };
            // The fields past MIN_SIZE are written only where the caller's struct has them
            // (an older, shorter struct had no mappings to take off and wants no image_ref).
            // SAFETY: `struct_size` is the first field of a readable mount (contract).
            let size = unsafe { ptr::addr_of!((*m).struct_size).read() };
            if size >= offset_of!(imv_mount, image_ref) + size_of::<*mut c_char>() {
                // SAFETY: the caller's struct is writable and, by its size (checked just
                // above), has the field; its input was NULL or empty (checked on reading).
                unsafe { ptr::addr_of_mut!((*m).image_ref).write(image_ref.into_raw()) };
            }
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
        // An output: a string here would be overwritten, and leak, on success.
        // SAFETY: `m.image_ref` is valid as this function's # Safety section requires.
        let image_ref = unsafe { optional_str(m.image_ref, &field("image_ref")) }?;
        if !image_ref.is_empty() {
            return Err(FfiError::invalid(format!(
                "{} {image_ref:?}: an output of imv_mutate, must be NULL or empty",
                field("image_ref")
            )));
        }
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
