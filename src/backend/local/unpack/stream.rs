//! The byte streams under the tar reader: progress on the compressed side, format sniffing,
//! and, on the uncompressed side, the diff_id hash and a budget for header bytes.

use std::cell::Cell;
use std::io::{self, BufReader, Cursor, Read};

use flate2::bufread::MultiGzDecoder;

use crate::digest::{Digest, Hasher};

/// Buffer between the blob and the decompressor: large, so a multi-GB blob is read in few
/// system calls.
const SOURCE_BUFFER: usize = 1 << 20;

/// State the readers share with the unpack loop, which cannot reach them while the tar
/// archive owns them.
#[derive(Default)]
pub(super) struct Shared {
    /// Uncompressed bytes read so far.
    pos: Cell<u64>,
    /// Uncompressed position reads may not go past (the header budget).
    limit: Cell<u64>,
    /// The blob itself failed to read (an I/O error, not bad content).
    source_failed: Cell<bool>,
    /// A read was refused because it went over the header budget.
    budget_hit: Cell<bool>,
}

impl Shared {
    /// Fresh state, without a budget.
    pub(super) fn new() -> Self {
        let s = Shared::default();
        s.limit.set(u64::MAX);
        s
    }

    /// Allow at most `bytes` more uncompressed bytes to be read (`None`: no limit).
    pub(super) fn set_budget(&self, bytes: Option<u64>) {
        let limit = match bytes {
            Some(b) => self.pos.get().saturating_add(b),
            None => u64::MAX,
        };
        self.limit.set(limit);
    }

    /// Whether the blob itself failed to read.
    pub(super) fn source_failed(&self) -> bool {
        self.source_failed.get()
    }

    /// Whether the header budget was exceeded.
    pub(super) fn budget_hit(&self) -> bool {
        self.budget_hit.get()
    }
}

/// The compression of a layer, as its first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    /// Recognize the magic number at the start of `prefix`.
    fn sniff(prefix: &[u8]) -> Self {
        if prefix.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// A name for messages.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "uncompressed tar",
        }
    }
}

/// The blob as read: reports each chunk to the progress callback and remembers whether the
/// blob itself failed, so that an I/O error is not reported as bad content.
pub(super) struct Source<'a, R> {
    inner: R,
    on_progress: &'a mut dyn FnMut(u64),
    shared: &'a Shared,
}

impl<'a, R: Read> Source<'a, R> {
    pub(super) fn new(inner: R, on_progress: &'a mut dyn FnMut(u64), shared: &'a Shared) -> Self {
        Source {
            inner,
            on_progress,
            shared,
        }
    }
}

impl<R: Read> Read for Source<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.shared.source_failed.set(true);
            }
        })?;
        if n > 0 {
            (self.on_progress)(n as u64);
        }
        Ok(n)
    }
}

/// Sniff the compression of `source` from its first bytes (media types lie) and return a
/// reader of the uncompressed stream.
pub(super) fn decompress<'a, R: Read + 'a>(
    mut source: R,
) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    // Read the magic by hand: a short first read must not make us guess wrong.
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match source.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let compression = Compression::sniff(&magic[..n]);
    let buffered = BufReader::with_capacity(
        SOURCE_BUFFER,
        Cursor::new(magic).take(n as u64).chain(source),
    );
    let reader: Box<dyn Read + 'a> = match compression {
        // Multi-member: gzip allows concatenated members, and Go's reader (containerd's)
        // reads them all, so the diff_id covers them all.
        Compression::Gzip => Box::new(MultiGzDecoder::new(buffered)),
        // zstd's decoder reads concatenated frames to the end of its input.
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Compression::None => Box::new(buffered),
    };
    Ok((compression, reader))
}

/// The uncompressed stream: hashed for the diff_id, counted, and held to the header budget.
pub(super) struct Uncompressed<'a, R> {
    inner: R,
    hasher: Hasher,
    shared: &'a Shared,
}

impl<'a, R: Read> Uncompressed<'a, R> {
    pub(super) fn new(inner: R, shared: &'a Shared) -> Self {
        Uncompressed {
            inner,
            hasher: Hasher::new(),
            shared,
        }
    }

    /// Read to the end (the tar end blocks and anything after them belong to the diff_id
    /// too), then return the digest and the length of the whole stream.
    pub(super) fn finish(mut self, buf: &mut [u8]) -> io::Result<(Digest, u64)> {
        self.shared.set_budget(None);
        loop {
            match self.read(buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let len = self.hasher.len();
        Ok((self.hasher.finish(), len))
    }
}

impl<R: Read> Read for Uncompressed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pos = self.shared.pos.get();
        let room = self.shared.limit.get().saturating_sub(pos);
        if room == 0 && !buf.is_empty() {
            self.shared.budget_hit.set(true);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "tar headers of one entry are too large",
            ));
        }
        let max = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.hasher.update(&buf[..n]);
        self.shared.pos.set(pos + n as u64);
        Ok(n)
    }
}
