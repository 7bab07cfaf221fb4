//! A layer's tar stream, framed exactly as Go's `archive/tar` Reader frames it (Go 1.26:
//! reader.go `next`, `readHeader`, `handleRegularFile`, `parsePAX`, `readOldGNUSparseMap`;
//! format.go `getFormat`; strconv.go `parseNumeric`, `parsePAXRecord`, `parsePAXTime`).
//!
//! containerd, its differ and the image scanners read layers with that reader. A mounter
//! that put the boundary between one entry and the next anywhere else would show files
//! they never see (docs/design.md, "Layers read as Go reads them"), so every rule here is
//! Go's, including the lenient ones: a header is valid when its checksum is the signed or
//! the unsigned sum; numbers are octal trimmed of spaces and NULs, or base-256; symlinks,
//! hard links, devices, FIFOs and directories carry no data whatever their size field says;
//! PAX records are framed by their length, so values may hold newlines; a PAX `size`
//! replaces the header's; one zero block followed by the end of the stream ends the
//! archive, as does the end of the stream at a block boundary or inside padding. What Go
//! refuses (`ErrHeader`, `ErrFieldTooLong`, `ErrUnexpectedEOF`) is refused here, as
//! InvalidData, saying where. The few things Go reads that imv does not mount (PAX sparse
//! files) are refused by the caller after framing, so they never shift a boundary.
//!
//! Sans-IO would be nicer, and the `tar-core` crate is that, but it frames differently
//! from Go in a dozen places (header-only types with a size, leading NULs in octal
//! fields, PAX extensions in V7 headers, isextended flags other than 1, ...), and the tar
//! crate keeps its PAX records private and splits them on newlines.

use std::io::{self, Read};

mod fields;
mod pax;

use fields::{cut_nul, get_format, Format, Numbers};
#[cfg(test)]
pub(super) use pax::parse_pax_time;
use pax::{merge_pax, parse_pax};

/// A tar block.
const BLOCK: usize = 512;

/// PAX records: (key, value), in the order they came, a key once.
pub(super) type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Go's `maxSpecialFileSize`: the most bytes of one PAX header or GNU long name.
pub(super) const MAX_SPECIAL_FILE: u64 = 1 << 20;

/// Type flags.
pub(super) mod flag {
    pub const REG: u8 = b'0';
    /// Go's TypeRegA: a regular file, or a directory when the name ends in `/`.
    pub const REG_A: u8 = 0;
    pub const LINK: u8 = b'1';
    pub const SYMLINK: u8 = b'2';
    pub const CHAR: u8 = b'3';
    pub const BLOCK: u8 = b'4';
    pub const DIR: u8 = b'5';
    pub const FIFO: u8 = b'6';
    pub const CONT: u8 = b'7';
    pub const PAX: u8 = b'x';
    pub const PAX_GLOBAL: u8 = b'g';
    pub const GNU_LONG_NAME: u8 = b'L';
    pub const GNU_LONG_LINK: u8 = b'K';
    pub const GNU_SPARSE: u8 = b'S';
}

/// Whether entries of `typeflag` carry no data (Go's `isHeaderOnlyType`).
fn header_only(typeflag: u8) -> bool {
    matches!(
        typeflag,
        flag::LINK | flag::SYMLINK | flag::CHAR | flag::BLOCK | flag::DIR | flag::FIFO
    )
}

/// One entry's header, after Go's merging of PAX records and GNU long names.
#[derive(Clone, Debug, Default)]
pub(super) struct Header {
    pub typeflag: u8,
    pub name: Vec<u8>,
    pub linkname: Vec<u8>,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    /// The file's size: what reading the entry gives (for a sparse file, its real size).
    pub size: i64,
    /// Seconds and nanoseconds (a PAX `mtime` is precise).
    pub mtime: (i64, u32),
    pub devmajor: i64,
    pub devminor: i64,
    /// Whether the header block is a V7 one (no device numbers, no owner names).
    pub v7: bool,
    /// The PAX records that applied to the entry, as they were merged (the last of a
    /// key wins, as in Go's map).
    pub pax: Records,
    /// Where the entry's header block starts in the uncompressed stream.
    pub offset: u64,
}

impl Header {
    /// The value of PAX record `key`, if any.
    pub(super) fn pax(&self, key: &[u8]) -> Option<&[u8]> {
        self.pax
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// Whether Go reads this entry as a PAX (GNU.sparse) sparse file
    /// (`readGNUSparsePAXHeaders`).
    pub(super) fn is_pax_sparse(&self) -> bool {
        let major = self.pax(b"GNU.sparse.major");
        let minor = self.pax(b"GNU.sparse.minor");
        match (major, minor) {
            (Some(b"0"), Some(b"0" | b"1")) | (Some(b"1"), Some(b"0")) => true,
            (None, None) => self.pax(b"GNU.sparse.map").is_some_and(|m| !m.is_empty()),
            _ => false, // an unknown version: Go reads a plain file
        }
    }
}

/// An InvalidData error: the stream is not a tar archive Go would read.
fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn unexpected_eof(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the layer ends inside {what}"),
    )
}

/// A sparse file's data fragments (old GNU format), read as the file they make.
struct Sparse {
    /// (offset, length) in the file, in order, not overlapping (checked).
    fragments: Vec<(u64, u64)>,
    /// Index of the fragment reading is in or before.
    next: usize,
    /// Logical position.
    pos: u64,
    /// The file's real size.
    size: u64,
}

/// The tar stream of `R`.
pub(super) struct TarStream<R> {
    r: R,
    /// Bytes of the stream read so far.
    pos: u64,
    /// Data of the current entry not read yet, as stored (physical).
    remaining: u64,
    /// Padding after the current entry's data.
    pad: u64,
    /// The current entry is an old GNU sparse file.
    sparse: Option<Sparse>,
    block: [u8; BLOCK],
}

impl<R: Read> TarStream<R> {
    pub(super) fn new(r: R) -> Self {
        TarStream {
            r,
            pos: 0,
            remaining: 0,
            pad: 0,
            sparse: None,
            block: [0; BLOCK],
        }
    }

    /// The stream under the archive (to read it past the archive's end).
    pub(super) fn into_inner(self) -> R {
        self.r
    }

    /// Read exactly `buf.len()` bytes. Ok(false) when the stream ended before the first
    /// byte; an error when it ends after it.
    fn fill(&mut self, buf_len: usize, what: &str) -> io::Result<bool> {
        let mut n = 0;
        while n < buf_len {
            match self.r.read(&mut self.block[n..buf_len]) {
                Ok(0) if n == 0 => return Ok(false),
                Ok(0) => return Err(unexpected_eof(what)),
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += buf_len as u64;
        Ok(true)
    }

    /// Skip `n` bytes (Go's `discard`): the end of the stream inside them is an error.
    fn discard(&mut self, mut n: u64, what: &str) -> io::Result<()> {
        while n > 0 {
            let k = n.min(BLOCK as u64) as usize;
            if !self.fill(k, what)? {
                return Err(unexpected_eof(what));
            }
            n -= k as u64;
        }
        Ok(())
    }

    /// Skip the padding after an entry's data (Go's `tryReadFull` of it): false when the
    /// stream ends inside it, which Go takes as the end of the archive.
    fn skip_padding(&mut self) -> io::Result<bool> {
        let mut n = 0usize;
        let want = self.pad as usize;
        while n < want {
            match self.r.read(&mut self.block[n..want]) {
                Ok(0) => {
                    self.pos += n as u64;
                    return Ok(false);
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += want as u64;
        self.pad = 0;
        Ok(true)
    }

    /// Skip what is left of the current entry (data and padding): before reading the next
    /// header, and by a caller that wants the skipping done outside a budget.
    pub(super) fn skip_rest(&mut self) -> io::Result<bool> {
        let n = std::mem::take(&mut self.remaining);
        self.sparse = None;
        self.discard(n, "an entry's data")?;
        self.skip_padding()
    }

    /// The next entry, as Go's `Reader.Next` returns it (a global PAX header is one, of
    /// type `g`), or None at the end of the archive.
    pub(super) fn next(&mut self) -> io::Result<Option<Header>> {
        let mut pax: Records = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            if !self.skip_rest()? {
                return Ok(None);
            }
            let Some((mut hdr, format)) = self.read_header()? else {
                return Ok(None);
            };
            self.set_data(&hdr)?;
            match hdr.typeflag {
                flag::PAX | flag::PAX_GLOBAL => {
                    let data = self.special_file("a PAX header", hdr.offset)?;
                    pax = parse_pax(&data).map_err(|why| {
                        bad(format!("the PAX header at offset {}: {why}", hdr.offset))
                    })?;
                    if hdr.typeflag == flag::PAX_GLOBAL {
                        // Go merges a global header's records into it, ignoring what
                        // does not parse, and applies them to nothing else.
                        let records = std::mem::take(&mut pax);
                        let _ = merge_pax(&mut hdr, records.clone());
                        hdr.pax = records;
                        return Ok(Some(hdr));
                    }
                }
                flag::GNU_LONG_NAME | flag::GNU_LONG_LINK => {
                    let data = self.special_file("a GNU long name", hdr.offset)?;
                    let value = cut_nul(&data).to_vec();
                    if hdr.typeflag == flag::GNU_LONG_NAME {
                        long_name = Some(value);
                    } else {
                        long_link = Some(value);
                    }
                }
                _ => {
                    merge_pax(&mut hdr, std::mem::take(&mut pax))?;
                    // Go keeps the header's name when the long name is empty.
                    if let Some(n) = long_name.take().filter(|n| !n.is_empty()) {
                        hdr.name = n;
                    }
                    if let Some(l) = long_link.take().filter(|l| !l.is_empty()) {
                        hdr.linkname = l;
                    }
                    if hdr.typeflag == flag::REG_A {
                        hdr.typeflag = if hdr.name.ends_with(b"/") {
                            flag::DIR
                        } else {
                            flag::REG
                        };
                    }
                    // The PAX records may have changed the size, the type its having data.
                    self.set_data(&hdr)?;
                    if hdr.typeflag == flag::GNU_SPARSE {
                        self.old_gnu_sparse(&mut hdr, format)?;
                    }
                    return Ok(Some(hdr));
                }
            }
        }
    }

    /// The data of the entry `hdr` heads (Go's `handleRegularFile`).
    fn set_data(&mut self, hdr: &Header) -> io::Result<()> {
        let nb = if header_only(hdr.typeflag) {
            0
        } else {
            hdr.size
        };
        let nb = u64::try_from(nb).map_err(|_| {
            bad(format!(
                "the entry at offset {} has a negative size {}",
                hdr.offset, hdr.size
            ))
        })?;
        self.remaining = nb;
        self.pad = (BLOCK as u64 - nb % BLOCK as u64) % BLOCK as u64;
        self.sparse = None;
        Ok(())
    }

    /// All the data of a PAX header or GNU long name (Go's `readSpecialFile`).
    fn special_file(&mut self, what: &str, offset: u64) -> io::Result<Vec<u8>> {
        if self.remaining > MAX_SPECIAL_FILE {
            return Err(bad(format!(
                "{what} at offset {offset} is {} bytes; Go's reader takes at most {} MiB",
                self.remaining,
                MAX_SPECIAL_FILE >> 20
            )));
        }
        let mut data = vec![0u8; self.remaining as usize];
        self.read_exact_data(&mut data, what)?;
        Ok(data)
    }

    /// Fill `buf` from the current entry's data.
    fn read_exact_data(&mut self, buf: &mut [u8], what: &str) -> io::Result<()> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => return Err(unexpected_eof(what)),
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += buf.len() as u64;
        self.remaining -= buf.len() as u64;
        Ok(())
    }

    /// The next header block (Go's `readHeader`), with its format; None at the end.
    fn read_header(&mut self) -> io::Result<Option<(Header, Format)>> {
        let offset = self.pos;
        if !self.fill(BLOCK, "a tar header")? {
            return Ok(None);
        }
        if self.block.iter().all(|&b| b == 0) {
            if !self.fill(BLOCK, "the end-of-archive blocks")? {
                return Ok(None);
            }
            if self.block.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            return Err(bad(format!(
                "a zero block at offset {offset} followed by one that is not"
            )));
        }
        let b = &self.block;
        let format = get_format(b).ok_or_else(|| {
            bad(format!(
                "the block at offset {offset} is no tar header (its checksum does not match)"
            ))
        })?;
        let mut p = Numbers::default();
        let mut hdr = Header {
            typeflag: b[156],
            name: cut_nul(&b[0..100]).to_vec(),
            linkname: cut_nul(&b[157..257]).to_vec(),
            size: p.numeric(&b[124..136]),
            mode: p.numeric(&b[100..108]),
            uid: p.numeric(&b[108..116]),
            gid: p.numeric(&b[116..124]),
            mtime: (p.numeric(&b[136..148]), 0),
            v7: format == Format::V7,
            offset,
            ..Default::default()
        };
        if format != Format::V7 {
            hdr.devmajor = p.numeric(&b[329..337]);
            hdr.devminor = p.numeric(&b[337..345]);
            let prefix: &[u8] = match format {
                Format::Ustar => cut_nul(&b[345..500]),
                Format::Star => {
                    p.numeric(&b[476..488]);
                    p.numeric(&b[488..500]);
                    cut_nul(&b[345..476])
                }
                Format::Gnu => {
                    // Go reads GNU atime and ctime with a parser of their own: when they
                    // do not parse, the field is taken for a prefix written by Go before
                    // 1.8, if it is ASCII.
                    let mut times = Numbers::default();
                    if b[345] != 0 {
                        times.numeric(&b[345..357]);
                    }
                    if b[357] != 0 {
                        times.numeric(&b[357..369]);
                    }
                    let prefix = cut_nul(&b[345..500]);
                    if times.bad && prefix.is_ascii() {
                        prefix
                    } else {
                        &[]
                    }
                }
                Format::V7 => &[],
            };
            if !prefix.is_empty() {
                let mut name = prefix.to_vec();
                name.push(b'/');
                name.extend_from_slice(&hdr.name);
                hdr.name = name;
            }
        }
        if p.bad {
            return Err(bad(format!(
                "the header at offset {offset} has a number that does not parse"
            )));
        }
        Ok(Some((hdr, format)))
    }

    /// An old GNU sparse file (Go's `readOldGNUSparseMap`): its real size, and its map,
    /// from the header and the extension blocks after it.
    fn old_gnu_sparse(&mut self, hdr: &mut Header, format: Format) -> io::Result<()> {
        let at = hdr.offset;
        if format != Format::Gnu {
            return Err(bad(format!(
                "the sparse entry at offset {at} is not in the GNU format"
            )));
        }
        let mut p = Numbers::default();
        let real = p.numeric(&self.block[483..495]);
        let mut fragments = Vec::new();
        // The map in the header: 4 entries at 386, isextended at 482; in an extension
        // block, 21 entries at 0 and isextended at 504.
        let (mut start, mut count, mut extended_at) = (386usize, 4usize, 482usize);
        loop {
            for i in 0..count {
                let e = start + 24 * i;
                if self.block[e] == 0 {
                    break;
                }
                let offset = p.numeric(&self.block[e..e + 12]);
                let length = p.numeric(&self.block[e + 12..e + 24]);
                fragments.push((offset, length));
            }
            if p.bad {
                return Err(bad(format!(
                    "the sparse map of the entry at offset {at} does not parse"
                )));
            }
            if self.block[extended_at] == 0 {
                break;
            }
            // An extension block: header bytes, not data.
            if !self.fill(BLOCK, "a sparse map")? {
                return Err(unexpected_eof("a sparse map"));
            }
            (start, count, extended_at) = (0, 21, 504);
        }
        if p.bad {
            return Err(bad(format!(
                "the real size of the sparse entry at offset {at} does not parse"
            )));
        }
        // Go's validateSparseEntries.
        let size = u64::try_from(real).ok();
        let mut end = 0u64;
        let mut checked = Vec::with_capacity(fragments.len());
        for (offset, length) in fragments {
            let ok = (|| {
                let (o, l) = (u64::try_from(offset).ok()?, u64::try_from(length).ok()?);
                let e = o.checked_add(l).filter(|e| *e <= i64::MAX as u64)?;
                (o >= end && e <= size?).then_some((o, l, e))
            })();
            let Some((o, l, e)) = ok else {
                return Err(bad(format!(
                    "the sparse map of the entry at offset {at} is out of order or past its size"
                )));
            };
            end = e;
            checked.push((o, l));
        }
        let size = size.ok_or_else(|| {
            bad(format!(
                "the sparse entry at offset {at} has a negative size"
            ))
        })?;
        hdr.size = real;
        self.sparse = Some(Sparse {
            fragments: checked,
            next: 0,
            pos: 0,
            size,
        });
        Ok(())
    }

    /// Physical data of the current entry into `buf`.
    fn read_physical(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = loop {
            match self.r.read(&mut buf[..want]) {
                Ok(0) => return Err(unexpected_eof("an entry's data")),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.pos += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }

    /// The logical content of a sparse file: zeros in its holes.
    fn read_sparse(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(s) = &mut self.sparse else {
            return Ok(0);
        };
        if s.pos >= s.size || buf.is_empty() {
            // Go's sparse reader fails when data is left over (errUnrefData).
            if s.pos >= s.size && self.remaining > 0 {
                return Err(bad("a sparse file has more data than its map says"));
            }
            return Ok(0);
        }
        let (pos, size) = (s.pos, s.size);
        while s.next < s.fragments.len() && {
            let (o, l) = s.fragments[s.next];
            o + l <= pos
        } {
            s.next += 1;
        }
        let n = match s.fragments.get(s.next).copied() {
            Some((o, l)) if o <= pos => {
                let take = (o + l - pos).min(buf.len() as u64) as usize;
                if self.remaining == 0 {
                    return Err(bad("a sparse file has less data than its map says"));
                }
                self.read_physical(&mut buf[..take])?
            }
            next => {
                let hole_end = next.map_or(size, |(o, _)| o);
                let take = (hole_end - pos).min(buf.len() as u64) as usize;
                buf[..take].fill(0);
                take
            }
        };
        if let Some(s) = &mut self.sparse {
            s.pos += n as u64;
        }
        Ok(n)
    }
}

impl<R: Read> Read for TarStream<R> {
    /// The current entry's content.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.sparse.is_some() {
            self.read_sparse(buf)
        } else {
            self.read_physical(buf)
        }
    }
}

/// What `archive` frames as, in the form tools/go-tarframe prints Go's framing of it: a
/// line per entry (with its PAX records), then `end`, or `error ...` where reading
/// stopped. A PAX sparse file, which Go expands and imv refuses, stops it as
/// `error PAX sparse`. For the tests that compare the two.
#[cfg(test)]
pub(super) fn listing(archive: &[u8]) -> String {
    use std::fmt::Write as _;
    let hex = |b: &[u8]| b.iter().map(|c| format!("{c:02x}")).collect::<String>();
    let mut out = String::new();
    let mut stream = TarStream::new(archive);
    loop {
        let h = match stream.next() {
            Ok(None) => {
                out.push_str("end\n");
                return out;
            }
            Ok(Some(h)) => h,
            Err(e) => {
                let _ = writeln!(out, "error {e}");
                return out;
            }
        };
        if h.typeflag == flag::PAX_GLOBAL {
            let _ = writeln!(out, "global {}", hex(&h.name));
        } else {
            if h.is_pax_sparse() {
                out.push_str("error PAX sparse\n");
                return out;
            }
            let mut hasher = crate::digest::Hasher::new();
            let mut buf = [0u8; 8192];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => hasher.update(&buf[..n]),
                    Err(e) => {
                        let _ = writeln!(out, "error {e}");
                        return out;
                    }
                }
            }
            let digest = hasher.finish();
            let _ = writeln!(
                out,
                "entry {} {} {} {} {} {} {} {} {} {} {} {}",
                h.typeflag,
                hex(&h.name),
                hex(&h.linkname),
                h.size,
                h.mode,
                h.uid,
                h.gid,
                h.mtime.0,
                h.mtime.1,
                h.devmajor,
                h.devminor,
                digest.hex()
            );
        }
        let mut pax = h.pax.clone();
        pax.sort();
        for (k, v) in pax {
            let _ = writeln!(out, "pax {} {}", hex(&k), hex(&v));
        }
    }
}

#[cfg(test)]
mod tests;
