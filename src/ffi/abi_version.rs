// The C ABI's version. Only these two constants live here: build.rs includes this file
// to name the shared library (`libimv.so.<major>`), so the soname and the header agree.

/// Major version of the C ABI. It changes only when a compiled caller could break (a
/// function removed or changed, a struct field moved); it is also the number in the shared
/// library's soname, `libimv.so.<major>`.
pub const IMV_ABI_VERSION_MAJOR: u32 = 0;

/// Minor version of the C ABI: incremented when functions, enum values or struct fields are
/// added. A caller compiled against minor N runs against any library of the same major with
/// minor >= N.
/// (4: `imv_mutate` takes the uid/gid mappings it applied off the mounts it returns.)
/// (5: `imv_mutate_with` and `imv_mutate_options`: an SELinux mount label for the volumes.
/// 6: `imv_import_with` and `imv_import_options`: images picked by tag, named by a base.
/// 7: `imv_mount.image_ref`: the ID of the image a mount shows, KEP-5365; `imv_set_log`.)
pub const IMV_ABI_VERSION_MINOR: u32 = 7;
