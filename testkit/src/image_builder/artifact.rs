//! OCI artifacts for tests: manifests with an `artifactType` and a config that is no image
//! config, whose layers are raw blobs or tars, written into an [`OciLayout`] beside images.
//! As deterministic as the rest of the writer.
//!
//! ```no_run
//! # use imv_testkit::image_builder::{*, artifact::*};
//! let model = ArtifactBuilder::modelpack()
//!     .raw(MODEL_WEIGHT_RAW, b"weights".to_vec(), &[(MODEL_FILEPATH, "model.safetensors")]);
//! let mut layout = OciLayout::new(LayoutOptions::default());
//! layout.add_artifact("example.com/model:1", &model)?;
//! # Ok::<(), imv::Error>(())
//! ```

use std::collections::BTreeMap;

use imv::{Digest, Platform, Result};

use super::{
    media_type, to_json, Descriptor, Index, LayerBuilder, Manifest, OciLayout, PlatformJson,
};

/// The empty config of artifacts that need none (OCI image spec 1.1).
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
/// Its content: `{}`.
pub const EMPTY_JSON: &[u8] = b"{}";
/// ModelPack's artifact type (model-spec).
pub const MODEL_ARTIFACT: &str = "application/vnd.cncf.model.manifest.v1+json";
/// ModelPack's config media type.
pub const MODEL_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";
/// A ModelPack weight as a raw file.
pub const MODEL_WEIGHT_RAW: &str = "application/vnd.cncf.model.weight.v1.raw";
/// A ModelPack weight configuration as a raw file.
pub const MODEL_WEIGHT_CONFIG_RAW: &str = "application/vnd.cncf.model.weight.config.v1.raw";
/// ModelPack documentation as a tar.
pub const MODEL_DOC_TAR: &str = "application/vnd.cncf.model.doc.v1.tar";
/// ModelPack code as a gzipped tar.
pub const MODEL_CODE_TAR_GZIP: &str = "application/vnd.cncf.model.code.v1.tar+gzip";
/// ModelPack's annotation of a layer's path.
pub const MODEL_FILEPATH: &str = "org.cncf.model.filepath";
/// The OCI title annotation (what `oras push` sets).
pub const TITLE: &str = "org.opencontainers.image.title";

/// One layer of an artifact.
#[derive(Clone, Debug)]
enum ArtifactLayer {
    /// A raw blob.
    Raw {
        media_type: String,
        data: Vec<u8>,
        annotations: BTreeMap<String, String>,
    },
    /// A tar, compressed as the builder says.
    Tar {
        media_type: String,
        layer: LayerBuilder,
        annotations: BTreeMap<String, String>,
    },
}

/// An artifact: an artifact type, a config and layers.
#[derive(Clone, Debug)]
pub struct ArtifactBuilder {
    artifact_type: Option<String>,
    config_media_type: String,
    config: Vec<u8>,
    layers: Vec<ArtifactLayer>,
    annotations: BTreeMap<String, String>,
}

impl ArtifactBuilder {
    /// An artifact of type `artifact_type` with the empty config and no layers.
    pub fn new(artifact_type: &str) -> Self {
        ArtifactBuilder {
            artifact_type: Some(artifact_type.to_owned()),
            config_media_type: EMPTY_CONFIG.to_owned(),
            config: EMPTY_JSON.to_vec(),
            layers: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// A ModelPack model with a small config and no layers.
    pub fn modelpack() -> Self {
        let config = br#"{"config":{"architecture":"transformer","format":"safetensors"},"descriptor":{"name":"imv-test-model","version":"1"},"modelfs":{"diffIds":[],"type":"layers"}}"#;
        ArtifactBuilder::new(MODEL_ARTIFACT).config(MODEL_CONFIG, config.to_vec())
    }

    /// No `artifactType` (an artifact then only by its config's media type).
    pub fn without_artifact_type(mut self) -> Self {
        self.artifact_type = None;
        self
    }

    /// The config blob and its media type.
    pub fn config(mut self, media_type: &str, data: Vec<u8>) -> Self {
        self.config_media_type = media_type.to_owned();
        self.config = data;
        self
    }

    /// A raw layer of `media_type` holding `data`, with `annotations`.
    pub fn raw(mut self, media_type: &str, data: Vec<u8>, annotations: &[(&str, &str)]) -> Self {
        self.layers.push(ArtifactLayer::Raw {
            media_type: media_type.to_owned(),
            data,
            annotations: annotations_of(annotations),
        });
        self
    }

    /// A raw layer titled `title` (`org.opencontainers.image.title`), as `oras push FILE`
    /// makes one.
    pub fn file(self, title: &str, data: Vec<u8>) -> Self {
        self.raw("application/octet-stream", data, &[(TITLE, title)])
    }

    /// A tar layer of `media_type`, compressed as `layer` says.
    pub fn tar(
        mut self,
        media_type: &str,
        layer: LayerBuilder,
        annotations: &[(&str, &str)],
    ) -> Self {
        self.layers.push(ArtifactLayer::Tar {
            media_type: media_type.to_owned(),
            layer,
            annotations: annotations_of(annotations),
        });
        self
    }

    /// An annotation on the manifest.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Every blob, and the manifest.
    pub fn build(&self) -> Result<BuiltArtifact> {
        let mut blobs = vec![(Digest::of(&self.config), self.config.clone())];
        let mut layers = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let (media_type, blob, annotations) = match layer {
                ArtifactLayer::Raw {
                    media_type,
                    data,
                    annotations,
                } => (media_type, data.clone(), annotations),
                ArtifactLayer::Tar {
                    media_type,
                    layer,
                    annotations,
                } => {
                    let built = layer.build().map_err(|e| e.context(format!("layer {i}")))?;
                    (media_type, built.blob, annotations)
                }
            };
            let digest = Digest::of(&blob);
            layers.push(Descriptor {
                annotations: annotations.clone(),
                ..Descriptor::new(media_type, &digest, blob.len() as u64)
            });
            blobs.push((digest, blob));
        }
        let manifest = to_json(&Manifest {
            schema_version: 2,
            media_type: media_type::OCI_MANIFEST,
            artifact_type: self.artifact_type.clone(),
            config: Descriptor::new(
                &self.config_media_type,
                &Digest::of(&self.config),
                self.config.len() as u64,
            ),
            layers,
            annotations: self.annotations.clone(),
        })?;
        Ok(BuiltArtifact {
            manifest_digest: Digest::of(&manifest),
            manifest,
            config_digest: Digest::of(&self.config),
            blobs,
        })
    }
}

fn annotations_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A built artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltArtifact {
    /// The manifest blob (JSON).
    pub manifest: Vec<u8>,
    /// Its digest: the artifact's image ID and, alone in `index.json`, its volume's name.
    pub manifest_digest: Digest,
    /// The config's digest.
    pub config_digest: Digest,
    /// Every blob but the manifest: the config, then the layers in order.
    pub blobs: Vec<(Digest, Vec<u8>)>,
}

impl BuiltArtifact {
    /// The layer blobs' digests, in order.
    pub fn layers(&self) -> Vec<Digest> {
        self.blobs.iter().skip(1).map(|(d, _)| d.clone()).collect()
    }
}

impl OciLayout {
    fn add_built_artifact(&mut self, built: &BuiltArtifact) {
        for (digest, blob) in &built.blobs {
            self.blobs.insert(digest.hex().to_owned(), blob.clone());
        }
        self.blobs.insert(
            built.manifest_digest.hex().to_owned(),
            built.manifest.clone(),
        );
    }

    /// Add an artifact named `name` (an entry of `index.json`).
    pub fn add_artifact(
        &mut self,
        name: &str,
        artifact: &ArtifactBuilder,
    ) -> Result<BuiltArtifact> {
        let built = artifact.build()?;
        self.add_built_artifact(&built);
        self.index.push((
            name.to_owned(),
            built.manifest_digest.clone(),
            built.manifest.len() as u64,
            media_type::OCI_MANIFEST,
            None,
        ));
        Ok(built)
    }

    /// Add an index named `name` of artifacts, one per platform (`None`: an entry without
    /// a platform), with the index's own `artifactType` if given. The index's digest, and
    /// each artifact as built.
    pub fn add_artifact_index(
        &mut self,
        name: &str,
        artifact_type: Option<&str>,
        artifacts: &[(Option<Platform>, &ArtifactBuilder)],
    ) -> Result<(Digest, Vec<BuiltArtifact>)> {
        let mut built_all = Vec::new();
        let mut manifests = Vec::new();
        for (platform, artifact) in artifacts {
            let built = artifact.build()?;
            self.add_built_artifact(&built);
            manifests.push(Descriptor {
                platform: platform.as_ref().map(PlatformJson::of),
                ..Descriptor::new(
                    media_type::OCI_MANIFEST,
                    &built.manifest_digest,
                    built.manifest.len() as u64,
                )
            });
            built_all.push(built);
        }
        let index = to_json(&Index {
            schema_version: 2,
            media_type: media_type::OCI_INDEX,
            artifact_type: artifact_type.map(str::to_owned),
            manifests,
        })?;
        let digest = Digest::of(&index);
        let size = index.len() as u64;
        self.blobs.insert(digest.hex().to_owned(), index);
        self.index.push((
            name.to_owned(),
            digest.clone(),
            size,
            media_type::OCI_INDEX,
            None,
        ));
        Ok((digest, built_all))
    }
}

/// The model the tests mount: a ModelPack artifact with a raw weight, a raw weight config
/// and a tar of documentation (`docs/README.md`, `docs/LICENSE`).
pub fn sample_model() -> ArtifactBuilder {
    ArtifactBuilder::modelpack()
        .raw(
            MODEL_WEIGHT_RAW,
            sample_weights(),
            &[(MODEL_FILEPATH, "model.safetensors")],
        )
        .raw(
            MODEL_WEIGHT_CONFIG_RAW,
            br#"{"hidden_size": 64}"#.to_vec(),
            &[(MODEL_FILEPATH, "config.json")],
        )
        .tar(
            MODEL_DOC_TAR,
            LayerBuilder::new()
                .compression(super::Compression::None)
                .dir("docs", 0o755)
                .file("docs/README.md", 0o644, b"# imv test model\n".to_vec())
                .file("docs/LICENSE", 0o644, b"Apache-2.0\n".to_vec()),
            &[(MODEL_FILEPATH, "docs")],
        )
}

/// The bytes of the sample model's weight file: 64 KiB that are not all the same.
pub fn sample_weights() -> Vec<u8> {
    (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// An artifact with the empty config and one raw file, `hello.txt`.
pub fn sample_data_artifact() -> ArtifactBuilder {
    ArtifactBuilder::new("application/vnd.imv.test.data")
        .file("hello.txt", b"hello from an artifact\n".to_vec())
}
