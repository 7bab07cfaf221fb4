//! Is what is mounted at a path the mount a spec describes? "It is a mountpoint" is not
//! enough to reuse a volume: anything may be mounted there (a tmpfs, a bind of another
//! directory, another image's volume).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::mountinfo::MountInfo;
use super::{MountRoot, MountSpec};

/// Whether the mount `info` (rooted at `root`) is what mounting `spec` makes: for a bind,
/// its root is the source directory itself (same device and inode); for an overlay, it is
/// an overlay over the same lower directories (as mountinfo spells them: whole, or relative
/// to their common parent for a mount made the classic way); otherwise the same filesystem
/// type from the same source.
pub fn is_mounted_from(info: &MountInfo, root: &MountRoot, spec: &MountSpec) -> bool {
    if spec.is_bind() {
        return std::fs::metadata(Path::new(&spec.source)).is_ok_and(|m| {
            m.ino() == root.ino
                && (libc::major(m.dev()), libc::minor(m.dev())) == (root.dev.0, root.dev.1)
        });
    }
    if spec.kind == "overlay" {
        let lowers = lower_dirs(spec.options.iter().map(String::as_str));
        if info.fs_type != "overlay" || lowers.is_empty() {
            return false;
        }
        let parent = common_parent(&lowers);
        return lowers.iter().all(|l| {
            info.super_options.contains(l)
                || parent.is_some_and(|p| {
                    l.strip_prefix(p)
                        .map(|rel| rel.trim_start_matches('/'))
                        .is_some_and(|rel| !rel.is_empty() && info.super_options.contains(rel))
                })
        });
    }
    info.fs_type == spec.kind && info.source == spec.source
}

/// The lower directories overlay options name (`lowerdir=a:b`, `lowerdir+=a`): a spec's
/// options, or a mount's super options split at commas.
pub(crate) fn lower_dirs<'a>(options: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out = Vec::new();
    for o in options {
        if let Some(list) = o.strip_prefix("lowerdir=") {
            out.extend(list.split(':').filter(|l| !l.is_empty()));
        } else if let Some(one) = o.strip_prefix("lowerdir+=") {
            out.push(one);
        }
    }
    out
}

/// The longest directory all of `paths` are under, if any but `/`.
fn common_parent<'a>(paths: &[&'a str]) -> Option<&'a str> {
    let first = paths.first()?;
    let mut end = first.rfind('/')?;
    loop {
        let prefix = &first[..end];
        if prefix.is_empty() {
            return None;
        }
        if paths
            .iter()
            .all(|p| p.starts_with(prefix) && p[end..].starts_with('/'))
        {
            return Some(prefix);
        }
        end = prefix.rfind('/')?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(fs_type: &str, source: &str, super_options: &str) -> MountInfo {
        let line = format!("100 1 0:50 / /v rw,relatime - {fs_type} {source} {super_options}");
        crate::mount::mountinfo::parse_line(line.as_bytes()).unwrap()
    }

    fn spec(kind: &str, source: &str, options: &[&str]) -> MountSpec {
        MountSpec {
            kind: kind.into(),
            source: source.into(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    const ROOT: MountRoot = MountRoot {
        id: 100,
        dev: (0, 50),
        ino: 1,
    };

    #[test]
    fn an_overlay_is_recognised_by_its_lower_dirs_whole_or_relative() {
        let s = spec(
            "overlay",
            "overlay",
            &["lowerdir=/s/snapshots/2/fs:/s/snapshots/1/fs"],
        );
        let new_api = info(
            "overlay",
            "overlay",
            "ro,lowerdir+=/s/snapshots/2/fs,lowerdir+=/s/snapshots/1/fs",
        );
        let classic = info("overlay", "overlay", "ro,lowerdir=2/fs:1/fs");
        assert!(is_mounted_from(&new_api, &ROOT, &s));
        assert!(is_mounted_from(&classic, &ROOT, &s));
        let other = info("overlay", "overlay", "ro,lowerdir+=/s/snapshots/3/fs");
        assert!(!is_mounted_from(&other, &ROOT, &s));
        let tmpfs = info("tmpfs", "tmpfs", "rw,size=1024k");
        assert!(!is_mounted_from(&tmpfs, &ROOT, &s));
    }

    #[test]
    fn other_filesystems_match_on_type_and_source() {
        let s = spec("erofs", "/dev/loop3", &["ro"]);
        assert!(is_mounted_from(
            &info("erofs", "/dev/loop3", "ro"),
            &ROOT,
            &s
        ));
        assert!(!is_mounted_from(
            &info("erofs", "/dev/loop4", "ro"),
            &ROOT,
            &s
        ));
        assert!(!is_mounted_from(
            &info("tmpfs", "/dev/loop3", "rw"),
            &ROOT,
            &s
        ));
    }

    #[test]
    fn a_bind_is_its_source_directory() {
        let dir = tempfile::tempdir().unwrap();
        let m = std::fs::metadata(dir.path()).unwrap();
        let root = MountRoot {
            id: 7,
            dev: (libc::major(m.dev()), libc::minor(m.dev())),
            ino: m.ino(),
        };
        let s = spec("bind", dir.path().to_str().unwrap(), &["ro", "rbind"]);
        let any = info("ext4", "/dev/sda1", "rw");
        assert!(is_mounted_from(&any, &root, &s));
        let elsewhere = MountRoot {
            ino: m.ino() + 1,
            ..root
        };
        assert!(!is_mounted_from(&any, &elsewhere, &s));
    }

    #[test]
    fn common_parents() {
        assert_eq!(common_parent(&["/a/b/1/fs", "/a/b/2/fs"]), Some("/a/b"));
        assert_eq!(common_parent(&["/a/b/1/fs"]), Some("/a/b/1"));
        assert_eq!(common_parent(&["/a/x", "/b/y"]), None);
        assert_eq!(common_parent(&["/a/bc/x", "/a/b/y"]), Some("/a"));
    }
}
