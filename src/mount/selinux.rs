//! SELinux mount labels: a volume whose files must carry the pod's label (its
//! `MountLabel`, e.g. `system_u:object_r:container_file_t:s0:c1,c2`) gets it at mount time
//! with the `context=` option, as CRI-O mounts image volumes. A relabel afterwards, as
//! containerd's CRI plugin does for mounts with `selinux_relabel`, cannot work here: the
//! volume is read-only (EROFS).
//!
//! `context=` is a superblock option: a read-only bind of one layer (how a one-layer view
//! mounts) cannot carry it, so a labelled one-layer volume is an overlay of that layer over
//! an empty directory instead (overlayfs wants two lower layers without an upper one).
//!
//! On a kernel without SELinux the option is unknown to every filesystem: the engine
//! refuses a label there, or drops it when the caller says so ([`is_enabled`]).

use std::path::Path;

use super::options::unquote;
use super::MountSpec;
use crate::error::{Error, Result};

/// Longest label accepted (a context is a few dozen bytes; the kernel takes a page).
pub const MAX_LABEL_LEN: usize = 4096;

/// `f_type` of selinuxfs (`SELINUX_MAGIC`).
const SELINUX_MAGIC: u32 = 0xf97c_ff8c;

/// Whether SELinux is on in this kernel: selinuxfs is mounted at `/sys/fs/selinux`, the
/// test libselinux's `is_selinux_enabled` makes (and go-selinux's).
pub fn is_enabled() -> bool {
    // `f_type`'s width differs by architecture; the magic is 32 bits.
    rustix::fs::statfs("/sys/fs/selinux").is_ok_and(|s| s.f_type as u32 == SELINUX_MAGIC)
}

/// Check a label before anything is made: `user:role:type[:level]`, each part non-empty,
/// printable ASCII without spaces or quotes (it becomes a quoted mount option), at most
/// [`MAX_LABEL_LEN`] bytes. InvalidArgument naming it otherwise.
pub fn validate_label(label: &str) -> Result<()> {
    let bad = |why: &str| {
        let shown: String = label.chars().take(80).collect();
        Error::invalid(format!("SELinux mount label {shown:?}: {why}"))
    };
    if label.len() > MAX_LABEL_LEN {
        return Err(bad(&format!("longer than {MAX_LABEL_LEN} bytes")));
    }
    if let Some(c) = label.chars().find(|c| !c.is_ascii_graphic() || *c == '"') {
        return Err(bad(&format!("{c:?} is not allowed in a label")));
    }
    let parts: Vec<&str> = label.splitn(4, ':').collect();
    if parts.len() < 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad("not user:role:type[:level]"));
    }
    Ok(())
}

/// The option that gives every file of the mount `label` (quoted, as mount(8) writes it:
/// a level may hold commas).
pub fn context_option(label: &str) -> String {
    format!("context=\"{label}\"")
}

/// The label a `context=` option gives, quoted or not, if `option` is one.
pub fn label_of_option(option: &str) -> Option<&str> {
    option.strip_prefix("context=").map(unquote)
}

/// The label a mount's super options (as `/proc/self/mountinfo` shows them) give with
/// `context=`, if any: SELinux shows it quoted when it holds commas.
pub fn label_of_super_options(super_options: &str) -> Option<&str> {
    let mut rest = super_options;
    loop {
        let at = rest.find("context=")?;
        let starts_option = at == 0 || rest.as_bytes()[at - 1] == b',';
        let value = &rest[at + "context=".len()..];
        if starts_option {
            return Some(match value.strip_prefix('"') {
                Some(quoted) => quoted.split('"').next().unwrap_or(quoted),
                None => value.split(',').next().unwrap_or(value),
            });
        }
        // `fscontext=`, `defcontext=`, `rootcontext=`: not this option.
        rest = value;
    }
}

/// `mounts` (a volume's, checked by [`validate_label`]) made to give their files `label`:
/// the mount with a superblock of its own ([`with_own_superblock`]), with the option. Any
/// `context=` they had goes. InvalidArgument for what cannot be labelled (not one mount, a
/// bind that is writable).
pub fn labelled(mounts: Vec<MountSpec>, label: &str, empty: &Path) -> Result<Vec<MountSpec>> {
    let [spec] = <[MountSpec; 1]>::try_from(mounts).map_err(|m| {
        Error::invalid(format!(
            "a labelled volume is made of one mount; the image's layers mount as {}",
            m.len()
        ))
    })?;
    let mut spec = with_own_superblock(spec, empty)?;
    spec.options.retain(|o| label_of_option(o).is_none());
    spec.options.push(context_option(label));
    Ok(vec![spec])
}

/// `spec` as a mount that can carry a superblock option: a read-only bind becomes an
/// overlay of its source over `empty` (an empty directory), which shows the same files;
/// anything else is itself. InvalidArgument for a writable bind.
pub fn with_own_superblock(spec: MountSpec, empty: &Path) -> Result<MountSpec> {
    if !spec.is_bind() {
        return Ok(spec);
    }
    if spec.options.iter().any(|o| o == "rw") {
        return Err(Error::invalid(format!(
            "a writable bind of {:?} cannot be labelled read-only",
            spec.source
        )));
    }
    // What a bind says of itself goes; what limits the mount stays.
    let kept = spec
        .options
        .iter()
        .filter(|o| !matches!(o.as_str(), "bind" | "rbind" | "ro"))
        .cloned();
    let mut options = vec![
        "ro".to_owned(),
        format!("lowerdir={}:{}", spec.source, empty.display()),
    ];
    options.extend(kept);
    Ok(MountSpec {
        kind: "overlay".into(),
        source: "overlay".into(),
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = "system_u:object_r:container_file_t:s0:c1,c2";

    fn spec(kind: &str, source: &str, options: &[&str]) -> MountSpec {
        MountSpec {
            kind: kind.into(),
            source: source.into(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    #[test]
    fn labels_are_checked_before_use() {
        validate_label(LABEL).unwrap();
        validate_label("u:r:t").unwrap();
        for (bad, says) in [
            ("", "not user:role:type"),
            ("u:r", "not user:role:type"),
            ("u::t:s0", "not user:role:type"),
            ("u:r:t:s0\"", "'\"' is not allowed"),
            ("u:r:t s0", "' ' is not allowed"),
            ("u:r:t:s0\n", "'\\n' is not allowed"),
            ("u:r:t:s0\u{e9}", "is not allowed"),
        ] {
            let e = validate_label(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{bad:?}");
            assert!(e.to_string().contains(says), "{bad:?}: {e}");
        }
        let long = format!("u:r:t:{}", "s".repeat(MAX_LABEL_LEN));
        assert!(validate_label(&long)
            .unwrap_err()
            .to_string()
            .contains("longer than"));
    }

    #[test]
    fn an_overlay_gets_the_quoted_option_and_loses_any_other() {
        let got = labelled(
            vec![spec(
                "overlay",
                "overlay",
                &["ro", "nosuid", "lowerdir=/a:/b", "context=\"x:y:z\""],
            )],
            LABEL,
            Path::new("/empty"),
        )
        .unwrap();
        assert_eq!(
            got,
            [spec(
                "overlay",
                "overlay",
                &[
                    "ro",
                    "nosuid",
                    "lowerdir=/a:/b",
                    "context=\"system_u:object_r:container_file_t:s0:c1,c2\""
                ]
            )]
        );
        assert_eq!(label_of_option(got[0].options.last().unwrap()), Some(LABEL));
        assert_eq!(label_of_option("context=u:r:t"), Some("u:r:t"));
        assert_eq!(label_of_option("fscontext=u:r:t"), None);
    }

    #[test]
    fn the_label_is_read_back_from_super_options() {
        for (options, label) in [
            (
                "ro,context=\"u:r:t:s0:c1,c2\",lowerdir=/a",
                Some("u:r:t:s0:c1,c2"),
            ),
            ("ro,lowerdir=/a,context=u:r:t:s0", Some("u:r:t:s0")),
            ("context=u:r:t", Some("u:r:t")),
            ("ro,fscontext=u:r:t,defcontext=x:y:z", None),
            ("ro,rootcontext=u:r:t,context=\"a:b:c\"", Some("a:b:c")),
            ("ro,lowerdir=/a", None),
        ] {
            assert_eq!(label_of_super_options(options), label, "{options}");
        }
    }

    #[test]
    fn a_bind_becomes_an_overlay_over_an_empty_directory() {
        let got = labelled(
            vec![spec("bind", "/layer", &["ro", "nosuid", "nodev", "rbind"])],
            LABEL,
            Path::new("/state/empty"),
        )
        .unwrap();
        assert_eq!(
            got,
            [spec(
                "overlay",
                "overlay",
                &[
                    "ro",
                    "lowerdir=/layer:/state/empty",
                    "nosuid",
                    "nodev",
                    "context=\"system_u:object_r:container_file_t:s0:c1,c2\""
                ]
            )]
        );
        let e = labelled(
            vec![spec("bind", "/layer", &["rw", "rbind"])],
            LABEL,
            Path::new("/e"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("writable bind"), "{e}");
        let two = vec![spec("bind", "/a", &["ro"]), spec("bind", "/b", &["ro"])];
        let e = labelled(two, LABEL, Path::new("/e")).unwrap_err();
        assert!(e.to_string().contains("one mount"), "{e}");
    }

    /// The labelled form of a one-layer volume, mounted for real: on this kernel without
    /// SELinux the `context=` option is refused (which is why the engine refuses labels
    /// then); with SELinux every file carries the label. Without the option, the overlay
    /// over the empty directory shows the layer's files, read-only.
    #[test]
    fn a_labelled_one_layer_volume_mounts_as_the_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let (layer, empty, target) = (
            tmp.path().join("layer"),
            tmp.path().join("empty"),
            tmp.path().join("target"),
        );
        for d in [&layer, &empty, &target] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::create_dir(layer.join("dir")).unwrap();
        std::fs::write(layer.join("dir/file"), "content").unwrap();
        let bind = spec(
            "bind",
            layer.to_str().unwrap(),
            &["ro", "nosuid", "nodev", "rbind"],
        );
        let label = "system_u:object_r:container_file_t:s0:c1,c2";
        let mounts = labelled(vec![bind], label, &empty).unwrap();
        let result = super::super::mount_all(&mounts, &target);
        if is_enabled() {
            result.unwrap();
            let mut value = [0u8; 512];
            let got =
                rustix::fs::lgetxattr(target.join("dir/file"), "security.selinux", &mut value);
            super::super::unmount_recursive(&target).unwrap();
            let got = &value[..got.unwrap()];
            assert_eq!(got.strip_suffix(b"\0").unwrap_or(got), label.as_bytes());
        } else {
            let e = result.unwrap_err();
            assert!(e.to_string().contains("context"), "{e}");
            assert!(!super::super::is_mountpoint(&target).unwrap());
        }
        let mut unlabelled = mounts.clone();
        unlabelled[0]
            .options
            .retain(|o| label_of_option(o).is_none());
        super::super::mount_all(&unlabelled, &target).unwrap();
        let read = std::fs::read_to_string(target.join("dir/file"));
        let write = std::fs::write(target.join("new"), "x");
        super::super::unmount_recursive(&target).unwrap();
        assert_eq!(read.unwrap(), "content");
        assert_eq!(write.unwrap_err().raw_os_error(), Some(libc::EROFS));
    }
}
