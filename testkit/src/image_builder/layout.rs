//! OCI image layouts: [`OciLayout`] collects images and multi-platform indexes and
//! writes them as a directory or an OCI archive; the `write_oci_*` shortcuts.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use imv::{Digest, IoContext, Platform, Result};

use super::{
    media_type, to_json, BuiltImage, Compression, Descriptor, ImageBuilder, ImageDigests, Index,
    LayerBuilder, PlatformJson, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME,
};

/// What was written for a multi-platform image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexDigests {
    /// The digest of the image index blob the name points to.
    pub index: Digest,
    /// The index size in bytes.
    pub index_size: u64,
    /// Each platform's image, in the order given.
    pub manifests: Vec<ImageDigests>,
}

/// How `org.opencontainers.image.ref.name` is written in `index.json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RefName {
    /// The full name as given (`docker.io/library/busybox:1.36`), as containerd's export
    /// writes it.
    #[default]
    Full,
    /// Only the tag (`1.36`; `latest` when the name has none), as umoci and skopeo's
    /// `oci:DIR:TAG` expect.
    Tag,
}

/// Options of an OCI layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutOptions {
    /// How the ref name annotation is written.
    pub ref_name: RefName,
    /// Whether to write `io.containerd.image.name` with the full name as well.
    pub containerd_name: bool,
}

impl Default for LayoutOptions {
    fn default() -> Self {
        LayoutOptions {
            ref_name: RefName::Full,
            containerd_name: true,
        }
    }
}

/// The tag of `name`: what follows the last `:` after the last `/`, else `latest`. A
/// `@digest` suffix is ignored.
pub(super) fn tag_of(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rfind(':') {
        Some(i) => &last[i + 1..],
        None => "latest",
    }
}

/// An OCI image layout assembled in memory, then written as a directory or an archive.
///
/// ```no_run
/// # use imv_testkit::image_builder::*;
/// let mut layout = OciLayout::new(LayoutOptions::default());
/// let digests = layout.add_image("example.com/sample:1", &sample_image())?;
/// layout.write_dir(std::path::Path::new("/tmp/layout"))?;
/// # Ok::<(), imv::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct OciLayout {
    options: LayoutOptions,
    pub(super) blobs: BTreeMap<String, Vec<u8>>,
    pub(super) index: Vec<(String, Digest, u64, &'static str, Option<Platform>)>,
}

impl OciLayout {
    /// An empty layout.
    pub fn new(options: LayoutOptions) -> Self {
        OciLayout {
            options,
            ..Default::default()
        }
    }

    fn add_built(&mut self, img: &BuiltImage) {
        for l in &img.layers {
            self.blobs.insert(l.digest.hex().to_owned(), l.blob.clone());
        }
        self.blobs
            .insert(img.config_digest.hex().to_owned(), img.config.clone());
        self.blobs
            .insert(img.manifest_digest.hex().to_owned(), img.manifest.clone());
    }

    /// Add an image named `name` (an entry of `index.json`).
    pub fn add_image(&mut self, name: &str, image: &ImageBuilder) -> Result<ImageDigests> {
        let img = image.build()?;
        self.add_built(&img);
        self.index.push((
            name.to_owned(),
            img.manifest_digest.clone(),
            img.manifest.len() as u64,
            img.manifest_media_type,
            Some(img.platform.clone()),
        ));
        Ok(img.digests())
    }

    /// Add a multi-platform image named `name`: an image index blob listing one manifest
    /// per image (with its platform), pointed to by one `index.json` entry. The index is
    /// a Docker manifest list if every image uses Docker media types, else an OCI index.
    pub fn add_index(&mut self, name: &str, images: &[&ImageBuilder]) -> Result<IndexDigests> {
        let mut manifests = Vec::new();
        let mut descriptors = Vec::new();
        for image in images {
            let img = image.build()?;
            self.add_built(&img);
            let mut d = Descriptor::new(
                img.manifest_media_type,
                &img.manifest_digest,
                img.manifest.len() as u64,
            );
            d.platform = Some(PlatformJson::of(&img.platform));
            descriptors.push(d);
            manifests.push(img.digests());
        }
        let all_docker = !images.is_empty() && images.iter().all(|i| i.docker);
        let media_type = if all_docker {
            media_type::DOCKER_MANIFEST_LIST
        } else {
            media_type::OCI_INDEX
        };
        let index = to_json(&Index {
            schema_version: 2,
            media_type,
            artifact_type: None,
            manifests: descriptors,
        })?;
        let digest = Digest::of(&index);
        let size = index.len() as u64;
        self.blobs.insert(digest.hex().to_owned(), index);
        self.index
            .push((name.to_owned(), digest.clone(), size, media_type, None));
        Ok(IndexDigests {
            index: digest,
            index_size: size,
            manifests,
        })
    }

    /// The `index.json` bytes.
    pub fn index_json(&self) -> Result<Vec<u8>> {
        let manifests = self
            .index
            .iter()
            .map(|(name, digest, size, mt, platform)| {
                let mut d = Descriptor::new(mt, digest, *size);
                d.platform = platform.as_ref().map(PlatformJson::of);
                let ref_name = match self.options.ref_name {
                    RefName::Full => name.as_str(),
                    RefName::Tag => tag_of(name),
                };
                d.annotations
                    .insert(ANNOTATION_REF_NAME.into(), ref_name.into());
                if self.options.containerd_name {
                    d.annotations
                        .insert(ANNOTATION_CONTAINERD_NAME.into(), name.clone());
                }
                d
            })
            .collect();
        to_json(&Index {
            schema_version: 2,
            media_type: media_type::OCI_INDEX,
            artifact_type: None,
            manifests,
        })
    }

    /// Every file of the layout, relative path to content, in a fixed order.
    fn files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut files = vec![
            (
                "oci-layout".to_owned(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".to_owned(), self.index_json()?),
        ];
        for (hex, blob) in &self.blobs {
            files.push((format!("blobs/sha256/{hex}"), blob.clone()));
        }
        Ok(files)
    }

    /// Write the layout into `dir` (created if missing; an existing `index.json` is
    /// replaced, existing blobs are kept).
    pub fn write_dir(&self, dir: &Path) -> Result<()> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).at("create directory", &blobs)?;
        for (rel, data) in self.files()? {
            let p = dir.join(&rel);
            fs::write(&p, data).at("write", &p)?;
        }
        Ok(())
    }

    /// The layout as an uncompressed tar (an OCI archive).
    pub fn archive_bytes(&self) -> Result<Vec<u8>> {
        let mut layer = LayerBuilder::new()
            .compression(Compression::None)
            .dir("blobs", 0o755)
            .dir("blobs/sha256", 0o755);
        for (rel, data) in self.files()? {
            layer = layer.file(&rel, 0o644, data);
        }
        layer.tar()
    }

    /// Write the layout as an OCI archive file at `path`.
    pub fn write_archive(&self, path: &Path) -> Result<()> {
        fs::write(path, self.archive_bytes()?).at("write", path)
    }
}

/// Write `images` (name, image) as an OCI image layout in `dir`, with full names in
/// both annotations. Returns each image's digests, in order.
pub fn write_oci_layout(dir: &Path, images: &[(&str, &ImageBuilder)]) -> Result<Vec<ImageDigests>> {
    write_oci_layout_with(dir, images, LayoutOptions::default())
}

/// [`write_oci_layout`] with options (e.g. [`RefName::Tag`] for umoci and skopeo).
pub fn write_oci_layout_with(
    dir: &Path,
    images: &[(&str, &ImageBuilder)],
    options: LayoutOptions,
) -> Result<Vec<ImageDigests>> {
    let (layout, digests) = layout_of(images, options)?;
    layout.write_dir(dir)?;
    Ok(digests)
}

/// Write a multi-platform image `name` (one manifest per image, in one image index) as
/// an OCI image layout in `dir`.
pub fn write_oci_layout_index(
    dir: &Path,
    name: &str,
    images: &[&ImageBuilder],
) -> Result<IndexDigests> {
    let mut layout = OciLayout::new(LayoutOptions::default());
    let digests = layout.add_index(name, images)?;
    layout.write_dir(dir)?;
    Ok(digests)
}

/// Write `images` as an OCI archive (a tar of the layout [`write_oci_layout`] writes).
pub fn write_oci_archive(
    path: &Path,
    images: &[(&str, &ImageBuilder)],
) -> Result<Vec<ImageDigests>> {
    write_oci_archive_with(path, images, LayoutOptions::default())
}

/// [`write_oci_archive`] with options.
pub fn write_oci_archive_with(
    path: &Path,
    images: &[(&str, &ImageBuilder)],
    options: LayoutOptions,
) -> Result<Vec<ImageDigests>> {
    let (layout, digests) = layout_of(images, options)?;
    layout.write_archive(path)?;
    Ok(digests)
}

fn layout_of(
    images: &[(&str, &ImageBuilder)],
    options: LayoutOptions,
) -> Result<(OciLayout, Vec<ImageDigests>)> {
    let mut layout = OciLayout::new(options);
    let digests = images
        .iter()
        .map(|(name, image)| layout.add_image(name, image))
        .collect::<Result<Vec<_>>>()?;
    Ok((layout, digests))
}
