//! Power loss, not just SIGKILL (docs/design.md, "Durability"): a small Linux guest under
//! QEMU works on a store on its virtual disk (imports, mounts, releases, image
//! removals, collections) until the host kills QEMU at a random moment, so every page the
//! guest had not written goes, as in a power cut. The next boot checks that every blob the
//! store keeps has its digest, that every layer it keeps holds exactly the layer's files
//! (size and SHA-256 of each), and that every image it lists mounts with every file of
//! the image whole. The same run against containerd (Debian's 1.6, its defaults) in the
//! same guest is reported, not asserted: its snapshotter does not sync layers before it
//! commits them.
//!
//! `IMV_POWER_CUTS` (default 3) cuts per store; `IMV_POWER_CUT_REPORT=FILE` writes the
//! tally as Markdown (bench/power-cut, with more cuts, writes bench/power-cut-results.md).
//! The guest's kernel comes from scripts/guest-kernel (scripts/setup runs it).
//!
//! What a cut loses here: the guest's page cache and whatever it had not submitted to its
//! disk. Writes it had submitted reach the host's page cache (QEMU's writeback cache) and
//! survive, where a real disk with a volatile cache could lose them until a flush: this
//! cut is the usual kind (an ext4 with delayed allocation), not the harshest.

mod guest;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use imv_testkit::image_builder::{chain_id, write_oci_archive, ImageBuilder, LayerBuilder};

const IMAGES: usize = 4;

/// A file's size and SHA-256, as the guest prints them.
type Files = BTreeMap<String, (u64, String)>;

/// What the test's images are made of.
struct Expected {
    /// Files of each layer, by chain ID (hex).
    layers: BTreeMap<String, Files>,
    /// Files of each image's volume, by name.
    images: BTreeMap<String, Files>,
}

/// A deterministic generator (xorshift64), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Four images of three layers each, the bottom one shared: 40 files per layer, 0 to 96
/// KiB each, every byte random (so no two layers share a block).
fn build_images(dir: &Path) -> (Vec<(String, PathBuf)>, Expected) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let layer = |prefix: &str, rng: &mut Rng| {
        let mut builder = LayerBuilder::new().dir(prefix, 0o755);
        let mut files = Files::new();
        for i in 0..40 {
            let size = (rng.next() % (96 * 1024)) as usize;
            let data = rng.bytes(size);
            let path = format!("{prefix}/f{i:02}");
            files.insert(
                path.clone(),
                (size as u64, imv::Digest::of(&data).hex().to_owned()),
            );
            builder = builder.file(&path, 0o644, data);
        }
        (builder, files)
    };
    let (base, base_files) = layer("base", &mut rng);
    let mut expected = Expected {
        layers: BTreeMap::new(),
        images: BTreeMap::new(),
    };
    let mut archives = Vec::new();
    for n in 0..IMAGES {
        let name = format!("example.com/power-cut/img{n}:1");
        let mut image = ImageBuilder::new().layer(base.clone());
        let mut volume = base_files.clone();
        let mut layers = vec![base_files.clone()];
        for part in ["a", "b"] {
            let (builder, files) = layer(&format!("img{n}-{part}"), &mut rng);
            image = image.layer(builder);
            volume.extend(files.clone());
            layers.push(files);
        }
        let archive = dir.join(format!("img{n}.tar"));
        let digests = write_oci_archive(&archive, &[(&name, &image)]).unwrap();
        for (i, files) in layers.into_iter().enumerate() {
            let chain = chain_id(&digests[0].diff_ids[..=i]).unwrap();
            expected.layers.insert(chain.hex().to_owned(), files);
        }
        expected.images.insert(name, volume);
        archives.push((format!("img{n}.tar"), archive));
    }
    (archives, expected)
}

/// What one boot's check found, and what was wrong with it.
#[derive(Default)]
struct Check {
    images: usize,
    blobs: usize,
    layers: usize,
    files: usize,
    volumes: usize,
    problems: Vec<String>,
}

/// Read the check of one boot's console against `expected`. `mounts`: the store's images
/// are mounted in the check (imv; containerd's check reads its layers only).
fn read_check(lines: &[String], expected: &Expected, mounts: bool) -> Check {
    let mut check = Check::default();
    let mut seen: BTreeMap<String, Files> = BTreeMap::new();
    let mut listed = BTreeSet::new();
    let mut mounted = BTreeSet::new();
    let mut in_check = false;
    let mut ended = false;
    for line in lines {
        let Some(rest) = line.strip_prefix("PC ") else {
            continue;
        };
        let words: Vec<&str> = rest.split(' ').collect();
        match words[..] {
            ["CHECK-BEGIN"] => in_check = true,
            ["CHECK-END"] => {
                ended = true;
                in_check = false;
            }
            // Nothing fails while the guest works, but for the cut itself.
            ["ERROR", ..] if ended => check.problems.push(format!("at work: {rest}")),
            _ if !in_check => {}
            ["ERROR", ..] => check.problems.push(rest.to_owned()),
            ["IMAGE", name] => {
                check.images += 1;
                listed.insert(name.to_owned());
                if !expected.images.contains_key(name) {
                    check
                        .problems
                        .push(format!("an image not of the test: {name}"));
                }
            }
            ["BLOB-OK", _] => check.blobs += 1,
            ["BLOB-BAD", name, got] => {
                check.blobs += 1;
                check.problems.push(format!("blob {name} has digest {got}"));
            }
            ["LAYER", id] => {
                check.layers += 1;
                seen.insert(format!("layer {id}"), Files::new());
            }
            ["MOUNTED", name] => {
                check.volumes += 1;
                mounted.insert(name.to_owned());
                seen.insert(format!("volume {name}"), Files::new());
            }
            [kind @ ("FILE" | "VOLUME"), owner, path, size, sum] => {
                check.files += 1;
                let key = match kind {
                    "FILE" => format!("layer {owner}"),
                    _ => format!("volume {owner}"),
                };
                seen.entry(key).or_default().insert(
                    path.to_owned(),
                    (size.parse().unwrap_or(u64::MAX), sum.to_owned()),
                );
            }
            _ => check.problems.push(format!("unread line: {rest}")),
        }
    }
    if !ended {
        check.problems.push("the check did not finish".to_owned());
    }
    for (key, files) in &seen {
        let want = match key.split_once(' ') {
            Some(("layer", id)) => expected.layers.get(id),
            Some((_, name)) => expected.images.get(name),
            None => None,
        };
        match want {
            None => check.problems.push(format!("{key}: not of the test")),
            Some(want) => check.problems.extend(differences(key, want, files)),
        }
    }
    if mounts {
        for name in listed.difference(&mounted) {
            check
                .problems
                .push(format!("image {name} is listed and did not mount"));
        }
    }
    check
}

/// How `got` differs from `want`, a line per file (a few, then a count).
fn differences(what: &str, want: &Files, got: &Files) -> Vec<String> {
    let mut out = Vec::new();
    for (path, w) in want {
        match got.get(path) {
            None => out.push(format!("{what}: {path} is missing")),
            Some(g) if g != w => out.push(format!(
                "{what}: {path} has {} bytes, sha256 {} (want {} bytes, {})",
                g.0, g.1, w.0, w.1
            )),
            _ => {}
        }
    }
    for path in got.keys().filter(|p| !want.contains_key(*p)) {
        out.push(format!("{what}: {path} is not the layer's"));
    }
    if out.len() > 5 {
        let more = out.len() - 5;
        out.truncate(5);
        out.push(format!("{what}: and {more} more"));
    }
    out
}

/// The tally of one store's run.
#[derive(Default)]
struct Tally {
    cuts: usize,
    steps_before_cut: Vec<usize>,
    checks: usize,
    blobs: usize,
    layers: usize,
    files: usize,
    volumes: usize,
    bad_checks: usize,
    problems: Vec<String>,
}

impl Tally {
    fn add(&mut self, boot: usize, check: Check) {
        self.checks += 1;
        self.blobs += check.blobs;
        self.layers += check.layers;
        self.files += check.files;
        self.volumes += check.volumes;
        if !check.problems.is_empty() {
            self.bad_checks += 1;
        }
        self.problems.extend(
            check
                .problems
                .into_iter()
                .map(|p| format!("boot {boot}: {p}")),
        );
    }
}

/// Cut the power `cuts` times while `store` works, checking at each boot and once more
/// at the end.
fn run_store(store: &str, cuts: usize, dir: &Path, initrd: &Path, expected: &Expected) -> Tally {
    let kernel = guest::kernel_dir().join("vmlinuz");
    let disk = dir.join(format!("{store}.disk"));
    guest::make_disk(&disk, 4 << 30);
    let limit = Duration::from_secs(300);
    let mut tally = Tally::default();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ store.len() as u64);
    for boot in 0..=cuts {
        let work = boot < cuts;
        // After 0 to 11 steps (three rounds of the workload), and 0 to 2 s into the next:
        // the layers committed in those steps are in the guest's page cache still (ext4
        // writes dirty data back after 30 s) unless the store synced them.
        let cut = work.then(|| guest::Cut {
            steps: (rng.next() % 12) as usize,
            delay: Duration::from_millis(rng.next() % 2_000),
        });
        let cmdline = format!("power_cut.store={store} power_cut.work={}", u8::from(work));
        let run = guest::boot(&kernel, initrd, &disk, &cmdline, cut, limit);
        assert_eq!(
            run.cut,
            work,
            "boot {boot} of {store}:\n{}",
            run.lines.join("\n")
        );
        if run.cut {
            tally.cuts += 1;
            let steps = run
                .lines
                .iter()
                .filter(|l| l.starts_with("PC STEP "))
                .count();
            tally.steps_before_cut.push(steps);
        }
        if std::env::var_os("IMV_POWER_CUT_CONSOLE").is_some() {
            eprintln!("--- {store} boot {boot} (cut: {cut:?}):");
            for (line, at) in run.lines.iter().zip(&run.times) {
                eprintln!("{:7.2} {line}", at.as_secs_f64());
            }
        }
        tally.add(boot, read_check(&run.lines, expected, store == "imv"));
    }
    tally
}

fn report(tallies: &[(&str, &Tally)]) -> String {
    let mut out = String::from(
        "| store | cuts | steps before each cut | checks | blobs | layers | files | volumes | checks with damage |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for (store, t) in tallies {
        out += &format!(
            "| {store} | {} | {:?} | {} | {} | {} | {} | {} | {} |\n",
            t.cuts,
            t.steps_before_cut,
            t.checks,
            t.blobs,
            t.layers,
            t.files,
            t.volumes,
            t.bad_checks
        );
    }
    for (store, t) in tallies {
        if !t.problems.is_empty() {
            out += &format!("\n{store}, the damage found (the first 20):\n\n");
            for p in t.problems.iter().take(20) {
                out += &format!("- {p}\n");
            }
        }
    }
    out
}

#[test]
fn a_power_cut_leaves_every_blob_layer_and_image_whole_or_absent() {
    let cuts: usize = std::env::var("IMV_POWER_CUTS")
        .ok()
        .map_or(3, |v| v.parse().expect("IMV_POWER_CUTS: a number"));
    assert!(
        guest::kernel_dir().join("vmlinuz").is_file(),
        "no guest kernel at {}: run scripts/guest-kernel (scripts/setup does)",
        guest::kernel_dir().display()
    );
    let dir = tempfile::Builder::new()
        .prefix("imv-power-cut-")
        .tempdir()
        .unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let (archives, expected) = build_images(&images);
    let initrd = dir.path().join("initrd.cpio");
    guest::build_initramfs(
        &dir.path().join("initramfs"),
        &initrd,
        include_str!("init.sh"),
        &archives,
    );
    let imv = run_store("imv", cuts, dir.path(), &initrd, &expected);
    let containerd = run_store("containerd", cuts, dir.path(), &initrd, &expected);
    let text = report(&[("imv", &imv), ("containerd 1.6", &containerd)]);
    eprintln!("{text}");
    if let Some(path) = std::env::var_os("IMV_POWER_CUT_REPORT") {
        std::fs::write(path, &text).unwrap();
    }
    // The checks read something every time (a check that sees nothing proves nothing).
    assert!(imv.layers > 0 && imv.files > 0 && imv.volumes > 0, "{text}");
    assert!(containerd.layers > 0, "{text}");
    assert!(
        imv.problems.is_empty(),
        "imv's store is damaged after a power cut:\n{text}"
    );
}
