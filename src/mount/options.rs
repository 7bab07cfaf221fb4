//! Sorting `mount(8)`-style options into what the new mount API wants: per-mount (VFS)
//! attributes for `fsmount`/`mount_setattr`, superblock flags and filesystem parameters
//! for `fsconfig`, and propagation.

use rustix::mount::MountAttrFlags;

/// `MOUNT_ATTR__ATIME`: the atime bits, cleared as a group when one atime mode is set.
const ATIME_MASK: MountAttrFlags = MountAttrFlags::MOUNT_ATTR__ATIME;

// Propagation types, as `mount_setattr(2)` takes them in `mount_attr.propagation`.
pub(crate) const MS_UNBINDABLE: u64 = 1 << 17;
pub(crate) const MS_PRIVATE: u64 = 1 << 18;
pub(crate) const MS_SLAVE: u64 = 1 << 19;
pub(crate) const MS_SHARED: u64 = 1 << 20;

/// Options split by where they go.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// Per-mount attributes to set.
    pub attr_set: MountAttrFlags,
    /// Per-mount attributes to clear (`rw`, `suid`, ...; the atime mask for an atime mode).
    pub attr_clr: MountAttrFlags,
    /// `ro` was asked for: also a superblock flag, so a block filesystem is not mounted
    /// writable underneath a read-only mount (journal replay and the like).
    pub read_only: bool,
    /// Propagation (`MS_PRIVATE`, `MS_SHARED`, `MS_SLAVE`, `MS_UNBINDABLE`), if any.
    pub propagation: Option<u64>,
    /// Whether the propagation applies to the whole tree (`rprivate`, ...).
    pub propagation_recursive: bool,
    /// `bind` or `rbind` appeared in the options (`rbind` sets `recursive_bind` too).
    pub bind: bool,
    /// `rbind`.
    pub recursive_bind: bool,
    /// Everything else, for the filesystem: `key` or `key=value`, in order.
    pub fs: Vec<String>,
}

/// An option's value without the double quotes around it, if it has them
/// (`context="u:r:t:s0:c1,c2"`: the quotes keep its commas together in a classic mount's
/// data), as libmount reads it.
pub(crate) fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// Sort `options`. Options the library handles itself and the kernel would reject are
/// dropped: `defaults`, and `loop` (a file source is handed to the filesystem as is).
pub(crate) fn parse(options: &[String]) -> Options {
    let mut o = Options {
        attr_set: MountAttrFlags::empty(),
        attr_clr: MountAttrFlags::empty(),
        read_only: false,
        propagation: None,
        propagation_recursive: false,
        bind: false,
        recursive_bind: false,
        fs: Vec::new(),
    };
    for opt in options {
        let atime = |o: &mut Options, a: MountAttrFlags| {
            o.attr_clr |= ATIME_MASK;
            o.attr_set = (o.attr_set - ATIME_MASK) | a;
        };
        match opt.as_str() {
            "ro" => {
                o.attr_set |= MountAttrFlags::MOUNT_ATTR_RDONLY;
                o.attr_clr -= MountAttrFlags::MOUNT_ATTR_RDONLY;
                o.read_only = true;
            }
            "rw" => {
                o.attr_clr |= MountAttrFlags::MOUNT_ATTR_RDONLY;
                o.attr_set -= MountAttrFlags::MOUNT_ATTR_RDONLY;
                o.read_only = false;
            }
            "nosuid" | "suid" | "nodev" | "dev" | "noexec" | "exec" | "nosymfollow"
            | "symfollow" => {
                let (flag, set) = match opt.as_str() {
                    "nosuid" => (MountAttrFlags::MOUNT_ATTR_NOSUID, true),
                    "suid" => (MountAttrFlags::MOUNT_ATTR_NOSUID, false),
                    "nodev" => (MountAttrFlags::MOUNT_ATTR_NODEV, true),
                    "dev" => (MountAttrFlags::MOUNT_ATTR_NODEV, false),
                    "noexec" => (MountAttrFlags::MOUNT_ATTR_NOEXEC, true),
                    "exec" => (MountAttrFlags::MOUNT_ATTR_NOEXEC, false),
                    "nosymfollow" => (MountAttrFlags::MOUNT_ATTR_NOSYMFOLLOW, true),
                    _ => (MountAttrFlags::MOUNT_ATTR_NOSYMFOLLOW, false),
                };
                if set {
                    o.attr_set |= flag;
                    o.attr_clr -= flag;
                } else {
                    o.attr_clr |= flag;
                    o.attr_set -= flag;
                }
            }
            "noatime" => atime(&mut o, MountAttrFlags::MOUNT_ATTR_NOATIME),
            "relatime" => atime(&mut o, MountAttrFlags::MOUNT_ATTR_RELATIME),
            "strictatime" => atime(&mut o, MountAttrFlags::MOUNT_ATTR_STRICTATIME),
            "nodiratime" => {
                o.attr_set |= MountAttrFlags::MOUNT_ATTR_NODIRATIME;
                o.attr_clr -= MountAttrFlags::MOUNT_ATTR_NODIRATIME;
            }
            "diratime" => {
                o.attr_clr |= MountAttrFlags::MOUNT_ATTR_NODIRATIME;
                o.attr_set -= MountAttrFlags::MOUNT_ATTR_NODIRATIME;
            }
            "bind" => o.bind = true,
            "rbind" => {
                o.bind = true;
                o.recursive_bind = true;
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let name = opt.strip_prefix('r').unwrap_or(opt);
                o.propagation_recursive = name.len() != opt.len();
                o.propagation = Some(match name {
                    "private" => MS_PRIVATE,
                    "shared" => MS_SHARED,
                    "slave" => MS_SLAVE,
                    _ => MS_UNBINDABLE,
                });
            }
            "defaults" | "loop" | "" => {}
            _ => o.fs.push(opt.clone()),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sorts_vfs_fs_and_bind_options() {
        let o = parse(&strings(&[
            "ro",
            "nosuid",
            "nodev",
            "noatime",
            "index=off",
            "userxattr",
            "rbind",
            "rslave",
        ]));
        assert!(o
            .attr_set
            .contains(MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NOSUID));
        assert!(o
            .attr_set
            .contains(MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOATIME));
        assert!(o.attr_clr.contains(ATIME_MASK));
        assert!(o.read_only && o.bind && o.recursive_bind);
        assert_eq!(o.propagation, Some(MS_SLAVE));
        assert!(o.propagation_recursive);
        assert_eq!(o.fs, strings(&["index=off", "userxattr"]));
    }

    #[test]
    fn later_options_win() {
        let o = parse(&strings(&[
            "ro",
            "rw",
            "nosuid",
            "suid",
            "noatime",
            "strictatime",
        ]));
        assert!(!o.read_only);
        assert!(!o.attr_set.contains(MountAttrFlags::MOUNT_ATTR_RDONLY));
        assert!(o
            .attr_clr
            .contains(MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NOSUID));
        assert!(o.attr_set.contains(MountAttrFlags::MOUNT_ATTR_STRICTATIME));
        assert!(!o.attr_set.contains(MountAttrFlags::MOUNT_ATTR_NOATIME));
    }
}
