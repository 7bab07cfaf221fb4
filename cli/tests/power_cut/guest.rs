//! The guest: a Debian kernel (scripts/guest-kernel unpacks one into target/guest-kernel),
//! an initramfs of busybox, imv, containerd and ctr with the libraries they link, and a
//! virtual disk; booted with QEMU and, when the guest says it works, killed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where scripts/guest-kernel leaves the kernel: `vmlinuz` and `lib/modules/<version>`.
pub fn kernel_dir() -> PathBuf {
    std::env::var_os("IMV_GUEST_KERNEL").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/guest-kernel"),
        PathBuf::from,
    )
}

/// The kernel modules the guest loads, dependencies first: the virtio disk, ext4 (and
/// the crc32c it asks the crypto API for), overlay for containerd's snapshots.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "overlay",
];

/// Build the initramfs at `out` from `root` (a directory filled here): `init` as /init,
/// the programs and their libraries, the modules, `images` (name, archive) as /images.
pub fn build_initramfs(root: &Path, out: &Path, init: &str, images: &[(String, PathBuf)]) {
    for dir in [
        "bin", "proc", "sys", "dev", "run", "tmp", "disk", "images", "modules",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    write_executable(&root.join("init"), init.as_bytes());
    copy(Path::new("/bin/busybox"), &root.join("bin/busybox"));
    let programs = [
        PathBuf::from(env!("CARGO_BIN_EXE_imv")),
        which("containerd"),
        which("ctr"),
    ];
    for program in &programs {
        let name = program.file_name().unwrap();
        copy(program, &root.join("bin").join(name));
        for lib in libraries(program) {
            copy(&lib, &root.join(lib.strip_prefix("/").unwrap()));
        }
    }
    std::fs::create_dir_all(root.join("etc/containerd")).unwrap();
    std::fs::write(root.join("etc/containerd/config.toml"), CONTAINERD_CONFIG).unwrap();
    let order = modules(&root.join("modules"));
    std::fs::write(root.join("modules.order"), order.join("\n")).unwrap();
    for (name, archive) in images {
        copy(archive, &root.join("images").join(name));
    }
    // newc, as the kernel unpacks it; busybox's cpio, from the list find makes.
    let list = Command::new("find")
        .arg(".")
        .current_dir(root)
        .output()
        .unwrap()
        .stdout;
    let mut cpio = Command::new("busybox")
        .args(["cpio", "-o", "-H", "newc"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut cpio.stdin.take().unwrap(), &list).unwrap();
    assert!(cpio.wait().unwrap().success(), "cpio failed");
}

/// containerd in the guest: its own directories on the virtual disk (root) and the
/// guest's /run (state), CRI and the snapshotters that need other filesystems off.
const CONTAINERD_CONFIG: &str = r#"version = 2
root = "/disk/containerd"
state = "/run/ctrd/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]
[grpc]
  address = "/run/ctrd/ctrd.sock"
[ttrpc]
  address = "/run/ctrd/ctrd.sock.ttrpc"
"#;

fn which(program: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "no {program} on the PATH (scripts/setup installs it)"
    );
    PathBuf::from(path)
}

/// The shared libraries `program` loads, as ldd resolves them here.
fn libraries(program: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(program).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// Copy [`MODULES`] and what they depend on into `dir`; their names in load order.
fn modules(dir: &Path) -> Vec<String> {
    let tree = std::fs::read_dir(kernel_dir().join("lib/modules"))
        .unwrap()
        .next()
        .expect("no lib/modules/<version> in the guest kernel")
        .unwrap()
        .path();
    let mut found = std::collections::HashMap::new();
    index_modules(&tree.join("kernel"), &mut found);
    let mut order = Vec::new();
    for name in MODULES {
        load_order(name, &found, &mut order);
    }
    for name in &order {
        copy(&found[name], &dir.join(format!("{name}.ko")));
    }
    order
}

fn index_modules(dir: &Path, found: &mut std::collections::HashMap<String, PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            index_modules(&path, found);
        } else if let Some(name) = path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .strip_suffix(".ko")
        {
            found.insert(name.replace('-', "_"), path.clone());
        }
    }
}

/// `name` after its dependencies (the `depends=` of its .modinfo), each once.
fn load_order(
    name: &str,
    found: &std::collections::HashMap<String, PathBuf>,
    order: &mut Vec<String>,
) {
    let name = name.replace('-', "_");
    if order.contains(&name) {
        return;
    }
    let path = found
        .get(&name)
        .unwrap_or_else(|| panic!("no module {name} in the guest kernel"));
    let bytes = std::fs::read(path).unwrap();
    let key = b"\0depends=";
    if let Some(at) = bytes.windows(key.len()).position(|w| w == key) {
        let rest = &bytes[at + key.len()..];
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        for dep in String::from_utf8_lossy(&rest[..end]).split(',') {
            if !dep.is_empty() {
                load_order(dep, found, order);
            }
        }
    }
    order.push(name);
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
}

fn write_executable(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A sparse file of `size` bytes with a new ext4 file system: the guest's disk.
pub fn make_disk(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One boot's console lines, and whether the host cut it short.
pub struct Boot {
    pub lines: Vec<String>,
    /// When each line came, from QEMU's start.
    pub times: Vec<Duration>,
    pub cut: bool,
}

/// When to cut the power: `delay` after the guest's `steps`-th "PC STEP" line of work
/// (after "PC WORK-BEGIN" when 0), so cuts fall over the whole workload whatever the
/// speed of the emulation.
#[derive(Clone, Copy, Debug)]
pub struct Cut {
    pub steps: usize,
    pub delay: Duration,
}

/// Boot the guest with `cmdline` added; with `cut`, kill QEMU then (SIGKILL: the pages
/// the guest had not written go with it). Panics if a boot takes longer than `limit`.
pub fn boot(
    kernel: &Path,
    initrd: &Path,
    disk: &Path,
    cmdline: &str,
    cut: Option<Cut>,
    limit: Duration,
) -> Boot {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", &accel(), "-m", "1536", "-smp", "2"])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=-1 loglevel=3 {cmdline}"))
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,cache=writeback",
            disk.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64 (scripts/setup installs qemu-system-x86)");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim_end_matches('\r').to_owned()).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    let mut times = Vec::new();
    let mut cut_at = None;
    let mut steps = None;
    loop {
        if let Some(at) = cut_at {
            if Instant::now() >= at {
                kill(&mut child);
                drain(&rx, &mut lines);
                times.resize(lines.len(), started.elapsed());
                return Boot {
                    lines,
                    times,
                    cut: true,
                };
            }
        }
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(line) => {
                if line == "PC WORK-BEGIN" {
                    steps = Some(0);
                } else if line.starts_with("PC STEP ") {
                    steps = steps.map(|n| n + 1);
                }
                if let (Some(cut), Some(n), None) = (cut, steps, cut_at) {
                    if n == cut.steps {
                        cut_at = Some(Instant::now() + cut.delay);
                    }
                }
                lines.push(line);
                times.push(started.elapsed());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if started.elapsed() > limit {
            kill(&mut child);
            panic!(
                "the guest took over {limit:?}; its console:\n{}",
                lines.join("\n")
            );
        }
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(
        status.success(),
        "qemu exited {status}: {err}\n{}",
        lines.join("\n")
    );
    Boot {
        lines,
        times,
        cut: false,
    }
}

/// QEMU's accelerator: `IMV_POWER_CUT_ACCEL`, else TCG (software emulation). KVM is
/// faster where it works; on this project's machine kind (a Firecracker VM, no nested
/// virtualisation in its CPU flags) a KVM guest hangs before the kernel prints a line.
fn accel() -> String {
    std::env::var("IMV_POWER_CUT_ACCEL").unwrap_or_else(|_| "tcg".to_owned())
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn drain(rx: &mpsc::Receiver<String>, lines: &mut Vec<String>) {
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        lines.push(line);
    }
}
