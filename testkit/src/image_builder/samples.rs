//! Sample images for tests, demos and benchmarks: [`sample_image`], [`many_layers`].

use super::{ImageBuilder, LayerBuilder};

/// A small two-layer image exercising links, whiteouts and an opaque directory.
///
/// Layer 0 (gzip): `etc/` with `hostname` (`imv\n`) and `os-release`; `data/` with
/// `hello.txt` (`hello from imv\n`), `remove-me.txt`, symlink `link -> hello.txt`,
/// hard link `hard` (to `data/hello.txt`), and `opaque/old.txt`.
/// Layer 1 (gzip): whiteout of `data/remove-me.txt`, `data/opaque/` made opaque (so
/// `old.txt` disappears) with a new `data/opaque/new.txt` (`added by layer 1\n`), and
/// `data/second.txt` (`layer 1\n`).
///
/// The unpacked root therefore has `data/hello.txt`, `data/link`, `data/hard`,
/// `data/second.txt`, `data/opaque/new.txt`, and neither `data/remove-me.txt` nor
/// `data/opaque/old.txt`.
pub fn sample_image() -> ImageBuilder {
    let base = LayerBuilder::new()
        .created_by("sample: base files")
        .dir("etc", 0o755)
        .file("etc/hostname", 0o644, "imv\n")
        .file("etc/os-release", 0o644, "NAME=imv-sample\nID=imv\n")
        .dir("data", 0o755)
        .file("data/hello.txt", 0o644, "hello from imv\n")
        .file("data/remove-me.txt", 0o644, "deleted by layer 1\n")
        .symlink("data/link", "hello.txt")
        .hardlink("data/hard", "data/hello.txt")
        .dir("data/opaque", 0o755)
        .file("data/opaque/old.txt", 0o644, "hidden by layer 1\n");
    let top = LayerBuilder::new()
        .created_by("sample: whiteout and opaque directory")
        .dir("data", 0o755)
        .whiteout("data/remove-me.txt")
        .dir("data/opaque", 0o755)
        .opaque("data/opaque")
        .file("data/opaque/new.txt", 0o644, "added by layer 1\n")
        .file("data/second.txt", 0o644, "layer 1\n");
    ImageBuilder::new()
        .env("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .cmd(["/bin/sh"])
        .label("org.opencontainers.image.title", "imv sample")
        .layer(base)
        .layer(top)
}

/// An image of `n` gzip layers: layer `i` adds the file `layer-<i>` (`layer <i>\n`);
/// layers 0, 3, 6, ... (re)write the file `shared` (`written by layer <i>\n`), so the
/// unpacked `shared` names the last multiple of 3 below `n`.
pub fn many_layers(n: usize) -> ImageBuilder {
    let mut image = ImageBuilder::new();
    for i in 0..n {
        let mut layer = LayerBuilder::new()
            .created_by(&format!("many_layers: layer {i}"))
            .file(&format!("layer-{i}"), 0o644, format!("layer {i}\n"));
        if i % 3 == 0 {
            layer = layer.file("shared", 0o644, format!("written by layer {i}\n"));
        }
        image = image.layer(layer);
    }
    image
}
