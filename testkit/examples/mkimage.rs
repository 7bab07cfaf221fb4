//! mkimage: write a small test image with `imv_testkit::image_builder`, for the README demo and
//! the C and Go tests (which cannot call the Rust builder directly).
//!
//! ```text
//! cargo run -p imv-testkit --example mkimage -- --out /tmp/sample                # OCI layout dir
//! cargo run -p imv-testkit --example mkimage -- --out /tmp/s.tar --format docker-archive
//! cargo run -p imv-testkit --example mkimage -- --out /tmp/many --layers 50 --name example.com/many:50
//! cargo run -p imv-testkit --example mkimage -- --out /tmp/model --artifact model     # an OCI artifact
//! ```
//!
//! Prints the digests as one JSON object on stdout so scripts can assert on them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use imv_testkit::image_builder::artifact::{sample_data_artifact, sample_model};
use imv_testkit::image_builder::{
    many_layers, sample_image, write_docker_archive, Compression, ImageDigests, LayoutOptions,
    OciLayout, RefName,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// An OCI image layout directory.
    OciDir,
    /// A tar of an OCI image layout.
    OciArchive,
    /// A legacy `docker save` tarball.
    DockerArchive,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Artifact {
    /// A ModelPack model: model.safetensors (64 KiB) and config.json as raw layers, and a
    /// tar of docs/README.md and docs/LICENSE.
    Model,
    /// An artifact with the empty config and one raw file, hello.txt.
    Data,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Compress {
    /// Plain tar layers.
    None,
    /// gzip layers.
    Gzip,
    /// zstd layers.
    Zstd,
}

/// Write a small, deterministic OCI image (the sample image, or N layers) for tests and demos.
///
/// The sample image has two layers: base files and a symlink, then a layer that deletes
/// data/remove-me.txt with a whiteout and makes data/opaque/ opaque. With --layers N,
/// layer i adds the file layer-<i> and every third layer rewrites the file `shared`.
/// The same arguments always give the same bytes and digests, printed as JSON on stdout.
#[derive(Parser, Debug)]
#[command(name = "mkimage")]
struct Args {
    /// Where to write: a directory for oci-dir, a file for the archives.
    #[arg(long)]
    out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "oci-dir")]
    format: Format,
    /// Image name (stored in index.json annotations, or docker RepoTags).
    #[arg(long)]
    name: Option<String>,
    /// Write an image of N layers instead of the sample.
    #[arg(long, value_name = "N", conflicts_with = "sample")]
    layers: Option<usize>,
    /// Write the sample image (the default).
    #[arg(long)]
    sample: bool,
    /// Platform os/arch[/variant] written in the config (default: linux and this host's arch).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Layer compression (docker-archive always stores plain tars).
    #[arg(long, value_enum, default_value = "gzip")]
    compression: Compress,
    /// Write only the tag as org.opencontainers.image.ref.name, and no
    /// io.containerd.image.name, as umoci and skopeo's oci:DIR:TAG write a layout (importing
    /// it then needs a base name or a name).
    #[arg(long)]
    tag_only: bool,
    /// Use Docker schema2 media types instead of OCI ones.
    #[arg(long)]
    docker_media_types: bool,
    /// Write an OCI artifact instead of an image (oci-dir and oci-archive only).
    #[arg(long, value_enum, conflicts_with_all = ["layers", "sample", "docker_media_types", "platform"])]
    artifact: Option<Artifact>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(d) => {
            println!("{d}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mkimage: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    match args.artifact {
        Some(kind) => run_artifact(args, kind),
        None => run_image(args).map(|d| digests_json(&d)),
    }
}

fn run_artifact(args: &Args, kind: Artifact) -> Result<serde_json::Value, String> {
    let (artifact, default_name) = match kind {
        Artifact::Model => (sample_model(), "example.com/imv/model:1"),
        Artifact::Data => (sample_data_artifact(), "example.com/imv/data:1"),
    };
    let name = args.name.as_deref().unwrap_or(default_name);
    let mut layout = OciLayout::new(LayoutOptions::default());
    let built = layout
        .add_artifact(name, &artifact)
        .map_err(|e| e.to_string())?;
    match args.format {
        Format::OciDir => layout.write_dir(&args.out),
        Format::OciArchive => layout.write_archive(&args.out),
        Format::DockerArchive => return Err("an artifact has no docker-archive form".into()),
    }
    .map_err(|e| e.to_string())?;
    Ok(serde_json::json!({
        "manifest": built.manifest_digest,
        "config": built.config_digest,
        "layers": built.layers(),
    }))
}

fn run_image(args: &Args) -> Result<ImageDigests, String> {
    let (mut image, default_name) = match args.layers {
        Some(n) => (many_layers(n), format!("example.com/imv/many:{n}")),
        None => (sample_image(), "example.com/imv/sample:latest".to_owned()),
    };
    if let Some(p) = &args.platform {
        let parts: Vec<&str> = p.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|s| s.is_empty()) {
            return Err(format!("--platform {p:?}: want os/arch[/variant]"));
        }
        image = image.platform(parts[0], parts[1], parts.get(2).copied().unwrap_or(""));
    }
    let compression = match args.compression {
        Compress::None => Compression::None,
        Compress::Gzip => Compression::Gzip,
        Compress::Zstd => Compression::Zstd,
    };
    let image = image
        .compress_all(compression)
        .docker_media_types(args.docker_media_types);
    let name = args.name.clone().unwrap_or(default_name);
    let options = LayoutOptions {
        ref_name: if args.tag_only {
            RefName::Tag
        } else {
            RefName::Full
        },
        containerd_name: !args.tag_only,
    };
    let result = match args.format {
        Format::OciDir | Format::OciArchive => {
            let mut layout = OciLayout::new(options);
            let d = layout.add_image(&name, &image);
            d.and_then(|d| {
                match args.format {
                    Format::OciDir => layout.write_dir(&args.out)?,
                    _ => layout.write_archive(&args.out)?,
                }
                Ok(d)
            })
        }
        Format::DockerArchive => write_docker_archive(&args.out, &name, &image),
    };
    result.map_err(|e| e.to_string())
}

fn digests_json(d: &ImageDigests) -> serde_json::Value {
    serde_json::json!({
        "manifest": d.manifest,
        "config": d.config,
        "layers": d.layers,
        "diff_ids": d.diff_ids,
        "chain_id": d.chain_id,
        "platform": format!("{}/{}{}", d.platform.os, d.platform.architecture,
            if d.platform.variant.is_empty() { String::new() } else { format!("/{}", d.platform.variant) }),
    })
}
