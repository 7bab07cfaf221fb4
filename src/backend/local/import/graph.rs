//! The descriptor graph of `index.json`: walk it (index → nested indexes and manifests →
//! config and layers), make sure every blob it needs is in the store with the right size,
//! and name the images it holds.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use super::{open_source_blob, ImportOptions, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use crate::backend::local::content::ContentStore;
use crate::backend::resolve::target_artifact_type;
use crate::backend::{ImageRecord, Progress};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::media_type;
use crate::reference;

/// Nested indexes deeper than this are refused (content addressing rules out cycles, but
/// not absurd depth).
const MAX_DEPTH: usize = 8;

/// A content descriptor as it appears in JSON; the digest is checked when used.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawDescriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    #[serde(default)]
    pub urls: Vec<String>,
}

/// An index or a manifest: one shape, so that content claiming to be one while looking
/// like the other is noticed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    schema_version: Option<u32>,
    manifests: Option<Vec<RawDescriptor>>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Index,
    Manifest,
    Other,
}

fn kind(media_type: &str) -> Kind {
    if media_type::is_index(media_type) {
        Kind::Index
    } else if media_type::is_manifest(media_type) {
        Kind::Manifest
    } else {
        Kind::Other
    }
}

/// Where the blobs of an import come from.
pub(super) trait BlobSource {
    /// Make sure `digest` (of `size` bytes) is in the store, copying it from the source if
    /// need be. `Ok(false)` when neither the store nor the source has it.
    fn ensure(
        &self,
        store: &ContentStore,
        digest: &Digest,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<bool>;
}

/// An OCI layout directory: blobs are copied (and verified) when the walk reaches them.
pub(super) struct DirSource<'a> {
    pub dir: &'a Path,
}

impl BlobSource for DirSource<'_> {
    fn ensure(
        &self,
        store: &ContentStore,
        digest: &Digest,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<bool> {
        if store.contains(digest) {
            check_stored_size(store, digest, size)?;
            return Ok(true);
        }
        let path = self.dir.join("blobs").join("sha256").join(digest.hex());
        let Some(file) = open_source_blob(&path)? else {
            return Ok(false);
        };
        if !file.metadata().at("inspect", &path)?.is_file() {
            return Err(Error::invalid(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        store
            .ingest(Some((digest, size)), file, progress)
            .map_err(|e| e.context(path.display()))?;
        Ok(true)
    }
}

/// A source whose blobs were all streamed into the store already (an archive).
pub(super) struct StoredSource;

impl BlobSource for StoredSource {
    fn ensure(
        &self,
        store: &ContentStore,
        digest: &Digest,
        size: u64,
        _: &dyn Progress,
    ) -> Result<bool> {
        if !store.contains(digest) {
            return Ok(false);
        }
        check_stored_size(store, digest, size)?;
        Ok(true)
    }
}

/// A blob's digest was verified when it was stored; its size must match the descriptor.
fn check_stored_size(store: &ContentStore, digest: &Digest, size: u64) -> Result<()> {
    let actual = store.size(digest)?;
    if actual != size {
        return Err(Error::invalid(format!(
            "blob {digest} is {actual} bytes but its descriptor says {size}"
        )));
    }
    Ok(())
}

/// Walk `index_json` (the bytes of `index.json`), make sure every image it lists is
/// complete in the store, and name the images.
pub(super) fn import_index(
    store: &ContentStore,
    source: &dyn BlobSource,
    index_json: &[u8],
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<ImageRecord>> {
    let name = options.name.as_deref();
    let index: Node = serde_json::from_slice(index_json)
        .map_err(|e| Error::invalid(format!("index.json is not a valid image index: {e}")))?;
    check_node("index.json", &index, Kind::Index)?;
    let mut entries = index.manifests.unwrap_or_default();
    if entries.is_empty() {
        return Err(Error::invalid("index.json lists no images"));
    }
    if let Some(tag) = &options.tag {
        let tags: Vec<String> = entries
            .iter()
            .filter_map(ref_tag)
            .map(str::to_owned)
            .collect();
        entries.retain(|e| ref_tag(e) == Some(tag.as_str()));
        if entries.is_empty() {
            return Err(Error::not_found(format!(
                "no image tagged {tag:?} in index.json (its tags: {tags:?})"
            )));
        }
    }
    // Several entries may point at one image (one per tag): those are one image.
    let distinct: std::collections::BTreeSet<&str> =
        entries.iter().map(|d| d.digest.as_str()).collect();
    if name.is_some() && distinct.len() > 1 {
        return Err(Error::invalid(format!(
            "a name was given but the source holds {} images; a name can only name one (pick one with PATH:TAG or --tag)",
            distinct.len()
        )));
    }

    let mut by_name: BTreeMap<String, ImageRecord> = BTreeMap::new();
    for entry in &entries {
        let digest = parse_digest(&entry.digest)?;
        if kind(&entry.media_type) == Kind::Other {
            return Err(Error::invalid(format!(
                "index.json entry {digest} has media type {:?}, not an image index or manifest",
                entry.media_type
            )));
        }
        walk(store, source, entry, &digest, 0, true, progress)?;
        let image_name = match name {
            Some(n) => n.to_owned(),
            None => entry_name(entry, &digest, options.base_name.as_deref())?,
        };
        let artifact_type = target_artifact_type(|d| store.read_json(d), &digest);
        let record = ImageRecord {
            name: image_name.clone(),
            digest,
            media_type: entry.media_type.clone(),
            size: entry.size,
            artifact_type,
        };
        if let Some(prev) = by_name.get(&image_name) {
            if prev.digest != record.digest {
                return Err(Error::invalid(format!(
                    "index.json names two images {image_name}: {} and {}",
                    prev.digest, record.digest
                )));
            }
        }
        by_name.insert(image_name, record);
    }
    Ok(by_name.into_values().collect())
}

/// The tag of an `index.json` entry whose `org.opencontainers.image.ref.name` is a tag
/// alone (`one`, `latest`), as umoci, skopeo and buildah write them.
fn ref_tag(entry: &RawDescriptor) -> Option<&str> {
    entry
        .annotations
        .get(ANNOTATION_REF_NAME)
        .map(String::as_str)
        .filter(|n| !n.contains(['/', ':', '@']))
}

/// The name of an `index.json` entry, normalized, from its annotations; a bare tag names
/// the image in `base_name`'s repository (`ctr images import --base-name`).
fn entry_name(entry: &RawDescriptor, digest: &Digest, base_name: Option<&str>) -> Result<String> {
    if let Some(n) = entry.annotations.get(ANNOTATION_IMAGE_NAME) {
        return reference::normalize(n)
            .map_err(|e| e.context(format!("{ANNOTATION_IMAGE_NAME} of {digest}")));
    }
    match (
        ref_tag(entry),
        entry.annotations.get(ANNOTATION_REF_NAME),
        base_name,
    ) {
        (Some(tag), _, Some(base)) => reference::normalize(&format!("{base}:{tag}"))
            .map_err(|e| e.context(format!("{ANNOTATION_REF_NAME} {tag:?} of {digest}"))),
        // A tag alone says nothing of the repository.
        (Some(tag), _, None) => Err(Error::invalid(format!(
            "image {digest} is only tagged {tag:?}, with no repository name: name the \
             layout's images with --base-name REPO (this one: REPO:{tag}), or pick this \
             one with PATH:{tag} (or --tag {tag}) and name it with --name"
        ))),
        (None, Some(n), _) => reference::normalize(n)
            .map_err(|e| e.context(format!("{ANNOTATION_REF_NAME} of {digest}"))),
        (None, None, _) => Err(Error::invalid(format!(
            "image {digest} has no name: name it with --name (when it is the only image, \
             or the one --tag picks)"
        ))),
    }
}

pub(super) fn parse_digest(s: &str) -> Result<Digest> {
    Digest::parse(s)
}

/// The declared schema of `node` must fit the kind its descriptor claims: a manifest that
/// also lists manifests (or the reverse) is ambiguous and refused.
fn check_node(what: &str, node: &Node, want: Kind) -> Result<()> {
    if let Some(v) = node.schema_version {
        if v != 2 {
            return Err(Error::invalid(format!(
                "{what}: unsupported schemaVersion {v}"
            )));
        }
    }
    let ok = match want {
        Kind::Index => node.manifests.is_some() && node.config.is_none() && node.layers.is_none(),
        Kind::Manifest => node.manifests.is_none() && node.config.is_some(),
        Kind::Other => true,
    };
    if !ok {
        let expected = if want == Kind::Index {
            "an image index"
        } else {
            "an image manifest"
        };
        return Err(Error::invalid(format!("{what} is not {expected}")));
    }
    Ok(())
}

/// Make sure `desc` and what it references are in the store. `required`: whether its
/// absence is an error (a top-level image, or a config or layer of a present manifest) or
/// only a partial copy of a multi-platform image (a manifest of an index).
fn walk(
    store: &ContentStore,
    source: &dyn BlobSource,
    desc: &RawDescriptor,
    digest: &Digest,
    depth: usize,
    required: bool,
    progress: &dyn Progress,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::invalid(format!(
            "index {digest} nests more than {MAX_DEPTH} levels deep"
        )));
    }
    let k = kind(&desc.media_type);
    if !source.ensure(store, digest, desc.size, progress)? {
        if required {
            return Err(Error::invalid(format!(
                "blob {digest} ({}) is referenced but missing from the source",
                desc.media_type
            )));
        }
        tracing::info!(%digest, media_type = %desc.media_type, "not in the source (a partial copy); skipped");
        return Ok(());
    }
    let what = format!("{} {digest}", desc.media_type);
    match k {
        Kind::Other => Ok(()),
        Kind::Index => {
            let node: Node = store.read_json(digest)?;
            check_node(&what, &node, Kind::Index)?;
            for child in node.manifests.iter().flatten() {
                let child_digest = parse_digest(&child.digest)?;
                walk(
                    store,
                    source,
                    child,
                    &child_digest,
                    depth + 1,
                    false,
                    progress,
                )?;
            }
            Ok(())
        }
        Kind::Manifest => {
            let node: Node = store.read_json(digest)?;
            check_node(&what, &node, Kind::Manifest)?;
            let Some(config) = node.config.as_ref() else {
                return Err(Error::invalid(format!("{what} has no config")));
            };
            let config_digest = parse_digest(&config.digest)?;
            walk_blob(store, source, config, &config_digest, digest, progress)?;
            for layer in node.layers.iter().flatten() {
                let layer_digest = parse_digest(&layer.digest)?;
                if !layer.urls.is_empty()
                    && !source.ensure(store, &layer_digest, layer.size, progress)?
                {
                    // A foreign (non-distributable) layer: fetched from its URLs by design.
                    tracing::info!(digest = %layer_digest, "foreign layer not in the source; skipped");
                    continue;
                }
                walk_blob(store, source, layer, &layer_digest, digest, progress)?;
            }
            Ok(())
        }
    }
}

/// A config or layer of `manifest`: it must be there.
fn walk_blob(
    store: &ContentStore,
    source: &dyn BlobSource,
    desc: &RawDescriptor,
    digest: &Digest,
    manifest: &Digest,
    progress: &dyn Progress,
) -> Result<()> {
    if source.ensure(store, digest, desc.size, progress)? {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "blob {digest} ({}) of manifest {manifest} is missing from the source",
        desc.media_type
    )))
}
