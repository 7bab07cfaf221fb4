//! The imv benchmark: imv's embedded store, imv on containerd, and containerd itself (`ctr`)
//! side by side in one run, written to bench/results.md. Run it with `bench/run` (which
//! builds in release mode, starts a private containerd and cleans up); see bench/README.md.
//!
//! Every engine is driven through its command-line tool, one process per operation, as a
//! runtime or an operator would: `imv` for the first two, `ctr` for containerd. So each
//! number includes that tool's start-up, and the comparison is process against process.

mod artifact_images;
mod artifacts;
mod images;
mod inproc;
mod measure;
mod plots;
mod report;

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use imv_testkit::image_builder::Compression;

use images::{Image, Shape, Spec};
use measure::{quiet, run, run1, Daemon, Logs};
use report::Results;

pub type R<T> = Result<T, Box<dyn std::error::Error>>;

/// The imv benchmark (run it through bench/run).
#[derive(Parser, Debug)]
#[command(name = "imv-bench")]
struct Args {
    /// A 1-2 minute version: smaller images, fewer repetitions.
    #[arg(long)]
    quick: bool,
    /// Work directory (bench/run makes one under /tmp and removes it afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The socket of the private containerd bench/run started.
    #[arg(long)]
    containerd_address: Option<PathBuf>,
    /// Its process ID (to read its CPU time and memory).
    #[arg(long)]
    containerd_pid: Option<u32>,
    /// A tmpfs for what a runtime keeps under /run: the volumes' state directories and
    /// ctr's mount targets (bench/run mounts it).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Where generated images are kept between runs.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// The results file to write.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Scenarios to run (comma-separated): big, many, fanout, files (the Debian-files
    /// images through the command-line tools), artifacts (models as OCI artifacts and as
    /// image layers), inproc (the library in process), serve (only inproc's steps through
    /// `imv serve`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "big,many,fanout,files,artifacts,inproc"
    )]
    scenarios: Vec<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Local,
    ImvCtd,
    Ctr,
}

const ENGINES: [Engine; 3] = [Engine::Local, Engine::ImvCtd, Engine::Ctr];

impl Engine {
    pub fn label(self) -> &'static str {
        match self {
            Engine::Local => "imv, embedded store",
            Engine::ImvCtd => "imv → containerd",
            Engine::Ctr => "containerd (ctr)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Engine::Local => "local",
            Engine::ImvCtd => "imvctd",
            Engine::Ctr => "ctr",
        }
    }
}

struct Ctx {
    imv: PathBuf,
    dir: PathBuf,
    /// On tmpfs: state directories and mount targets.
    run: PathBuf,
    ctd_address: PathBuf,
    containerd: Daemon,
    logs: Logs,
    seq: AtomicUsize,
}

impl Ctx {
    fn ctr(&self, ns: &str) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&self.ctd_address).args(["-n", ns]);
        c
    }
}

/// One fresh store holding one image, so a mount of it is cold: a new root for the
/// embedded store, a new namespace in containerd (containerd unpacks again per namespace:
/// its snapshots are namespaced).
struct Store<'a> {
    ctx: &'a Ctx,
    engine: Engine,
    /// The embedded store's root, logs, the socket.
    base: PathBuf,
    /// On tmpfs: imv's state directory (`state`), ctr's mount targets (`mnt`).
    run: PathBuf,
    ns: String,
    image: &'a Image,
    sandboxes: Vec<String>,
    serve: Option<(Child, PathBuf)>,
}

impl<'a> Store<'a> {
    fn new(ctx: &'a Ctx, engine: Engine, image: &'a Image) -> R<Self> {
        let n = ctx.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{n}", engine.short());
        let base = ctx.dir.join(&id);
        let run = ctx.run.join(&id);
        fs::create_dir_all(&base)?;
        fs::create_dir_all(run.join("mnt"))?;
        Ok(Store {
            ctx,
            engine,
            base,
            run,
            ns: format!("bench-{id}"),
            image,
            sandboxes: Vec::new(),
            serve: None,
        })
    }

    /// The containerd daemon, for the steps where it does the work.
    fn daemons(&self) -> Vec<Daemon> {
        match self.engine {
            Engine::Local => vec![],
            _ => vec![self.ctx.containerd.clone()],
        }
    }

    fn import(&self) -> Command {
        match self.engine {
            Engine::Local => {
                let mut c = self.imv();
                c.arg("import").arg(&self.image.archive);
                c
            }
            _ => {
                let mut c = self.ctx.ctr(&self.ns);
                c.args(["images", "import", "--no-unpack"])
                    .arg(&self.image.archive);
                c
            }
        }
    }

    /// `imv` with this store's flags (the embedded store's root, or containerd's namespace).
    fn imv(&self) -> Command {
        let mut c = Command::new(&self.ctx.imv);
        c.arg("--state").arg(self.run.join("state"));
        match self.engine {
            Engine::Local => {
                c.arg("--root").arg(self.base.join("root"));
            }
            _ => {
                c.args(["--backend", "containerd", "--address"])
                    .arg(&self.ctx.ctd_address)
                    .args(["--namespace", &self.ns]);
            }
        }
        c
    }

    /// `imv` as a client of this store's `imv serve`, or directly on the store.
    fn imv_client(&self) -> Command {
        match &self.serve {
            Some((_, socket)) => {
                let mut c = Command::new(&self.ctx.imv);
                c.arg("--socket").arg(socket);
                c
            }
            None => self.imv(),
        }
    }

    fn mount(&mut self, sandbox: &str) -> R<Command> {
        self.sandboxes.push(sandbox.to_owned());
        Ok(match self.engine {
            Engine::Ctr => {
                // ctr images mount: unpack if needed, a View under a lease named by the
                // target, and the mount: the whole of what imv mutate does.
                let target = self.run.join("mnt").join(sandbox);
                fs::create_dir_all(&target)?;
                let mut c = self.ctx.ctr(&self.ns);
                c.args(["images", "mount", &self.image.name]).arg(target);
                c
            }
            _ => {
                let mut c = self.imv_client();
                c.args(["mutate", "--sandbox", sandbox, "--mount"])
                    .arg(format!("image={},container-path=/data", self.image.name));
                c
            }
        })
    }

    fn cleanup(&self, sandbox: &str) -> Command {
        match self.engine {
            Engine::Ctr => {
                let mut c = self.ctx.ctr(&self.ns);
                c.args(["images", "unmount", "--rm"])
                    .arg(self.run.join("mnt").join(sandbox));
                c
            }
            _ => {
                let mut c = self.imv_client();
                c.args(["cleanup", "--release", "--sandbox", sandbox]);
                c
            }
        }
    }

    /// Start `imv serve` on this store; clients then go through its socket.
    fn start_serve(&mut self) -> R<Daemon> {
        let socket = self.base.join("imv.sock");
        let log = fs::File::create(self.base.join("serve.log"))?;
        let mut c = self.imv();
        c.arg("serve")
            .arg("--socket")
            .arg(&socket)
            // One request (and connection) per sandbox at once, as 100 pods starting
            // together would send (the defaults, 32 requests and 64 connections, would
            // queue or refuse the rest).
            .args(["--max-requests", "128", "--max-connections", "128"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = c.spawn()?;
        let pid = child.id();
        // For bench/run's trap, should this driver die before stopping it.
        fs::write(self.base.join("serve.pid"), pid.to_string())?;
        self.serve = Some((child, socket.clone()));
        let start = Instant::now();
        while UnixStream::connect(&socket).is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                return Err(format!("imv serve did not listen on {}", socket.display()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Daemon {
            name: "imv serve".into(),
            pid,
        })
    }

    fn stop_serve(&mut self) -> R<()> {
        if let Some((mut child, _)) = self.serve.take() {
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let status = child.wait()?;
            let _ = fs::remove_file(self.base.join("serve.pid"));
            if !status.success() {
                return Err(format!("imv serve exited with {status}").into());
            }
        }
        Ok(())
    }

    /// Mount points under this store's directory (volumes, and containerd's targets).
    fn mounts(&self) -> R<usize> {
        let prefix = format!("{}/", self.run.display());
        Ok(fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&prefix)))
            .count())
    }

    /// Committed layer snapshots: the embedded store's layer directories, or containerd's
    /// Committed snapshots in this namespace.
    fn layer_snapshots(&self) -> R<usize> {
        Ok(match self.engine {
            // One directory per chain ID, named by its hex digest (other entries are the
            // store's own, e.g. unpacks in progress).
            Engine::Local => fs::read_dir(self.base.join("root/snapshots"))?
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
                })
                .count(),
            _ => {
                let mut c = self.ctx.ctr(&self.ns);
                c.args(["snapshots", "ls"]);
                quiet(c)?
                    .lines()
                    // KEY PARENT KIND, with PARENT empty for the bottom layer.
                    .filter(|l| l.split_whitespace().last() == Some("Committed"))
                    .count()
            }
        })
    }

    /// Undo everything: volumes, the daemon, the image, the store. Errors are reported,
    /// not fatal, so one failed step does not leave the rest behind (bench/run's trap
    /// unmounts and removes whatever is still left).
    fn teardown(mut self) {
        let sandboxes = std::mem::take(&mut self.sandboxes);
        for sb in &sandboxes {
            let _ = quiet(self.cleanup(sb));
        }
        if let Err(e) = self.stop_serve() {
            eprintln!("bench: {e}");
        }
        if self.engine != Engine::Local {
            let mut c = self.ctx.ctr(&self.ns);
            c.args(["images", "rm", "--sync", &self.image.name]);
            if let Err(e) = quiet(c) {
                eprintln!("bench: {e}");
            }
            let mut c = self.ctx.ctr("default");
            c.args(["namespaces", "rm", &self.ns]);
            let _ = quiet(c);
        }
        match self.mounts() {
            Ok(0) => {
                // An embedded store's EROFS layers stay mounted after it closes
                // (docs/design.md, "Layers as EROFS images").
                imv_testkit::mounts::unmount_under(&self.base);
                for dir in [&self.base, &self.run] {
                    if let Err(e) = fs::remove_dir_all(dir) {
                        eprintln!("bench: removing {}: {e}", dir.display());
                    }
                }
            }
            Ok(n) => eprintln!("bench: {n} mounts left under {}", self.run.display()),
            Err(e) => eprintln!("bench: {e}"),
        }
    }
}

struct Plan {
    /// The Debian-files images: one layer, and the same files in eight.
    files: [Spec; 2],
    big: Vec<Spec>,
    many: Vec<Spec>,
    fanout: Spec,
    fanout_n: usize,
    cold_reps: usize,
    warm_reps: usize,
    fanout_reps: usize,
}

fn plan(quick: bool) -> Plan {
    let big = |layers, layer_mib, compression| Spec {
        shape: Shape::Big { layers, layer_mib },
        compression,
    };
    let many = |layers| Spec {
        shape: Shape::Many { layers },
        compression: Compression::Gzip,
    };
    let (large, small) = if quick { (16, 4) } else { (100, 25) };
    let files = |layers| Spec {
        shape: Shape::Files { layers },
        compression: Compression::Gzip,
    };
    Plan {
        files: [files(1), files(8)],
        // Two layer sizes of the same shape, so peak RSS can be seen not to follow it.
        big: vec![
            big(4, large, Compression::Gzip),
            big(4, small, Compression::Gzip),
            big(4, large, Compression::Zstd),
        ],
        many: vec![many(64), many(128)],
        fanout: big(4, small, Compression::Gzip),
        fanout_n: 100,
        cold_reps: if quick { 2 } else { 5 },
        warm_reps: if quick { 3 } else { 5 },
        fanout_reps: if quick { 1 } else { 3 },
    }
}

/// Cold mount, then warm mounts (new sandboxes) and single cleanups, per image, per
/// repetition, the engines interleaved so that noise on the shared machine spreads evenly.
fn cold_warm(ctx: &Ctx, res: &mut Results, scenario: &str, imgs: &[Image], p: &Plan) -> R<()> {
    cold_warm_with(
        ctx,
        res,
        scenario,
        imgs,
        (p.cold_reps, p.warm_reps),
        &ENGINES,
    )
}

/// [`cold_warm`] with `reps` (cold, warm) repetitions, on `engines`.
fn cold_warm_with(
    ctx: &Ctx,
    res: &mut Results,
    scenario: &str,
    imgs: &[Image],
    (cold_reps, warm_reps): (usize, usize),
    engines: &[Engine],
) -> R<()> {
    for img in imgs {
        for rep in 0..cold_reps {
            for &engine in engines {
                eprintln!(
                    "bench: {scenario}: {} on {} (rep {})",
                    img.label,
                    engine.label(),
                    rep + 1
                );
                let mut st = Store::new(ctx, engine, img)?;
                let result = (|| -> R<()> {
                    let d = st.daemons();
                    res.add(
                        scenario,
                        img,
                        engine,
                        "import",
                        run1(st.import(), &d, &ctx.logs)?,
                    );
                    let s = run1(st.mount("cold")?, &d, &ctx.logs)?;
                    res.add(
                        scenario,
                        img,
                        engine,
                        "cold mount (unpack + view + mount)",
                        s,
                    );
                    for w in 0..warm_reps {
                        let s = run1(st.mount(&format!("warm{w}"))?, &d, &ctx.logs)?;
                        res.add(scenario, img, engine, "warm mount (new sandbox)", s);
                    }
                    let layers = st.layer_snapshots()?;
                    res.note(
                        scenario,
                        img,
                        engine,
                        format!("layer snapshots after: {layers} (image has {})", img.layers),
                    );
                    for sb in std::mem::take(&mut st.sandboxes) {
                        let s = run1(st.cleanup(&sb), &d, &ctx.logs)?;
                        res.add(scenario, img, engine, "cleanup (1 sandbox)", s);
                    }
                    Ok(())
                })();
                st.teardown();
                result?;
            }
        }
    }
    Ok(())
}

/// N sandboxes mount one not-yet-unpacked image at once, then all are cleaned up at once.
fn fanout(ctx: &Ctx, res: &mut Results, img: &Image, p: &Plan) -> R<()> {
    let scenario = "fan-out";
    let n = p.fanout_n;
    for rep in 0..p.fanout_reps {
        for engine in ENGINES {
            eprintln!(
                "bench: {scenario}: {n} × {} on {} (rep {})",
                img.label,
                engine.label(),
                rep + 1
            );
            let mut st = Store::new(ctx, engine, img)?;
            let result = (|| -> R<()> {
                quiet(st.import())?;
                let mut d = st.daemons();
                if engine != Engine::Ctr {
                    // One daemon serving every sandbox, as a runtime would use it: the
                    // local store is one process's, and it is where concurrent callers
                    // share one unpack.
                    d.push(st.start_serve()?);
                }
                let cmds = (0..n)
                    .map(|i| st.mount(&format!("fan{i:03}")))
                    .collect::<R<Vec<_>>>()?;
                let s = run(cmds, &d, &ctx.logs)?;
                res.add(
                    scenario,
                    img,
                    engine,
                    &format!("{n} mounts at once (cold image)"),
                    s,
                );
                let (mounted, layers) = (st.mounts()?, st.layer_snapshots()?);
                res.note(
                    scenario,
                    img,
                    engine,
                    format!(
                        "{mounted} volumes mounted, {layers} layer snapshots (image has {})",
                        img.layers
                    ),
                );
                let cmds = st.sandboxes.iter().map(|sb| st.cleanup(sb)).collect();
                let s = run(cmds, &d, &ctx.logs)?;
                res.add(
                    scenario,
                    img,
                    engine,
                    &format!("cleanup of {n} sandboxes at once"),
                    s,
                );
                st.sandboxes.clear();
                let left = st.mounts()?;
                if left != 0 {
                    return Err(format!("{left} mounts left after cleanup").into());
                }
                Ok(())
            })();
            st.teardown();
            result?;
        }
    }
    Ok(())
}

/// Run in a mount namespace of our own (this process and what it starts): the thousands of
/// mounts of some steps then never reach the host's (systemd reads every change to its
/// mount table), and whatever a failure leaves mounted goes with the namespace. Called
/// before any thread starts: unshare(CLONE_NEWNS) is per thread.
fn private_mount_namespace() -> R<()> {
    use rustix::mount::{mount_change, MountPropagationFlags};
    // SAFETY: no other thread exists yet, so none shares the file-system state unsharing
    // the mount namespace changes.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)? };
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )?;
    Ok(())
}

fn main() {
    let args = Args::parse();
    if args.dir.is_none() {
        // `cargo test --all-targets` runs bench targets too: the benchmark needs root, a
        // containerd and minutes, so without bench/run's arguments it does nothing.
        println!("imv-bench: run bench/run (see bench/README.md)");
        return;
    }
    if let Err(e) = real_main(args) {
        eprintln!("bench: error: {e}");
        std::process::exit(1);
    }
}

fn real_main(args: Args) -> R<()> {
    private_mount_namespace()?;
    // The bench is a target of the imv-cli package (cli/); the repository is its parent.
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the bench's package has no parent directory")?;
    let dir = args.dir.clone().ok_or("--dir is required")?;
    let ctx = Ctx {
        imv: PathBuf::from(env!("CARGO_BIN_EXE_imv")),
        logs: Logs::new(&dir.join("logs"))?,
        dir: dir.join("work"),
        run: args.run_dir.clone().ok_or("--run-dir is required")?,
        ctd_address: args
            .containerd_address
            .clone()
            .ok_or("--containerd-address is required")?,
        containerd: Daemon {
            name: "containerd".into(),
            pid: args.containerd_pid.ok_or("--containerd-pid is required")?,
        },
        seq: AtomicUsize::new(0),
    };
    fs::create_dir_all(&ctx.dir)?;
    fs::create_dir_all(&ctx.run)?;
    let cache = args
        .cache
        .clone()
        .unwrap_or_else(|| manifest_dir.join("target/bench-images"));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| manifest_dir.join("bench/results.md"));
    let p = plan(args.quick);
    let want = |s: &str| args.scenarios.iter().any(|x| x == s);

    let started = Instant::now();
    let mut res = Results::new(args.quick, &ctx.imv, manifest_dir, &dir);
    if want("big") {
        let imgs = p.big.iter().map(|s| s.get(&cache)).collect::<R<Vec<_>>>()?;
        res.images.extend(imgs.iter().cloned());
        cold_warm(&ctx, &mut res, "large layers", &imgs, &p)?;
    }
    if want("many") {
        let imgs = p
            .many
            .iter()
            .map(|s| s.get(&cache))
            .collect::<R<Vec<_>>>()?;
        res.images.extend(imgs.iter().cloned());
        cold_warm(&ctx, &mut res, "many layers", &imgs, &p)?;
    }
    if want("artifacts") {
        res.artifacts = Some(artifacts::run(
            &ctx,
            &mut res,
            &cache,
            &artifacts::plan(args.quick),
        )?);
    }
    // `serve` alone: only the in-process steps through `imv serve`.
    let only_serve = want("serve") && !want("inproc");
    if want("files") || want("inproc") || only_serve {
        let imgs = p
            .files
            .iter()
            .map(|s| s.get(&cache))
            .collect::<R<Vec<_>>>()?;
        res.images.extend(imgs.iter().cloned());
        if want("files") {
            cold_warm(&ctx, &mut res, "Debian files", &imgs, &p)?;
        }
        if want("inproc") || only_serve {
            let fanout_image = p.fanout.get(&cache)?;
            if !res.images.iter().any(|i| i.name == fanout_image.name) {
                res.images.push(fanout_image.clone());
            }
            res.inproc = Some(inproc::run(
                &ctx.dir,
                &ctx.run,
                &imgs[0],
                &imgs[1],
                &fanout_image,
                &inproc::plan(args.quick, only_serve),
            )?);
        }
    }
    if want("fanout") {
        let img = p.fanout.get(&cache)?;
        if !res.images.iter().any(|i| i.name == img.name) {
            res.images.push(img.clone());
        }
        fanout(&ctx, &mut res, &img, &p)?;
    }
    res.finish(started.elapsed());
    let md = res.markdown();
    fs::write(&out, &md)?;
    res.draw_charts(out.parent().unwrap_or(Path::new(".")))?;
    println!("{md}");
    eprintln!("bench: wrote {}", out.display());
    Ok(())
}
