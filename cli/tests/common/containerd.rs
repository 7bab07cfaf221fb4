//! A throwaway containerd for the tests: its own directory under /tmp (config, root, state,
//! sockets), the CRI plugin off (so no CNI is needed), never the system's containerd.
//!
//! The config is `scripts/containerd-test.toml` with `@DIR@` replaced, the same file
//! `scripts/containerd-test-daemon` uses, so the Go tests get the same daemon.
//!
//! [`Containerd::shared`] is one daemon per test binary, stopped at process exit; tests on
//! it isolate themselves with a namespace each ([`unique_namespace`]). A test that restarts
//! containerd starts its own with [`Containerd::start`]; dropping it stops it (SIGTERM, then
//! SIGKILL), unmounts whatever is left under its directory and removes the directory.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const CONFIG_TEMPLATE: &str = include_str!("../../../scripts/containerd-test.toml");

/// One containerd daemon owned by the test process.
pub struct Containerd {
    pub dir: PathBuf,
    pub address: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Containerd {
    /// Start a containerd under a fresh directory and wait until it serves its socket.
    /// Panics (never skips) when containerd is not installed: CI installs it.
    pub fn start() -> Containerd {
        Self::start_without(&[])
    }

    /// [`Containerd::start`], with the plugins `disabled` (IDs such as
    /// `io.containerd.snapshotter.v1.overlayfs`) off as well.
    pub fn start_without(disabled: &[&str]) -> Containerd {
        // Short, because the socket path must fit in sun_path (108 bytes).
        let dir = tempfile::Builder::new()
            .prefix("imv-ctd-")
            .tempdir_in("/tmp")
            .expect("tempdir")
            .keep();
        let mut config = CONFIG_TEMPLATE.replace("@DIR@", dir.to_str().expect("utf-8 temp dir"));
        let list = "disabled_plugins = [\n";
        assert!(config.contains(list), "the test config has no {list:?}");
        let extra: String = disabled.iter().map(|p| format!("  \"{p}\",\n")).collect();
        config = config.replacen(list, &format!("{list}{extra}"), 1);
        fs::write(dir.join("config.toml"), config).unwrap();
        let ctd = Containerd {
            address: dir.join("containerd.sock"),
            dir,
            child: Mutex::new(None),
        };
        ctd.spawn();
        ctd
    }

    /// The daemon every test of this binary shares (one namespace per test).
    pub fn shared() -> &'static Containerd {
        static SHARED: OnceLock<Containerd> = OnceLock::new();
        SHARED.get_or_init(|| {
            extern "C" fn stop_shared() {
                if let Some(ctd) = SHARED.get() {
                    ctd.teardown();
                }
            }
            // Statics are never dropped; the test harness ends with exit(), which runs this.
            // SAFETY: registering a plain extern "C" fn with no arguments.
            unsafe { libc::atexit(stop_shared) };
            Containerd::start()
        })
    }

    fn spawn(&self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting containerd: {e} (the containerd tests need containerd and ctr; CI installs the `containerd` package)")
            });
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&self.address).is_err() {
            if let Some(status) = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .unwrap()
                .try_wait()
                .unwrap()
            {
                panic!("containerd exited with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not serve {} within 20s; log:\n{}",
                self.address.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Stop the daemon: SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&self) {
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return;
        };
        // SAFETY: kill(2) with a pid and a signal number: no memory is passed.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        // A stale socket would make the next start look ready before it is.
        let _ = fs::remove_file(&self.address);
    }

    /// Stop and start again over the same directory (images and snapshots survive).
    pub fn restart(&self) {
        self.stop();
        self.spawn();
    }

    /// Run `ctr` against this daemon in `namespace`; its stdout. Panics when it fails.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> String {
        super::run(
            Command::new("ctr")
                .arg("--address")
                .arg(&self.address)
                .arg("--namespace")
                .arg(namespace)
                .args(args),
        )
    }

    fn teardown(&self) {
        self.stop();
        imv_testkit::mounts::unmount_under(&self.dir);
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("teardown: removing {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A namespace no other test of this process uses.
pub fn unique_namespace() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("imvtest-{}", N.fetch_add(1, Ordering::SeqCst))
}

/// One snapshot as `ctr snapshots ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub key: String,
    pub parent: Option<String>,
    pub kind: String,
}

/// Parse `ctr snapshots ls` (KEY PARENT KIND; an extraction key has a space in it).
pub fn parse_snapshots(table: &str) -> Vec<Snapshot> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let kind = (*fields.last()?).to_owned();
            let rest = &fields[..fields.len() - 1];
            let (key, parent) = match rest {
                [key] => ((*key).to_owned(), None),
                [key @ .., parent] if parent.starts_with("sha256:") && !key.is_empty() => {
                    (key.join(" "), Some((*parent).to_owned()))
                }
                _ => (rest.join(" "), None),
            };
            Some(Snapshot { key, parent, kind })
        })
        .collect()
}

/// Write the OCI layout directory `dir` as an archive `ctr images import` takes.
pub fn archive_dir(dir: &Path, out: &Path) {
    super::run(
        Command::new("tar")
            .arg("-C")
            .arg(dir)
            .arg("-cf")
            .arg(out)
            .arg("."),
    );
}
