//! In process: the library's own latency, as a runtime calling imv in-process (the C ABI
//! and the Go cgo bindings wrap these calls one to one) feels it, with no process start-up.
//! Every figure is a distribution of single calls, and every cold figure is set against
//! its floor: the same layer blobs inflated by the same decompressor (flate2 on zlib-rs,
//! `MultiGzDecoder` over a buffered reader, as the unpacker reads them), with nothing
//! written, so "cold ÷ floor" is what imv adds to the work no unpacker can skip.
//!
//! A second floor shows what the file system asks: the same layers, already inflated in
//! memory, extracted by the tar crate's unpacker (files, directories, links, modes,
//! owners, times; no decompression, no hashing, no sync) into a fresh directory of the
//! same file system. No unpacker does less than the larger of the two floors.
//!
//! Steps (each on a fresh store unless said):
//! - floors: inflate each image's layers, on one thread and on two (the 2-core floor), and
//!   create their files, on one thread and on two; for a multi-layer image, also inflate,
//!   hash (the diff ID) and write each layer as one file, syncing once, on two threads
//!   (what an unpacker that checks diff IDs and writes one image per layer cannot skip);
//! - cold mutate of a one-layer and an eight-layer image of the same Debian files;
//! - warm mutate (a new sandbox on an unpacked image), then the same call again (reuse);
//! - cleanup, then release, of each of those sandboxes;
//! - N threads each making one warm mutate through one handle at once (fan-out), for N up
//!   to 100: the wall time from their common start to the last one's return;
//! - cleanup + release of one sandbox with 30 volumes mounted, and with 1,000 plus 5,000
//!   unrelated mounts in the mount namespace (a busy node);
//! - through `imv serve`: one cold mutate, and 100 sandboxes mutating one cold image at
//!   once, each from a thread of this process with a connection of its own (as a runtime
//!   serving 100 pods calls it: no process start-up per call), on a fresh store each.

use std::fs;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use imv::{Config, ImageSpec, ImageVolumes, Mount};

use crate::images::Image;
use crate::R;

/// The unpacker's read buffer (src/backend/local/unpack/stream.rs, SOURCE_BUFFER).
const SOURCE_BUFFER: usize = 256 * 1024;

/// Named series of single-call latencies, in seconds.
#[derive(Default)]
pub struct Report {
    pub series: Vec<(String, Vec<f64>)>,
    /// Fan-out: (threads, wall seconds of each repetition).
    pub fanout: Vec<(usize, Vec<f64>)>,
    /// Peak RSS growth of this process during each cold mutate, KiB, by image label.
    pub cold_rss_kib: Vec<(String, Vec<u64>)>,
    /// Facts checked during the run.
    pub notes: Vec<String>,
    /// The image of the `imv serve` steps.
    pub serve_image: String,
}

impl Report {
    fn push(&mut self, name: &str, secs: f64) {
        match self.series.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => v.push(secs),
            None => self.series.push((name.to_owned(), vec![secs])),
        }
    }

    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.series
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Series names, shared with the report and the plots.
pub fn floor_name(img: &Image, threads: usize) -> String {
    format!(
        "floor: inflate {} ({threads} thread{})",
        img.label,
        if threads == 1 { "" } else { "s" }
    )
}
pub fn create_floor_name(img: &Image, threads: usize) -> String {
    format!(
        "floor: create the files of {} ({threads} thread{})",
        img.label,
        if threads == 1 { "" } else { "s" }
    )
}
pub fn verify_floor_name(img: &Image, threads: usize) -> String {
    format!(
        "floor: inflate, hash and write {} as one file per layer, one sync ({threads} thread{})",
        img.label,
        if threads == 1 { "" } else { "s" }
    )
}
pub fn cold_name(img: &Image) -> String {
    format!("cold mutate, {}", img.label)
}
pub const WARM: &str = "warm mutate (new sandbox)";
pub const REUSE: &str = "reuse (same sandbox, same image)";
pub const CLEANUP: &str = "cleanup (1 sandbox, 1 volume)";
pub const RELEASE: &str = "release (its lease)";
pub const CLEANUP_RELEASE: &str = "cleanup + release";
pub const SERVE_COLD: &str = "through imv serve: one cold mutate";
pub const SERVE_WARM: &str = "through imv serve: warm mutate (new sandbox), one at a time";
pub fn serve_fanout_name(n: usize) -> String {
    format!("through imv serve: {n} sandboxes at once on one cold image (wall)")
}
pub fn serve_warm_fanout_name(n: usize) -> String {
    format!("through imv serve: {n} sandboxes at once on a warm image (wall)")
}
pub fn busy_name(volumes: usize, unrelated: usize) -> String {
    if unrelated == 0 {
        format!("cleanup + release, {volumes} volumes mounted")
    } else {
        format!("cleanup + release, {volumes} volumes + {unrelated} other mounts")
    }
}

pub struct Plan {
    pub cold_reps: usize,
    pub warm_n: usize,
    pub fanout: Vec<usize>,
    pub fanout_reps: usize,
    pub busy_volumes: usize,
    pub busy_unrelated: usize,
    pub busy_reps: usize,
    pub serve_reps: usize,
    /// Only the steps through `imv serve` (scenario `serve`).
    pub only_serve: bool,
}

pub fn plan(quick: bool, only_serve: bool) -> Plan {
    Plan {
        only_serve,
        cold_reps: if quick { 2 } else { 7 },
        warm_n: if quick { 50 } else { 300 },
        fanout: vec![1, 10, 25, 50, 100],
        fanout_reps: if quick { 2 } else { 7 },
        busy_volumes: 1000,
        busy_unrelated: 5000,
        busy_reps: if quick { 10 } else { 30 },
        serve_reps: if quick { 2 } else { 5 },
    }
}

/// One image volume of `image` at /data.
pub(crate) fn mounts(image: &str) -> Vec<Mount> {
    vec![Mount {
        container_path: "/data".into(),
        readonly: true,
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    }]
}

/// Where the in-process steps keep their stores: roots on the run's file system, state
/// directories (where volumes are mounted) on tmpfs, as a runtime's state is (/run).
pub(crate) struct Dirs {
    work: PathBuf,
    run: PathBuf,
    seq: AtomicUsize,
}

impl Dirs {
    /// Stores under `work` (their roots) and `run` (their state directories), made here.
    pub(crate) fn new(work: PathBuf, run: PathBuf) -> R<Self> {
        fs::create_dir_all(&work)?;
        fs::create_dir_all(&run)?;
        Ok(Dirs {
            work,
            run,
            seq: AtomicUsize::new(0),
        })
    }

    /// A new store's root directory and the directory its state goes under.
    fn next(&self) -> (PathBuf, PathBuf) {
        let name = format!("inproc{}", self.seq.fetch_add(1, Ordering::Relaxed));
        (self.work.join(&name), self.run.join(name))
    }
}

/// A fresh store with `img` imported.
pub(crate) struct Store {
    /// The store's root, on the run's file system.
    dir: PathBuf,
    /// Its state directory's parent, on tmpfs (see [`Dirs`]).
    run: PathBuf,
    volumes: Arc<ImageVolumes>,
    image: String,
}

impl Store {
    pub(crate) fn new(dirs: &Dirs, img: &Image) -> R<Self> {
        let (dir, run) = dirs.next();
        let volumes = ImageVolumes::open(Config::new(dir.join("root"), run.join("state")))?;
        volumes.import(&img.archive, None)?;
        Ok(Store {
            dir,
            run,
            volumes: Arc::new(volumes),
            image: img.name.clone(),
        })
    }

    /// Where the store keeps blob `digest` (`sha256:...`).
    pub(crate) fn blob(&self, digest: &str) -> PathBuf {
        self.dir
            .join("root/content/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    pub(crate) fn mutate(&self, sandbox: &str) -> R<f64> {
        let mut m = mounts(&self.image);
        let t = Instant::now();
        self.volumes.mutate_mounts(sandbox, "", None, &mut m)?;
        let d = t.elapsed().as_secs_f64();
        if m[0].host_path.is_empty() {
            return Err(format!("mutate of {sandbox} set no host_path").into());
        }
        Ok(d)
    }

    /// Cleanup then release, as containerd's StopPodSandbox and RemovePodSandbox call them.
    fn cleanup_release(&self, sandbox: &str) -> R<(f64, f64)> {
        let t = Instant::now();
        self.volumes.cleanup(sandbox, "")?;
        let c = t.elapsed().as_secs_f64();
        let t = Instant::now();
        self.volumes.release(sandbox)?;
        Ok((c, t.elapsed().as_secs_f64()))
    }

    fn mounted(&self) -> R<usize> {
        let prefix = format!("{}/", self.run.display());
        Ok(fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&prefix)))
            .count())
    }

    /// Release whatever sandboxes are left, then remove the store.
    pub(crate) fn finish(self, sandboxes: impl IntoIterator<Item = String>) -> R<()> {
        for sb in sandboxes {
            self.volumes.release(&sb)?;
        }
        let left = self.mounted()?;
        drop(self.volumes);
        if left != 0 {
            return Err(format!("{left} mounts left under {}", self.run.display()).into());
        }
        // The store's EROFS layers stay mounted after it closes (docs/design.md, "Layers
        // as EROFS images").
        imv_testkit::mounts::unmount_under(&self.dir);
        fs::remove_dir_all(&self.dir)?;
        fs::remove_dir_all(&self.run)?;
        Ok(())
    }
}

/// The layer blobs of `img`, read from its archive into memory.
fn blobs(img: &Image, work: &Path) -> R<Vec<Vec<u8>>> {
    let dir = work.join("floor-blobs");
    fs::create_dir_all(&dir)?;
    let names: Vec<String> = img
        .layer_digests
        .iter()
        .map(|d| format!("blobs/sha256/{}", d.trim_start_matches("sha256:")))
        .collect();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&img.archive)
        .arg("-C")
        .arg(&dir)
        .args(&names)
        .status()?;
    if !status.success() || names.is_empty() {
        return Err(format!("extracting the layers of {}: {status}", img.label).into());
    }
    let out = names
        .iter()
        .map(|n| fs::read(dir.join(n)))
        .collect::<io::Result<Vec<_>>>()?;
    fs::remove_dir_all(&dir)?;
    Ok(out)
}

/// The uncompressed stream of one blob, read as the unpacker reads it.
fn inflater(blob: &[u8]) -> flate2::bufread::MultiGzDecoder<BufReader<&[u8]>> {
    flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(SOURCE_BUFFER, blob))
}

/// Inflate one blob to nowhere; the uncompressed length.
fn inflate(blob: &[u8]) -> io::Result<u64> {
    io::copy(&mut inflater(blob), &mut io::sink())
}

/// The layers inflated, in memory.
fn inflated(blobs: &[Vec<u8>]) -> R<Vec<Vec<u8>>> {
    blobs
        .iter()
        .map(|b| {
            let mut out = Vec::new();
            io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&b[..]), &mut out)?;
            Ok(out)
        })
        .collect()
}

/// Extract every inflated layer in `tars` into its own new directory under `dir`, on
/// `threads` threads; then remove them (not timed).
fn create_all(tars: &[Vec<u8>], dir: &Path, threads: usize) -> R<f64> {
    fs::create_dir_all(dir)?;
    let secs = timed_on_threads(tars, threads, |i, tar| {
        let mut archive = tar::Archive::new(&tar[..]);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_preserve_mtime(true);
        archive.set_unpack_xattrs(true);
        archive.unpack(dir.join(format!("{i}")))
    })?;
    fs::remove_dir_all(dir)?;
    Ok(secs)
}

/// Inflate each of `blobs`, hash what comes out (its diff ID, SHA-256) and write it to a
/// file of its own under `dir`, on `threads` threads, then sync the file system once:
/// what an unpacker that checks every layer's diff ID and keeps each layer durably as one
/// file (an EROFS image, say) cannot skip. The files are removed after (not timed).
fn inflate_hash_write_all(blobs: &[Vec<u8>], dir: &Path, threads: usize) -> R<f64> {
    use sha2::Digest as _;
    use std::io::{Read, Write};
    fs::create_dir_all(dir)?;
    let written = timed_on_threads(blobs, threads, |i, blob| {
        let mut inflated = inflater(blob);
        let mut file = fs::File::create(dir.join(i.to_string()))?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; SOURCE_BUFFER];
        loop {
            let n = inflated.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])?;
        }
        std::hint::black_box(hasher.finalize());
        Ok(())
    })?;
    let synced = Instant::now();
    rustix::fs::syncfs(fs::File::open(dir)?)?;
    let secs = written + synced.elapsed().as_secs_f64();
    fs::remove_dir_all(dir)?;
    Ok(secs)
}

/// Inflate all `blobs` on `threads` threads.
fn inflate_all(blobs: &[Vec<u8>], threads: usize) -> R<f64> {
    timed_on_threads(blobs, threads, |_, b| inflate(b).map(drop))
}

/// Run `work` on every item of `items` (with its index), on `threads` threads, each taking
/// the next item not yet taken; the wall time of it all.
fn timed_on_threads<T: Sync>(
    items: &[T],
    threads: usize,
    work: impl Fn(usize, &T) -> io::Result<()> + Sync,
) -> R<f64> {
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> io::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return Ok(());
                        };
                        work(i, item)?;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("bench thread panicked"))
    })?;
    Ok(t.elapsed().as_secs_f64())
}

fn self_kib(key: &str) -> R<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .ok_or_else(|| format!("{key} not in /proc/self/status"))?;
    Ok(line
        .trim_start_matches(':')
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?)
}

/// Write back what earlier steps left dirty (an import, the files of a floor just
/// removed), so that a timed step starts from a clean page cache and pays only for its
/// own writes: a cold mutate syncs the file system, which would otherwise flush them too.
pub(crate) fn settle() {
    rustix::fs::sync();
}

/// Floors and cold mutates of `imgs`, interleaved per repetition.
fn cold(dirs: &Dirs, imgs: &[&Image], p: &Plan, rep: &mut Report) -> R<()> {
    let loaded = imgs
        .iter()
        .map(|img| blobs(img, &dirs.work))
        .collect::<R<Vec<_>>>()?;
    let tars = loaded.iter().map(|b| inflated(b)).collect::<R<Vec<_>>>()?;
    for r in 0..p.cold_reps {
        eprintln!("bench: in process: floors and cold mutates (rep {})", r + 1);
        for ((img, blobs), tars) in imgs.iter().zip(&loaded).zip(&tars) {
            rep.push(&floor_name(img, 1), inflate_all(blobs, 1)?);
            let created = dirs.work.join("floor-files");
            settle();
            rep.push(&create_floor_name(img, 1), create_all(tars, &created, 1)?);
            if blobs.len() > 1 {
                rep.push(&floor_name(img, 2), inflate_all(blobs, 2)?);
                settle();
                rep.push(&create_floor_name(img, 2), create_all(tars, &created, 2)?);
                settle();
                rep.push(
                    &verify_floor_name(img, 2),
                    inflate_hash_write_all(blobs, &created, 2)?,
                );
            }
            let store = Store::new(dirs, img)?;
            settle();
            // clear_refs 5 resets VmHWM to the current RSS: VmHWM afterwards is the peak.
            fs::write("/proc/self/clear_refs", "5")?;
            let before = self_kib("VmRSS")?;
            rep.push(&cold_name(img), store.mutate("cold")?);
            let peak = self_kib("VmHWM")?.saturating_sub(before);
            match rep.cold_rss_kib.iter_mut().find(|(l, _)| *l == img.label) {
                Some((_, v)) => v.push(peak),
                None => rep.cold_rss_kib.push((img.label.clone(), vec![peak])),
            }
            store.finish(["cold".to_owned()])?;
        }
    }
    Ok(())
}

/// Warm mutates, reuses, cleanups and releases, one sandbox at a time.
fn warm(dirs: &Dirs, img: &Image, p: &Plan, rep: &mut Report) -> R<()> {
    eprintln!(
        "bench: in process: {} warm mutates, reuses, cleanups",
        p.warm_n
    );
    let store = Store::new(dirs, img)?;
    store.mutate("prime")?;
    let sandboxes: Vec<String> = (0..p.warm_n).map(|i| format!("warm{i}")).collect();
    for sb in &sandboxes {
        rep.push(WARM, store.mutate(sb)?);
        rep.push(REUSE, store.mutate(sb)?);
    }
    let mounted = store.mounted()?;
    rep.notes.push(format!(
        "warm: {mounted} volumes mounted after {} warm mutates and their reuses (1 each expected, plus the first)",
        p.warm_n
    ));
    if mounted != p.warm_n + 1 {
        return Err(format!("{mounted} volumes mounted, expected {}", p.warm_n + 1).into());
    }
    for sb in &sandboxes {
        let (c, r) = store.cleanup_release(sb)?;
        rep.push(CLEANUP, c);
        rep.push(RELEASE, r);
        rep.push(CLEANUP_RELEASE, c + r);
    }
    store.finish(["prime".to_owned()])
}

/// N threads, one warm mutate each on its own sandbox, through one handle, started together.
fn fanout(dirs: &Dirs, img: &Image, p: &Plan, rep: &mut Report) -> R<()> {
    let store = Store::new(dirs, img)?;
    store.mutate("prime")?;
    for r in 0..p.fanout_reps {
        for &n in &p.fanout {
            eprintln!("bench: in process: {n} threads at once (rep {})", r + 1);
            let start = Arc::new(Barrier::new(n + 1));
            let threads: Vec<_> = (0..n)
                .map(|i| {
                    let volumes = Arc::clone(&store.volumes);
                    let start = Arc::clone(&start);
                    let image = store.image.clone();
                    std::thread::spawn(move || {
                        let mut m = mounts(&image);
                        start.wait();
                        volumes.mutate_mounts(&format!("fan{r}-{n}-{i}"), "", None, &mut m)
                    })
                })
                .collect();
            start.wait();
            let t = Instant::now();
            for th in threads {
                th.join().expect("mutate thread panicked")?;
            }
            let wall = t.elapsed().as_secs_f64();
            match rep.fanout.iter_mut().find(|(k, _)| *k == n) {
                Some((_, v)) => v.push(wall),
                None => rep.fanout.push((n, vec![wall])),
            }
            for i in 0..n {
                store.cleanup_release(&format!("fan{r}-{n}-{i}"))?;
            }
        }
    }
    store.finish(["prime".to_owned()])
}

/// Cleanup + release of single sandboxes among 30 mounted volumes, then among
/// `busy_volumes` plus `busy_unrelated` tmpfs mounts (undone with one lazy unmount of
/// their parent).
fn busy(dirs: &Dirs, img: &Image, p: &Plan, rep: &mut Report) -> R<()> {
    let store = Store::new(dirs, img)?;
    let mut live: Vec<String> = Vec::new();
    let mut next = 0usize;
    let mut grow_to = |store: &Store, live: &mut Vec<String>, n: usize| -> R<()> {
        while live.len() < n {
            let sb = format!("busy{next}");
            next += 1;
            store.mutate(&sb)?;
            live.push(sb);
        }
        Ok(())
    };
    let measure = |store: &Store, live: &mut Vec<String>, name: &str, rep: &mut Report| -> R<()> {
        // The oldest sandbox each time: its volume is not the newest mount.
        let sb = live.remove(0);
        let (c, r) = store.cleanup_release(&sb)?;
        rep.push(name, c + r);
        Ok(())
    };
    eprintln!("bench: in process: cleanup among 30 volumes");
    for _ in 0..p.busy_reps {
        grow_to(&store, &mut live, 30)?;
        measure(&store, &mut live, &busy_name(30, 0), rep)?;
    }
    eprintln!(
        "bench: in process: mounting {} volumes and {} other mounts",
        p.busy_volumes, p.busy_unrelated
    );
    let other = store.dir.join("other");
    fs::create_dir_all(&other)?;
    let _other = Unrelated::mount(&other, p.busy_unrelated)?;
    for _ in 0..p.busy_reps {
        grow_to(&store, &mut live, p.busy_volumes)?;
        measure(
            &store,
            &mut live,
            &busy_name(p.busy_volumes, p.busy_unrelated),
            rep,
        )?;
    }
    let total = fs::read_to_string("/proc/self/mountinfo")?.lines().count();
    rep.notes.push(format!(
        "busy node: {total} mounts in the namespace while the last cleanups ran"
    ));
    drop(_other);
    store.finish(live)
}

/// `n` tmpfs mounts under a tmpfs at `dir`; dropping unmounts them all at once.
struct Unrelated(PathBuf);

impl Unrelated {
    fn mount(dir: &Path, n: usize) -> R<Self> {
        use rustix::mount::{mount, MountFlags};
        mount("other", dir, "tmpfs", MountFlags::empty(), None)?;
        let guard = Unrelated(dir.to_owned());
        for i in 0..n {
            let d = dir.join(format!("{i}"));
            fs::create_dir(&d)?;
            mount("other", &d, "tmpfs", MountFlags::empty(), None)?;
        }
        Ok(guard)
    }
}

impl Drop for Unrelated {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// `imv serve` on a fresh store holding `img`; killed (and the store removed) on drop.
struct Served {
    dir: PathBuf,
    run: PathBuf,
    child: std::process::Child,
    socket: PathBuf,
}

impl Served {
    fn start(dirs: &Dirs, img: &Image) -> R<Self> {
        let store = Store::new(dirs, img)?;
        let (dir, run) = (store.dir.clone(), store.run.clone());
        // The daemon takes the store: this process lets go of it first.
        drop(store);
        let socket = dir.join("imv.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_imv"))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(run.join("state"))
            .args(["--log-level", "warn", "serve", "--socket"])
            .arg(&socket)
            .args(["--max-requests", "128", "--max-connections", "256"])
            .stdin(std::process::Stdio::null())
            .spawn()?;
        let served = Served {
            dir,
            run,
            child,
            socket,
        };
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&served.socket).is_err() {
            if start.elapsed().as_secs() > 20 {
                return Err("imv serve did not listen".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(served)
    }

    fn client(&self) -> R<imv::service::Client> {
        Ok(imv::service::Client::connect(&self.socket)?
            .with_timeout(std::time::Duration::from_secs(120)))
    }

    /// Release `sandboxes`, stop the daemon (SIGTERM: it finishes and removes its
    /// socket), and remove the store.
    fn finish(mut self, sandboxes: &[String]) -> R<()> {
        let client = self.client()?;
        for sb in sandboxes {
            client.release(sb)?;
        }
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child.wait()?;
        imv_testkit::mounts::unmount_under(&self.dir);
        fs::remove_dir_all(&self.dir)?;
        fs::remove_dir_all(&self.run)?;
        Ok(())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One cold mutate through `imv serve`, then `n` at once, each on a fresh store.
fn serve(dirs: &Dirs, img: &Image, p: &Plan, rep: &mut Report) -> R<()> {
    let n = 100;
    rep.serve_image = img.label.clone();
    for r in 0..p.serve_reps {
        eprintln!(
            "bench: in process: through imv serve, 1 and {n} cold mutates (rep {})",
            r + 1
        );
        let served = Served::start(dirs, img)?;
        let mut m = mounts(&img.name);
        let client = served.client()?;
        settle();
        let t = Instant::now();
        client.mutate_mounts("cold", "", None, &mut m)?;
        rep.push(SERVE_COLD, t.elapsed().as_secs_f64());
        served.finish(&["cold".to_owned()])?;

        let served = Served::start(dirs, img)?;
        // Connected and served once before the clock starts, as a runtime's connections
        // are: the daemon's threads for a connection start after it is accepted.
        let clients = (0..n)
            .map(|_| {
                let client = served.client()?;
                client.status()?;
                Ok(client)
            })
            .collect::<R<Vec<_>>>()?;
        let cold = at_once(&clients, &img.name, "cold")?;
        rep.push(&serve_fanout_name(n), cold);
        // The same again on the image now unpacked: what the protocol and the service
        // cost for 100 callers, apart from waiting for one unpack.
        let warm = at_once(&clients, &img.name, "warm")?;
        rep.push(&serve_warm_fanout_name(n), warm);
        // And one at a time on one connection: the latency of a single warm call.
        for i in 0..n {
            let mut m = mounts(&img.name);
            let t = Instant::now();
            clients[0].mutate_mounts(&format!("one{i}"), "", None, &mut m)?;
            rep.push(SERVE_WARM, t.elapsed().as_secs_f64());
        }
        drop(clients);
        let sandboxes: Vec<String> = ["cold", "warm", "one"]
            .iter()
            .flat_map(|k| (0..n).map(move |i| format!("{k}{i}")))
            .collect();
        served.finish(&sandboxes)?;
    }
    Ok(())
}

/// Each of `clients` mutates one sandbox (`<prefix><i>`) on `image`, all at once; the
/// wall time until the last returns.
fn at_once(clients: &[imv::service::Client], image: &str, prefix: &str) -> R<f64> {
    settle();
    let start = Barrier::new(clients.len() + 1);
    std::thread::scope(|s| {
        let threads: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, client)| {
                let start = &start;
                let sandbox = format!("{prefix}{i}");
                s.spawn(move || {
                    let mut m = mounts(image);
                    start.wait();
                    client.mutate_mounts(&sandbox, "", None, &mut m)
                })
            })
            .collect();
        start.wait();
        let t = Instant::now();
        for th in threads {
            th.join().expect("client thread panicked")?;
        }
        Ok(t.elapsed().as_secs_f64())
    })
}

/// All in-process steps, on the one-layer and the eight-layer image of the same files.
pub fn run(
    work: &Path,
    run: &Path,
    one: &Image,
    eight: &Image,
    fanout_image: &Image,
    p: &Plan,
) -> R<Report> {
    let dirs = Dirs::new(work.join("inproc"), run.join("inproc"))?;
    let mut rep = Report::default();
    if p.only_serve {
        serve(&dirs, fanout_image, p, &mut rep)?;
        return Ok(rep);
    }
    cold(&dirs, &[one, eight], p, &mut rep)?;
    warm(&dirs, one, p, &mut rep)?;
    fanout(&dirs, one, p, &mut rep)?;
    busy(&dirs, one, p, &mut rep)?;
    serve(&dirs, fanout_image, p, &mut rep)?;
    Ok(rep)
}
