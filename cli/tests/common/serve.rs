//! `imv serve` (the built binary) on a TestEnv's store and state, listening on a socket in
//! the test's directory; killed in Drop, even when a test fails, before the TestEnv tears
//! down the mounts.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use imv::service::Client;

use super::TestEnv;

/// A running `imv serve`.
pub struct Serve {
    child: Option<Child>,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Serve {
    /// Start it on `<env>/imv.sock` with `extra` arguments and wait until it answers.
    pub fn start(env: &TestEnv, extra: &[&str]) -> Serve {
        Self::start_at(env, &env.dir.join("imv.sock"), extra)
    }

    /// [`start`](Self::start) on `socket`.
    pub fn start_at(env: &TestEnv, socket: &Path, extra: &[&str]) -> Serve {
        let log = env.scratch("serve").join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imv"));
        if env.is_containerd() {
            let (daemon, namespace) = env.daemon();
            cmd.arg("--backend")
                .arg("containerd")
                .arg("--address")
                .arg(&daemon.address)
                .arg("--namespace")
                .arg(namespace);
        } else {
            cmd.arg("--root").arg(&env.root);
        }
        let child = cmd
            .arg("--state")
            .arg(&env.state)
            .arg("--log-level")
            .arg("debug,ttrpc=warn")
            .arg("serve")
            .arg("--socket")
            .arg(socket)
            .args(extra)
            .env_remove("IMV_SOCKET")
            .env_remove("IMV_EVENTS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn imv serve");
        let mut serve = Serve {
            child: Some(child),
            socket: socket.to_path_buf(),
            log,
        };
        let until = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(socket).is_err() {
            if let Some(status) = serve.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("imv serve exited with {status}:\n{}", serve.log());
            }
            assert!(
                Instant::now() < until,
                "imv serve did not listen:\n{}",
                serve.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        serve
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket)
            .unwrap()
            .with_timeout(Duration::from_secs(60))
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Wait (at most 60 s) for it to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < until, "imv serve did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait()
    }

    /// SIGKILL, then wait: a crash.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
