//! The byte streams under the tar reader: format sniffing, decompression and the diff_id
//! hash on a thread of their own, progress on the compressed side, and, on the
//! uncompressed side, a budget for header bytes.

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

/// A reader of the uncompressed stream of `source`, compressed as `compression`.
fn decoder<'a, R: Read + 'a>(
    compression: Compression,
    source: R,
) -> io::Result<Box<dyn Read + 'a>> {
    let buffered = BufReader::with_capacity(SOURCE_BUFFER, source);
    Ok(match compression {
        // Multi-member: gzip allows concatenated members, and Go's reader (containerd's)
        // reads them all, so the diff_id covers them all.
        Compression::Gzip => Box::new(MultiGzDecoder::new(buffered)),
        // zstd's decoder reads concatenated frames to the end of its input.
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Compression::None => Box::new(buffered),
    })
}

/// The uncompressed stream as the tar reader sees it: counted and held to the header
/// budget. (It is hashed where [`HashOn`] says.)
pub(super) struct Uncompressed<'a> {
    inner: Pipe<'a>,
    shared: &'a Shared,
}

impl<'a> Uncompressed<'a> {
    pub(super) fn new(inner: Pipe<'a>, shared: &'a Shared) -> Self {
        Uncompressed { inner, shared }
    }

    /// Read to the end (the tar end blocks and anything after them belong to the diff_id
    /// too), then return the digest (unless hashed nowhere) and the length of the whole
    /// stream.
    pub(super) fn finish(mut self, buf: &mut [u8]) -> io::Result<(Option<Digest>, u64)> {
        self.shared.set_budget(None);
        loop {
            match self.read(buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.inner
            .end
            .take()
            .ok_or_else(|| io::Error::other("the decompressing thread ended without a digest"))
    }
}

impl Read for Uncompressed<'_> {
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
        self.shared.pos.set(pos + n as u64);
        Ok(n)
    }
}

/// Bytes of the uncompressed stream handed over at a time by [`decompress_on_thread`], and
/// how many such chunks may wait: what the pipeline holds, at most (~0.75 MiB).
const CHUNK: usize = 256 * 1024;
const CHUNKS_IN_FLIGHT: usize = 2;

/// Which of the unpack's two threads hashes the uncompressed stream for the diff_id: the
/// less busy one, so that the unpack costs the larger of the two and no more.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum HashOn {
    /// The decompressing thread, as it hands chunks over (files in a directory: creating
    /// them is the busier side).
    Decompressor,
    /// The thread reading the tar, as chunks arrive (an EROFS image: writing one file
    /// costs little, inflating is the busier side).
    Reader,
    /// Neither: a layer with no diff ID to check (an artifact's tar layer, named by its
    /// blob's digest).
    Nowhere,
}

/// What the decompressing thread hands over.
enum Chunk {
    /// Uncompressed bytes, and how many compressed bytes were read so far.
    Data { bytes: Vec<u8>, compressed: u64 },
    /// The end of the stream: its length, and its digest when the thread hashed it.
    End { digest: Option<Digest>, len: u64 },
    /// Decompression failed; `source_failed` when the blob itself failed to read.
    Failed {
        error: io::Error,
        source_failed: bool,
    },
}

/// Decompress `blob` on a thread of `scope`, so that inflating (gzip, zstd) and creating
/// files overlap: a layer's unpack costs about the larger of the two rather than their sum
/// (docs/design.md, "Cold unpack"). The diff_id hash is computed on the side `hash_on`
/// names. The compression is
/// sniffed from the first bytes (media types lie) before the thread starts; the reader
/// returned yields the uncompressed stream, reports progress and blob failures, and ends
/// the thread when dropped early.
pub(super) fn decompress_on_thread<'scope, 'a, R: Read + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    mut blob: R,
    on_progress: &'a mut dyn FnMut(u64),
    shared: &'a Shared,
    hash_on: HashOn,
) -> io::Result<(Compression, Pipe<'a>)> {
    // Read the magic by hand: a short first read must not make us guess wrong.
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match blob.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                shared.source_failed.set(true);
                return Err(e);
            }
        }
    }
    let compression = Compression::sniff(&magic[..n]);
    let (tx, rx) = std::sync::mpsc::sync_channel(CHUNKS_IN_FLIGHT);
    std::thread::Builder::new()
        .name("imv-inflate".into())
        .spawn_scoped(scope, move || {
            let stats = std::rc::Rc::new(Cell::new((0u64, false)));
            let counted = Counted {
                inner: Cursor::new(magic).take(n as u64).chain(blob),
                stats: std::rc::Rc::clone(&stats),
            };
            let mut reader = match decoder(compression, counted) {
                Ok(r) => r,
                Err(error) => {
                    let _ = tx.send(Chunk::Failed {
                        error,
                        source_failed: false,
                    });
                    return;
                }
            };
            let mut hasher = (hash_on == HashOn::Decompressor).then(Hasher::new);
            let mut len = 0u64;
            loop {
                let mut bytes = vec![0u8; CHUNK];
                let mut filled = 0;
                let result = loop {
                    match reader.read(&mut bytes[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(k) => {
                            filled += k;
                            if filled == bytes.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                // What was read before a failure is handed over first, as a reader
                // without the thread would have returned it.
                if filled > 0 {
                    bytes.truncate(filled);
                    len += filled as u64;
                    if let Some(h) = &mut hasher {
                        h.update(&bytes);
                    }
                    let compressed = stats.get().0;
                    if tx.send(Chunk::Data { bytes, compressed }).is_err() {
                        return; // the unpack stopped
                    }
                }
                match result {
                    Ok(()) if filled == 0 => {
                        let digest = hasher.map(Hasher::finish);
                        let _ = tx.send(Chunk::End { digest, len });
                        return;
                    }
                    Ok(()) => {}
                    Err(error) => {
                        let source_failed = stats.get().1;
                        let _ = tx.send(Chunk::Failed {
                            error,
                            source_failed,
                        });
                        return;
                    }
                }
            }
        })?;
    Ok((
        compression,
        Pipe {
            rx,
            current: Vec::new(),
            at: 0,
            reported: 0,
            hasher: (hash_on == HashOn::Reader).then(Hasher::new),
            end: None,
            on_progress,
            shared,
        },
    ))
}

/// The blob on the decompressing thread: counts the bytes read and notes a failure, in
/// `stats` (compressed bytes, failed), which the thread reads while the decoder owns this.
struct Counted<R> {
    inner: R,
    stats: std::rc::Rc<Cell<(u64, bool)>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.inner.read(buf);
        let (read, failed) = self.stats.get();
        match &result {
            Ok(k) => self.stats.set((read + *k as u64, failed)),
            Err(e) if e.kind() != io::ErrorKind::Interrupted => self.stats.set((read, true)),
            Err(_) => {}
        }
        result
    }
}

/// The uncompressed stream from [`decompress_on_thread`].
pub(super) struct Pipe<'a> {
    rx: std::sync::mpsc::Receiver<Chunk>,
    current: Vec<u8>,
    at: usize,
    /// Compressed bytes reported to `on_progress` so far.
    reported: u64,
    /// Hashes each chunk as it arrives (`HashOn::Reader`).
    hasher: Option<Hasher>,
    /// The digest (if hashed) and length of the stream, once its end was reached.
    end: Option<(Option<Digest>, u64)>,
    on_progress: &'a mut dyn FnMut(u64),
    shared: &'a Shared,
}

impl Read for Pipe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(Chunk::Data { bytes, compressed }) => {
                    if compressed > self.reported {
                        (self.on_progress)(compressed - self.reported);
                        self.reported = compressed;
                    }
                    if let Some(h) = &mut self.hasher {
                        h.update(&bytes);
                    }
                    self.current = bytes;
                    self.at = 0;
                }
                Ok(Chunk::End { digest, len }) => {
                    let digest = digest.or_else(|| self.hasher.take().map(Hasher::finish));
                    self.end = Some((digest, len));
                    return Ok(0);
                }
                Ok(Chunk::Failed {
                    error,
                    source_failed,
                }) => {
                    if source_failed {
                        self.shared.source_failed.set(true);
                    }
                    return Err(error);
                }
                // The thread is done: after the end, or it failed and said so.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
