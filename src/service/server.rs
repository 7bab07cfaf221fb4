//! The daemon's side: a unix socket only the allowed peers may use, ttrpc served on it
//! (transport.rs), and an orderly stop.
//!
//! Requests run on plain threads, never on an async runtime's workers: the engine is
//! synchronous, and a backend that runs a tokio runtime of its own (containerd's) must
//! not be called from one.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::connections::Connections;
use super::handler::{Gate, Service};
use super::observer::CallObserver;
use super::peer::PeerCheck;
use super::transport::{self, Dispatch, Listening};
use crate::error::{Error, IoContext, Result};
use crate::volumes::ImageVolumes;

/// Where `imv serve` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/imv/imv.sock";

/// How many requests run at once unless told otherwise; more wait (until their deadline).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 32;

/// How many connections are served at once unless told otherwise; more are refused.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// How long a connection may go without a request unless told otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long the answers of the last requests may take to be written, once no request
/// runs any more, before the connections are closed regardless.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How the server listens and whom it serves.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The unix socket to create. A stale socket file there (no one listening) is
    /// replaced; a live one makes [`Server::start`] fail.
    pub socket: PathBuf,
    /// Peers (by effective uid at connect time, from `SO_PEERCRED`) that may use the
    /// service. Default: root only.
    pub allowed_uids: Vec<u32>,
    /// A group whose members may use the service too: the socket is then mode 0660 and
    /// owned by this group (instead of 0600), and a peer whose primary or supplementary
    /// group it is, is allowed.
    pub group: Option<u32>,
    /// At most this many requests run at once; default [`DEFAULT_MAX_CONCURRENT_REQUESTS`].
    pub max_concurrent_requests: usize,
    /// At most this many connections at once; more are refused (RESOURCE_EXHAUSTED).
    /// Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// A connection with no request for this long is closed (clients dial again); `None`
    /// keeps connections open. Default [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Option<Duration>,
    /// Told of every call answered (metrics); none by default.
    pub observer: Option<Arc<dyn CallObserver>>,
}

impl ServerConfig {
    /// Listen on `socket`, serve root only.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ServerConfig {
            socket: socket.into(),
            allowed_uids: vec![0],
            group: None,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            observer: None,
        }
    }
}

/// A running `imv.v1.ImageVolumes` server.
///
/// Stop it with [`stop_accepting`](Self::stop_accepting) then [`shutdown`](Self::shutdown)
/// (or just `shutdown`). Dropping it does what `shutdown` does.
pub struct Server {
    /// The accept loop, until [`stop_accepting`](Self::stop_accepting).
    listening: Option<Listening>,
    /// Whether the connections are closed (the server is done).
    done: bool,
    socket: PathBuf,
    /// The socket file we created, to remove only that one (dev, inode).
    socket_id: (u64, u64),
    /// Held while we serve: a second daemon on the same socket fails to take it.
    _lock: fs::File,
    gate: Arc<Gate>,
    connections: Arc<Connections>,
}

impl Server {
    /// Fail now, as [`start`](Self::start) would, when another daemon serves `socket`
    /// (AlreadyExists): for a caller with slow work to do before starting (opening a store
    /// another daemon holds waits for it). A stale socket file is removed.
    pub fn check_socket_free(socket: &Path) -> Result<()> {
        let socket = std::path::absolute(socket).at("resolving", socket)?;
        if socket.parent().is_some_and(|p| !p.exists()) {
            return Ok(());
        }
        let _lock = take_lock(&socket)?;
        clear_stale_socket(&socket)
    }

    /// Create the socket and serve `volumes` on it, on threads of its own.
    ///
    /// Fails with AlreadyExists when another daemon serves the socket (or something else
    /// that is not a socket is at the path), and with the error of whatever step failed
    /// otherwise.
    pub fn start(volumes: Arc<ImageVolumes>, config: ServerConfig) -> Result<Server> {
        let socket = std::path::absolute(&config.socket).at("resolving", &config.socket)?;
        if let Some(parent) = socket.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(parent)
                .at("creating socket directory", parent)?;
        }
        let lock = take_lock(&socket)?;
        clear_stale_socket(&socket)?;
        let listener = bind(&socket, config.group)?;
        let md = fs::symlink_metadata(&socket).at("inspecting", &socket)?;
        let socket_id = (md.dev(), md.ino());

        let gate = Arc::new(Gate::new(config.max_concurrent_requests));
        let service: Arc<dyn Dispatch> =
            Arc::new(Service::new(volumes, gate.clone(), config.observer.clone()));
        let connections = Arc::new(Connections::new(
            config.max_connections,
            config.idle_timeout,
        ));
        let check = PeerCheck {
            allowed_uids: config.allowed_uids.clone(),
            group: config.group,
            connections: Arc::clone(&connections),
        };
        let accept = move |stream: UnixStream| {
            let Some(connection) = check.admit(stream) else {
                return;
            };
            if let Err(e) = transport::serve(connection, Arc::clone(&service)) {
                tracing::warn!(error = %e, "no thread to serve a connection; closed it");
            }
        };
        let listening = match Listening::start(listener, accept) {
            Ok(listening) => listening,
            Err(e) => {
                let _ = fs::remove_file(&socket);
                return Err(Error::internal(format!(
                    "starting to serve on {}: {e}",
                    socket.display()
                )));
            }
        };
        tracing::info!(
            socket = %socket.display(),
            allowed_uids = ?config.allowed_uids,
            group = ?config.group,
            "serving imv.v1.ImageVolumes"
        );
        Ok(Server {
            listening: Some(listening),
            done: false,
            socket,
            socket_id,
            _lock: lock,
            gate,
            connections,
        })
    }

    /// The socket it listens on (absolute).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Requests running now.
    pub fn requests_in_flight(&self) -> usize {
        self.gate.running()
    }

    /// Stop taking work: no new connections (the socket is closed and removed), and
    /// requests that arrive on open connections are refused with UNAVAILABLE. Requests
    /// already running go on; see [`wait_idle`](Self::wait_idle).
    pub fn stop_accepting(&mut self) {
        let Some(mut listening) = self.listening.take() else {
            return;
        };
        self.gate.drain();
        listening.stop();
        self.remove_socket();
        tracing::info!(
            in_flight = self.gate.running(),
            "stopped accepting; finishing requests in flight"
        );
    }

    /// Wait until no request runs, at most `timeout` (`None`: as long as it takes).
    /// Whether none runs.
    pub fn wait_idle(&self, timeout: Option<Duration>) -> bool {
        self.gate.wait_idle(timeout)
    }

    /// Stop: stop accepting, let every running request finish and answer, close the
    /// connections, and remove the socket.
    pub fn shutdown(mut self) {
        self.stop_accepting();
        self.gate.wait_idle(None);
        self.disconnect();
        tracing::info!("server stopped");
    }

    /// Close the connections, once the answers of the requests that finished are written
    /// (no request runs any more when this is called).
    fn disconnect(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if !self.connections.wait_quiet(DISCONNECT_TIMEOUT) {
            tracing::warn!(
                timeout = ?DISCONNECT_TIMEOUT,
                "answers still being written; closing the connections regardless"
            );
        }
        self.connections.close_all();
    }

    /// Remove the socket file if it is still the one we made.
    fn remove_socket(&self) {
        match fs::symlink_metadata(&self.socket) {
            Ok(md) if (md.dev(), md.ino()) == self.socket_id => {
                if let Err(e) = fs::remove_file(&self.socket) {
                    tracing::warn!(socket = %self.socket.display(), error = %e, "could not remove the socket");
                }
            }
            Ok(_) => {
                tracing::warn!(socket = %self.socket.display(), "the socket was replaced by someone else; leaving it")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(socket = %self.socket.display(), error = %e, "could not inspect the socket")
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.stop_accepting();
        self.gate.wait_idle(None);
        self.disconnect();
    }
}

/// `<socket>.lock`, locked for the daemon's life: the kernel drops the lock when the
/// process dies, so a lock that cannot be taken means a live daemon.
fn take_lock(socket: &Path) -> Result<fs::File> {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .at("opening lock file", &path)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::already_exists(format!(
            "{}: another imv daemon is serving this socket (it holds {})",
            socket.display(),
            path.display()
        ))),
        Err(e) => Err(Error::io("locking", &path, e.into())),
    }
}

/// Remove a socket file no one listens on (left by a daemon that died); refuse to touch a
/// live socket or anything that is not a socket.
fn clear_stale_socket(socket: &Path) -> Result<()> {
    let md = match fs::symlink_metadata(socket) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("inspecting", socket, e)),
    };
    if !md.file_type().is_socket() {
        return Err(Error::already_exists(format!(
            "{} exists and is not a socket; not replacing it",
            socket.display()
        )));
    }
    match UnixStream::connect(socket) {
        Ok(_) => Err(Error::already_exists(format!(
            "{}: something is listening on this socket already",
            socket.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %socket.display(), "replacing a stale socket");
            fs::remove_file(socket).at("removing stale socket", socket)
        }
        Err(e) => Err(Error::io("probing existing socket", socket, e)),
    }
}

/// Listen on `socket` with its final mode and owner from the first moment: bind in a
/// private (0700) directory beside it, set mode and group there, then rename into place.
/// (Binding in place would leave it open, with the umask's mode, until the chmod.)
fn bind(socket: &Path, group: Option<u32>) -> Result<UnixListener> {
    let parent = socket.parent().unwrap_or(Path::new("/"));
    let private = parent.join(format!(".imv-bind-{}", std::process::id()));
    // Left by a daemon of the same pid that died here (after a reboot, say).
    let _ = fs::remove_dir_all(&private);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .at("creating", &private)?;
    let result = (|| {
        let tmp = private.join("sock");
        let listener = UnixListener::bind(&tmp).at("binding", &tmp)?;
        let mode = match group {
            Some(gid) => {
                std::os::unix::fs::chown(&tmp, None, Some(gid)).at("chown", &tmp)?;
                0o660
            }
            None => 0o600,
        };
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).at("chmod", &tmp)?;
        fs::rename(&tmp, socket).at("moving the socket into place at", socket)?;
        Ok(listener)
    })();
    if let Err(e) = fs::remove_dir_all(&private) {
        tracing::warn!(path = %private.display(), error = %e, "could not remove");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_in_use_or_a_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live.sock");
        let _listener = UnixListener::bind(&live).unwrap();
        assert!(clear_stale_socket(&live).unwrap_err().is_already_exists());

        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(clear_stale_socket(&file).unwrap_err().is_already_exists());

        let stale = dir.path().join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        clear_stale_socket(&stale).unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn bind_sets_the_mode_before_anyone_can_connect() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let _listener = bind(&socket, None).unwrap();
        let md = fs::metadata(&socket).unwrap();
        assert!(md.file_type().is_socket());
        assert_eq!(md.mode() & 0o777, 0o600);
        // The private directory is gone.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        UnixStream::connect(&socket).unwrap();

        let grouped = dir.path().join("g.sock");
        let gid = rustix::process::getegid().as_raw();
        let _listener = bind(&grouped, Some(gid)).unwrap();
        let md = fs::metadata(&grouped).unwrap();
        assert_eq!(md.mode() & 0o777, 0o660);
        assert_eq!(md.gid(), gid);
    }

    #[test]
    fn the_lock_keeps_a_second_daemon_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let held = take_lock(&socket).unwrap();
        assert!(take_lock(&socket).unwrap_err().is_already_exists());
        drop(held);
        take_lock(&socket).unwrap();
    }
}
