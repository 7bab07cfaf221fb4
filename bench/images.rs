//! The benchmark's images: big deterministic layers (seeded PRNG data mixed with repeated
//! text, so gzip and zstd have real work and the blobs are about half the tar size) and
//! images of many small layers. Built with `imv_testkit::image_builder`'s `LayerBuilder` one layer
//! at a time, each blob written to disk before the next is built, so memory stays at about
//! three times one layer; the config, manifest and index are small and written here.
//!
//! Images are cached as OCI archives (what both `imv import` and `ctr images import` read)
//! under a cache directory, keyed by their parameters and [`GEN_VERSION`]: the same
//! parameters always give the same bytes, so a cached archive is as good as a new one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use imv::Platform;
use imv_testkit::image_builder::{chain_id, media_type, Compression, LayerBuilder};
use serde_json::json;

use crate::R;

/// Bump when the generator changes, so stale cached archives are not reused.
const GEN_VERSION: u32 = 1;
const MIB: usize = 1 << 20;

/// What an image is made of.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// `layers` layers of about `layer_mib` MiB of file data each.
    Big { layers: usize, layer_mib: usize },
    /// `layers` layers of a few 4 KiB files each.
    Many { layers: usize },
    /// Real Debian files (the host's python3.11 and perl libraries, [`HOST_FILES`]) in
    /// `layers` layers of about equal size: the mix of sizes and counts real images have.
    Files { layers: usize },
}

/// The host directories a [`Shape::Files`] image holds: Python's and Perl's standard
/// libraries, present on every Debian machine of the kind the benchmark runs on (python3 and
/// perl are in its base).
pub const HOST_FILES: &[&str] = &[
    "/usr/lib/python3.11",
    "/usr/share/perl",
    "/usr/share/perl5",
    "/usr/lib/x86_64-linux-gnu/perl-base",
];

/// One benchmark image.
#[derive(Clone, Debug)]
pub struct Spec {
    pub shape: Shape,
    pub compression: Compression,
}

/// A generated image, ready to import.
#[derive(Clone, Debug)]
pub struct Image {
    /// Short label for tables: `gzip 4×100 MiB`.
    pub label: String,
    /// The image name written into the archive.
    pub name: String,
    pub archive: PathBuf,
    pub layers: usize,
    /// Sum of the uncompressed layer tars.
    pub tar_bytes: u64,
    /// Sum of the layer blobs as stored.
    pub blob_bytes: u64,
    /// Regular files in all layers.
    pub files: u64,
    /// The layers' blob digests, bottom first.
    pub layer_digests: Vec<String>,
}

impl Spec {
    fn comp_name(&self) -> &'static str {
        match self.compression {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    fn key(&self) -> String {
        match self.shape {
            Shape::Big { layers, layer_mib } => {
                format!(
                    "big-{}-{layers}x{layer_mib}m-v{GEN_VERSION}",
                    self.comp_name()
                )
            }
            Shape::Many { layers } => format!("many-{}-{layers}-v{GEN_VERSION}", self.comp_name()),
            Shape::Files { layers } => {
                format!("files-{}-{layers}-v{GEN_VERSION}", self.comp_name())
            }
        }
    }

    pub fn label(&self) -> String {
        match self.shape {
            Shape::Big { layers, layer_mib } => {
                format!("{} {layers}×{layer_mib} MiB", self.comp_name())
            }
            Shape::Many { layers } => format!("{} {layers} small layers", self.comp_name()),
            Shape::Files { layers: 1 } => format!("{} Debian files, 1 layer", self.comp_name()),
            Shape::Files { layers } => {
                format!("{} Debian files, {layers} layers", self.comp_name())
            }
        }
    }

    /// The archive for this spec: from the cache, or generated into it.
    pub fn get(&self, cache: &Path) -> R<Image> {
        let key = self.key();
        let name = format!("bench.imv.example/{key}:1");
        let archive = cache.join(format!("{key}.tar"));
        let meta_path = cache.join(format!("{key}.json"));
        if !(archive.exists() && meta_path.exists()) {
            eprintln!("bench: generating image {} ({key})", self.label());
            self.generate(cache, &key, &name, &archive, &meta_path)?;
        }
        let meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta_path)?)?;
        Ok(Image {
            label: self.label(),
            name,
            archive,
            layers: meta["layers"].as_u64().unwrap_or(0) as usize,
            tar_bytes: meta["tar_bytes"].as_u64().unwrap_or(0),
            blob_bytes: meta["blob_bytes"].as_u64().unwrap_or(0),
            files: meta["files"].as_u64().unwrap_or(0),
            layer_digests: meta["layer_digests"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    fn generate(
        &self,
        cache: &Path,
        key: &str,
        name: &str,
        archive: &Path,
        meta_path: &Path,
    ) -> R<()> {
        fs::create_dir_all(cache)?;
        let dir = cache.join(format!("{key}.layout.tmp"));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs)?;
        let n = match self.shape {
            Shape::Big { layers, .. } | Shape::Many { layers } | Shape::Files { layers } => layers,
        };
        let host_layers = match self.shape {
            Shape::Files { layers } => host_file_layers(layers)?,
            _ => Vec::new(),
        };
        let (mut descriptors, mut diff_ids, mut history) = (Vec::new(), Vec::new(), Vec::new());
        let (mut tar_bytes, mut blob_bytes) = (0u64, 0u64);
        let mut layer_digests = Vec::new();
        let mut files = 0u64;
        let mut host_layers = host_layers.into_iter();
        for i in 0..n {
            let builder = match self.shape {
                Shape::Big { layer_mib, .. } => big_layer(i, layer_mib),
                Shape::Many { .. } => small_layer(i),
                Shape::Files { .. } => {
                    let (b, count) = host_layers.next().ok_or("fewer host layers than asked")?;
                    files += count;
                    b
                }
            }
            .compression(self.compression);
            tar_bytes += builder.tar()?.len() as u64;
            // Built, written and dropped before the next layer: one layer in memory at a time.
            let layer = builder.build()?;
            fs::write(blobs.join(layer.digest.hex()), &layer.blob)?;
            blob_bytes += layer.size();
            layer_digests.push(layer.digest.to_string());
            descriptors.push(json!({
                "mediaType": layer.compression.layer_media_type(false),
                "digest": layer.digest.to_string(),
                "size": layer.size(),
            }));
            history.push(json!({ "created": "2024-01-01T00:00:00Z", "created_by": format!("bench layer {i}") }));
            diff_ids.push(layer.diff_id);
        }
        let host = Platform::host();
        let config = serde_json::to_vec(&json!({
            "architecture": host.architecture,
            "os": host.os,
            "created": "2024-01-01T00:00:00Z",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>() },
            "history": history,
        }))?;
        let config_digest = imv::Digest::of(&config);
        fs::write(blobs.join(config_digest.hex()), &config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": { "mediaType": media_type::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len() },
            "layers": descriptors,
        }))?;
        let manifest_digest = imv::Digest::of(&manifest);
        fs::write(blobs.join(manifest_digest.hex()), &manifest)?;
        let chain = chain_id(&diff_ids).map(|c| c.to_string());
        finish_layout(
            &dir,
            name,
            (&manifest_digest, manifest.len()),
            archive,
            meta_path,
            json!({
                "layers": n, "tar_bytes": tar_bytes, "blob_bytes": blob_bytes,
                "files": files, "layer_digests": layer_digests,
                "manifest": manifest_digest.to_string(), "chain_id": chain,
            }),
        )
    }
}

/// Finish the OCI layout in `dir`, whose one image `name` is the manifest `manifest` (its
/// digest and size): write its index.json and oci-layout, archive it as `archive` and its
/// metadata as `meta_path`, and remove `dir`. tar(1) streams the blobs from disk into the
/// archive, written under a temporary name and renamed last, so an interrupted run never
/// leaves a truncated cached archive.
pub fn finish_layout(
    dir: &Path,
    name: &str,
    (manifest_digest, manifest_len): (&imv::Digest, usize),
    archive: &Path,
    meta_path: &Path,
    meta: serde_json::Value,
) -> R<()> {
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [{
            "mediaType": media_type::OCI_MANIFEST,
            "digest": manifest_digest.to_string(),
            "size": manifest_len,
            "annotations": {
                // containerd's import names the image from the second; imv reads either.
                "org.opencontainers.image.ref.name": name,
                "io.containerd.image.name": name,
            },
        }],
    }))?;
    fs::write(dir.join("index.json"), index)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let tmp_archive = archive.with_extension("tar.tmp");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&tmp_archive)
        .arg("-C")
        .arg(dir)
        .args(["oci-layout", "index.json", "blobs"])
        .status()?;
    if !status.success() {
        return Err(format!("tar of {} failed: {status}", dir.display()).into());
    }
    fs::remove_dir_all(dir)?;
    fs::write(meta_path, serde_json::to_vec(&meta)?)?;
    fs::rename(&tmp_archive, archive)?;
    Ok(())
}

/// splitmix64: tiny, fast, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TEXT: &[&str] = &[
    "image volumes mount an OCI image read-only for a pod sandbox\n",
    "the runtime unpacks each layer once per chain ID and takes a view\n",
    "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod\n",
    "{\"level\":\"info\",\"msg\":\"mounted image volume\",\"sandbox\":\"pod-0001\"}\n",
];

/// `len` bytes in 4 KiB blocks, half random (incompressible) and half numbered lines of
/// text (compressible, but not a single repeated run that would compress to nothing).
fn content(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let block = (len - out.len()).min(4096);
        let start = out.len();
        if rng.below(2) == 0 {
            while out.len() < start + block {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
        } else {
            while out.len() < start + block {
                let line = TEXT[rng.below(TEXT.len() as u64) as usize];
                out.extend_from_slice(format!("{:08} ", rng.below(100_000_000)).as_bytes());
                out.extend_from_slice(line.as_bytes());
            }
        }
        out.truncate(start + block);
    }
    out
}

/// About `mib` MiB in files of 64 KiB to 2 MiB, plus 64 small files (metadata work).
fn big_layer(i: usize, mib: usize) -> LayerBuilder {
    let mut rng = Rng(0x1_0000 + i as u64);
    let mut b = LayerBuilder::new()
        .created_by(&format!("bench big layer {i}"))
        .dir("data", 0o755)
        .dir(&format!("data/l{i}"), 0o755)
        .dir(&format!("data/l{i}/small"), 0o755);
    let mut total = 0;
    let mut k = 0;
    while total < mib * MIB {
        let size =
            (64 * 1024 + rng.below(2 * MIB as u64 - 64 * 1024) as usize).min(mib * MIB - total);
        b = b.file(
            &format!("data/l{i}/f{k:04}"),
            0o644,
            content(&mut rng, size),
        );
        total += size;
        k += 1;
    }
    for s in 0..64 {
        let size = 256 + rng.below(8192) as usize;
        b = b.file(
            &format!("data/l{i}/small/s{s:03}"),
            0o644,
            content(&mut rng, size),
        );
    }
    b
}

/// Eight 4 KiB files, and a rewrite of one shared file (so upper layers shadow lower ones).
fn small_layer(i: usize) -> LayerBuilder {
    let mut rng = Rng(0x2_0000 + i as u64);
    let mut b = LayerBuilder::new()
        .created_by(&format!("bench small layer {i}"))
        .dir("m", 0o755)
        .dir(&format!("m/{i}"), 0o755)
        .file("shared", 0o644, format!("written by layer {i}\n"));
    for f in 0..8 {
        b = b.file(&format!("m/{i}/f{f}"), 0o644, content(&mut rng, 4096));
    }
    b
}

/// The [`HOST_FILES`] trees as `layers` layers of about equal size (files in path order,
/// cut where the running total crosses each share), each with the directories its
/// entries need; with the number of regular files in each. Files are read whole: the
/// trees are about 80 MiB.
fn host_file_layers(layers: usize) -> R<Vec<(LayerBuilder, u64)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries = Vec::new();
    for root in HOST_FILES {
        walk(Path::new(root), &mut entries)?;
    }
    entries.sort();
    let total: u64 = entries.iter().map(|(_, len)| *len).sum();
    let mut out: Vec<(LayerBuilder, u64, std::collections::HashSet<PathBuf>)> = (0..layers)
        .map(|i| {
            let b = LayerBuilder::new().created_by(&format!("bench host files {i}"));
            (b, 0, Default::default())
        })
        .collect();
    let mut running = 0u64;
    for (path, len) in entries {
        let k = ((running * layers as u64) / total.max(1)).min(layers as u64 - 1) as usize;
        running += len;
        let (b, count, dirs) = &mut out[k];
        let mut builder = std::mem::take(b);
        // Every ancestor directory first, once per layer.
        let rel = path.strip_prefix("/")?;
        let mut ancestors: Vec<&Path> = rel.ancestors().skip(1).collect();
        ancestors.reverse();
        for a in ancestors.into_iter().filter(|a| !a.as_os_str().is_empty()) {
            if dirs.insert(a.to_owned()) {
                let mode = fs::metadata(Path::new("/").join(a))?.permissions().mode() & 0o7777;
                builder = builder.dir(&a.to_string_lossy(), mode);
            }
        }
        let meta = fs::symlink_metadata(&path)?;
        let name = rel.to_string_lossy();
        builder = if meta.file_type().is_symlink() {
            builder.symlink(&name, &fs::read_link(&path)?.to_string_lossy())
        } else {
            *count += 1;
            builder.file(&name, meta.permissions().mode() & 0o7777, fs::read(&path)?)
        };
        *b = builder;
    }
    Ok(out.into_iter().map(|(b, count, _)| (b, count)).collect())
}

/// Regular files and symlinks under `dir`, with their sizes.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> R<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push((entry.path(), entry.metadata()?.len()));
        } else if kind.is_symlink() {
            out.push((entry.path(), 0));
        }
    }
    Ok(())
}
