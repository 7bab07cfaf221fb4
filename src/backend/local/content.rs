//! The content store: blobs addressed by digest under `<root>/content/blobs/sha256/<hex>`,
//! every digest and size verified on the way in.
//!
//! A blob only ever appears under `blobs/` complete and verified: writes go to a private
//! temp file in `ingest/`, are hashed as they stream, fsynced, and renamed into place.
//! A reader therefore never sees a half-written blob, and a crash leaves at most a stale
//! temp file in `ingest/`, removed by the next [`ContentStore::open`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::{FlockOperation, RenameFlags, CWD};
use serde::de::DeserializeOwned;

use crate::backend::Progress;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};

/// The most a JSON blob (manifest, index, config) may weigh: these are read into memory.
pub const MAX_JSON_SIZE: u64 = 4 << 20;

/// Stale ingest files younger than this are left alone by [`ContentStore::open`]: another
/// handle on the same store may have just created one and not yet locked it.
const STALE_INGEST_AGE: Duration = Duration::from_secs(60);

/// What [`ContentStore::remove_stale_ingests`] is allowed to take when asked for it (by a
/// garbage collection): unlocked files older than this. A writer locks its file right after
/// creating it, microseconds apart; a second is ample.
pub const GC_INGEST_AGE: Duration = Duration::from_secs(1);

/// How much is copied per read while ingesting.
const CHUNK: usize = 128 << 10;

/// Makes temp file names unique within the process (the pid makes them unique across).
static INGEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// Blobs addressed by sha256 digest, in a directory the caller owns.
#[derive(Debug)]
pub struct ContentStore {
    dir: PathBuf,
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    /// Open the store in `dir` (normally `<root>/content`), creating `blobs/sha256/` and
    /// `ingest/` as needed and removing temp files that a crashed writer left in `ingest/`.
    pub fn open(dir: &Path) -> Result<Self> {
        let store = ContentStore {
            dir: dir.to_path_buf(),
            blobs: dir.join("blobs").join("sha256"),
            ingest: dir.join("ingest"),
        };
        fs::create_dir_all(&store.blobs).at("create content directory", &store.blobs)?;
        fs::create_dir_all(&store.ingest).at("create ingest directory", &store.ingest)?;
        store.remove_stale_ingests(STALE_INGEST_AGE)?;
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Whether the blob `digest` is in the store.
    pub fn contains(&self, digest: &Digest) -> bool {
        fs::symlink_metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file())
    }

    /// Open the blob `digest` for reading. NotFound when absent.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        OpenOptions::new()
            .read(true)
            // Blobs are regular files we renamed into place; a symlink here was not made by us.
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| self.blob_error("open", digest, &path, e))
    }

    /// Size in bytes of the blob `digest`. NotFound when absent.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        let meta =
            fs::symlink_metadata(&path).map_err(|e| self.blob_error("stat", digest, &path, e))?;
        if !meta.is_file() {
            return Err(Error::internal(format!(
                "blob {digest}: {} is not a regular file",
                path.display()
            )));
        }
        Ok(meta.len())
    }

    /// Read the whole blob `digest` into memory, refusing blobs over `limit` bytes
    /// (InvalidArgument), and check that what was read still hashes to `digest`.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let file = self.open_blob(digest)?;
        let len = file.metadata().at("stat blob", &path)?.len();
        if len > limit {
            return Err(Error::invalid(format!(
                "blob {digest} ({}) is {len} bytes, more than the {limit} allowed",
                path.display()
            )));
        }
        let mut data = Vec::with_capacity(len as usize);
        // take(): the file may have grown since the stat; never read past the limit.
        file.take(limit + 1)
            .read_to_end(&mut data)
            .at("read blob", &path)?;
        if data.len() as u64 > limit {
            return Err(Error::invalid(format!(
                "blob {digest} ({}) is more than the {limit} bytes allowed",
                path.display()
            )));
        }
        let actual = Digest::of(&data);
        if &actual != digest {
            return Err(Error::internal(format!(
                "blob {digest} ({}) is corrupted: its content hashes to {actual}",
                path.display()
            )));
        }
        Ok(data)
    }

    /// Read the blob `digest` (at most [`MAX_JSON_SIZE`] bytes) and parse it as JSON.
    /// Malformed JSON is InvalidArgument.
    pub fn read_json<T: DeserializeOwned>(&self, digest: &Digest) -> Result<T> {
        let data = self.read_blob(digest, MAX_JSON_SIZE)?;
        serde_json::from_slice(&data).map_err(|e| {
            Error::invalid(format!(
                "blob {digest} ({}) is not the JSON expected: {e}",
                self.blob_path(digest).display()
            ))
        })
    }

    /// Stream `reader` into the store and return the digest and size of what it held.
    ///
    /// With `expected = Some((digest, size))`, reading stops as soon as more than `size`
    /// bytes arrive, and a digest or size that differs is InvalidArgument naming both
    /// values; nothing is stored then. Without it, whatever arrives is stored under its
    /// own digest. Progress is reported by bytes, under the expected digest as task name
    /// (or `blob` when none is known).
    ///
    /// Safe to call from many threads at once, for the same digest too: each writer has
    /// its own temp file and the first to finish wins; the others drop theirs.
    pub fn ingest(
        &self,
        expected: Option<(&Digest, u64)>,
        reader: impl Read,
        progress: &dyn Progress,
    ) -> Result<(Digest, u64)> {
        let task = match expected {
            Some((d, _)) => d.to_string(),
            None => "blob".to_owned(),
        };
        progress.begin(&task, expected.map(|(_, size)| size));
        let result = self.ingest_inner(expected, reader, &task, progress);
        progress.end(&task);
        result
    }

    fn ingest_inner(
        &self,
        expected: Option<(&Digest, u64)>,
        mut reader: impl Read,
        task: &str,
        progress: &dyn Progress,
    ) -> Result<(Digest, u64)> {
        let (temp, mut file) = self.create_temp()?;
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let what = match expected {
                        Some((d, _)) => format!("read content of blob {d} for"),
                        None => "read content for".to_owned(),
                    };
                    return Err(Error::io(&what, &temp.path, e));
                }
            };
            hasher.update(&buf[..n]);
            if let Some((digest, size)) = expected {
                // Stop early: a source that sends more than announced is wrong, and
                // possibly endless.
                if hasher.len() > size {
                    return Err(Error::invalid(format!(
                        "blob {digest}: expected {size} bytes, got more ({} so far)",
                        hasher.len()
                    )));
                }
            }
            file.write_all(&buf[..n]).at("write", &temp.path)?;
            progress.advance(task, n as u64);
        }
        let size = hasher.len();
        let digest = hasher.finish();
        if let Some((want, want_size)) = expected {
            if size != want_size {
                return Err(Error::invalid(format!(
                    "blob {want}: expected {want_size} bytes, got {size}"
                )));
            }
            if &digest != want {
                return Err(Error::invalid(format!(
                    "blob content does not match its digest: expected {want}, got {digest}"
                )));
            }
        }
        self.commit(temp, file, &digest)?;
        Ok((digest, size))
    }

    /// Remove the blob `digest`. NotFound when absent.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        fs::remove_file(&path).map_err(|e| self.blob_error("remove", digest, &path, e))
    }

    /// The digests of every blob in the store, sorted. Files whose names are not digests
    /// (nobody's blobs) are skipped.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).at("list", &self.blobs)? {
            let entry = entry.at("list", &self.blobs)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Ok(d) = Digest::parse(&format!("sha256:{name}")) {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// A NotFound naming the digest for ENOENT, a plain I/O error otherwise.
    fn blob_error(&self, what: &str, digest: &Digest, path: &Path, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            Error::not_found(format!("blob {digest} not found in {}", self.dir.display()))
        } else {
            Error::io(&format!("{what} blob {digest} at"), path, e)
        }
    }

    /// A new, locked temp file in `ingest/`. The lock tells [`Self::remove_stale_ingests`]
    /// (of this or another process) that the file is in use.
    fn create_temp(&self) -> Result<(TempGuard, File)> {
        loop {
            let seq = INGEST_SEQ.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = self
                .ingest
                .join(format!("{}-{seq}-{nanos:08x}", std::process::id()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(file) => {
                    let guard = TempGuard { path };
                    rustix::fs::flock(&file, FlockOperation::LockExclusive)
                        .at("lock", &guard.path)?;
                    return Ok((guard, file));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("create ingest file", &path, e)),
            }
        }
    }

    /// Make the verified temp file the blob `digest`: durable first, then atomically visible.
    fn commit(&self, temp: TempGuard, file: File, digest: &Digest) -> Result<()> {
        // Blobs are immutable; read-only permissions say so to anyone looking.
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .at("chmod", &temp.path)?;
        file.sync_all().at("fsync", &temp.path)?;
        drop(file);
        let target = self.blob_path(digest);
        if self.contains(digest) {
            // Someone stored the same content first; ours is identical and redundant.
            return Ok(());
        }
        // NOREPLACE: a concurrent writer of the same digest may have won the race since the
        // check above; its (identical) blob may already be open by readers, so keep it.
        match rustix::fs::renameat_with(CWD, &temp.path, CWD, &target, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => return Ok(()),
            // Filesystems without RENAME_NOREPLACE: a plain rename replaces identical bytes
            // with identical bytes, which is harmless.
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
                fs::rename(&temp.path, &target).at("rename into place", &target)?;
            }
            Err(e) => {
                return Err(Error::io(
                    &format!("rename {} into place at", temp.path.display()),
                    &target,
                    e.into(),
                ))
            }
        }
        temp.disarm();
        // The rename is durable only once the directory is synced.
        File::open(&self.blobs)
            .and_then(|d| d.sync_all())
            .at("fsync", &self.blobs)?;
        Ok(())
    }

    /// Remove temp files in `ingest/` that no writer holds (a crashed or killed import
    /// left them) and that are at least `min_age` old. How many went.
    pub fn remove_stale_ingests(&self, min_age: Duration) -> Result<usize> {
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in fs::read_dir(&self.ingest).at("list", &self.ingest)? {
            let entry = entry.at("list", &self.ingest)?;
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                // Not something we create; remove it only if it is ours to remove.
                if meta.file_type().is_symlink() {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if age < min_age {
                continue;
            }
            let Ok(file) = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
            else {
                continue;
            };
            // A live writer holds the lock: leave its file alone.
            if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() {
                tracing::debug!(path = %path.display(), "removing stale ingest file");
                match fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove stale ingest file", &path, e)),
                }
            }
        }
        Ok(removed)
    }
}

/// Removes its temp file when dropped, unless [`TempGuard::disarm`]ed: a failed ingest
/// (error or panic) leaves nothing behind.
struct TempGuard {
    path: PathBuf,
}

impl TempGuard {
    fn disarm(mut self) {
        // Empty the path rather than `mem::forget(self)`, which leaked the PathBuf on every
        // blob stored (found by the C tests under LeakSanitizer).
        self.path = PathBuf::new();
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NoProgress;
    use crate::error::ErrorKind;
    use std::sync::{Arc, Mutex};

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        (dir, store)
    }

    fn ingest_dir_is_empty(store: &ContentStore) -> bool {
        fs::read_dir(store.dir().join("ingest"))
            .unwrap()
            .next()
            .is_none()
    }

    #[test]
    fn ingest_then_read_back() {
        let (_dir, store) = store();
        let data = b"hello, blob".to_vec();
        let want = Digest::of(&data);
        let (d, n) = store
            .ingest(Some((&want, data.len() as u64)), &data[..], &NoProgress)
            .unwrap();
        assert_eq!((d.clone(), n), (want.clone(), data.len() as u64));
        assert!(store.contains(&want));
        assert_eq!(store.size(&want).unwrap(), data.len() as u64);
        assert_eq!(store.read_blob(&want, 1024).unwrap(), data);
        let mut s = String::new();
        store
            .open_blob(&want)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s.as_bytes(), &data[..]);
        assert_eq!(store.list().unwrap(), vec![want.clone()]);
        assert_eq!(
            store.blob_path(&want),
            store.dir().join("blobs/sha256").join(want.hex())
        );
        assert!(ingest_dir_is_empty(&store));
        // Ingesting again is fine and changes nothing.
        store.ingest(None, &data[..], &NoProgress).unwrap();
        assert_eq!(store.list().unwrap(), vec![want]);
        assert!(ingest_dir_is_empty(&store));
    }

    #[test]
    fn mismatches_are_refused_and_leave_nothing() {
        let (_dir, store) = store();
        let data = b"some bytes";
        let good = Digest::of(data);
        let other = Digest::of(b"other");
        let cases: [(Option<(&Digest, u64)>, &str); 3] = [
            (Some((&other, data.len() as u64)), "does not match"),
            (
                Some((&good, data.len() as u64 + 1)),
                "expected 11 bytes, got 10",
            ),
            (Some((&good, 3)), "got more"),
        ];
        for (expected, msg) in cases {
            let err = store.ingest(expected, &data[..], &NoProgress).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
            assert!(err.message().contains(msg), "{err}");
            assert!(ingest_dir_is_empty(&store));
            assert!(store.list().unwrap().is_empty());
        }
        let err = store
            .ingest(Some((&other, 10)), &data[..], &NoProgress)
            .unwrap_err();
        assert!(err.message().contains(&other.to_string()));
        assert!(err.message().contains(&good.to_string()));
    }

    #[test]
    fn stops_reading_an_endless_source() {
        let (_dir, store) = store();
        let d = Digest::of(b"x");
        let err = store
            .ingest(Some((&d, 1)), io::repeat(b'x'), &NoProgress)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(ingest_dir_is_empty(&store));
    }

    #[test]
    fn failed_reader_leaves_nothing() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("boom"));
                }
                self.0 -= 1;
                buf[0] = 1;
                Ok(1)
            }
        }
        let (_dir, store) = store();
        let err = store.ingest(None, Failing(3), &NoProgress).unwrap_err();
        assert!(err.message().contains("boom"), "{err}");
        assert!(ingest_dir_is_empty(&store));
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn missing_blobs_are_not_found() {
        let (_dir, store) = store();
        let d = Digest::of(b"absent");
        assert!(!store.contains(&d));
        for err in [
            store.open_blob(&d).unwrap_err(),
            store.size(&d).unwrap_err(),
            store.read_blob(&d, 10).unwrap_err(),
            store.delete(&d).unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
            assert!(err.message().contains(&d.to_string()), "{err}");
        }
    }

    #[test]
    fn read_limits_and_corruption() {
        let (_dir, store) = store();
        let data = vec![7u8; 100];
        let (d, _) = store.ingest(None, &data[..], &NoProgress).unwrap();
        assert_eq!(
            store.read_blob(&d, 99).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(store.read_blob(&d, 100).unwrap().len(), 100);
        // Corrupt the stored blob behind the store's back: reading notices.
        let path = store.blob_path(&d);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut bad = data.clone();
        bad[50] ^= 1;
        fs::write(&path, &bad).unwrap();
        let err = store.read_blob(&d, 100).unwrap_err();
        assert!(err.message().contains("corrupted"), "{err}");
    }

    #[test]
    fn read_json_parses_and_refuses_garbage() {
        let (_dir, store) = store();
        let (good, _) = store
            .ingest(None, &br#"{"a": [1, 2]}"#[..], &NoProgress)
            .unwrap();
        let v: serde_json::Value = store.read_json(&good).unwrap();
        assert_eq!(v["a"][1], 2);
        let (bad, _) = store.ingest(None, &b"{not json"[..], &NoProgress).unwrap();
        let err = store.read_json::<serde_json::Value>(&bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains(&bad.to_string()));
        let big = vec![b' '; MAX_JSON_SIZE as usize + 1];
        let (big, _) = store.ingest(None, &big[..], &NoProgress).unwrap();
        let err = store.read_json::<serde_json::Value>(&big).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn delete_and_list_skip_foreign_names() {
        let (_dir, store) = store();
        let (a, _) = store.ingest(None, &b"a"[..], &NoProgress).unwrap();
        let (b, _) = store.ingest(None, &b"b"[..], &NoProgress).unwrap();
        let blobs = store.dir().join("blobs/sha256");
        fs::write(blobs.join("not-a-digest"), b"x").unwrap();
        fs::write(blobs.join(a.hex().to_uppercase()), b"x").unwrap();
        let mut want = vec![a.clone(), b.clone()];
        want.sort();
        assert_eq!(store.list().unwrap(), want);
        store.delete(&a).unwrap();
        assert!(!store.contains(&a));
        assert_eq!(store.list().unwrap(), vec![b]);
    }

    #[test]
    fn open_removes_stale_ingests_only() {
        let (dir, store) = store();
        let ingest = store.dir().join("ingest");
        let old = ingest.join("crashed");
        fs::write(&old, b"partial").unwrap();
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        // A live writer's file (locked), even if old, and a fresh one stay.
        let live = ingest.join("live");
        fs::write(&live, b"partial").unwrap();
        let live_file = File::options().write(true).open(&live).unwrap();
        live_file
            .set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        rustix::fs::flock(&live_file, FlockOperation::LockExclusive).unwrap();
        let fresh = ingest.join("fresh");
        fs::write(&fresh, b"partial").unwrap();

        let _again = ContentStore::open(&dir.path().join("content")).unwrap();
        assert!(!old.exists());
        assert!(live.exists());
        assert!(fresh.exists());
    }

    #[test]
    fn concurrent_ingests_of_one_digest() {
        let (_dir, store) = store();
        let store = Arc::new(store);
        let data: Arc<Vec<u8>> = Arc::new((0..1_000_000u32).map(|i| (i % 251) as u8).collect());
        let want = Digest::of(&data);
        let results = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (store, data, want, results) =
                    (store.clone(), data.clone(), want.clone(), results.clone());
                std::thread::spawn(move || {
                    let r = store.ingest(Some((&want, data.len() as u64)), &data[..], &NoProgress);
                    results.lock().unwrap().push(r.map(|(d, _)| d));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for r in results.lock().unwrap().iter() {
            assert_eq!(r.as_ref().unwrap(), &want);
        }
        assert_eq!(store.list().unwrap(), vec![want.clone()]);
        assert_eq!(store.read_blob(&want, 2_000_000).unwrap(), *data);
        assert!(ingest_dir_is_empty(&store));
    }

    #[test]
    fn progress_is_reported_by_bytes() {
        #[derive(Default)]
        struct Rec(Mutex<Vec<String>>, Mutex<u64>);
        impl Progress for Rec {
            fn begin(&self, task: &str, total: Option<u64>) {
                self.0
                    .lock()
                    .unwrap()
                    .push(format!("begin {task} {total:?}"));
            }
            fn advance(&self, _task: &str, bytes: u64) {
                *self.1.lock().unwrap() += bytes;
            }
            fn end(&self, task: &str) {
                self.0.lock().unwrap().push(format!("end {task}"));
            }
        }
        let (_dir, store) = store();
        let rec = Rec::default();
        let data = vec![1u8; 300_000];
        let d = Digest::of(&data);
        store.ingest(Some((&d, 300_000)), &data[..], &rec).unwrap();
        assert_eq!(*rec.1.lock().unwrap(), 300_000);
        assert_eq!(
            *rec.0.lock().unwrap(),
            vec![format!("begin {d} Some(300000)"), format!("end {d}")]
        );
    }
}
