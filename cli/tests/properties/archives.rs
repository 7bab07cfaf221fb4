//! Properties of archive import.

use std::fs;
use std::io::Read;

use proptest::prelude::*;

use imv::__property_tests::{import, ContentStore};
use imv::backend::NoProgress;
use imv::{Digest, ErrorKind};
use imv_testkit::image_builder::{
    Compression, Entry, ImageBuilder, LayerBuilder, LayoutOptions, OciLayout,
};

use super::cases;

/// One member of a random archive.
#[derive(Clone, Debug)]
struct Member {
    name: MemberName,
    typ: u8,
    content: Content,
}

#[derive(Clone, Debug)]
enum MemberName {
    Lit(&'static str),
    /// `blobs/sha256/<hex of this member's content>`.
    BlobOfContent,
    /// `blobs/sha256/<random hex>`.
    BlobRandom(String),
    Random(String),
}

#[derive(Clone, Debug)]
enum Content {
    Bytes(Vec<u8>),
    OciLayout,
    /// An index.json naming the blob of content `n` (by generated digest and size),
    /// with the size off by `delta`.
    Index {
        size_delta: i8,
        name: bool,
    },
    /// A docker manifest.json naming members.
    DockerManifest(Vec<&'static str>),
    Json(&'static str),
}

fn member() -> impl Strategy<Value = Member> {
    let name = prop_oneof![
        3 => Just(MemberName::BlobOfContent),
        2 => prop_oneof![
            Just("oci-layout"), Just("index.json"), Just("manifest.json"), Just("./index.json"),
            Just("repositories"), Just("a/json"), Just("a/layer.tar"), Just("layer.tar"),
            Just("blobs"), Just("blobs/sha256"), Just("blobs/sha512/ab"), Just("blobs/sha256/zz"),
            Just("../index.json"), Just("/oci-layout"), Just("a/../b"), Just("conf.json"),
        ].prop_map(MemberName::Lit),
        1 => "[a-f0-9]{64}".prop_map(MemberName::BlobRandom),
        1 => "[a-z./]{1,12}".prop_map(MemberName::Random),
    ];
    let typ = prop_oneof![8 => Just(b'0'), 1 => Just(b'5'), 1 => Just(b'2'), 1 => Just(b'1'), 1 => Just(b'3')];
    let content = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Content::Bytes),
        2 => Just(Content::OciLayout),
        2 => (-2i8..=2, any::<bool>()).prop_map(|(size_delta, name)| Content::Index { size_delta, name }),
        1 => prop::collection::vec(prop_oneof![Just("a/layer.tar"), Just("conf.json"), Just("layer.tar"), Just("../x")], 0..3)
            .prop_map(Content::DockerManifest),
        1 => prop_oneof![
            Just("{}"), Just("[]"), Just("null"), Just("{\"imageLayoutVersion\":\"2.0\"}"),
            Just("{\"schemaVersion\":2,\"manifests\":[{}]}"),
            Just("[{\"Config\":\"conf.json\",\"RepoTags\":null,\"Layers\":[]}]"),
            Just("{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\",\"size\":0},\"layers\":[]}"),
        ].prop_map(Content::Json),
    ];
    (name, typ, content).prop_map(|(name, typ, content)| Member { name, typ, content })
}

/// Render random members into a tar; an index names the previous member's blob.
fn random_archive(members: &[Member]) -> Vec<u8> {
    let mut layer = LayerBuilder::new().compression(Compression::None);
    let mut prev: Option<(Digest, usize)> = None;
    for m in members {
        let content: Vec<u8> = match &m.content {
            Content::Bytes(b) => b.clone(),
            Content::OciLayout => br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            Content::Index { size_delta, name } => {
                let (digest, size) = prev.clone().unwrap_or((Digest::of(b""), 0));
                let size = (size as i64 + i64::from(*size_delta)).max(0);
                let annotations = if *name {
                    r#","annotations":{"io.containerd.image.name":"example.com/x:1"}"#
                } else {
                    ""
                };
                format!(
                    r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{size}{annotations}}}]}}"#
                )
                .into_bytes()
            }
            Content::DockerManifest(layers) => {
                format!(r#"[{{"Config":"conf.json","RepoTags":["x:1"],"Layers":{layers:?}}}]"#)
                    .into_bytes()
            }
            Content::Json(s) => s.as_bytes().to_vec(),
        };
        let name = match &m.name {
            MemberName::Lit(s) => s.to_string(),
            MemberName::BlobOfContent => format!("blobs/sha256/{}", Digest::of(&content).hex()),
            MemberName::BlobRandom(h) => format!("blobs/sha256/{h}"),
            MemberName::Random(s) => s.clone(),
        };
        let link: &[u8] = if matches!(m.typ, b'1' | b'2') {
            b"index.json"
        } else {
            b""
        };
        let data: &[u8] = if m.typ == b'0' { &content } else { b"" };
        layer = layer.entry(Entry::raw(name.as_bytes(), m.typ, data, link));
        prev = Some((Digest::of(&content), content.len()));
    }
    layer.tar().unwrap()
}

/// A real archive of a small image, for mutation.
fn valid_archive() -> Vec<u8> {
    let image = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .compression(Compression::None)
                .file("a", 0o644, "hello"),
        )
        .layer(LayerBuilder::new().file("b", 0o644, "world"));
    let mut layout = OciLayout::new(LayoutOptions::default());
    layout.add_image("example.com/img:1", &image).unwrap();
    layout.archive_bytes().unwrap()
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Set the byte at this fraction (per mille) of the archive to a value.
    Set(u16, u8),
    /// Cut the archive at this fraction (per mille).
    Truncate(u16),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (0u16..1000, any::<u8>()).prop_map(|(at, v)| Mutation::Set(at, v)),
        1 => (0u16..1000).prop_map(Mutation::Truncate),
    ]
}

fn archive_case() -> impl Strategy<Value = (Vec<u8>, Compression, bool)> {
    let random = prop::collection::vec(member(), 0..8).prop_map(|m| random_archive(&m));
    let mutated = prop::collection::vec(mutation(), 0..4).prop_map(|ms| {
        let mut a = valid_archive();
        for m in ms {
            match m {
                // After a cut to nothing there is nothing to set.
                Mutation::Set(_, _) if a.is_empty() => {}
                Mutation::Set(at, v) => {
                    let i = a.len() * usize::from(at) / 1000;
                    a[i] = v;
                }
                Mutation::Truncate(at) => a.truncate(a.len() * usize::from(at) / 1000),
            }
        }
        a
    });
    (
        prop_oneof![random, mutated],
        prop_oneof![4 => Just(Compression::None), 1 => Just(Compression::Gzip), 1 => Just(Compression::Zstd)],
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(cases(192))]

    /// Importing a random or damaged archive never panics, fails with InvalidArgument,
    /// and leaves no temp file in the store's ingest/ directory (nor anything but
    /// verified blobs under blobs/).
    #[test]
    fn import_random_archive((tar, compression, named) in archive_case()) {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&tmp.path().join("content")).unwrap();
        let path = tmp.path().join("archive.tar");
        fs::write(&path, compression.compress(&tar).unwrap()).unwrap();
        let name = named.then_some("example.com/named:1");
        let result = import(&store, &path, &imv::ImportOptions::named(name), &NoProgress);
        if let Err(e) = &result {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e);
        }
        let ingest: Vec<_> = fs::read_dir(store.dir().join("ingest")).unwrap().collect();
        prop_assert!(ingest.is_empty(), "left in ingest/: {:?} after {:?}", ingest, result);
        for digest in store.list().unwrap() {
            let mut data = Vec::new();
            store.open_blob(&digest).unwrap().read_to_end(&mut data).unwrap();
            prop_assert_eq!(Digest::of(&data), digest);
        }
    }
}
