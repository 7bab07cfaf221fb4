//! The tests' check that imv frames a tar stream as Go's archive/tar does: the same bytes
//! through `tar_stream::listing` and through tools/go-tarframe (Go's reader, as containerd
//! and the image scanners use it), line by line. Every layer the unpacker's tests unpack
//! goes through it, and the framing tests' hand-made and mutated archives.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::tar_stream;

/// tools/go-tarframe, built once per test run into the target directory. Panics (never
/// skips) without Go: scripts/setup installs it.
fn go_tarframe() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join("target"));
        let dir = target.join("go-tarframe");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("go-tarframe");
        let tmp = dir.join(format!("go-tarframe.{}", std::process::id()));
        let go = ["go", "/usr/local/go/bin/go"]
            .into_iter()
            .find(|g| Command::new(g).arg("version").output().is_ok())
            .expect("no Go toolchain: the framing tests compare imv with Go's archive/tar (scripts/setup installs Go)");
        let status = Command::new(go)
            .args(["build", "-o"])
            .arg(&tmp)
            .arg(".")
            .current_dir(manifest.join("tools/go-tarframe"))
            .status()
            .expect("go build");
        assert!(status.success(), "go build of tools/go-tarframe failed");
        std::fs::rename(&tmp, &out).unwrap();
        out
    })
}

/// Go's framing of `tar`.
pub(super) fn go_listing(tar: &[u8]) -> String {
    let mut child = Command::new(go_tarframe())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("go-tarframe");
    let mut stdin = child.stdin.take().unwrap();
    let input = tar.to_vec();
    // Written on a thread of its own: Go may print while it reads.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("go-tarframe's output");
    let _ = writer.join();
    String::from_utf8(out.stdout).expect("go-tarframe prints ASCII")
}

/// Assert that imv frames `tar` as Go does: the same entries and records, and an error
/// where Go's reader stops with one (the messages differ). The one difference allowed is
/// a PAX sparse file, which Go expands and imv refuses. Whether Go read it to its end.
pub(super) fn assert_frames_as_go(tar: &[u8]) -> bool {
    let ours = tar_stream::listing(tar);
    let go = go_listing(tar);
    let (o, g): (Vec<&str>, Vec<&str>) = (ours.lines().collect(), go.lines().collect());
    for i in 0..o.len().max(g.len()) {
        let (a, b) = (o.get(i).copied(), g.get(i).copied());
        match (a, b) {
            (Some(a), Some(b)) if a.starts_with("error") && b.starts_with("error") => return false,
            (Some("error PAX sparse"), Some(b)) if b.starts_with("entry") => return true,
            (a, b) => assert_eq!(
                a, b,
                "imv and Go frame this tar differently at line {i}\nimv:\n{ours}\nGo:\n{go}"
            ),
        }
    }
    true
}
