//! Resolving a reference to one platform's manifest, the same way for every backend: a
//! name (as stored, or normalized: `busybox` is `docker.io/library/busybox:latest`),
//! `name@digest`, the digest of an image's index or manifest, or an image ID (the config
//! digest, in full or as a prefix of at least 12 hex digits). A backend supplies its images
//! and blobs through [`ImageSource`].
//!
//! However the reference finds it, the result carries the digest of the image found (its
//! target, [`ResolvedImage::digest`]): containerd's CRI plugin looks every reference up in
//! its image records and names the volume by `Target().Digest` of the image it finds.

use std::collections::HashMap;
use std::sync::Mutex;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use crate::backend::{artifact, ArtifactFile, FilesLayer, Layer, ResolvedImage, TarLayer};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::locks::lock;
use crate::platform::{self, Platform};
use crate::reference::{self, Reference};

/// Nested indexes deeper than this are refused (a loop or a hostile image).
pub(crate) const MAX_INDEX_DEPTH: usize = 4;

/// An image as resolution needs it: its name and the digest of its target.
#[derive(Clone, Debug)]
pub(crate) struct Named {
    pub name: String,
    pub target: Digest,
}

/// Most resolutions kept by a [`ResolveCache`]; past that it starts afresh.
const MAX_CACHED: usize = 1024;

/// Resolutions by (target digest, platform). What a target resolves to never changes:
/// indexes, manifests and configs are immutable, named by their digests. So a backend that
/// pays a round trip per blob keeps them, and a warm mutate costs one name lookup. Names are
/// never cached: a tag can move to another target at any time.
#[derive(Default)]
pub(crate) struct ResolveCache {
    entries: Mutex<HashMap<(Digest, String), ResolvedImage>>,
}

impl ResolveCache {
    fn key(target: &Digest, platform: &Platform) -> (Digest, String) {
        // Debug, not Display: every field of the platform counts.
        (target.clone(), format!("{platform:?}"))
    }

    fn get(&self, target: &Digest, platform: &Platform) -> Option<ResolvedImage> {
        let entries = lock(&self.entries);
        entries.get(&Self::key(target, platform)).cloned()
    }

    fn put(&self, platform: &Platform, image: &ResolvedImage) {
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_CACHED {
            entries.clear();
        }
        entries.insert(Self::key(&image.digest, platform), image.clone());
    }
}

/// What a backend offers the resolver.
pub(crate) trait ImageSource {
    /// The image named exactly `name`.
    fn image(&self, name: &str) -> Result<Option<Named>>;
    /// Every image.
    fn images(&self) -> Result<Vec<Named>>;
    /// Blob `digest` parsed as JSON (digest verified, size bounded).
    fn read_json(&self, digest: &Digest) -> Result<serde_json::Value>;
    /// Whether the store has blob `digest`.
    fn has_blob(&self, digest: &Digest) -> Result<bool>;
    /// Where the blobs are, for messages ("the local store", "containerd's content store").
    fn describe(&self) -> &'static str;
    /// The cache of resolutions, for a source whose blobs are costly to read.
    fn cache(&self) -> Option<&ResolveCache> {
        None
    }
}

/// A blob of JSON that is either an index or a manifest.
pub(crate) enum Node {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

/// Read blob `digest` as an index or a manifest, by its shape (media types lie, and old
/// manifests have none).
pub(crate) fn load_node(value: serde_json::Value, digest: &Digest) -> Result<Node> {
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

fn node(src: &impl ImageSource, digest: &Digest) -> Result<Node> {
    load_node(src.read_json(digest)?, digest)
}

/// The digest a descriptor names, strictly parsed.
pub(crate) fn descriptor_digest(d: &Descriptor) -> Result<Digest> {
    Digest::parse(d.digest().as_ref())
}

/// Resolve `reference` for `platform` in `src`.
pub(crate) fn resolve(
    src: &impl ImageSource,
    reference: &str,
    platform: &Platform,
) -> Result<ResolvedImage> {
    if reference.is_empty() {
        return Err(Error::invalid("image reference is empty"));
    }
    let not_found = || Error::not_found(format!("image {reference:?} not found"));

    // A name as stored (CRI also stores each image under its ID, `sha256:<config hex>`).
    if let Some(image) = src.image(reference)? {
        return for_platform(src, &image, platform);
    }
    let parsed = Reference::parse_normalized(reference).ok();
    if let Some(r) = &parsed {
        let normalized = r.to_string();
        if normalized != reference {
            if let Some(image) = src.image(&normalized)? {
                return for_platform(src, &image, platform);
            }
        }
        if let Some(digest) = &r.digest {
            let images = src.images()?;
            return by_digest(src, &images, digest, Some(&r.name()), platform)?
                .ok_or_else(not_found);
        }
    }

    // A digest or an image ID.
    if reference::looks_like_id_prefix(reference) || reference::looks_like_digest(reference) {
        let images = src.images()?;
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if hex.len() == 64 {
            let digest = Digest::parse(&format!("sha256:{hex}"))?;
            if let Some(found) = by_digest(src, &images, &digest, None, platform)? {
                return Ok(found);
            }
        }
        return by_image_id(src, &images, hex, platform)?.ok_or_else(not_found);
    }
    if parsed.is_none() {
        // Say why it could not be a reference at all.
        Reference::parse_normalized(reference)?;
    }
    Err(not_found())
}

/// An image whose target is `digest`, or whose index lists the manifest `digest`; images
/// named like `name` first.
fn by_digest(
    src: &impl ImageSource,
    images: &[Named],
    digest: &Digest,
    name: Option<&str>,
    platform: &Platform,
) -> Result<Option<ResolvedImage>> {
    let preferred = |i: &&Named| name.is_none_or(|n| i.name.starts_with(n));
    let mut candidates: Vec<&Named> = images.iter().filter(preferred).collect();
    candidates.extend(images.iter().filter(|i| !preferred(i)));
    if let Some(image) = candidates.iter().find(|i| &i.target == digest) {
        return for_platform(src, image, platform).map(Some);
    }
    for image in &candidates {
        let Ok(Node::Index(index)) = node(src, &image.target) else {
            continue;
        };
        if index
            .manifests()
            .iter()
            .any(|d| descriptor_digest(d).ok().as_ref() == Some(digest))
        {
            // Asking for one manifest by digest is asking for that platform explicitly.
            // The image is still the index's: its digest names the volume.
            return manifest(src, image, digest, None).map(Some);
        }
    }
    Ok(None)
}

/// The image whose ID (its config's digest; an artifact's manifest's) starts with `hex`,
/// for `platform`.
fn by_image_id(
    src: &impl ImageSource,
    images: &[Named],
    hex: &str,
    platform: &Platform,
) -> Result<Option<ResolvedImage>> {
    let mut found: Option<ResolvedImage> = None;
    for image in images {
        let Ok(resolved) = for_platform(src, image, platform) else {
            continue;
        };
        if !resolved.id().hex().starts_with(hex) {
            continue;
        }
        match &found {
            Some(f) if f.id() != resolved.id() => {
                return Err(Error::invalid(format!(
                    "image ID {hex:?} is ambiguous: it matches {} and {}",
                    f.id(),
                    resolved.id()
                )))
            }
            Some(_) => {}
            None => found = Some(resolved),
        }
    }
    Ok(found)
}

/// Follow the target of `image` (an index or a manifest) down to the manifest for
/// `platform`.
fn for_platform(
    src: &impl ImageSource,
    image: &Named,
    platform: &Platform,
) -> Result<ResolvedImage> {
    if let Some(mut hit) = src.cache().and_then(|c| c.get(&image.target, platform)) {
        hit.name.clone_from(&image.name);
        return Ok(hit);
    }
    let resolved = for_platform_uncached(src, image, platform)?;
    if let Some(cache) = src.cache() {
        cache.put(platform, &resolved);
    }
    Ok(resolved)
}

fn for_platform_uncached(
    src: &impl ImageSource,
    image: &Named,
    platform: &Platform,
) -> Result<ResolvedImage> {
    let name = &image.name;
    let mut digest = image.target.clone();
    for _ in 0..=MAX_INDEX_DEPTH {
        match node(src, &digest).map_err(|e| e.context(format!("image {name:?}")))? {
            Node::Manifest(m) => return from_manifest(src, image, &digest, *m, Some(platform)),
            Node::Index(index) => {
                let chosen =
                    platform::select_manifest(index.manifests(), platform).ok_or_else(|| {
                        Error::not_found(format!(
                            "image {name:?} has no manifest for platform {platform}"
                        ))
                    })?;
                digest = descriptor_digest(chosen)?;
                if !src.has_blob(&digest)? {
                    return Err(Error::not_found(format!(
                        "image {name:?}: the manifest {digest} for platform {platform} is not in \
                         {} (the image was imported or pulled without it)",
                        src.describe()
                    )));
                }
            }
        }
    }
    Err(Error::invalid(format!(
        "image {name:?}: indexes nested deeper than {MAX_INDEX_DEPTH}"
    )))
}

/// Read manifest `digest` of `image` and its config; when `platform` is given, the config
/// must be for it (an image that is a single manifest has no index to choose from).
fn manifest(
    src: &impl ImageSource,
    image: &Named,
    digest: &Digest,
    platform: Option<&Platform>,
) -> Result<ResolvedImage> {
    let Node::Manifest(m) = node(src, digest)? else {
        return Err(Error::invalid(format!(
            "image {:?}: {digest} is an index, not a manifest",
            image.name
        )));
    };
    from_manifest(src, image, digest, *m, platform)
}

/// [`manifest`] with the manifest `digest` already read (each read is a round trip to
/// containerd).
fn from_manifest(
    src: &impl ImageSource,
    image: &Named,
    digest: &Digest,
    m: ImageManifest,
    platform: Option<&Platform>,
) -> Result<ResolvedImage> {
    let name = &image.name;
    let config_digest = descriptor_digest(m.config())?;
    if let Some(artifact_type) = artifact_type_of(&m) {
        // An artifact's config is no image config: it names no platform (an index picks
        // one, as for images) and lists no diff IDs.
        let layers =
            artifact_layers(&m).map_err(|e| e.context(format!("image {name:?} ({digest})")))?;
        return Ok(ResolvedImage {
            name: name.clone(),
            digest: image.target.clone(),
            manifest: digest.clone(),
            config: config_digest,
            artifact_type: Some(artifact_type),
            layers,
        });
    }
    let config: ImageConfiguration = src
        .read_json(&config_digest)
        .and_then(|v| {
            serde_json::from_value(v).map_err(|e| {
                Error::invalid(format!("blob {config_digest}: not an image config: {e}"))
            })
        })
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
        layers.push(Layer::Tar(TarLayer {
            digest: descriptor_digest(desc)?,
            media_type,
            size: desc.size(),
            diff_id: Some(Digest::parse(diff_id)?),
        }));
    }
    Ok(ResolvedImage {
        name: name.clone(),
        digest: image.target.clone(),
        manifest: digest.clone(),
        config: config_digest,
        artifact_type: None,
        layers,
    })
}

/// What the image whose target is `target` is as an artifact ([`ImageRecord::artifact_type`]):
/// a manifest's artifact type; an index's own `artifactType`, else that of the first
/// manifest it lists that is an artifact and is there. `None` for an image, and when the
/// blobs cannot be read (a listing does not fail on them: a volume of the image would, and
/// says why).
///
/// [`ImageRecord::artifact_type`]: crate::backend::ImageRecord::artifact_type
pub(crate) fn target_artifact_type(
    read_json: impl Fn(&Digest) -> Result<serde_json::Value>,
    target: &Digest,
) -> Option<String> {
    let mut next = vec![(target.clone(), 0)];
    while let Some((digest, depth)) = next.pop() {
        let Ok(node) = read_json(&digest).and_then(|v| load_node(v, &digest)) else {
            continue;
        };
        match node {
            Node::Manifest(m) => {
                if let Some(t) = artifact_type_of(&m) {
                    return Some(t);
                }
            }
            Node::Index(index) => {
                if let Some(t) = index.artifact_type().as_ref().map(ToString::to_string) {
                    if !t.is_empty() {
                        return Some(t);
                    }
                }
                if depth < MAX_INDEX_DEPTH {
                    // Popped first to last: pushed in reverse.
                    for d in index.manifests().iter().rev() {
                        if let Ok(child) = descriptor_digest(d) {
                            next.push((child, depth + 1));
                        }
                    }
                }
            }
        }
    }
    None
}

/// What manifest `m` is as an artifact (see backend/artifact.rs), or `None` for an image.
pub(crate) fn artifact_type_of(m: &ImageManifest) -> Option<String> {
    let declared = m.artifact_type().as_ref().map(ToString::to_string);
    let config = m.config().media_type().to_string();
    artifact::is_artifact(declared.as_deref(), &config)
        .then(|| artifact::artifact_type(declared.as_deref(), &config))
}

/// The layers of artifact manifest `m`: its tar layers in order, then one layer of its
/// raw layers as files, their names checked.
pub(crate) fn artifact_layers(m: &ImageManifest) -> Result<Vec<Layer>> {
    let mut layers = Vec::new();
    let mut files = Vec::new();
    for desc in m.layers() {
        let media_type = desc.media_type().to_string();
        let digest = descriptor_digest(desc)?;
        if artifact::is_tar(&media_type, desc.annotations().as_ref()) {
            layers.push(Layer::Tar(TarLayer {
                digest,
                media_type,
                size: desc.size(),
                diff_id: None,
            }));
        } else {
            let (path, named_by) = artifact::file_path(&digest, desc.annotations().as_ref())?;
            files.push(ArtifactFile {
                path,
                digest,
                size: desc.size(),
                media_type,
                named_by: named_by.map(str::to_owned),
            });
        }
    }
    artifact::check_distinct(&files)?;
    if !files.is_empty() {
        layers.push(Layer::Files(FilesLayer::new(files)));
    }
    Ok(layers)
}

fn is_layer_media_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}
