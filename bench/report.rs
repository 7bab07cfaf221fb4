//! Collecting samples and writing bench/results.md: the machine, the versions, the images,
//! then one table per scenario with the median and the spread (min–max) of each step.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::images::Image;
use crate::measure::Sample;
use crate::Engine;

struct Row {
    scenario: String,
    image: String,
    engine: Engine,
    step: String,
    samples: Vec<Sample>,
}

pub struct Results {
    quick: bool,
    work: PathBuf,
    imv: PathBuf,
    repo: PathBuf,
    pub images: Vec<Image>,
    rows: Vec<Row>,
    notes: Vec<(String, String, Engine, String)>,
    /// The in-process figures, when that scenario ran.
    pub inproc: Option<crate::inproc::Report>,
    /// The models-and-artifacts scenario's in-process figures, when it ran.
    pub artifacts: Option<crate::artifacts::Report>,
    load_start: String,
    load_end: String,
    duration: Duration,
    date: String,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if s.is_empty() {
                s = String::from_utf8_lossy(&o.stderr).trim().to_owned();
            }
            s.lines().next().unwrap_or("").to_owned()
        })
        .unwrap_or_else(|| "?".into())
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Seconds, with milliseconds below 10 s.
fn secs(s: f64) -> String {
    if s < 10.0 {
        format!("{:.3}", s)
    } else {
        format!("{:.1}", s)
    }
}

fn mib(kib: f64) -> String {
    format!("{:.1}", kib / 1024.0)
}

impl Results {
    pub fn new(quick: bool, imv: &Path, repo: &Path, work: &Path) -> Self {
        Results {
            quick,
            work: work.to_owned(),
            imv: imv.to_owned(),
            repo: repo.to_owned(),
            images: Vec::new(),
            rows: Vec::new(),
            notes: Vec::new(),
            inproc: None,
            artifacts: None,
            load_start: loadavg(),
            load_end: String::new(),
            duration: Duration::ZERO,
            date: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        }
    }

    pub fn add(&mut self, scenario: &str, image: &Image, engine: Engine, step: &str, s: Sample) {
        if let Some(r) = self.rows.iter_mut().find(|r| {
            r.scenario == scenario && r.image == image.label && r.engine == engine && r.step == step
        }) {
            r.samples.push(s);
            return;
        }
        self.rows.push(Row {
            scenario: scenario.into(),
            image: image.label.clone(),
            engine,
            step: step.into(),
            samples: vec![s],
        });
    }

    /// The median wall time of `step` of `image` on `engine` in `scenario`, if it ran.
    pub fn median_of(
        &self,
        scenario: &str,
        image: &str,
        engine: Engine,
        step: &str,
    ) -> Option<f64> {
        let r = self.rows.iter().find(|r| {
            r.scenario == scenario && r.image == image && r.engine == engine && r.step == step
        })?;
        let mut walls: Vec<f64> = r.samples.iter().map(|s| s.wall).collect();
        Some(median(&mut walls))
    }

    /// A fact checked during the run (e.g. how many layer snapshots exist); repeated
    /// identical notes are kept once.
    pub fn note(&mut self, scenario: &str, image: &Image, engine: Engine, text: String) {
        let n = (scenario.to_owned(), image.label.clone(), engine, text);
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }

    pub fn finish(&mut self, d: Duration) {
        self.load_end = loadavg();
        self.duration = d;
    }

    fn machine(&self) -> String {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "?".into());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_gib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|k| format!("{:.1} GiB", k / 1024.0 / 1024.0))
            .unwrap_or_else(|| "?".into());
        let os = fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|s| s.trim_matches('"').to_owned())
            .unwrap_or_else(|| "?".into());
        let repo = self.repo.to_str().unwrap_or(".");
        let rev = sh("git", &["-C", repo, "rev-parse", "--short", "HEAD"]);
        let dirty = if sh(
            "git",
            &["-C", repo, "status", "--porcelain", "--untracked-files=no"],
        )
        .is_empty()
        {
            ""
        } else {
            " (with uncommitted changes)"
        };
        let work = self.work.to_string_lossy();
        let fs_type = sh("findmnt", &["-no", "FSTYPE,SOURCE", "-T", &work]);
        let mut s = String::new();
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(s, "| date | {} |", self.date);
        let _ = writeln!(
            s,
            "| mode | {} |",
            if self.quick {
                "`bench/run --quick`"
            } else {
                "`bench/run` (full)"
            }
        );
        let _ = writeln!(s, "| run time | {:.0} s |", self.duration.as_secs_f64());
        let _ = writeln!(s, "| OS, kernel | {os}, {} |", sh("uname", &["-r"]));
        let _ = writeln!(s, "| CPU | {model}, {} cores |", sh("nproc", &[]));
        let _ = writeln!(s, "| memory | {mem_gib} |");
        let _ = writeln!(
            s,
            "| work directory (every store) | {work}: {fs_type} (a new file system made by bench/run) |"
        );
        let _ = writeln!(
            s,
            "| load average (1, 5, 15 min) | start {}; end {} |",
            self.load_start, self.load_end
        );
        let _ = writeln!(
            s,
            "| imv | {} (git {rev}{dirty}), release profile |",
            sh(self.imv.to_str().unwrap_or("imv"), &["--version"])
        );
        let _ = writeln!(s, "| rustc | {} |", sh("rustc", &["--version"]));
        let _ = writeln!(s, "| containerd | {} |", sh("containerd", &["--version"]));
        let _ = writeln!(s, "| ctr | {} |", sh("ctr", &["--version"]));
        s
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# imv benchmark results\n");
        let _ = writeln!(
            s,
            "Written by `bench/run`; how to read it: [README.md](README.md). **The machine was \
             shared with other jobs during the run** (see the load average): wall times are \
             noisy, so compare the engines within a run, look at the spread, and trust CPU \
             time and peak RSS more than wall time.\n"
        );
        s += &self.machine();
        let _ = writeln!(s, "\n## Images\n");
        let _ = writeln!(
            s,
            "| image | layers | uncompressed (MiB) | blobs (MiB) |\n|---|---:|---:|---:|"
        );
        for i in &self.images {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} |",
                i.label,
                i.layers,
                i.tar_bytes as f64 / 1048576.0,
                i.blob_bytes as f64 / 1048576.0
            );
        }
        let mut scenarios: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !scenarios.contains(&r.scenario.as_str()) {
                scenarios.push(&r.scenario);
            }
        }
        for sc in scenarios {
            let _ = writeln!(s, "\n## {sc}\n");
            let _ = writeln!(
                s,
                "| image | engine | step | n | wall median (s) | wall min–max (s) | CPU client (s) | CPU daemons (s) | client peak RSS (MiB) | daemon peak RSS growth (MiB) |"
            );
            let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|---:|---|");
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.scenario == sc).collect();
            // Grouped by image, then step (in the order they ran), engines side by side.
            let mut images: Vec<&str> = Vec::new();
            let mut steps: Vec<&str> = Vec::new();
            for r in &rows {
                if !images.contains(&r.image.as_str()) {
                    images.push(&r.image);
                }
                if !steps.contains(&r.step.as_str()) {
                    steps.push(&r.step);
                }
            }
            for image in &images {
                for step in &steps {
                    for engine in crate::ENGINES {
                        let row = rows
                            .iter()
                            .find(|r| r.image == *image && r.step == *step && r.engine == engine);
                        if let Some(r) = row {
                            s += &self.line(r);
                        }
                    }
                }
            }
            let notes: Vec<_> = self.notes.iter().filter(|n| n.0 == sc).collect();
            if !notes.is_empty() {
                let _ = writeln!(s, "\nChecked during the run:\n");
                for (_, image, engine, text) in notes {
                    let _ = writeln!(s, "- {image}, {}: {text}", engine.label());
                }
            }
            if sc == "fan-out" {
                s += &self.fanout_cpu();
            }
        }
        if let Some(a) = &self.artifacts {
            s += &a.markdown();
        }
        if let Some(ip) = &self.inproc {
            s += &inproc_md(ip);
            s += &self.targets_md(ip);
        }
        s
    }

    /// The charts, next to the results file in `dir`: cold.svg (the Debian-files images'
    /// cold mutates against their floors and containerd), warm.svg and fanout.svg.
    pub fn draw_charts(&self, dir: &Path) -> crate::R<()> {
        use crate::plots::{bars, Bar};
        if let Some(a) = &self.artifacts {
            a.draw(self, &dir.join("artifacts.svg"))?;
        }
        let Some(ip) = &self.inproc else {
            return Ok(());
        };
        crate::plots::draw(dir, ip)?;
        let med = |name: &str| ip.get(name).map(crate::plots::median);
        let mut all = Vec::new();
        for img in self
            .images
            .iter()
            .filter(|i| i.label.contains("Debian files"))
        {
            let short = img.label.trim_start_matches("gzip Debian files, ");
            let mut add = |label: String, secs: Option<f64>, floor: bool| {
                if let Some(secs) = secs {
                    all.push(Bar { label, secs, floor });
                }
            };
            add(
                format!("{short}: floor, inflate on 1 thread"),
                med(&crate::inproc::floor_name(img, 1)),
                true,
            );
            add(
                format!("{short}: floor, inflate on 2 threads"),
                med(&crate::inproc::floor_name(img, 2)),
                true,
            );
            add(
                format!("{short}: floor, create the files on 1 thread"),
                med(&crate::inproc::create_floor_name(img, 1)),
                true,
            );
            add(
                format!("{short}: floor, create the files on 2 threads"),
                med(&crate::inproc::create_floor_name(img, 2)),
                true,
            );
            add(
                format!("{short}: floor, inflate, hash and write on 2 threads"),
                med(&crate::inproc::verify_floor_name(img, 2)),
                true,
            );
            add(
                format!("{short}: imv in process"),
                med(&crate::inproc::cold_name(img)),
                false,
            );
            for (engine, what) in [
                (Engine::Local, "imv (the command)"),
                (Engine::ImvCtd, "imv → containerd"),
                (Engine::Ctr, "containerd (ctr images mount)"),
            ] {
                add(
                    format!("{short}: {what}"),
                    self.wall("Debian files", &img.label, engine, "cold mount"),
                    false,
                );
            }
        }
        if !all.is_empty() {
            bars(
                &dir.join("cold.svg"),
                "Cold mutate of 74 MiB of Debian files (gzip) against its floor",
                &all,
            )?;
        }
        Ok(())
    }

    /// The median wall time of a row of the command-line tables.
    fn wall(&self, scenario: &str, image: &str, engine: Engine, step: &str) -> Option<f64> {
        let r = self.rows.iter().find(|r| {
            r.scenario == scenario
                && r.image == image
                && r.engine == engine
                && r.step.starts_with(step)
        })?;
        Some(median(
            &mut r.samples.iter().map(|x| x.wall).collect::<Vec<_>>(),
        ))
    }

    /// Issue #11's table: each target against this run's figure.
    fn targets_md(&self, ip: &crate::inproc::Report) -> String {
        use crate::inproc::*;
        let med = |name: &str| ip.get(name).map(|v| median(&mut v.to_vec()));
        let files: Vec<&Image> = self
            .images
            .iter()
            .filter(|i| i.label.contains("Debian files"))
            .collect();
        let mut rows: Vec<(String, String, String, Option<bool>)> = Vec::new();
        let mut row = |what: String, now: Option<String>, target: &str, met: Option<bool>| {
            rows.push((
                what,
                now.unwrap_or_else(|| "not measured".into()),
                target.into(),
                met,
            ));
        };
        if let [one, eight] = files[..] {
            let (cold1, floor1) = (med(&cold_name(one)), med(&floor_name(one, 1)));
            let ctd1 = self.wall("Debian files", &one.label, Engine::Ctr, "cold mount");
            let r = cold1.zip(floor1).map(|(c, f)| c / f);
            let rc = cold1.zip(ctd1).map(|(c, d)| c / d);
            row(
                format!(
                    "cold mutate, {} ({:.0} MiB, {} files), vs inflating it (the floor)",
                    one.label,
                    one.tar_bytes as f64 / 1048576.0,
                    one.files
                ),
                cold1.zip(floor1).map(|(c, f)| {
                    format!(
                        "{} vs {} floor: {:.2}×; {}",
                        dur(c),
                        dur(f),
                        c / f,
                        match ctd1.zip(rc) {
                            Some((d, x)) =>
                                format!("{} containerd (ctr images mount): {x:.2}×", dur(d)),
                            None => "containerd not measured in this run (scenario files)".into(),
                        }
                    )
                }),
                "≤ 1.25× the floor (≤ 0.33× containerd)",
                r.map(|r| r <= 1.25 && rc.is_none_or(|x| x <= 0.33)),
            );
            let (cold8, floor8) = (med(&cold_name(eight)), med(&floor_name(eight, 2)));
            row(
                format!(
                    "cold mutate, {} on 2 cores, vs inflating them on 2 threads",
                    eight.label
                ),
                cold8
                    .zip(floor8)
                    .map(|(c, f)| format!("{} vs {}: {:.2}×", dur(c), dur(f), c / f)),
                "≤ 1.5× the 2-core floor",
                cold8.zip(floor8).map(|(c, f)| c / f <= 1.5),
            );
            // The floor of an unpacker that checks diff IDs and writes one image per layer,
            // as imv's embedded store does on a file system that mounts EROFS from files.
            let verify8 = med(&crate::inproc::verify_floor_name(eight, 2));
            if let (Some(c), Some(v)) = (cold8, verify8) {
                row(
                    format!(
                        "(context) cold mutate, {}, vs inflating, hashing and writing its layers as files, one sync (2 threads)",
                        eight.label
                    ),
                    Some(format!("{} vs {}: {:.2}×", dur(c), dur(v), c / v)),
                    "–",
                    None,
                );
            }
            // The file system's floor beside the issue's: no unpacker does less than the
            // larger of inflating and creating the files.
            for (img, threads, cold) in [(one, 1, cold1), (eight, 2, cold8)] {
                let inflate = med(&floor_name(img, threads));
                let create = med(&create_floor_name(img, threads));
                if let (Some(c), Some(i), Some(f)) = (cold, inflate, create) {
                    let both = i.max(f);
                    row(
                        format!(
                            "(context) cold mutate, {}, vs the larger of inflating and creating its files ({threads} thread{})",
                            img.label,
                            if threads == 1 { "" } else { "s" }
                        ),
                        Some(format!(
                            "{} vs max({} inflate, {} create) = {}: {:.2}×",
                            dur(c),
                            dur(i),
                            dur(f),
                            dur(both),
                            c / both
                        )),
                        "–",
                        None,
                    );
                }
            }
        }
        for (name, target, what, t) in [
            (
                WARM,
                250e-6,
                "warm mutate, new sandbox, in process",
                "≤ 250 µs",
            ),
            (REUSE, 20e-6, "same-sandbox reuse, in process", "≤ 20 µs"),
            (
                CLEANUP_RELEASE,
                500e-6,
                "cleanup + release of one sandbox, in process",
                "≤ 500 µs",
            ),
        ] {
            let m = med(name);
            row(
                what.into(),
                m.map(|m| format!("{} (median)", dur(m))),
                t,
                m.map(|m| m <= target),
            );
        }
        if let Some((n, v)) = ip.fanout.iter().max_by_key(|(n, _)| *n) {
            let m = median(&mut v.clone());
            row(
                format!("{n} threads, one warm mutate each, one handle (wall)"),
                Some(format!("{} (median)", dur(m))),
                "≤ 25 ms",
                Some(m <= 25e-3),
            );
        }
        if let (Some(one), Some(fan)) = (med(SERVE_COLD), med(&serve_fanout_name(100))) {
            let image = format!(" ({})", ip.serve_image);
            row(
                format!(
                    "100 sandboxes on one cold image{image} through `imv serve` (100 connections from one process), vs one cold mutate through it"
                ),
                Some(format!("{} vs {}: {:.2}×", dur(fan), dur(one), fan / one)),
                "≤ 1.3×",
                Some(fan / one <= 1.3),
            );
        }
        if let (Some(one), Some(fan)) = (med(SERVE_COLD), med(&serve_warm_fanout_name(100))) {
            row(
                "(context) the same 100 again, new sandboxes on the image now unpacked, vs one cold mutate"
                    .to_owned(),
                Some(format!("{} vs {}: {:.2}×", dur(fan), dur(one), fan / one)),
                "–",
                None,
            );
        }
        let small = med(&busy_name(30, 0));
        let big = ip
            .series
            .iter()
            .find(|(n, _)| n.contains("other mounts"))
            .map(|(n, v)| (n.clone(), median(&mut v.clone())));
        if let (Some(a), Some((name, b))) = (small, big) {
            row(
                format!(
                    "cleanup + release of one sandbox: 30 volumes vs {}",
                    name.trim_start_matches("cleanup + release, ")
                ),
                Some(format!("{} vs {}", dur(a), dur(b))),
                "≤ 0.5 ms, flat",
                Some(a <= 500e-6 && b <= 500e-6),
            );
        }
        let rss = self
            .rows
            .iter()
            .filter(|r| {
                r.scenario == "Debian files"
                    && r.engine == Engine::Local
                    && r.step.starts_with("cold mount")
            })
            .map(|r| {
                (
                    r.image.clone(),
                    median(
                        &mut r
                            .samples
                            .iter()
                            .map(|x| x.client_rss_kib as f64)
                            .collect::<Vec<_>>(),
                    ),
                )
            })
            .collect::<Vec<_>>();
        if !rss.is_empty() {
            let worst = rss.iter().map(|(_, k)| *k).fold(0.0, f64::max);
            row(
                "peak RSS of a cold mutate (`imv mutate`, the whole process)".into(),
                Some(
                    rss.iter()
                        .map(|(i, k)| format!("{i}: {} MiB", mib(*k)))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                "≤ 18 MiB (13–18 before)",
                Some(worst <= 18.0 * 1024.0),
            );
        }
        let mut s = String::from(
            "\n## Targets (issue #11)\n\n| what | this run | target | met |\n|---|---|---|---|\n",
        );
        for (what, now, target, met) in rows {
            let met = match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            let _ = writeln!(s, "| {what} | {now} | {target} | {met} |");
        }
        s
    }

    /// The CPU of N concurrent cold mounts against that of one cold mount of the same
    /// image (from the large-layers scenario): near 1× plus the per-mount cost means each
    /// layer was unpacked once; N× means every sandbox unpacked it again.
    fn fanout_cpu(&self) -> String {
        let total = |r: &Row| {
            median(
                &mut r
                    .samples
                    .iter()
                    .map(|x| x.client_cpu + x.daemon_cpu)
                    .collect::<Vec<_>>(),
            )
        };
        let mut out = String::new();
        for fan in self
            .rows
            .iter()
            .filter(|r| r.scenario == "fan-out" && r.step.contains("mounts at once"))
        {
            let single = self.rows.iter().find(|r| {
                r.scenario == "large layers"
                    && r.image == fan.image
                    && r.engine == fan.engine
                    && r.step.starts_with("cold mount")
            });
            let warm = self.rows.iter().find(|r| {
                r.scenario == "large layers"
                    && r.image == fan.image
                    && r.engine == fan.engine
                    && r.step.starts_with("warm mount")
            });
            if let (Some(single), Some(warm)) = (single, warm) {
                if out.is_empty() {
                    let _ = writeln!(out, "\nCPU (client + daemons, median) of the fan-out against one cold mount and one warm mount of the same image (large layers table). If each layer is unpacked once, the fan-out costs about one cold mount plus 99 warm ones:\n");
                }
                let (f, c, w) = (total(fan), total(single), total(warm));
                let _ = writeln!(
                    out,
                    "- {}: fan-out {} s; one cold mount {} s + 99 warm mounts {} s = {} s; ratio {:.1}",
                    fan.engine.label(),
                    secs(f),
                    secs(c),
                    secs(99.0 * w),
                    secs(c + 99.0 * w),
                    f / (c + 99.0 * w)
                );
            }
        }
        out
    }

    fn line(&self, r: &Row) -> String {
        let wall: Vec<f64> = r.samples.iter().map(|x| x.wall).collect();
        let (lo, hi) = wall
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &w| {
                (a.min(w), b.max(w))
            });
        let med =
            |f: &dyn Fn(&Sample) -> f64| median(&mut r.samples.iter().map(f).collect::<Vec<_>>());
        let mut daemons: Vec<String> = Vec::new();
        if let Some(first) = r.samples.first() {
            for (name, _) in &first.daemon_rss_delta_kib {
                let m = med(&|x: &Sample| {
                    x.daemon_rss_delta_kib
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| *v as f64)
                        .unwrap_or(0.0)
                });
                daemons.push(format!("{name} {:+.1}", m / 1024.0));
            }
        }
        let daemon_cpu = if r.engine == Engine::Local && daemons.is_empty() {
            "–".to_owned()
        } else {
            secs(med(&|x: &Sample| x.daemon_cpu))
        };
        format!(
            "| {} | {} | {} | {} | {} | {}–{} | {} | {} | {} | {} |\n",
            r.image,
            r.engine.label(),
            r.step,
            r.samples.len(),
            secs(med(&|x: &Sample| x.wall)),
            secs(lo),
            secs(hi),
            secs(med(&|x: &Sample| x.client_cpu)),
            daemon_cpu,
            mib(med(&|x: &Sample| x.client_rss_kib as f64)),
            if daemons.is_empty() {
                "–".to_owned()
            } else {
                daemons.join(", ")
            },
        )
    }
}

/// A duration in the unit that suits it.
fn dur(secs: f64) -> String {
    if secs < 1e-3 {
        format!("{:.0} µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.3} s", secs)
    }
}

/// The `q` quantile (0..=1) of sorted `v`, nearest rank.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// The in-process section: each series' distribution, the fan-out, peak RSS growth.
fn inproc_md(ip: &crate::inproc::Report) -> String {
    let mut s = String::from(
        "\n## In process\n\nThe library called directly (what the C ABI and the Go cgo bindings \
         wrap one to one), no process start-up: single calls, timed one by one. A floor row \
         inflates the same layer blobs with the same decompressor and writes nothing. Charts: \
         [cold against its floor and containerd](cold.svg), [warm latency](warm.svg), \
         [fan-out](fanout.svg).\n\n\
         | step | n | median | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for (name, v) in &ip.series {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} |",
            v.len(),
            dur(median(&mut v.clone())),
            dur(quantile(&v, 0.9)),
            dur(quantile(&v, 0.99)),
            dur(*v.last().unwrap_or(&f64::NAN)),
        );
    }
    let _ = writeln!(
        s,
        "\nFan-out: N threads, each one warm mutate of its own sandbox through one handle, released together; the wall time until the last returns.\n\n| threads | n | wall median | min–max | per mutate (median ÷ N) |\n|---:|---:|---:|---:|---:|"
    );
    for (n, v) in &ip.fanout {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        let m = median(&mut v.clone());
        let _ = writeln!(
            s,
            "| {n} | {} | {} | {}–{} | {} |",
            v.len(),
            dur(m),
            dur(v[0]),
            dur(v[v.len() - 1]),
            dur(m / *n as f64)
        );
    }
    if !ip.cold_rss_kib.is_empty() {
        let _ = writeln!(
            s,
            "\nPeak RSS growth of the benchmark process during one cold mutate (median): {}.",
            ip.cold_rss_kib
                .iter()
                .map(|(l, v)| format!(
                    "{l} {} MiB",
                    mib(median(&mut v.iter().map(|&k| k as f64).collect::<Vec<_>>()))
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !ip.notes.is_empty() {
        let _ = writeln!(s, "\nChecked during the run:\n");
        for n in &ip.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}
