//! The command line, as clap derive types. Only parsing lives here; `commands` runs it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::exit;
use crate::mountarg;

const ABOUT: &str =
    "Kubernetes image volumes (KEP-4639): mount an OCI image read-only for a pod sandbox";

const LONG_ABOUT: &str = "\
Kubernetes image volumes (KEP-4639): mount an OCI image read-only for a pod sandbox.

imv does what containerd's CRI plugin does for a CRI mount that carries an image
(mutateMounts, cleanupImageMounts): it mounts the image at
<state>/image-volumes/<sandbox>/<image digest hex>, read-only, and sets the mount's
host_path there; cleanup of the sandbox unmounts and removes it all. Images come from
the embedded store under --root (see `imv import`) or, with --backend containerd, from a
running containerd.

OCI artifacts (models, files pushed with `oras`) mount the same way: each raw layer is a
file named by its org.cncf.model.filepath or org.opencontainers.image.title annotation
(the stored blob itself, not a copy), and tar layers are extracted.";

/// Global options get their own heading, so a command's own options come first.
const GLOBAL: &str = "Global options";

const AFTER_HELP: &str = "\
Environment:
  IMV_ROOT, IMV_STATE, IMV_LOG   defaults for --root, --state, --log-level
  IMV_BACKEND                    default for --backend
  IMV_LOCK_TIMEOUT               default for --lock-timeout
  CONTAINERD_ADDRESS, CONTAINERD_NAMESPACE
                                 defaults for --address, --namespace (as for ctr)
  IMV_SOCKET                     default for --socket
  IMV_LAYER_FORMAT               erofs or directory: how the embedded store keeps the
                                 layers it unpacks from now on (default: erofs where the
                                 kernel mounts EROFS images from files, Linux 6.12+)

Example (as root):
  imv import sample.tar --name example.com/app:1
  imv mutate --sandbox pod1 --mount image=example.com/app:1,container-path=/data
  imv cleanup --sandbox pod1 --release

With containerd's images (CRI's namespace k8s.io by default):
  imv --backend containerd mutate --sandbox pod1 --mount image=docker.io/library/busybox:latest,container-path=/data";

#[derive(Debug, Parser)]
#[command(name = "imv", version, about = ABOUT, long_about = LONG_ABOUT)]
#[command(after_help = format!("{AFTER_HELP}\n\n{}", exit::HELP))]
pub struct Cli {
    /// Persistent store: image content, unpacked layers, metadata.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "IMV_ROOT",
        value_name = "DIR",
        default_value = "/var/lib/imv"
    )]
    pub root: PathBuf,

    /// Runtime state: the mounted volumes live under <DIR>/image-volumes.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "IMV_STATE",
        value_name = "DIR",
        default_value = "/run/imv"
    )]
    pub state: PathBuf,

    /// How long to wait for the embedded store while another command (another process)
    /// works on it: commands on one --root take turns. A running `imv serve` holds its
    /// store: go through it with --socket instead.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "IMV_LOCK_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = imv::DEFAULT_LOCK_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64)
    )]
    pub lock_timeout: u64,

    /// Where images, snapshots and leases live: `local` (the embedded store under --root)
    /// or `containerd` (a containerd daemon at --address, namespace --namespace).
    /// import, rmi and gc work on the embedded store only.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "IMV_BACKEND",
        value_enum,
        default_value_t = BackendKind::Local
    )]
    pub backend: BackendKind,

    /// containerd's socket (with --backend containerd).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "CONTAINERD_ADDRESS",
        value_name = "SOCKET",
        default_value = imv::backend::containerd::DEFAULT_ADDRESS
    )]
    pub address: PathBuf,

    /// containerd namespace to work in (with --backend containerd); CRI's is k8s.io.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "CONTAINERD_NAMESPACE",
        value_name = "NS",
        default_value = imv::backend::containerd::DEFAULT_NAMESPACE
    )]
    pub namespace: String,

    /// What to log to stderr: a level (error, warn, info, debug, trace) or a
    /// tracing filter such as `imv=debug,info`.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "IMV_LOG",
        value_name = "FILTER",
        default_value = "warn",
        value_parser = parse_filter
    )]
    pub log_level: String,

    /// Talk to the imv daemon on this unix socket instead of using the store here (every
    /// command but serve; import sends the absolute PATH, which the daemon reads on this
    /// host). For `imv serve`: where to listen (default /run/imv/imv.sock).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "IMV_SOCKET",
        value_name = "PATH"
    )]
    pub socket: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The `--backend` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The embedded store under --root.
    Local,
    /// A containerd daemon at --address.
    Containerd,
}

/// Check a log filter at parse time, so a typo is a usage error and not silence.
fn parse_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import an image from an OCI layout directory, an OCI archive or a `docker save` tarball.
    #[command(
        long_about = "Import the image(s) at PATH into the embedded store and print each image's \
name and digest. PATH is an OCI image layout directory, an OCI archive (a tar of such a \
directory) or a `docker save` tarball. Blobs are verified against their digests. With \
--socket, the daemon imports into its store while it runs: it reads PATH (made absolute \
here) on this host, with its own privileges.

Names come from the source: containerd's image name annotation, a full \
org.opencontainers.image.ref.name, or a docker save RepoTag. A layout whose images are \
tagged with a bare tag (`one`, as umoci, `skopeo copy oci:DIR:TAG` and buildah write them) \
names them with --base-name REPO (REPO:one, as `ctr images import --base-name`); PATH:TAG \
(or --tag TAG) imports only the image tagged TAG, which --name can then name. OCI \
artifacts import the same way (a layout `oras push --oci-layout DIR:TAG` wrote, say).",
        after_help = "Examples:
  imv import ./app-oci/ --name example.com/app:1
  imv import ./umoci-layout/ --base-name example.com/imgs      # example.com/imgs:one, ...
  imv import ./umoci-layout/:one --name example.com/one:1
  imv --socket /run/imv/imv.sock import /srv/images/app.tar --name example.com/app:2
  skopeo copy docker://docker.io/library/busybox:latest oci-archive:busybox.tar:busybox:latest
  imv import busybox.tar
  oras push --oci-layout ./models:v1 model.safetensors config.json
  imv import ./models --base-name example.com/models   # example.com/models:v1"
    )]
    Import(ImportArgs),

    /// List the images in the store.
    #[command(
        long_about = "List the images in the store: name, short digest of the manifest (or of the \
index, for a multi-platform image), its kind and media type, and for an OCI artifact its \
artifact type (its artifactType, else its config's media type; `-` for an image).",
        after_help = "Examples:
  imv images
  imv images --json | jq -r '.[].name'"
    )]
    Images(JsonArgs),

    /// Remove images from the store, then collect garbage.
    #[command(
        long_about = "Remove the images REF names (name, name@digest, digest or image ID) and \
collect what nothing references any more. Every REF is tried; the exit code is that of the \
first failure.",
        after_help = "Example:
  imv rmi example.com/app:1 example.com/app:2"
    )]
    Rmi(RmiArgs),

    /// Remove snapshots and blobs that no image, lease or volume references.
    #[command(
        long_about = "Remove snapshots and blobs that no image, lease or volume references, \
and the partial files of imports that were killed (content/ingest/ files no running import \
holds). Prints what it removed. A layer kept as an EROFS image is unmounted from \
<root>/snapshots/<chain id>/fs before it is removed; the images of layers still in use stay \
mounted there, also after imv exits (unmount them before deleting a store by hand).",
        after_help = "Example:
  imv gc"
    )]
    Gc(JsonArgs),

    /// Mount image volumes for a sandbox and print the mounts with host_path set.
    #[command(
        long_about = "Do what a container runtime does when it creates a container with image \
volumes: for each mount that carries an image, mount the image read-only under \
<state>/image-volumes/<sandbox>/ and set the mount's host_path, and its image.image_ref to the \
image's ID (KEP-5365: its config's digest, or an artifact's manifest digest, as containerd's \
PullImage returns it; shown with --json). Mounts come from --mount (repeatable) and from \
--mounts FILE (a JSON list of CRI mounts, as in crictl's container config, or such a config \
with a \"mounts\" field); those from the file come first. Mounts without an image are passed \
through unchanged, and every other field, mount_options included, is passed on as it came. \
Mounting the same image twice for a sandbox reuses the volume.",
        after_help = "--mount keys:
  image=REF            the image: name, name@digest, digest or image ID (required)
  container-path=PATH  where the container sees it (required)
  sub-path=P           a directory inside the image to mount instead of its root
  readonly=true|false  default true; image volumes must be read-only, so false is refused

Examples:
  imv mutate --sandbox pod1 --mount image=example.com/app:1,container-path=/data
  imv mutate --sandbox pod1 --platform linux/arm64 \\
      --mount image=example.com/app:1,container-path=/etc/app,sub-path=etc/app
  echo '[{\"container_path\":\"/data\",\"readonly\":true,\"image\":{\"image\":\"example.com/app:1\"}}]' \\
      | imv mutate --sandbox pod1 --mounts - --json"
    )]
    Mutate(MutateArgs),

    /// Unmount and remove a sandbox's image volumes.
    #[command(
        long_about = "Unmount (recursively) and remove every image volume of the sandbox, as \
containerd does when a sandbox is removed. Idempotent: cleaning up twice, or after a crash \
half-way, succeeds. With --release, also drop the sandbox's lease (see `imv release`).",
        after_help = "Example:
  imv cleanup --sandbox pod1 --release"
    )]
    Cleanup(CleanupArgs),

    /// Clean up a sandbox and drop its lease, so what only it kept can be garbage collected.
    #[command(
        long_about = "Clean up the sandbox as `imv cleanup` does, each view removed from the \
snapshotter it was made in (the sandbox's lease records it; no --snapshotter needed), then \
drop the sandbox's lease: the snapshots it kept alive become garbage for `imv gc`. \
containerd does this when the pod sandbox is removed, once its containers have stopped. A \
missing lease is fine.

Volumes still mounted are unmounted (on the host; a container that is still running keeps \
its own bind of the volume). With the embedded store, garbage collection keeps every layer \
a mount still uses, in any mount namespace, so such a container's files stay until it \
exits; the next `imv gc` after that takes them. (With --backend containerd, containerd's \
own garbage collection decides, as for its own image volumes: release a sandbox after its \
containers stopped.)",
        after_help = "Example:
  imv release --sandbox pod1"
    )]
    Release(SandboxArgs),

    /// List the image volumes under the state directory.
    #[command(
        long_about = "List the image volumes found under <state>/image-volumes: the sandbox, the \
image, its digest (of the index, for a multi-platform image: the name of the volume's \
directory), whether the target is a mountpoint right now, and the target.",
        after_help = "Examples:
  imv volumes
  imv volumes --sandbox pod1 --json"
    )]
    Volumes(VolumesArgs),

    /// Show what serves image volumes here: version, backend, directories, counts.
    #[command(
        long_about = "Show the version, the backend, the store and state directories, and how \
many image volumes (mounted or not) and sandboxes there are. With --socket, the daemon's; \
it also says how many requests it is serving.",
        after_help = "Examples:
  imv status
  imv --socket /run/imv/imv.sock status --json"
    )]
    Status(JsonArgs),

    /// Serve the ttrpc API (imv.v1.ImageVolumes) on a unix socket until SIGTERM or SIGINT.
    #[command(
        long_about = "Run the daemon: serve imv.v1.ImageVolumes (proto/imv/v1/imv.proto) over \
ttrpc on the unix socket given by --socket (default /run/imv/imv.sock), for a container \
runtime or a shim. The socket is mode 0600 (0660 with --group) and each connection's peer \
credentials are checked: only the --allow-uid users (root by default) and members of \
--group are served; others are disconnected and logged. A stale socket file is replaced; a \
socket a live daemon serves is not. On SIGTERM or SIGINT the daemon stops accepting, \
finishes the requests in flight, removes the socket and exits 0; a second signal exits \
at once. Logs go to stderr (--log-level, IMV_LOG; `info` logs every request).",
        after_help = "Environment:
  IMV_ALLOW_UIDS, IMV_SOCKET_GROUP, IMV_MAX_REQUESTS, IMV_MAX_CONNECTIONS,
  IMV_IDLE_TIMEOUT, IMV_EVENTS_ADDRESS                defaults for the options above

Examples:
  imv --log-level info serve
  imv serve --socket /run/imv/imv.sock --group imv --allow-uid 0,1000
  imv --socket /run/imv/imv.sock volumes
  imv --backend containerd --namespace k8s.io serve   # and `ctr events` shows its events"
    )]
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Users (uids) allowed to use the socket. Repeatable or comma-separated.
    #[arg(
        long = "allow-uid",
        env = "IMV_ALLOW_UIDS",
        value_name = "UID",
        value_delimiter = ',',
        default_value = "0"
    )]
    pub allow_uids: Vec<u32>,

    /// Also allow the members of this group (a name or a gid): the socket becomes mode
    /// 0660, owned by the group.
    #[arg(long, env = "IMV_SOCKET_GROUP", value_name = "GROUP")]
    pub group: Option<String>,

    /// At most this many requests run at once; more wait for a slot (until their deadline).
    #[arg(
        long,
        env = "IMV_MAX_REQUESTS",
        value_name = "N",
        default_value_t = imv::service::DEFAULT_MAX_CONCURRENT_REQUESTS,
        value_parser = clap::value_parser!(usize)
    )]
    pub max_requests: usize,

    /// At most this many connections at once; more are refused (and told so, as
    /// "resource exhausted"). Each connection costs 1 or 2 threads while idle, and one
    /// per request running on it (at most 8).
    #[arg(
        long,
        env = "IMV_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = imv::service::DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::value_parser!(usize)
    )]
    pub max_connections: usize,

    /// Close a connection that had no request for this many seconds (clients dial again);
    /// 0 keeps connections open.
    #[arg(
        long,
        env = "IMV_IDLE_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = imv::service::DEFAULT_IDLE_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64)
    )]
    pub idle_timeout: u64,

    /// Serve metrics in Prometheus' text format at http://ADDRESS/metrics: calls by method
    /// and gRPC code (imv_calls_total), their latency (imv_call_duration_seconds), volumes
    /// mounted (imv_volumes_mounted), bytes and time unpacked (imv_unpack_bytes_total,
    /// imv_unpack_duration_seconds). An IP and a port, e.g. 127.0.0.1:9464; off by default.
    /// Anyone who can reach the address can read the metrics.
    #[arg(long, env = "IMV_METRICS_ADDRESS", value_name = "IP:PORT")]
    pub metrics_address: Option<std::net::SocketAddr>,

    /// With --backend containerd, events (a volume mounted, taken over after a restart,
    /// cleaned up; a sandbox released) go to containerd's event service, in --namespace,
    /// under topics /image-volumes/{mount,reuse,cleanup,release}: `ctr events` shows them.
    /// This is containerd's ttrpc socket; default: --address with ".ttrpc" appended, where
    /// containerd serves it. A containerd that is down delays or drops events, never a
    /// request.
    #[arg(long, env = "IMV_EVENTS_ADDRESS", value_name = "PATH")]
    pub events_address: Option<PathBuf>,

    /// Publish no events.
    #[arg(long, conflicts_with = "events_address")]
    pub no_events: bool,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// OCI layout directory, OCI archive, or `docker save` tarball; PATH:TAG imports only
    /// the image tagged TAG.
    pub path: PathBuf,

    /// Name to give the image (when PATH holds exactly one, or TAG picks one).
    #[arg(long, value_name = "REF", conflicts_with = "base_name")]
    pub name: Option<String>,

    /// Repository that names the images tagged with a bare tag: REPO:TAG.
    #[arg(long, value_name = "REPO")]
    pub base_name: Option<String>,

    /// Import only the image tagged TAG (as PATH:TAG does).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images to remove: name, name@digest, digest or image ID.
    #[arg(value_name = "REF", required = true)]
    pub refs: Vec<String>,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// The pod sandbox ID.
    #[arg(long, value_name = "ID")]
    pub sandbox: String,
}

#[derive(Debug, Args)]
pub struct MutateArgs {
    /// The pod sandbox ID (a single path component).
    #[arg(long, value_name = "ID")]
    pub sandbox: String,

    /// Snapshotter to unpack into and take the view from.
    #[arg(long, value_name = "NAME", default_value = imv::DEFAULT_SNAPSHOTTER)]
    pub snapshotter: String,

    /// Platform to pick from a multi-platform image: os/arch[/variant]. Default: this host's.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,

    /// An image mount: image=REF,container-path=PATH[,sub-path=P][,readonly=true|false].
    /// Repeatable.
    #[arg(long = "mount", value_name = "MOUNT", value_parser = mountarg::parse,
          required_unless_present = "mounts")]
    pub mount: Vec<imv::Mount>,

    /// Read CRI mounts from a JSON file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub mounts: Option<PathBuf>,

    /// SELinux context for every file of the volumes (the context= mount option), e.g.
    /// the pod's mount label system_u:object_r:container_file_t:s0:c1,c2. Refused on a
    /// host without SELinux, unless --ignore-label-without-selinux.
    #[arg(long, value_name = "LABEL")]
    pub mount_label: Option<String>,

    /// With --mount-label on a host without SELinux: mount without the label.
    #[arg(long, requires = "mount_label")]
    pub ignore_label_without_selinux: bool,

    /// Print the mounts as JSON (CRI field names) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// The pod sandbox ID.
    #[arg(long, value_name = "ID")]
    pub sandbox: String,

    /// Snapshotter the volumes' views were taken from.
    #[arg(long, value_name = "NAME", default_value = imv::DEFAULT_SNAPSHOTTER)]
    pub snapshotter: String,

    /// Also drop the sandbox's lease (as `imv release` does).
    #[arg(long)]
    pub release: bool,
}

#[derive(Debug, Args)]
pub struct VolumesArgs {
    /// Only the volumes of this sandbox.
    #[arg(long, value_name = "ID")]
    pub sandbox: Option<String>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example() {
        for sub in Cli::command().get_subcommands() {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("Example"),
                "`imv {}` has no example",
                sub.get_name()
            );
        }
    }

    #[test]
    fn mount_and_mounts_combine() {
        let cli = Cli::try_parse_from([
            "imv",
            "mutate",
            "--sandbox",
            "s",
            "--mounts",
            "m.json",
            "--mount",
            "image=a,container-path=/a",
            "--mount",
            "image=b,container-path=/b",
        ])
        .unwrap();
        let Command::Mutate(m) = cli.command else {
            panic!("not mutate")
        };
        assert_eq!(m.mount.len(), 2);
        assert_eq!(m.mounts.as_deref(), Some(std::path::Path::new("m.json")));
        assert_eq!(m.snapshotter, imv::DEFAULT_SNAPSHOTTER);
    }

    #[test]
    fn mutate_needs_a_mount_and_a_sandbox() {
        let e = Cli::try_parse_from(["imv", "mutate", "--sandbox", "s"]).unwrap_err();
        assert_eq!(e.exit_code(), i32::from(exit::USAGE));
        let e = Cli::try_parse_from(["imv", "mutate", "--mount", "image=a,container-path=/a"])
            .unwrap_err();
        assert_eq!(e.exit_code(), i32::from(exit::USAGE));
    }

    #[test]
    fn backend_flags_parse_with_defaults() {
        let cli = Cli::try_parse_from(["imv", "images"]).unwrap();
        assert_eq!(cli.backend, BackendKind::Local);
        let cli = Cli::try_parse_from([
            "imv",
            "--backend",
            "containerd",
            "volumes",
            "--namespace",
            "ns1",
        ])
        .unwrap();
        assert_eq!(cli.backend, BackendKind::Containerd);
        assert_eq!(cli.namespace, "ns1");
        let e = Cli::try_parse_from(["imv", "--backend", "docker", "images"]).unwrap_err();
        assert_eq!(e.exit_code(), i32::from(exit::USAGE));
    }

    #[test]
    fn bad_log_filter_is_a_usage_error() {
        let e = Cli::try_parse_from(["imv", "--log-level", "imv=loud", "images"]).unwrap_err();
        assert_eq!(e.exit_code(), i32::from(exit::USAGE));
    }
}
