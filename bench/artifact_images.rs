//! The models-and-artifacts scenario's images (bench/artifacts.rs): one file of model
//! weights, of 64 MiB to 4 GiB, packaged four ways:
//!
//! - `raw`: a ModelPack artifact whose one layer is the file itself (a raw weight);
//! - `tar`: an image whose one layer is an uncompressed tar of the file;
//! - `gzip`: an image whose one layer is that tar gzipped;
//! - `model-tgz`: a ModelPack artifact whose one layer is the same gzipped tar, as a
//!   `weight.v1.tar+gzip` layer (a model shipped as a tarball).
//!
//! The weights are 16-bit values whose high bytes cluster, as bf16 weights' exponents do:
//! gzip takes a little off (real weights compress by 5-20%), inflating them is real work.
//! Everything is streamed to disk (a 4 GiB blob is never held in memory) and hashed as it is
//! written, then the layout is archived with tar(1) and cached as images.rs caches its
//! archives: same parameters, same bytes.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use imv_testkit::image_builder::media_type;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::images::Image;
use crate::R;

/// Bump when the generator changes, so stale cached archives are not reused.
const GEN_VERSION: u32 = 1;
const MIB: u64 = 1 << 20;
/// The weight file's name in every packaging.
pub const WEIGHTS: &str = "model.safetensors";
const MODEL_ARTIFACT: &str = "application/vnd.cncf.model.manifest.v1+json";
const MODEL_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";

/// How the weights are packaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packaging {
    Raw,
    Tar,
    Gzip,
    ModelTgz,
}

impl Packaging {
    fn key(self) -> &'static str {
        match self {
            Packaging::Raw => "raw",
            Packaging::Tar => "tar",
            Packaging::Gzip => "gzip",
            Packaging::ModelTgz => "model-tgz",
        }
    }

    /// How tables name it.
    pub fn label(self, mib: u64) -> String {
        let size = size_label(mib);
        match self {
            Packaging::Raw => format!("raw artifact, {size}"),
            Packaging::Tar => format!("image, tar layer, {size}"),
            Packaging::Gzip => format!("image, tar+gzip layer, {size}"),
            Packaging::ModelTgz => format!("model artifact, tar+gzip layer, {size}"),
        }
    }
}

/// `64 MiB`, `1 GiB`.
pub fn size_label(mib: u64) -> String {
    if mib >= 1024 && mib % 1024 == 0 {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

/// splitmix64, as images.rs's.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Write `len` bytes of weights to `w`.
fn write_weights(w: &mut impl Write, len: u64) -> io::Result<()> {
    let mut rng = Rng(0xB16_F10A7);
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        for pair in buf.chunks_exact_mut(8) {
            let r = rng.next();
            // Four little-endian bf16 values: a random low byte, a high byte (sign and
            // exponent) among eight.
            for (k, v) in pair.chunks_exact_mut(2).enumerate() {
                v[0] = (r >> (16 * k)) as u8;
                v[1] = 0x3b + ((r >> (16 * k + 8)) & 0x7) as u8;
            }
        }
        let n = left.min(buf.len() as u64) as usize;
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// A writer that hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hashing<W>(inner: W) -> Hashing<W> {
    Hashing {
        inner,
        hasher: Sha256::new(),
        len: 0,
    }
}

fn digest_of(h: Sha256) -> String {
    format!("sha256:{:x}", h.finalize())
}

/// The uncompressed tar of the weights: one file, then the end blocks.
fn write_tar(w: &mut impl Write, len: u64) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_path(WEIGHTS)?;
    header.set_size(len);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_704_067_200);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    w.write_all(header.as_bytes())?;
    write_weights(w, len)?;
    let pad = (512 - len % 512) % 512;
    w.write_all(&vec![0u8; pad as usize + 1024])
}

/// One blob written into `blobs` (a layout's `blobs/sha256`) by `fill`: its digest and
/// size, and the digest of what `fill` wrote before compression when it compresses.
fn write_blob(
    blobs: &Path,
    fill: impl FnOnce(&mut Hashing<io::BufWriter<fs::File>>) -> io::Result<Option<String>>,
) -> R<(String, u64, Option<String>)> {
    let tmp = blobs.join("blob.tmp");
    let mut w = hashing(io::BufWriter::with_capacity(
        4 * MIB as usize,
        fs::File::create(&tmp)?,
    ));
    let inner = fill(&mut w)?;
    w.flush()?;
    let (digest, len) = (digest_of(w.hasher), w.len);
    fs::rename(&tmp, blobs.join(digest.trim_start_matches("sha256:")))?;
    Ok((digest, len, inner))
}

/// The image or artifact of `packaging` for `mib` MiB of weights, from `cache` or made into
/// it.
pub fn get(cache: &Path, packaging: Packaging, mib: u64) -> R<Image> {
    let key = format!("weights-{}-{mib}m-v{GEN_VERSION}", packaging.key());
    let name = format!("bench.imv.example/{key}:1");
    let archive = cache.join(format!("{key}.tar"));
    let meta_path = cache.join(format!("{key}.json"));
    if !(archive.exists() && meta_path.exists()) {
        eprintln!("bench: generating {} ({key})", packaging.label(mib));
        generate(
            cache,
            &key,
            &name,
            packaging,
            mib * MIB,
            &archive,
            &meta_path,
        )?;
    }
    let meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta_path)?)?;
    Ok(Image {
        label: packaging.label(mib),
        name,
        archive,
        layers: 1,
        tar_bytes: meta["tar_bytes"].as_u64().unwrap_or(0),
        blob_bytes: meta["blob_bytes"].as_u64().unwrap_or(0),
        files: 1,
        layer_digests: vec![meta["layer"].as_str().unwrap_or_default().to_owned()],
    })
}

fn generate(
    cache: &Path,
    key: &str,
    name: &str,
    packaging: Packaging,
    len: u64,
    archive: &Path,
    meta_path: &Path,
) -> R<()> {
    fs::create_dir_all(cache)?;
    let dir: PathBuf = cache.join(format!("{key}.layout.tmp"));
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    // The layer: its digest, size, diff ID (images), and the size of its tar.
    let (layer, size, diff_id, tar_bytes) = match packaging {
        Packaging::Raw => {
            let (d, n, _) = write_blob(&blobs, |w| write_weights(w, len).map(|()| None))?;
            (d, n, None, len)
        }
        Packaging::Tar => {
            let (d, n, _) = write_blob(&blobs, |w| write_tar(w, len).map(|()| None))?;
            (d.clone(), n, Some(d), n)
        }
        Packaging::Gzip | Packaging::ModelTgz => {
            let mut tar_len = 0;
            let (d, n, inner) = write_blob(&blobs, |w| {
                // Fast deflate: the blob inflates at the same speed whatever level made
                // it, and level 6 would take minutes to make 4 GiB.
                let mut tar = hashing(GzEncoder::new(w, flate2::Compression::fast()));
                write_tar(&mut tar, len)?;
                tar_len = tar.len;
                let inner = digest_of(tar.hasher);
                tar.inner.finish()?;
                Ok(Some(inner))
            })?;
            (d, n, inner, tar_len)
        }
    };
    let media = match packaging {
        Packaging::Raw => "application/vnd.cncf.model.weight.v1.raw",
        Packaging::Tar => media_type::OCI_LAYER,
        Packaging::Gzip => media_type::OCI_LAYER_GZIP,
        Packaging::ModelTgz => "application/vnd.cncf.model.weight.v1.tar+gzip",
    };
    let artifact = matches!(packaging, Packaging::Raw | Packaging::ModelTgz);
    let config = if artifact {
        serde_json::to_vec(&json!({
            "descriptor": { "name": key },
            "config": { "format": "safetensors" },
            "modelfs": { "type": "layers", "diffIds": [] },
        }))?
    } else {
        let host = imv::Platform::host();
        serde_json::to_vec(&json!({
            "architecture": host.architecture,
            "os": host.os,
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        }))?
    };
    let config_digest = imv::Digest::of(&config);
    fs::write(blobs.join(config_digest.hex()), &config)?;
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": {
            "mediaType": if artifact { MODEL_CONFIG } else { media_type::OCI_CONFIG },
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": media,
            "digest": layer,
            "size": size,
            "annotations": { "org.cncf.model.filepath": WEIGHTS },
        }],
    });
    if artifact {
        manifest["artifactType"] = json!(MODEL_ARTIFACT);
    }
    let manifest = serde_json::to_vec(&manifest)?;
    let manifest_digest = imv::Digest::of(&manifest);
    fs::write(blobs.join(manifest_digest.hex()), &manifest)?;
    crate::images::finish_layout(
        &dir,
        name,
        (&manifest_digest, manifest.len()),
        archive,
        meta_path,
        json!({
            "layer": layer, "tar_bytes": tar_bytes, "blob_bytes": size,
            "manifest": manifest_digest.to_string(),
        }),
    )
}
