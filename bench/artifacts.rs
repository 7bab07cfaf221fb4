//! Models and artifacts (bench/README.md, "Models and artifacts"): what mounting a model
//! costs when it is an OCI artifact, against the same bytes packaged as an image layer.
//!
//! - Through the command-line tools, as the other scenarios: a raw artifact of 64 MiB,
//!   1 GiB and 4 GiB (`--quick`: 16, 64 and 256 MiB) through imv on the embedded store and
//!   on containerd (containerd's own `ctr images mount` cannot mount an artifact: one try
//!   is made and its error noted); the same weights as an image layer, a tar and a gzipped
//!   tar, through all three engines, at the two smaller sizes.
//! - In process, as the C ABI calls the library, no process start-up: a raw artifact's
//!   cold mutate on the embedded store and on containerd (a handle that mounted two other
//!   artifacts before, as a runtime's has), each size; and a model shipped as
//!   one 1 GiB tar+gzip layer (`--quick`: 64 MiB), its cold mutate against inflating its
//!   blob alone, on one thread (the unpacker inflates on one thread and writes on the
//!   other; the layer has no diff ID to hash).
//!
//! Every cold step is of a fresh store (a new root, a new containerd namespace) and starts
//! after a sync, so it pays for its own writes only.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufReader};
use std::path::Path;
use std::time::Instant;

use imv::{BackendConfig, Config, ImageVolumes};

use crate::artifact_images::{self, size_label, Packaging};
use crate::images::Image;
use crate::inproc::{self, mounts, settle, Dirs};
use crate::measure::quiet;
use crate::report::Results;
use crate::{cold_warm_with, Ctx, Engine, Store, ENGINES, R};

/// The scenario's name in results.md.
pub const SCENARIO: &str = "models and artifacts";

/// Sizes and repetitions.
pub struct Plan {
    /// Raw artifacts, MiB.
    pub raw_mib: Vec<u64>,
    /// The same weights as image layers, MiB.
    pub layer_mib: Vec<u64>,
    /// The model shipped as one tar+gzip layer, MiB.
    pub model_mib: u64,
    pub cold_reps: usize,
    pub warm_reps: usize,
}

pub fn plan(quick: bool) -> Plan {
    if quick {
        Plan {
            raw_mib: vec![16, 64, 256],
            layer_mib: vec![16, 64],
            model_mib: 64,
            cold_reps: 2,
            warm_reps: 2,
        }
    } else {
        Plan {
            raw_mib: vec![64, 1024, 4096],
            layer_mib: vec![64, 1024],
            model_mib: 1024,
            cold_reps: 3,
            warm_reps: 3,
        }
    }
}

/// The in-process figures, by name, in seconds.
#[derive(Default)]
pub struct Report {
    series: Vec<(String, Vec<f64>)>,
    raw_mib: Vec<u64>,
    model_mib: u64,
    /// What containerd said when asked to mount an artifact.
    pub ctr_refusal: Option<String>,
}

impl Report {
    fn push(&mut self, name: &str, secs: f64) {
        match self.series.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => v.push(secs),
            None => self.series.push((name.to_owned(), vec![secs])),
        }
    }

    fn median(&self, name: &str) -> Option<f64> {
        let (_, v) = self.series.iter().find(|(n, _)| n == name)?;
        Some(crate::plots::median(v))
    }
}

fn raw_local(mib: u64) -> String {
    format!(
        "cold mutate, raw artifact {}, embedded store",
        size_label(mib)
    )
}

fn raw_containerd(mib: u64) -> String {
    format!("cold mutate, raw artifact {}, containerd", size_label(mib))
}

fn model_cold(mib: u64) -> String {
    format!(
        "cold mutate, model artifact, tar+gzip layer {}, embedded store",
        size_label(mib)
    )
}

fn model_floor(mib: u64) -> String {
    format!(
        "floor: inflate that layer's blob alone (1 thread), {}",
        size_label(mib)
    )
}

/// The whole scenario: the command-line rows into `res`, the in-process figures returned.
pub fn run(ctx: &Ctx, res: &mut Results, cache: &Path, p: &Plan) -> R<Report> {
    let raw = p
        .raw_mib
        .iter()
        .map(|&m| artifact_images::get(cache, Packaging::Raw, m))
        .collect::<R<Vec<_>>>()?;
    let mut layers = Vec::new();
    for &m in &p.layer_mib {
        for packaging in [Packaging::Tar, Packaging::Gzip] {
            layers.push(artifact_images::get(cache, packaging, m)?);
        }
    }
    let model = artifact_images::get(cache, Packaging::ModelTgz, p.model_mib)?;
    res.images.extend(raw.iter().chain(&layers).cloned());
    res.images.push(model.clone());

    let reps = (p.cold_reps, p.warm_reps);
    cold_warm_with(
        ctx,
        res,
        SCENARIO,
        &raw,
        reps,
        &[Engine::Local, Engine::ImvCtd],
    )?;
    let mut rep = Report {
        raw_mib: p.raw_mib.clone(),
        model_mib: p.model_mib,
        ..Default::default()
    };
    rep.ctr_refusal = Some(ctr_refusal(ctx, &raw[0])?);
    cold_warm_with(ctx, res, SCENARIO, &layers, reps, &ENGINES)?;

    // Two small artifacts a containerd handle mounts first (see `containerd_cold`).
    let primes = [1, 2]
        .iter()
        .map(|&m| artifact_images::get(cache, Packaging::Raw, m))
        .collect::<R<Vec<_>>>()?;
    let dirs = Dirs::new(ctx.dir.join("artifacts"), ctx.run.join("artifacts"))?;
    for r in 0..p.cold_reps {
        eprintln!("bench: {SCENARIO}: in process (rep {})", r + 1);
        for (img, &mib) in raw.iter().zip(&p.raw_mib) {
            let store = inproc::Store::new(&dirs, img)?;
            settle();
            rep.push(&raw_local(mib), store.mutate("cold")?);
            store.finish(["cold".to_owned()])?;
            rep.push(&raw_containerd(mib), containerd_cold(ctx, img, &primes, r)?);
        }
        let store = inproc::Store::new(&dirs, &model)?;
        settle();
        rep.push(
            &model_floor(p.model_mib),
            inflate_file(&store.blob(&model.layer_digests[0]))?,
        );
        settle();
        rep.push(&model_cold(p.model_mib), store.mutate("cold")?);
        store.finish(["cold".to_owned()])?;
    }
    Ok(rep)
}

/// What `ctr images mount` says of an artifact (it cannot mount one).
fn ctr_refusal(ctx: &Ctx, img: &Image) -> R<String> {
    let mut st = Store::new(ctx, Engine::Ctr, img)?;
    let result = (|| -> R<String> {
        quiet(st.import())?;
        match quiet(st.mount("cold")?) {
            Ok(_) => Err("ctr images mount mounted an artifact".into()),
            Err(e) => Ok(e.to_string().lines().last().unwrap_or_default().to_owned()),
        }
    })();
    // Its unmount --rm takes what the failed mount left (a lease named by the target).
    st.teardown();
    result
}

/// One cold mutate of `img` in process on containerd, as a runtime's long-lived handle
/// makes it: `img` and the artifacts `primes` imported into a namespace of their own with
/// ctr (not unpacked), the handle connected, and the primes mounted first. A process
/// trusts what a view will mount only once two such predictions came true
/// (src/backend/containerd/view_mounts.rs); until then a cold volume also waits for its
/// view and its layer's commit.
fn containerd_cold(ctx: &Ctx, img: &Image, primes: &[Image], rep: usize) -> R<f64> {
    let ns = format!("bench-artifact-{rep}-{}", img.blob_bytes);
    for i in primes.iter().chain([img]) {
        let mut c = ctx.ctr(&ns);
        c.args(["images", "import", "--no-unpack"]).arg(&i.archive);
        quiet(c)?;
    }
    let state = ctx.run.join("artifacts").join(&ns);
    let mut config = Config::new(ctx.dir.join("artifacts").join(&ns), state);
    config.backend = BackendConfig::Containerd {
        address: ctx.ctd_address.clone(),
        namespace: ns.clone(),
    };
    let volumes = ImageVolumes::open(config)?;
    for (k, prime) in primes.iter().enumerate() {
        volumes.mutate_mounts(&format!("prime{k}"), "", None, &mut mounts(&prime.name))?;
    }
    volumes.wait_deferred(None);
    let mut m = mounts(&img.name);
    settle();
    let t = Instant::now();
    volumes.mutate_mounts("cold", "", None, &mut m)?;
    let secs = t.elapsed().as_secs_f64();
    for k in 0..primes.len() {
        volumes.release(&format!("prime{k}"))?;
    }
    volumes.release("cold")?;
    drop(volumes);
    for i in primes.iter().chain([img]) {
        let mut c = ctx.ctr(&ns);
        c.args(["images", "rm", "--sync", &i.name]);
        quiet(c)?;
    }
    let mut c = ctx.ctr("default");
    c.args(["namespaces", "rm", &ns]);
    let _ = quiet(c);
    Ok(secs)
}

/// Inflate the gzip file at `path` to nowhere, as the unpacker reads a blob.
fn inflate_file(path: &Path) -> R<f64> {
    let file = fs::File::open(path)?;
    let t = Instant::now();
    let mut gz = flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file));
    io::copy(&mut gz, &mut io::sink())?;
    Ok(t.elapsed().as_secs_f64())
}

fn ms(secs: f64) -> String {
    format!("{:.2}", secs * 1e3)
}

impl Report {
    /// The in-process table and the targets, for results.md.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n## {SCENARIO}, in process\n");
        let _ = writeln!(
            s,
            "The library called as the C ABI calls it (bench/artifacts.rs); each a fresh store \
             after a sync.\n"
        );
        let _ = writeln!(
            s,
            "| step | n | median (ms) | min–max (ms) |\n|---|---:|---:|---:|"
        );
        for (name, v) in &self.series {
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {}–{} |",
                v.len(),
                ms(crate::plots::median(v)),
                ms(lo),
                ms(hi)
            );
        }
        if let Some(refusal) = &self.ctr_refusal {
            let _ = writeln!(
                s,
                "\ncontainerd's own mount of the raw artifact (`ctr images mount`): {refusal}"
            );
        }
        let _ = writeln!(s, "\n### Targets (issue #24)\n");
        let _ = writeln!(s, "| target | figure | met |\n|---|---|---|");
        let yes = |ok: bool| if ok { "yes" } else { "**no**" };
        let local: Vec<(u64, Option<f64>)> = self
            .raw_mib
            .iter()
            .map(|&m| (m, self.median(&raw_local(m))))
            .collect();
        let figures = local
            .iter()
            .map(|(m, v)| format!("{}: {} ms", size_label(*m), v.map_or("?".into(), ms)))
            .collect::<Vec<_>>()
            .join(", ");
        let all_under = local.iter().all(|(_, v)| v.is_some_and(|v| v <= 0.010));
        let _ = writeln!(
            s,
            "| cold mount of a raw artifact ≤ 10 ms, each size (embedded store) | {figures} | {} |",
            yes(all_under)
        );
        if let (Some((small, Some(a))), Some((large, Some(b)))) = (local.first(), local.last()) {
            let _ = writeln!(
                s,
                "| flat in size | {} is {:.2}× {} ({}× the bytes) | {} |",
                size_label(*large),
                b / a,
                size_label(*small),
                large / small,
                yes(b / a <= 2.0)
            );
        }
        let ratios: Vec<(u64, Option<f64>)> = self
            .raw_mib
            .iter()
            .map(|&m| {
                let r = self
                    .median(&raw_containerd(m))
                    .zip(self.median(&raw_local(m)))
                    .map(|(c, l)| c / l);
                (m, r)
            })
            .collect();
        let figures = ratios
            .iter()
            .map(|(m, r)| {
                format!(
                    "{}: {}",
                    size_label(*m),
                    r.map_or("?".into(), |r| format!("{r:.2}×"))
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            s,
            "| containerd backend ≤ 3× the embedded store | {figures} | {} |",
            yes(ratios.iter().all(|(_, r)| r.is_some_and(|r| r <= 3.0)))
        );
        if let (Some(cold), Some(floor)) = (
            self.median(&model_cold(self.model_mib)),
            self.median(&model_floor(self.model_mib)),
        ) {
            let _ = writeln!(
                s,
                "| a {} tar+gzip model layer: cold mount ≤ 1.1× inflating it alone | {} ms against {} ms: {:.2}× | {} |",
                size_label(self.model_mib),
                ms(cold),
                ms(floor),
                cold / floor,
                yes(cold / floor <= 1.1)
            );
        }
        s
    }

    /// artifacts.svg: cold mounts through the command-line tools, each packaging and
    /// engine, on a log scale (milliseconds to seconds).
    pub fn draw(&self, res: &Results, path: &Path) -> R<()> {
        let step = "cold mount (unpack + view + mount)";
        let mut bars = Vec::new();
        for img in res
            .images
            .iter()
            .filter(|i| i.label.contains("artifact") || i.label.starts_with("image, "))
        {
            for engine in ENGINES {
                if let Some(secs) = res.median_of(SCENARIO, &img.label, engine, step) {
                    bars.push(crate::plots::Bar {
                        label: format!("{}: {}", img.label, engine.label()),
                        secs,
                        floor: false,
                    });
                }
            }
        }
        crate::plots::log_bars(
            path,
            "Cold mount of model weights: as an artifact, and as an image layer (command-line tools)",
            &bars,
        )
    }
}
