//! How many connections the daemon holds, and how long one may sit idle.
//!
//! ttrpc's synchronous server gives every connection a reader thread and a pool of handler
//! threads, and has no limit on connections nor on idleness: 200 idle peers cost some
//! 1,600 threads, and under a pids limit the daemon then failed to spawn threads. Here the
//! accept hook admits at most `max` connections (the next are refused and told why, with
//! RESOURCE_EXHAUSTED, which clients treat as "try again"), each connection's handler pool
//! is small (see `server.rs`), and a watchdog closes a connection that has had no request
//! in flight for `idle` (clients dial again on their next call: the Go client does so by
//! itself). A connection's record lives in its ttrpc connection data, so it goes when
//! ttrpc drops the connection, whatever the reason.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::server::Peer;

/// Key of a connection's [`Connection`] in its ttrpc connection data.
pub(crate) const CONNECTION_KEY: &str = "imv.connection";

/// The connections of one server.
pub(crate) struct Connections {
    shared: Arc<Shared>,
}

struct Shared {
    max: usize,
    idle: Option<Duration>,
    live: AtomicUsize,
    /// Every admitted connection, for the watchdog (entries whose connection is gone are
    /// pruned as it goes).
    all: Mutex<Vec<Weak<Connection>>>,
    /// When the counts below are measured from.
    epoch: Instant,
}

/// One admitted connection; dropping it (ttrpc drops its connection data when the
/// connection ends) frees its place.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    fd: RawFd,
    /// The socket's inode at accept: the watchdog closes `fd` only while it is still this
    /// socket (ttrpc may close the descriptor, and the number be reused, before the
    /// connection data goes).
    ino: u64,
    peer: Peer,
    in_flight: AtomicUsize,
    /// Milliseconds since `Shared::epoch` of the last request's start or end.
    last_ms: AtomicU64,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Connection {
    /// A request on this connection starts.
    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
    }

    /// A request on this connection is done.
    fn end(&self) {
        self.touch();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn touch(&self) {
        let ms = self.shared.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::SeqCst);
    }

    /// Idle past `limit`: no request in flight, and none started or ended for that long.
    fn idle_past(&self, limit: Duration) -> bool {
        let now = self.shared.epoch.elapsed().as_millis() as u64;
        self.in_flight.load(Ordering::SeqCst) == 0
            && now.saturating_sub(self.last_ms.load(Ordering::SeqCst)) >= limit.as_millis() as u64
    }
}

impl Connections {
    /// At most `max` connections at once; each closed after `idle` without a request, if
    /// given. The watchdog thread ends when this is dropped.
    pub(crate) fn new(max: usize, idle: Option<Duration>) -> Self {
        let shared = Arc::new(Shared {
            max: max.max(1),
            idle,
            live: AtomicUsize::new(0),
            all: Mutex::new(Vec::new()),
            epoch: Instant::now(),
        });
        if let Some(idle) = idle {
            let weak = Arc::downgrade(&shared);
            // Checking four times per idle period closes a connection between 1 and 1.25
            // periods after its last request.
            let period = (idle / 4).max(Duration::from_millis(50));
            let started = std::thread::Builder::new()
                .name("imv-idle".to_owned())
                .spawn(move || watchdog(weak, idle, period));
            if let Err(e) = started {
                tracing::warn!(error = %e, "no thread to close idle connections; they stay open");
            }
        }
        Connections { shared }
    }

    /// Admit the connection on `fd` from `peer`, or say why not (too many already).
    pub(crate) fn admit(&self, fd: RawFd, peer: Peer) -> Result<Arc<Connection>, String> {
        let live = self.shared.live.fetch_add(1, Ordering::SeqCst);
        if live >= self.shared.max {
            self.shared.live.fetch_sub(1, Ordering::SeqCst);
            return Err(format!(
                "the daemon serves at most {} connections at once, and has them all; try again later",
                self.shared.max
            ));
        }
        let conn = Arc::new(Connection {
            shared: Arc::clone(&self.shared),
            fd,
            ino: socket_ino(fd).unwrap_or(0),
            peer,
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        });
        conn.touch();
        if self.shared.idle.is_some() {
            let mut all = self
                .shared
                .all
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            all.retain(|w| w.strong_count() > 0);
            all.push(Arc::downgrade(&conn));
        }
        Ok(conn)
    }

    /// How many connections are open now.
    pub(crate) fn live(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }
}

/// Close the connections idle past `idle`, every `period`, until the server goes.
fn watchdog(shared: Weak<Shared>, idle: Duration, period: Duration) {
    loop {
        std::thread::sleep(period);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let idle_ones: Vec<Arc<Connection>> = {
            let mut all = shared.all.lock().unwrap_or_else(PoisonError::into_inner);
            all.retain(|w| w.strong_count() > 0);
            all.iter()
                .filter_map(Weak::upgrade)
                .filter(|c| c.idle_past(idle))
                .collect()
        };
        for conn in idle_ones {
            if socket_ino(conn.fd) != Some(conn.ino) {
                continue;
            }
            tracing::info!(
                pid = conn.peer.pid,
                uid = conn.peer.uid,
                "closing a connection idle for {idle:?}"
            );
            // SAFETY: a plain syscall on a descriptor number, checked just above to be the
            // connection's socket still; shutdown ends its traffic (ttrpc's reader sees the
            // end and closes it) and never closes the descriptor.
            unsafe { libc::shutdown(conn.fd, libc::SHUT_RDWR) };
        }
    }
}

/// The inode of the socket on `fd`, if it is one (a closed descriptor is none).
fn socket_ino(fd: RawFd) -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `struct stat` into `st` when it returns 0, and reads nothing
    // else; a descriptor number that is not open makes it fail with EBADF.
    let rc = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: fstat returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    (st.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some(st.st_ino)
}

/// A request in flight on a connection, from [`Busy::start`] to its drop.
pub(crate) struct Busy(Option<Arc<Connection>>);

impl Busy {
    /// A request starts on `connection` (if the server admitted it through the hook).
    pub(crate) fn start(connection: Option<Arc<Connection>>) -> Busy {
        if let Some(c) = &connection {
            c.begin();
        }
        Busy(connection)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.end();
        }
    }
}
