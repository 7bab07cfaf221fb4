//! The embedded store as an [`ImageSource`] (resolution itself is shared with the
//! containerd backend: `crate::backend::resolve`), and walking what an image references,
//! for garbage collection.

use std::collections::BTreeSet;

use oci_spec::image::ImageConfiguration;

use crate::backend::resolve::{
    artifact_layers, artifact_type_of, descriptor_digest, load_node, ImageSource, Named, Node,
    ResolveCache, MAX_INDEX_DEPTH,
};
use crate::backend::{chain_ids, ImageRecord};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::reference;

use super::content::ContentStore;
use super::db::{Reader, Table};

/// One read transaction of the database and the content store, and what targets
/// resolved to before (see `ResolveCache`: a warm mutate then reads no blob).
pub(super) struct Source<'a> {
    pub reader: &'a Reader<'a>,
    pub content: &'a ContentStore,
    pub resolved: &'a ResolveCache,
}

impl ImageSource for Source<'_> {
    fn image(&self, name: &str) -> Result<Option<Named>> {
        Ok(self
            .reader
            .get::<ImageRecord>(Table::Images, name)?
            .map(|r| Named {
                name: r.name,
                target: r.digest,
            }))
    }

    fn images(&self) -> Result<Vec<Named>> {
        Ok(self
            .reader
            .list::<ImageRecord>(Table::Images)?
            .into_iter()
            .map(|(_, r)| Named {
                name: r.name,
                target: r.digest,
            })
            .collect())
    }

    fn read_json(&self, digest: &Digest) -> Result<serde_json::Value> {
        self.content.read_json(digest)
    }

    fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.content.contains(digest))
    }

    fn describe(&self) -> &'static str {
        "the local store"
    }

    fn cache(&self) -> Option<&ResolveCache> {
        Some(self.resolved)
    }
}

fn load(content: &ContentStore, digest: &Digest) -> Result<Node> {
    load_node(content.read_json(digest)?, digest)
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
        match load(content, &digest) {
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
                if artifact_type_of(&m).is_some() {
                    match artifact_layers(&m) {
                        Ok(layers) => reach
                            .chain_ids
                            .extend(chain_ids(layers.iter().map(crate::backend::Layer::id))),
                        // Its volume cannot be made, so it has no layers to keep.
                        Err(e) => {
                            tracing::debug!(image = %image.name, manifest = %digest, error = %e, "an artifact with no volume")
                        }
                    }
                } else if let Ok(config) = content.read_json::<ImageConfiguration>(&config) {
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
