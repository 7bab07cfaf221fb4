//! Images: [`ImageBuilder`] turns layers, a platform and config fields into a config
//! blob and a manifest ([`BuiltImage`], [`ImageDigests`]), and the JSON shapes (manifest,
//! index, descriptor) the layouts and artifacts write too.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use imv::{Digest, Error, Platform, Result};

use super::{chain_id, media_type, Compression, Layer, LayerBuilder, DEFAULT_CREATED};

/// OCI name of this host's CPU architecture (Rust's `target_arch` spelled as Go's
/// GOARCH), with its usual variant. Kept here so this module does not depend on
/// `Platform::host`.
fn host_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "x86" => ("386", ""),
        "aarch64" => ("arm64", ""),
        "arm" => ("arm", "v7"),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", ""),
        "loongarch64" => ("loong64", ""),
        "mips64" if cfg!(target_endian = "little") => ("mips64le", ""),
        other => (other, ""),
    }
}

/// Builds an image: layers, platform and a few config fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageBuilder {
    os: String,
    architecture: String,
    variant: String,
    layers: Vec<LayerBuilder>,
    env: Vec<String>,
    cmd: Option<Vec<String>>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    pub(super) docker: bool,
    created: String,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    /// An image with no layers, for `linux` and this host's architecture, OCI media types.
    pub fn new() -> Self {
        let (arch, variant) = host_arch();
        ImageBuilder {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.into(),
            layers: Vec::new(),
            env: Vec::new(),
            cmd: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            docker: false,
            created: DEFAULT_CREATED.into(),
        }
    }

    /// Set the platform (written as given; `variant` may be empty).
    pub fn platform(mut self, os: &str, architecture: &str, variant: &str) -> Self {
        self.os = os.into();
        self.architecture = architecture.into();
        self.variant = variant.into();
        self
    }

    /// Set the platform from a [`Platform`] (os, architecture, variant are used).
    pub fn with_platform(self, platform: &Platform) -> Self {
        self.platform(&platform.os, &platform.architecture, &platform.variant)
    }

    /// The platform this image is for.
    pub fn platform_value(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
            ..Platform::default()
        }
    }

    /// Add a layer on top.
    pub fn layer(mut self, layer: LayerBuilder) -> Self {
        self.layers.push(layer);
        self
    }

    /// Add a `KEY=value` to the config's `Env`.
    pub fn env(mut self, key_value: &str) -> Self {
        self.env.push(key_value.into());
        self
    }

    /// Set the config's `Cmd`.
    pub fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.cmd = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Add a config label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Add a manifest annotation (ignored with Docker media types, which have none).
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Use Docker schema2 media types for manifest, config and layers instead of OCI.
    pub fn docker_media_types(mut self, docker: bool) -> Self {
        self.docker = docker;
        self
    }

    /// Set the `created` time of the config and history (RFC 3339).
    pub fn created(mut self, rfc3339: &str) -> Self {
        self.created = rfc3339.into();
        self
    }

    /// Set the compression of every layer added so far (e.g. to build the same content
    /// as gzip and zstd).
    pub fn compress_all(mut self, compression: Compression) -> Self {
        for l in &mut self.layers {
            l.compression = compression;
        }
        self
    }

    /// Build layers, config and manifest.
    pub fn build(&self) -> Result<BuiltImage> {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| l.build().map_err(|e| e.context(format!("layer {i}"))))
            .collect::<Result<Vec<_>>>()?;
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();

        let mut container = serde_json::Map::new();
        if !self.env.is_empty() {
            container.insert("Env".into(), json!(self.env));
        }
        if let Some(cmd) = &self.cmd {
            container.insert("Cmd".into(), json!(cmd));
        }
        if !self.labels.is_empty() {
            container.insert("Labels".into(), json!(self.labels));
        }
        let history: Vec<_> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let by = l
                    .created_by
                    .clone()
                    .unwrap_or_else(|| format!("imv image_builder: layer {i}"));
                json!({ "created": self.created, "created_by": by })
            })
            .collect();
        // serde_json's default map is sorted, so key order (and the digest) is fixed.
        let mut config = json!({
            "created": self.created,
            "architecture": self.architecture,
            "os": self.os,
            "config": container,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        });
        if !self.variant.is_empty() {
            config["variant"] = json!(self.variant);
        }
        let config = to_json(&config)?;
        let config_digest = Digest::of(&config);

        let (manifest_type, config_type) = if self.docker {
            (media_type::DOCKER_MANIFEST, media_type::DOCKER_CONFIG)
        } else {
            (media_type::OCI_MANIFEST, media_type::OCI_CONFIG)
        };
        let manifest = Manifest {
            schema_version: 2,
            media_type: manifest_type,
            artifact_type: None,
            config: Descriptor::new(config_type, &config_digest, config.len() as u64),
            layers: layers
                .iter()
                .map(|l| {
                    Descriptor::new(
                        l.compression.layer_media_type(self.docker),
                        &l.digest,
                        l.size(),
                    )
                })
                .collect(),
            annotations: if self.docker {
                BTreeMap::new()
            } else {
                self.annotations.clone()
            },
        };
        let manifest = to_json(&manifest)?;
        Ok(BuiltImage {
            manifest_digest: Digest::of(&manifest),
            manifest,
            manifest_media_type: manifest_type,
            config_digest,
            config,
            layers,
            platform: self.platform_value(),
        })
    }
}

pub(super) fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::internal(format!("encoding JSON: {e}")))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Manifest {
    pub(super) schema_version: u32,
    pub(super) media_type: &'static str,
    /// An artifact's (see [`artifact`]); images have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) artifact_type: Option<String>,
    pub(super) config: Descriptor,
    pub(super) layers: Vec<Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Index {
    pub(super) schema_version: u32,
    pub(super) media_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) artifact_type: Option<String>,
    pub(super) manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    pub(super) media_type: String,
    pub(super) digest: String,
    pub(super) size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) platform: Option<PlatformJson>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub(super) fn new(media_type: &str, digest: &Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: digest.to_string(),
            size,
            platform: None,
            annotations: BTreeMap::new(),
        }
    }
}

#[derive(Serialize)]
pub(super) struct PlatformJson {
    pub(super) architecture: String,
    pub(super) os: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(super) variant: String,
}

impl PlatformJson {
    pub(super) fn of(p: &Platform) -> Self {
        PlatformJson {
            architecture: p.architecture.clone(),
            os: p.os.clone(),
            variant: p.variant.clone(),
        }
    }
}

/// A built image: every blob, ready to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
    /// The config blob (JSON).
    pub config: Vec<u8>,
    /// The digest of [`BuiltImage::config`]: the image ID.
    pub config_digest: Digest,
    /// The manifest blob (JSON).
    pub manifest: Vec<u8>,
    /// The digest of [`BuiltImage::manifest`].
    pub manifest_digest: Digest,
    /// The manifest's media type (OCI or Docker schema2).
    pub manifest_media_type: &'static str,
    /// The platform the config names.
    pub platform: Platform,
}

impl BuiltImage {
    /// The digests tests assert on.
    pub fn digests(&self) -> ImageDigests {
        let diff_ids: Vec<Digest> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        ImageDigests {
            manifest: self.manifest_digest.clone(),
            manifest_size: self.manifest.len() as u64,
            config: self.config_digest.clone(),
            layers: self.layers.iter().map(|l| l.digest.clone()).collect(),
            chain_id: chain_id(&diff_ids),
            diff_ids,
            platform: self.platform.clone(),
        }
    }
}

/// What was written for one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDigests {
    /// The manifest digest (the `name@digest` of the image, and the directory name of
    /// its volume target).
    pub manifest: Digest,
    /// The manifest size in bytes.
    pub manifest_size: u64,
    /// The config digest (the image ID).
    pub config: Digest,
    /// The layer blob digests, bottom first.
    pub layers: Vec<Digest>,
    /// The diff IDs (digests of the uncompressed layer tars), bottom first.
    pub diff_ids: Vec<Digest>,
    /// The chain ID of the top layer; `None` for an image without layers.
    pub chain_id: Option<Digest>,
    /// The image's platform.
    pub platform: Platform,
}
