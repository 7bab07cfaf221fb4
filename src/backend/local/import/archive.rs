//! Archives: a tar (plain, gzip or zstd) holding an OCI image layout, or a legacy
//! `docker save` tarball. Members are streamed straight into the content store as the tar
//! is read, once: the archive is never held in memory nor unpacked to disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Cursor, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::graph::{self, StoredSource};
use super::{bad_input, check_oci_layout, read_limited, too_big, ImportOptions, Named};
use crate::backend::local::content::{ContentStore, MAX_JSON_SIZE};
use crate::backend::{ImageRecord, Progress};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::media_type;
use crate::reference;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// At most this many legacy members and links are remembered: an archive of millions of
/// tiny members must not make the importer's memory grow without bound.
const MAX_TRACKED_MEMBERS: usize = 1 << 16;

/// Hops through archive-internal symlinks before giving up (a loop, or abuse).
const MAX_LINK_HOPS: usize = 16;

/// A regular member of a legacy archive, stored under the digest of its content.
#[derive(Clone, Debug)]
struct Stored {
    digest: Digest,
    size: u64,
    /// Layer media type by the content's magic bytes.
    layer_media_type: &'static str,
}

/// What reading the archive found, besides the blobs now in the store.
#[derive(Default)]
struct Found {
    oci_layout: Option<Vec<u8>>,
    index: Option<Vec<u8>>,
    docker_manifest: Option<Vec<u8>>,
    /// Legacy `docker save` members by path.
    files: HashMap<String, Stored>,
    /// Archive-internal links, by path, to the path they name (old `docker save` links
    /// repeated layers to their first copy).
    links: HashMap<String, String>,
}

pub(super) fn import_archive(
    store: &ContentStore,
    path: &Path,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<ImageRecord>> {
    let file = File::open(path).at("open", path)?;
    let reader = decompress(file, path)?;
    let found = read_members(store, reader, path, progress)?;

    if let Some(index) = &found.index {
        // An OCI layout, and newer `docker save`: the index says more than manifest.json.
        let layout = found
            .oci_layout
            .as_ref()
            .ok_or_else(|| Error::invalid("the archive has index.json but no oci-layout"))?;
        check_oci_layout(layout)?;
        return graph::import_index(store, &StoredSource, index, options, progress);
    }
    if let Some(manifest) = &found.docker_manifest {
        return import_docker(store, &found, manifest, options, progress);
    }
    Err(Error::invalid(
        "neither an OCI archive (no index.json) nor a docker save tarball (no manifest.json)",
    ))
}

/// Sniff the compression from the first bytes and undo it.
fn decompress(mut file: File, path: &Path) -> Result<Box<dyn Read>> {
    let mut magic = Vec::with_capacity(4);
    (&mut file)
        .take(4)
        .read_to_end(&mut magic)
        .at("read", path)?;
    let whole = Cursor::new(magic.clone()).chain(file);
    Ok(if magic.starts_with(GZIP_MAGIC) {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(whole)))
    } else if magic.starts_with(ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::new(whole).at("start zstd decoder for", path)?)
    } else {
        Box::new(BufReader::new(whole))
    })
}

/// A member name as components, with `.` and empty ones dropped. `..` and absolute names
/// are refused: nothing legitimate in an image archive needs them.
fn member_components(raw: &[u8]) -> Result<Vec<String>> {
    let name = std::str::from_utf8(raw).map_err(|_| {
        Error::invalid(format!(
            "member name {:?} is not UTF-8",
            String::from_utf8_lossy(raw)
        ))
    })?;
    if name.starts_with('/') {
        return Err(Error::invalid(format!("member name {name:?} is absolute")));
    }
    let mut out = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::invalid(format!(
                    "member name {name:?} contains \"..\""
                )))
            }
            c => out.push(c.to_owned()),
        }
    }
    Ok(out)
}

/// Stream every member: `blobs/sha256/<hex>` into the store verified against its name,
/// metadata files into memory (bounded), other regular files (legacy `docker save`) into
/// the store under their own digest.
fn read_members(
    store: &ContentStore,
    reader: impl Read,
    path: &Path,
    progress: &dyn Progress,
) -> Result<Found> {
    let mut found = Found::default();
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| bad_input("read archive", path, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad_input("read archive", path, e))?;
        let components = member_components(&entry.path_bytes())?;
        let member = components.join("/");
        let entry_type = entry.header().entry_type();
        if found.files.len() + found.links.len() >= MAX_TRACKED_MEMBERS {
            return Err(Error::invalid(format!(
                "more than {MAX_TRACKED_MEMBERS} members besides blobs"
            )));
        }

        if entry_type.is_symlink() || entry_type.is_hard_link() {
            // Recorded as names only: never followed on any filesystem.
            if let Some(target) = entry.link_name_bytes() {
                let target = String::from_utf8_lossy(&target).into_owned();
                // A symlink is relative to its directory, a hard link to the archive root.
                let base = if entry_type.is_symlink() && !target.starts_with('/') {
                    components[..components.len().saturating_sub(1)].join("/")
                } else {
                    String::new()
                };
                if let Some(resolved) = resolve_lexically(&base, &target) {
                    found.links.insert(member, resolved);
                }
            }
            continue;
        }
        if !matches!(
            entry_type,
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            // Directories, devices, fifos, global headers: nothing an image is made of.
            continue;
        }
        let size = entry.size();
        let member_path = PathBuf::from(&member);
        let comps: Vec<&str> = components.iter().map(String::as_str).collect();
        match comps.as_slice() {
            ["blobs", "sha256", hex] => {
                let digest = Digest::parse(&format!("sha256:{hex}")).map_err(|e| {
                    Error::invalid(format!(
                        "member {member:?} is not named by a sha256 digest: {}",
                        e.message()
                    ))
                })?;
                if store.contains(&digest) && store.size(&digest)? == size {
                    // Already stored and verified: skip the bytes (the tar reader does).
                    continue;
                }
                store
                    .ingest(Some((&digest, size)), Untrusted(&mut entry), progress)
                    .map_err(|e| e.context(format!("archive member {member}")))?;
            }
            ["blobs", ..] => {
                tracing::info!(member, "ignoring archive member: not a sha256 blob");
            }
            [meta @ ("oci-layout" | "index.json" | "manifest.json")] => {
                if size > MAX_JSON_SIZE {
                    return Err(too_big(&member_path));
                }
                let data = read_limited(Untrusted(&mut entry), &member_path)?;
                let slot = match *meta {
                    "oci-layout" => &mut found.oci_layout,
                    "index.json" => &mut found.index,
                    _ => &mut found.docker_manifest,
                };
                if slot.replace(data).is_some() {
                    return Err(Error::invalid(format!("member {member:?} appears twice")));
                }
            }
            // docker v1 metadata that no manifest references: not worth storing.
            ["repositories"] | [_, "json" | "VERSION"] => {}
            _ => {
                let mut magic = [0u8; 4];
                let mut head = Vec::new();
                Untrusted(&mut entry)
                    .take(4)
                    .read_to_end(&mut head)
                    .at("read", &member_path)?;
                magic[..head.len()].copy_from_slice(&head);
                let named = Named {
                    inner: progress,
                    name: &member,
                };
                let (digest, stored) = store
                    .ingest(None, Cursor::new(head).chain(Untrusted(&mut entry)), &named)
                    .map_err(|e| e.context(format!("archive member {member}")))?;
                if stored != size {
                    return Err(Error::invalid(format!("member {member:?} is truncated")));
                }
                let layer_media_type = if magic.starts_with(GZIP_MAGIC) {
                    media_type::OCI_LAYER_GZIP
                } else if magic.starts_with(ZSTD_MAGIC) {
                    media_type::OCI_LAYER_ZSTD
                } else {
                    media_type::OCI_LAYER
                };
                found.files.insert(
                    member,
                    Stored {
                        digest,
                        size,
                        layer_media_type,
                    },
                );
            }
        }
    }
    Ok(found)
}

/// Reads of untrusted input fail as InvalidInput, so that a truncated or corrupt archive is
/// reported as InvalidArgument, not as a failure of this system.
struct Untrusted<R>(R);

impl<R: Read> Read for Untrusted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::Interrupted => e,
            _ => io::Error::new(io::ErrorKind::InvalidInput, e),
        })
    }
}

/// `target` taken relative to the directory `base` inside the archive, `..` resolved
/// lexically; `None` when it leaves the archive.
fn resolve_lexically(base: &str, target: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in base.split('/').chain(target.split('/')) {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

/// One entry of `docker save`'s manifest.json.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Enough of an image config to check the layers against it.
#[derive(Deserialize)]
struct ConfigRootfs {
    rootfs: Rootfs,
}

#[derive(Deserialize)]
struct Rootfs {
    diff_ids: Vec<Digest>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciManifest {
    schema_version: u32,
    media_type: &'static str,
    config: OciDescriptor,
    layers: Vec<OciDescriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciDescriptor {
    media_type: &'static str,
    digest: Digest,
    size: u64,
}

/// A legacy `docker save` tarball: for each image, an OCI manifest is made from the config
/// and layer members manifest.json names, and stored.
fn import_docker(
    store: &ContentStore,
    found: &Found,
    manifest_json: &[u8],
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Vec<ImageRecord>> {
    let name = options.name.as_deref();
    let mut entries: Vec<DockerEntry> = serde_json::from_slice(manifest_json)
        .map_err(|e| Error::invalid(format!("manifest.json is not a docker save manifest: {e}")))?;
    if entries.is_empty() {
        return Err(Error::invalid("manifest.json lists no images"));
    }
    // A RepoTag is a full name (`busybox:1.36`): the tag picks by its last part, and the
    // name is the RepoTag that matched.
    if let Some(tag) = &options.tag {
        let suffix = format!(":{tag}");
        let all: Vec<String> = entries
            .iter()
            .flat_map(|e| e.repo_tags.iter().flatten().cloned())
            .collect();
        entries.retain_mut(|e| {
            let tags = e.repo_tags.get_or_insert_with(Vec::new);
            tags.retain(|t| t == tag || t.ends_with(&suffix));
            !tags.is_empty()
        });
        if entries.is_empty() {
            return Err(Error::not_found(format!(
                "no image tagged {tag:?} in manifest.json (RepoTags: {all:?})"
            )));
        }
    }
    if name.is_some() && entries.len() > 1 {
        return Err(Error::invalid(format!(
            "a name was given but the source holds {} images; a name can only name one (pick one with PATH:TAG or --tag)",
            entries.len()
        )));
    }
    let mut records: Vec<ImageRecord> = Vec::new();
    for entry in &entries {
        let config = lookup(found, &entry.config)?;
        let parsed: ConfigRootfs = store
            .read_json(&config.digest)
            .map_err(|e| e.context(format!("config {}", entry.config)))?;
        if parsed.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(Error::invalid(format!(
                "config {} lists {} layers, manifest.json {}",
                entry.config,
                parsed.rootfs.diff_ids.len(),
                entry.layers.len()
            )));
        }
        let mut layers = Vec::new();
        for (layer_path, diff_id) in entry.layers.iter().zip(&parsed.rootfs.diff_ids) {
            let layer = lookup(found, layer_path)?;
            // An uncompressed layer is its own diff: its digest must be the diff ID.
            if layer.layer_media_type == media_type::OCI_LAYER && &layer.digest != diff_id {
                return Err(Error::invalid(format!(
                    "layer {layer_path} hashes to {} but the config says its diff ID is {diff_id}",
                    layer.digest
                )));
            }
            layers.push(OciDescriptor {
                media_type: layer.layer_media_type,
                digest: layer.digest.clone(),
                size: layer.size,
            });
        }
        let manifest = OciManifest {
            schema_version: 2,
            media_type: media_type::OCI_MANIFEST,
            config: OciDescriptor {
                media_type: media_type::OCI_CONFIG,
                digest: config.digest.clone(),
                size: config.size,
            },
            layers,
        };
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| Error::internal(format!("serialize manifest: {e}")))?;
        let (digest, size) = store.ingest(None, &bytes[..], progress)?;
        let image_name = match (name, entry.repo_tags.as_ref().and_then(|t| t.first())) {
            (Some(n), _) => n.to_owned(),
            (None, Some(tag)) => reference::normalize(tag).map_err(|e| e.context("RepoTags"))?,
            (None, None) => {
                return Err(Error::invalid(format!(
                    "image with config {} has no RepoTags: name it with --name (when it is \
                     the only image, or the one --tag picks)",
                    entry.config
                )))
            }
        };
        if let Some(prev) = records.iter().find(|r| r.name == image_name) {
            if prev.digest != digest {
                return Err(Error::invalid(format!(
                    "manifest.json names two images {image_name}"
                )));
            }
            continue;
        }
        records.push(ImageRecord {
            name: image_name,
            digest,
            media_type: media_type::OCI_MANIFEST.to_owned(),
            size,
            // A `docker save` archive holds images only.
            artifact_type: None,
        });
    }
    records.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(records)
}

/// The stored member at `path` in the archive, through archive-internal links.
fn lookup<'a>(found: &'a Found, path: &str) -> Result<&'a Stored> {
    let mut current = resolve_lexically("", path).ok_or_else(|| {
        Error::invalid(format!("manifest.json names {path:?}, outside the archive"))
    })?;
    for _ in 0..MAX_LINK_HOPS {
        if let Some(stored) = found.files.get(&current) {
            return Ok(stored);
        }
        match found.links.get(&current) {
            Some(next) => current = next.clone(),
            None => {
                return Err(Error::invalid(format!(
                    "manifest.json names {path:?}, which is not in the archive"
                )))
            }
        }
    }
    Err(Error::invalid(format!(
        "manifest.json names {path:?}: too many links"
    )))
}
