//! Tar writing: one layer [`Entry`] (directory, file, link, device, whiteout, raw) and
//! its encoding as ustar headers, PAX records and padded data.

use imv::{Error, Result};

use super::DEFAULT_MTIME;

// tar entry types (POSIX ustar typeflag values).
const TYPE_FILE: u8 = b'0';
const TYPE_HARDLINK: u8 = b'1';
const TYPE_SYMLINK: u8 = b'2';
const TYPE_CHAR: u8 = b'3';
const TYPE_BLOCK: u8 = b'4';
const TYPE_DIR: u8 = b'5';
const TYPE_FIFO: u8 = b'6';
const TYPE_PAX: u8 = b'x';

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
    CharDevice(u32, u32),
    BlockDevice(u32, u32),
    Fifo,
    Raw {
        entry_type: u8,
        data: Vec<u8>,
        linkname: Vec<u8>,
    },
}

/// One tar entry of a layer, with its options (owner, mtime, xattrs).
///
/// Constructors take the path inside the image (relative, `/`-separated, e.g.
/// `etc/hostname`); setters return the entry so they chain:
/// `Entry::file("etc/shadow", 0o600, "x").owner(0, 42).xattr("user.k", "v")`.
/// Paths are checked when the layer is built (relative, no `..`, no NUL), except for
/// [`Entry::raw`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub(super) path: String,
    kind: Kind,
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: u64,
    pub(super) xattrs: Vec<(String, Vec<u8>)>,
    raw_name: Vec<u8>,
}

impl Entry {
    fn new(path: &str, kind: Kind, mode: u32) -> Self {
        Entry {
            path: path.to_owned(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            xattrs: Vec::new(),
            raw_name: Vec::new(),
        }
    }

    /// A directory with permission bits `mode`.
    pub fn dir(path: &str, mode: u32) -> Self {
        Self::new(path, Kind::Dir, mode)
    }

    /// A regular file holding `data`.
    pub fn file(path: &str, mode: u32, data: impl Into<Vec<u8>>) -> Self {
        Self::new(path, Kind::File(data.into()), mode)
    }

    /// A symbolic link to `target` (stored as is: relative or absolute).
    pub fn symlink(path: &str, target: &str) -> Self {
        Self::new(path, Kind::Symlink(target.to_owned()), 0o777)
    }

    /// A hard link to `target`, a path inside the image (as in the tar, not `/`-rooted).
    pub fn hardlink(path: &str, target: &str) -> Self {
        Self::new(path, Kind::Hardlink(target.to_owned()), 0o644)
    }

    /// A character device.
    pub fn char_device(path: &str, major: u32, minor: u32) -> Self {
        Self::new(path, Kind::CharDevice(major, minor), 0o666)
    }

    /// A block device.
    pub fn block_device(path: &str, major: u32, minor: u32) -> Self {
        Self::new(path, Kind::BlockDevice(major, minor), 0o660)
    }

    /// A named pipe.
    pub fn fifo(path: &str) -> Self {
        Self::new(path, Kind::Fifo, 0o644)
    }

    /// A whiteout deleting `path` from lower layers: an empty file `.wh.<name>` in the
    /// parent directory of `path`.
    pub fn whiteout(path: &str) -> Self {
        let path = path.trim_end_matches('/');
        let (parent, name) = match path.rfind('/') {
            Some(i) => (&path[..=i], &path[i + 1..]),
            None => ("", path),
        };
        Self::file(&format!("{parent}.wh.{name}"), 0o644, Vec::new())
    }

    /// An opaque marker for directory `dir`: `dir/.wh..wh..opq`, which hides everything
    /// lower layers put in `dir`. Add the directory itself before it.
    pub fn opaque(dir: &str) -> Self {
        let dir = dir.trim_end_matches('/');
        Self::file(&format!("{dir}/.wh..wh..opq"), 0o644, Vec::new())
    }

    /// A raw entry for tests of hostile input: `name` and `linkname` go into the header
    /// bytes as given (no validation at all: `../x`, `/etc/passwd`, `.wh..` and NULs are
    /// all written), `entry_type` is the ustar typeflag byte (`b'0'` file, `b'1'` hard
    /// link, `b'2'` symlink, `b'5'` directory, ...), and `data` follows the header with
    /// its length as the size. Names longer than the 100-byte header field go into a PAX
    /// `path`/`linkpath` record.
    pub fn raw(name: &[u8], entry_type: u8, data: &[u8], linkname: &[u8]) -> Self {
        let mut e = Self::new(
            "",
            Kind::Raw {
                entry_type,
                data: data.to_vec(),
                linkname: linkname.to_vec(),
            },
            0o644,
        );
        e.raw_name = name.to_vec();
        e
    }

    /// Set the permission bits (and setuid/setgid/sticky).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Set the owner.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Set the modification time (seconds since the epoch).
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    /// Add an extended attribute, written as a PAX `SCHILY.xattr.<name>` record.
    pub fn xattr(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.xattrs.push((name.to_owned(), value.into()));
        self
    }

    /// Write this entry's headers and data to `out`.
    pub(super) fn write_to(&self, out: &mut Vec<u8>) -> Result<()> {
        // Raw entries keep their bytes; the others are checked, and directories get the
        // trailing `/` layer tars conventionally have.
        let name = match &self.kind {
            Kind::Raw { .. } => self.raw_name.clone(),
            Kind::Dir if !self.path.ends_with('/') => {
                check_path(&self.path)?;
                format!("{}/", self.path).into_bytes()
            }
            _ => {
                check_path(&self.path)?;
                self.path.clone().into_bytes()
            }
        };
        let none: &[u8] = b"";
        let (entry_type, data, link, dev) = match &self.kind {
            Kind::Raw {
                entry_type,
                data,
                linkname,
            } => (*entry_type, &data[..], &linkname[..], (0, 0)),
            Kind::Dir => (TYPE_DIR, none, none, (0, 0)),
            Kind::File(d) => (TYPE_FILE, &d[..], none, (0, 0)),
            Kind::Symlink(t) => (TYPE_SYMLINK, none, t.as_bytes(), (0, 0)),
            Kind::Hardlink(t) => {
                check_path(t)?;
                (TYPE_HARDLINK, none, t.as_bytes(), (0, 0))
            }
            Kind::CharDevice(ma, mi) => (TYPE_CHAR, none, none, (*ma, *mi)),
            Kind::BlockDevice(ma, mi) => (TYPE_BLOCK, none, none, (*ma, *mi)),
            Kind::Fifo => (TYPE_FIFO, none, none, (0, 0)),
        };
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if name.len() > 100 {
            pax.push(("path".into(), name.clone()));
        }
        if link.len() > 100 {
            pax.push(("linkpath".into(), link.to_vec()));
        }
        for (k, v) in &self.xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        let fields = HeaderFields {
            name: &name,
            entry_type,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            size: data.len() as u64,
            link,
            dev,
        };
        if !pax.is_empty() {
            let records = pax_records(&pax);
            // The extended header's own name is informational; keep it short and stable.
            let pax_name = [b"PaxHeaders/".as_slice(), &name[..name.len().min(80)]].concat();
            write_header(
                out,
                &HeaderFields {
                    name: &pax_name,
                    entry_type: TYPE_PAX,
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    mtime: self.mtime,
                    size: records.len() as u64,
                    link: b"",
                    dev: (0, 0),
                },
            )?;
            write_data(out, &records);
        }
        write_header(out, &fields)?;
        write_data(out, data);
        Ok(())
    }
}

/// Refuse paths a well-formed layer never has, so only [`Entry::raw`] writes hostile ones.
fn check_path(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path.split('/').any(|c| c == "..");
    if bad {
        return Err(Error::invalid(format!(
            "layer entry path {path:?}: want a relative path without `..` or NUL (use Entry::raw for hostile names)"
        )));
    }
    Ok(())
}

struct HeaderFields<'a> {
    name: &'a [u8],
    entry_type: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    link: &'a [u8],
    dev: (u32, u32),
}

/// Write one 512-byte ustar header. Names and link names longer than the field are
/// truncated here; the caller put the full value in a PAX record before.
fn write_header(out: &mut Vec<u8>, f: &HeaderFields<'_>) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    // The typeflag byte as given: `set_entry_type` would write `\0` (old tars' regular
    // file, or directory with a trailing `/`) as `0`, and raw entries must keep it.
    h.as_old_mut().linkflag = [f.entry_type];
    h.set_mode(f.mode);
    h.set_uid(f.uid);
    h.set_gid(f.gid);
    h.set_mtime(f.mtime);
    h.set_size(f.size);
    if matches!(f.entry_type, TYPE_CHAR | TYPE_BLOCK) {
        h.set_device_major(f.dev.0)
            .and_then(|()| h.set_device_minor(f.dev.1))
            .map_err(|e| Error::internal(format!("tar device numbers: {e}")))?;
    }
    {
        let old = h.as_old_mut();
        let n = f.name.len().min(old.name.len());
        old.name[..n].copy_from_slice(&f.name[..n]);
        let n = f.link.len().min(old.linkname.len());
        old.linkname[..n].copy_from_slice(&f.link[..n]);
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    Ok(())
}

/// Append `data` padded with zeros to a multiple of 512 bytes.
fn write_data(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.resize(out.len() + pad, 0);
}

/// Encode PAX records: `"<len> <key>=<value>\n"` where `<len>` counts the whole record,
/// its own digits included.
fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}
