//! Legacy `docker save` tarballs: [`write_docker_archive`].

use std::fs;
use std::path::Path;

use serde_json::json;

use imv::{IoContext, Result};

use super::{chain_id, tag_of, to_json, Compression, ImageBuilder, ImageDigests, LayerBuilder};

/// Write `image` as a legacy `docker save` tarball: `manifest.json` (`Config`,
/// `RepoTags` = `[name]`, `Layers`), `repositories`, `<config hex>.json` and one
/// `<chain id hex>/layer.tar` (uncompressed) per layer.
///
/// Layers are stored uncompressed whatever their builders say, so the returned layer
/// digests equal the diff IDs; `manifest` is the digest of the Docker schema2 manifest of
/// those uncompressed layers (the archive itself holds no manifest blob).
pub fn write_docker_archive(path: &Path, name: &str, image: &ImageBuilder) -> Result<ImageDigests> {
    let img = image
        .clone()
        .compress_all(Compression::None)
        .docker_media_types(true)
        .build()?;
    let digests = img.digests();
    let config_name = format!("{}.json", img.config_digest.hex());
    let mut archive = LayerBuilder::new().compression(Compression::None);
    let mut layer_paths = Vec::new();
    for (i, l) in img.layers.iter().enumerate() {
        // The chain ID is unique per position even when two layers are identical.
        let id = chain_id(&digests.diff_ids[..=i]).expect("at least one layer");
        let rel = format!("{}/layer.tar", id.hex());
        archive = archive
            .dir(id.hex(), 0o755)
            .file(&format!("{}/VERSION", id.hex()), 0o644, "1.0")
            .file(&rel, 0o644, l.blob.clone());
        layer_paths.push(rel);
    }
    let manifest = to_json(&json!([{
        "Config": config_name,
        "RepoTags": [name],
        "Layers": layer_paths,
    }]))?;
    let repo = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    let top = digests.chain_id.as_ref().map(|c| c.hex().to_owned());
    let repositories = to_json(&json!({ (repo): { (tag_of(name)): top } }))?;
    archive = archive
        .file(&config_name, 0o644, img.config.clone())
        .file("manifest.json", 0o644, manifest)
        .file("repositories", 0o644, repositories);
    fs::write(path, archive.tar()?).at("write", path)?;
    Ok(digests)
}
