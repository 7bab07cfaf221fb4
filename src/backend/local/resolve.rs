//! Resolving a reference to one platform's manifest in the embedded store, and walking
//! what an image references (for garbage collection).

use std::collections::BTreeSet;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use crate::backend::{chain_ids, ImageRecord, Layer, ResolvedImage};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::platform::{self, Platform};
use crate::reference::{self, Reference};

use super::content::ContentStore;
use super::db::{Reader, Table};

/// Nested indexes deeper than this are refused (a loop or a hostile image).
const MAX_INDEX_DEPTH: usize = 4;

/// A blob of JSON that is either an index or a manifest.
enum Node {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

fn load_node(content: &ContentStore, digest: &Digest) -> Result<Node> {
    let value: serde_json::Value = content.read_json(digest)?;
    let parse_err = |e: serde_json::Error| {
        Error::invalid(format!(
            "blob {digest}: not a valid image index or manifest: {e}"
        ))
    };
    if value.get("manifests").is_some() {
        Ok(Node::Index(
            serde_json::from_value(value).map_err(parse_err)?,
        ))
    } else if value.get("layers").is_some() || value.get("config").is_some() {
        Ok(Node::Manifest(
            serde_json::from_value(value).map_err(parse_err)?,
        ))
    } else {
        Err(Error::invalid(format!(
            "blob {digest}: neither an image index nor a manifest"
        )))
    }
}

fn descriptor_digest(d: &Descriptor) -> Result<Digest> {
    Digest::parse(d.digest().as_ref())
}

/// The image record `reference` names: by exact name, or by its normalized form.
pub(super) fn find_image_record(reader: &Reader<'_>, reference: &str) -> Result<ImageRecord> {
    if let Some(record) = reader.get::<ImageRecord>(Table::Images, reference)? {
        return Ok(record);
    }
    if let Ok(normalized) = reference::normalize(reference) {
        if let Some(record) = reader.get::<ImageRecord>(Table::Images, &normalized)? {
            return Ok(record);
        }
    }
    Err(Error::not_found(format!("image {reference:?}")))
}

/// Resolve `reference` for `platform`: a name (exact or normalized), `name@digest`, a
/// digest of an image's index or manifest, or an image ID (the config digest, in full or
/// as a prefix of at least 12 hex digits).
pub(super) fn resolve(
    reader: &Reader<'_>,
    content: &ContentStore,
    reference: &str,
    platform: &Platform,
) -> Result<ResolvedImage> {
    if reference.is_empty() {
        return Err(Error::invalid("image reference is empty"));
    }
    let images: Vec<ImageRecord> = reader
        .list(Table::Images)?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let not_found = || Error::not_found(format!("image {reference:?}"));

    // A name as stored, or as normalized (`busybox` is `docker.io/library/busybox:latest`).
    if let Some(image) = images.iter().find(|i| i.name == reference) {
        return for_platform(content, &image.name, &image.digest, platform);
    }
    let parsed = Reference::parse_normalized(reference).ok();
    if let Some(r) = &parsed {
        let normalized = r.to_string();
        if let Some(image) = images.iter().find(|i| i.name == normalized) {
            return for_platform(content, &image.name, &image.digest, platform);
        }
        if let Some(digest) = &r.digest {
            return by_digest(content, &images, digest, Some(&r.name()), platform)?
                .ok_or_else(not_found);
        }
    }

    // A digest or an image ID.
    if reference::looks_like_id_prefix(reference) || reference::looks_like_digest(reference) {
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.len() == 64 {
            let digest = Digest::parse(&format!("sha256:{hex}"))?;
            if let Some(found) = by_digest(content, &images, &digest, None, platform)? {
                return Ok(found);
            }
        }
        return by_image_id(content, &images, hex, platform)?.ok_or_else(not_found);
    }
    if parsed.is_none() {
        // Say why it could not be a reference at all.
        Reference::parse_normalized(reference)?;
    }
    Err(not_found())
}

/// An image whose target is `digest`, or whose index lists the manifest `digest`;
/// images named like `name` are preferred.
fn by_digest(
    content: &ContentStore,
    images: &[ImageRecord],
    digest: &Digest,
    name: Option<&str>,
    platform: &Platform,
) -> Result<Option<ResolvedImage>> {
    let named = |i: &&ImageRecord| name.is_none_or(|n| i.name.starts_with(n));
    let mut candidates: Vec<&ImageRecord> = images.iter().filter(named).collect();
    candidates.extend(images.iter().filter(|i| !named(i)));
    for image in &candidates {
        if &image.digest == digest {
            return for_platform(content, &image.name, &image.digest, platform).map(Some);
        }
    }
    for image in &candidates {
        let Ok(Node::Index(index)) = load_node(content, &image.digest) else {
            continue;
        };
        if index
            .manifests()
            .iter()
            .any(|d| descriptor_digest(d).ok().as_ref() == Some(digest))
        {
            // Asking for one manifest by digest is asking for that platform explicitly.
            return manifest(content, &image.name, digest, None).map(Some);
        }
    }
    Ok(None)
}

/// The image whose config digest (its ID) starts with `hex`, for `platform`.
fn by_image_id(
    content: &ContentStore,
    images: &[ImageRecord],
    hex: &str,
    platform: &Platform,
) -> Result<Option<ResolvedImage>> {
    let mut found: Option<ResolvedImage> = None;
    for image in images {
        let Ok(resolved) = for_platform(content, &image.name, &image.digest, platform) else {
            continue;
        };
        if !resolved.config.hex().starts_with(hex) {
            continue;
        }
        match &found {
            Some(f) if f.config != resolved.config => {
                return Err(Error::invalid(format!(
                    "image ID {hex:?} is ambiguous: it matches {} and {}",
                    f.config, resolved.config
                )))
            }
            Some(_) => {}
            None => found = Some(resolved),
        }
    }
    Ok(found)
}

/// Follow `target` (an index or a manifest) down to the manifest for `platform`.
fn for_platform(
    content: &ContentStore,
    name: &str,
    target: &Digest,
    platform: &Platform,
) -> Result<ResolvedImage> {
    let mut digest = target.clone();
    for _ in 0..=MAX_INDEX_DEPTH {
        match load_node(content, &digest).map_err(|e| e.context(format!("image {name:?}")))? {
            Node::Manifest(_) => return manifest(content, name, &digest, Some(platform)),
            Node::Index(index) => {
                let chosen =
                    platform::select_manifest(index.manifests(), platform).ok_or_else(|| {
                        Error::not_found(format!(
                            "image {name:?} has no manifest for platform {platform}"
                        ))
                    })?;
                digest = descriptor_digest(chosen)?;
                if !content.contains(&digest) {
                    return Err(Error::not_found(format!(
                        "image {name:?}: the manifest {digest} for platform {platform} is not in the store \
                         (the image was imported without it)"
                    )));
                }
            }
        }
    }
    Err(Error::invalid(format!(
        "image {name:?}: indexes nested deeper than {MAX_INDEX_DEPTH}"
    )))
}

/// Read manifest `digest` and its config; when `platform` is given, the config must be for
/// it (an image that is a single manifest has no index to choose from).
fn manifest(
    content: &ContentStore,
    name: &str,
    digest: &Digest,
    platform: Option<&Platform>,
) -> Result<ResolvedImage> {
    let Node::Manifest(m) = load_node(content, digest)? else {
        return Err(Error::invalid(format!(
            "image {name:?}: {digest} is an index, not a manifest"
        )));
    };
    let config_digest = descriptor_digest(m.config())?;
    let config: ImageConfiguration = content
        .read_json(&config_digest)
        .map_err(|e| e.context(format!("config of image {name:?}")))?;
    if let Some(want) = platform {
        let have = Platform::from_image_config(&config);
        if !want.only().matches(&have) {
            return Err(Error::not_found(format!(
                "image {name:?} is for platform {have}, not {want}"
            )));
        }
    }
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != m.layers().len() {
        return Err(Error::invalid(format!(
            "image {name:?}: manifest {digest} has {} layers but its config lists {} diff_ids",
            m.layers().len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::with_capacity(diff_ids.len());
    for (desc, diff_id) in m.layers().iter().zip(diff_ids) {
        let media_type = desc.media_type().to_string();
        if !is_layer_media_type(&media_type) {
            return Err(Error::invalid(format!(
                "image {name:?}: layer {} has media type {media_type:?}, which is not a layer imv can unpack",
                desc.digest()
            )));
        }
        layers.push(Layer {
            digest: descriptor_digest(desc)?,
            media_type,
            size: desc.size(),
            diff_id: Digest::parse(diff_id)?,
        });
    }
    Ok(ResolvedImage {
        name: name.to_owned(),
        manifest: digest.clone(),
        config: config_digest,
        layers,
    })
}

fn is_layer_media_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

/// What an image keeps alive.
pub(super) struct Reach {
    /// Every blob present that the image references (index, manifests, configs, layers).
    pub blobs: BTreeSet<Digest>,
    /// The chain IDs of every manifest present, all platforms.
    pub chain_ids: Vec<Digest>,
}

/// Walk `image` through every index and manifest present in the store.
pub(super) fn reachable(content: &ContentStore, image: &ImageRecord) -> Result<Reach> {
    let mut reach = Reach {
        blobs: BTreeSet::new(),
        chain_ids: Vec::new(),
    };
    let mut stack = vec![(image.digest.clone(), 0usize)];
    while let Some((digest, depth)) = stack.pop() {
        if !content.contains(&digest) || !reach.blobs.insert(digest.clone()) {
            continue;
        }
        match load_node(content, &digest) {
            Ok(Node::Index(index)) if depth < MAX_INDEX_DEPTH => {
                for d in index.manifests() {
                    if let Ok(child) = descriptor_digest(d) {
                        stack.push((child, depth + 1));
                    }
                }
            }
            Ok(Node::Index(_)) => {}
            Ok(Node::Manifest(m)) => {
                let config = descriptor_digest(m.config())?;
                reach.blobs.insert(config.clone());
                for layer in m.layers() {
                    reach.blobs.insert(descriptor_digest(layer)?);
                }
                if let Ok(config) = content.read_json::<ImageConfiguration>(&config) {
                    let diff_ids: Vec<Digest> = config
                        .rootfs()
                        .diff_ids()
                        .iter()
                        .filter_map(|d| Digest::parse(d).ok())
                        .collect();
                    reach.chain_ids.extend(chain_ids(&diff_ids));
                }
            }
            // A blob that is not JSON we understand keeps itself alive and nothing else.
            Err(e) => {
                tracing::warn!(image = %image.name, blob = %digest, error = %e, "unreadable blob")
            }
        }
    }
    Ok(reach)
}
