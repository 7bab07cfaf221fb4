//! What each command does: translate arguments into library calls and results into text or
//! JSON. No image-volume logic lives here (docs/design.md, "Layers": adapters hold no logic).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imv::backend::ImageRecord;
use imv::IoContext;
use imv::{BackendConfig, Config, Error, ErrorKind, Mount, Platform, Progress, Result, VolumeInfo};
use serde::Serialize;

use crate::cli::{
    BackendKind, CleanupArgs, Cli, Command, ImportArgs, JsonArgs, MutateArgs, RmiArgs, SandboxArgs,
    VolumesArgs,
};
use crate::engine;
use imv::Engine;

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// An error for main to print.
    Error(Error),
    /// Errors the command printed itself (e.g. one per REF of `rmi`); the kind sets the
    /// exit code.
    Printed(ErrorKind),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Error(e)
    }
}

/// Run the parsed command line. `progress` is where the library's progress reports go.
pub fn run(cli: Cli, progress: Arc<dyn Progress>) -> Result<(), Failure> {
    // host_path goes to a container runtime that runs elsewhere: it must be absolute, and
    // so must the directories it is made from. (std::path::absolute does not touch the disk.)
    let absolute = |p: &Path| std::path::absolute(p).map_err(|e| Error::io("resolve", p, e));
    let backend = match cli.backend {
        BackendKind::Local => BackendConfig::Local,
        BackendKind::Containerd => {
            // Images come from containerd (`ctr images import`, a pull); gc is containerd's.
            // (With --socket the daemon's backend decides, and says so itself.)
            let local_only = match &cli.command {
                _ if cli.socket.is_some() => None,
                Command::Import(_) => Some("import"),
                Command::Rmi(_) => Some("rmi"),
                Command::Gc(_) => Some("gc"),
                _ => None,
            };
            if let Some(what) = local_only {
                return Err(Error::precondition(format!(
                    "`imv {what}` works on the embedded store only (--backend local); \
                     with containerd use `ctr images import`, `ctr images rm` and containerd's own GC"
                ))
                .into());
            }
            BackendConfig::Containerd {
                address: absolute(&cli.address)?,
                namespace: cli.namespace.clone(),
            }
        }
    };
    let config = Config {
        root: absolute(&cli.root)?,
        state: absolute(&cli.state)?,
        progress,
        backend,
        lock_timeout: std::time::Duration::from_secs(cli.lock_timeout),
        events: None,
    };
    let socket = cli.socket.as_deref().map(absolute).transpose()?;
    let socket = socket.as_deref();
    match cli.command {
        Command::Import(args) => Ok(import(engine::open(socket, config)?, args)?),
        Command::Images(args) => Ok(images(engine::open(socket, config)?, args)?),
        Command::Rmi(args) => rmi(engine::open(socket, config)?, args),
        Command::Gc(args) => Ok(gc(engine::open(socket, config)?, args)?),
        Command::Mutate(args) => Ok(mutate(socket, config, args)?),
        Command::Cleanup(args) => Ok(cleanup(engine::open(socket, config)?, args)?),
        Command::Release(args) => Ok(release(engine::open(socket, config)?, args)?),
        Command::Volumes(args) => Ok(volumes(engine::open(socket, config)?, args)?),
        Command::Status(args) => Ok(status(engine::open(socket, config)?, args)?),
        Command::Serve(args) => Ok(crate::serve::serve(
            config,
            socket.map(Path::to_path_buf),
            args,
        )?),
    }
}

/// Write to stdout. A closed pipe (`imv images | head -1`) is not an error of imv's.
fn emit(text: &str) -> Result<()> {
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(Error::io("write", Path::new("<stdout>"), e))
        }
        _ => Ok(()),
    }
}

fn emit_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::internal(format!("encode JSON: {e}")))?;
    text.push('\n');
    emit(&text)
}

/// `sha256:0123456789ab`: enough to tell images apart in a table, as `docker images` does.
fn short(digest: &imv::Digest) -> String {
    let hex = digest.hex();
    format!("{}:{}", digest.algorithm(), &hex[..hex.len().min(12)])
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

fn import(engine: Box<dyn Engine>, args: ImportArgs) -> Result<()> {
    // A daemon reads the path on its host and refuses a relative one; the socket is local,
    // so our absolute path is its path too. (Locally this changes nothing.)
    let (path, tag) = split_tag(&args.path, args.tag)?;
    let path = std::path::absolute(&path).map_err(|e| Error::io("resolve", &path, e))?;
    let options = imv::ImportOptions {
        name: args.name,
        base_name: args.base_name,
        tag,
    };
    let records = engine.import_with(&path, &options)?;
    if args.json {
        return emit_json(&records);
    }
    let text: String = records
        .iter()
        .map(|r| format!("{} {}\n", r.name, r.digest))
        .collect();
    emit(&text)
}

/// `PATH:TAG` (skopeo's `oci:DIR:TAG`) as the path and the tag, when `PATH:TAG` itself is
/// not there and `PATH` is; otherwise the path as given, with `--tag`'s tag.
fn split_tag(path: &Path, flag: Option<String>) -> Result<(PathBuf, Option<String>)> {
    let given = path.to_string_lossy();
    let split = given
        .rsplit_once(':')
        .filter(|(p, t)| !path.exists() && !t.contains('/') && Path::new(p).exists());
    let Some((path, tag)) = split else {
        return Ok((path.to_owned(), flag));
    };
    match flag {
        Some(other) if other != tag => Err(Error::invalid(format!(
            "{given}: picks tag {tag:?}, and --tag {other:?}: give one"
        ))),
        _ => Ok((PathBuf::from(path), Some(tag.to_owned()))),
    }
}

/// Index media types (OCI and Docker): such an image holds a manifest per platform.
fn is_multi_platform(media_type: &str) -> bool {
    imv::media_type::is_index(media_type)
}

fn image_rows(records: &[ImageRecord]) -> Vec<Vec<String>> {
    records
        .iter()
        .map(|r| {
            let kind = if is_multi_platform(&r.media_type) {
                "multi-platform"
            } else {
                "single"
            };
            vec![
                r.name.clone(),
                short(&r.digest),
                kind.to_string(),
                r.media_type.clone(),
                r.artifact_type.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect()
}

fn images(engine: Box<dyn Engine>, args: JsonArgs) -> Result<()> {
    let records = engine.images()?;
    if args.json {
        return emit_json(&records);
    }
    emit(&table(
        &["NAME", "DIGEST", "PLATFORMS", "MEDIA TYPE", "ARTIFACT TYPE"],
        &image_rows(&records),
    ))
}

fn rmi(engine: Box<dyn Engine>, args: RmiArgs) -> Result<(), Failure> {
    let mut removed = Vec::new();
    let mut first_error = None;
    // Like `docker rmi`: try every reference, report each failure, fail with the first.
    for reference in &args.refs {
        match engine.remove_image(reference) {
            Ok(record) => {
                if !args.json {
                    emit(&format!("removed {} {}\n", record.name, record.digest))?;
                }
                removed.push(record);
            }
            Err(e) => {
                eprintln!("imv: {reference}: {e}");
                first_error.get_or_insert(e.kind());
            }
        }
    }
    if args.json {
        emit_json(&removed)?;
    }
    match first_error {
        Some(kind) => Err(Failure::Printed(kind)),
        None => Ok(()),
    }
}

fn gc(engine: Box<dyn Engine>, args: JsonArgs) -> Result<()> {
    let stats = engine.gc()?;
    if args.json {
        return emit_json(&stats);
    }
    emit(&format!(
        "removed {} snapshots, {} blobs, {} partial import files\n",
        stats.snapshots, stats.blobs, stats.ingests
    ))
}

/// Largest `--mounts` file read (a container's mounts are a few kilobytes of JSON).
const MAX_MOUNTS_FILE: u64 = 16 << 20;

fn read_mounts(path: &Path) -> Result<Vec<Mount>> {
    let (bytes, name) = if path == Path::new("-") {
        let mut bytes = Vec::new();
        io::stdin()
            .take(MAX_MOUNTS_FILE + 1)
            .read_to_end(&mut bytes)
            .at("read", Path::new("<stdin>"))?;
        (bytes, "<stdin>".to_string())
    } else {
        // What the user named is the problem when it is a directory, not imv.
        if path.is_dir() {
            return Err(Error::invalid(format!(
                "mounts file {}: is a directory",
                path.display()
            )));
        }
        let mut bytes = Vec::new();
        fs::File::open(path)
            .and_then(|f| f.take(MAX_MOUNTS_FILE + 1).read_to_end(&mut bytes))
            .at("read mounts file", path)?;
        (bytes, path.display().to_string())
    };
    let invalid = |e: String| Error::invalid(format!("{name}: {e}"));
    if bytes.len() as u64 > MAX_MOUNTS_FILE {
        return Err(invalid(format!("longer than {MAX_MOUNTS_FILE} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        invalid(format!(
            "not UTF-8 (byte {} is not part of a UTF-8 character)",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    // A list of CRI mounts, or a crictl container config (which carries them in `mounts`),
    // so a config written for crictl works unchanged. Decoding in two steps keeps serde's
    // precise message ("invalid type ... at line 3") instead of "matched no variant".
    let list = match value {
        serde_json::Value::Array(_) => value,
        serde_json::Value::Object(mut config) => config.remove("mounts").ok_or_else(|| {
            invalid("a JSON object without \"mounts\"; expected a list of CRI mounts".into())
        })?,
        _ => return Err(invalid("expected a JSON list of CRI mounts".into())),
    };
    serde_json::from_value(list).map_err(|e| invalid(format!("not a list of CRI mounts: {e}")))
}

fn mutate(socket: Option<&Path>, config: Config, args: MutateArgs) -> Result<()> {
    // Everything that can be checked without the store is checked first, so a typo fails
    // fast and leaves nothing behind.
    let mut mounts = match &args.mounts {
        Some(path) => read_mounts(path)?,
        None => Vec::new(),
    };
    mounts.extend(args.mount);
    let platform = args.platform.as_deref().map(Platform::parse).transpose()?;

    let options = imv::MutateOptions {
        mount_label: args.mount_label.unwrap_or_default(),
        ignore_label_without_selinux: args.ignore_label_without_selinux,
    };

    let engine = engine::open(socket, config)?;
    engine.mutate_mounts_with(
        &args.sandbox,
        &args.snapshotter,
        platform.as_ref(),
        &options,
        &mut mounts,
    )?;

    if args.json {
        return emit_json(&mounts);
    }
    emit(&describe_mounts(&mounts))
}

/// One line per mount: `container path -> host path (image[, sub-path P])`.
fn describe_mounts(mounts: &[Mount]) -> String {
    mounts
        .iter()
        .map(|m| match &m.image {
            Some(spec) => {
                let image = &spec.image;
                let sub = if m.image_sub_path.is_empty() {
                    String::new()
                } else {
                    format!(", sub-path {}", m.image_sub_path)
                };
                format!("{} -> {} ({image}{sub})\n", m.container_path, m.host_path)
            }
            None => format!(
                "{} -> {} (not an image volume, left alone)\n",
                m.container_path, m.host_path
            ),
        })
        .collect()
}

fn cleanup(engine: Box<dyn Engine>, args: CleanupArgs) -> Result<()> {
    let volumes = sandbox_volumes(engine.as_ref(), &args.sandbox)?;
    engine.cleanup(&args.sandbox, &args.snapshotter)?;
    emit(&removed(&args.sandbox, &volumes))?;
    if args.release {
        engine.release(&args.sandbox)?;
        emit(&format!("sandbox {}: lease released\n", args.sandbox))?;
    }
    Ok(())
}

fn release(engine: Box<dyn Engine>, args: SandboxArgs) -> Result<()> {
    // A release cleans up first: say what that removed, as `cleanup --release` does.
    let volumes = sandbox_volumes(engine.as_ref(), &args.sandbox)?;
    engine.release(&args.sandbox)?;
    emit(&removed(&args.sandbox, &volumes))?;
    emit(&format!("sandbox {}: lease released\n", args.sandbox))
}

/// The targets of the volumes of `sandbox`.
fn sandbox_volumes(engine: &dyn Engine, sandbox: &str) -> Result<Vec<String>> {
    Ok(engine
        .volumes_of(Some(sandbox))?
        .into_iter()
        .map(|v| v.target.to_string_lossy().into_owned())
        .collect())
}

/// What a cleanup of `sandbox` removed: its volumes' count and paths.
fn removed(sandbox: &str, volumes: &[String]) -> String {
    match volumes {
        [] => format!("sandbox {sandbox}: no image volumes to remove\n"),
        [one] => format!("sandbox {sandbox}: 1 image volume removed: {one}\n"),
        many => format!(
            "sandbox {sandbox}: {} image volumes removed: {}\n",
            many.len(),
            many.join(", ")
        ),
    }
}

fn volume_rows(list: &[VolumeInfo]) -> Vec<Vec<String>> {
    list.iter()
        .map(|v| {
            vec![
                v.sandbox_id.clone(),
                v.image.clone().unwrap_or_else(|| "-".into()),
                short(&v.image_digest),
                if v.mounted { "yes" } else { "no" }.to_string(),
                v.target.display().to_string(),
            ]
        })
        .collect()
}

fn volumes(engine: Box<dyn Engine>, args: VolumesArgs) -> Result<()> {
    let list = engine.volumes_of(args.sandbox.as_deref())?;
    if args.json {
        return emit_json(&list);
    }
    emit(&table(
        &["SANDBOX", "IMAGE", "DIGEST", "MOUNTED", "TARGET"],
        &volume_rows(&list),
    ))
}

fn status(engine: Box<dyn Engine>, args: JsonArgs) -> Result<()> {
    let status = engine.status()?;
    if args.json {
        return emit_json(&status);
    }
    let root = status
        .root
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "-".into());
    emit(&format!(
        "version   {}\nbackend   {}\nroot      {root}\nstate     {}\nvolumes   {} ({} mounted) in {} sandboxes\nrequests  {} in flight\n",
        status.version,
        status.backend,
        status.state.display(),
        status.volumes,
        status.mounted,
        status.sandboxes,
        status.requests_in_flight,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imv::{Digest, ImageSpec};

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }

    #[test]
    fn short_digest_keeps_algorithm_and_12_hex() {
        let d = Digest::of(b"x");
        let s = short(&d);
        assert_eq!(s, format!("sha256:{}", &d.hex()[..12]));
    }

    #[test]
    fn mounts_file_takes_a_list_or_a_crictl_config() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.json");
        fs::write(
            &list,
            r#"[{"container_path":"/d","readonly":true,"image":{"image":"a"}}]"#,
        )
        .unwrap();
        let m = read_mounts(&list).unwrap();
        assert_eq!(m[0].image.as_ref().unwrap().image, "a");

        let config = dir.path().join("config.json");
        fs::write(
            &config,
            r#"{"metadata":{"name":"c"},"image":{"image":"busybox"},
            "mounts":[{"container_path":"/d","host_path":"/h"}]}"#,
        )
        .unwrap();
        let m = read_mounts(&config).unwrap();
        assert_eq!(m[0].host_path, "/h");

        let bad = dir.path().join("bad.json");
        fs::write(&bad, "{").unwrap();
        assert_eq!(
            read_mounts(&bad).unwrap_err().kind(),
            imv::ErrorKind::InvalidArgument
        );
        assert_eq!(
            read_mounts(&dir.path().join("none")).unwrap_err().kind(),
            imv::ErrorKind::NotFound
        );
    }

    #[test]
    fn describe_mounts_names_image_and_sub_path() {
        let m = Mount {
            container_path: "/c".into(),
            host_path: "/run/imv/image-volumes/s/ab".into(),
            readonly: true,
            image: Some(ImageSpec {
                image: "a:1".into(),
                ..Default::default()
            }),
            image_sub_path: "etc".into(),
            ..Default::default()
        };
        let plain = Mount {
            container_path: "/p".into(),
            host_path: "/h".into(),
            ..Default::default()
        };
        assert_eq!(
            describe_mounts(&[m, plain]),
            "/c -> /run/imv/image-volumes/s/ab (a:1, sub-path etc)\n/p -> /h (not an image volume, left alone)\n"
        );
    }

    #[test]
    fn index_media_types_are_multi_platform() {
        assert!(is_multi_platform("application/vnd.oci.image.index.v1+json"));
        assert!(is_multi_platform(
            "application/vnd.docker.distribution.manifest.list.v2+json"
        ));
        assert!(!is_multi_platform(
            "application/vnd.oci.image.manifest.v1+json"
        ));
    }
}
