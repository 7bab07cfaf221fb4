//! How many connections the daemon holds, and how long one may sit idle.
//!
//! Every connection costs threads (transport.rs: one reading, plus one per request running
//! on it). Idle peers by the hundred once cost threads by the thousand under ttrpc-rust's
//! server (docs/design.md, "The daemon's transport"), and under a pids limit the daemon
//! then failed to spawn threads. Here at most `max`
//! connections are admitted (the next are refused and told why, with RESOURCE_EXHAUSTED,
//! which clients treat as "try again"), and a watchdog closes a connection that has had no
//! request in flight for `idle` (clients dial again on their next call: the Go client does
//! so by itself). A connection's record is its socket: it goes, and its place is free,
//! when the last thread serving it lets go.
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::peer::Peer;
use crate::locks::lock;

/// How long writing one answer may block on a peer that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The connections of one server.
pub(crate) struct Connections {
    shared: Arc<Shared>,
}

struct Shared {
    max: usize,
    live: AtomicUsize,
    /// Every admitted connection, for the watchdog and for closing them all (entries
    /// whose connection is gone are pruned as it goes).
    all: Mutex<Vec<Weak<Connection>>>,
    /// When the counts below are measured from.
    epoch: Instant,
}

/// One admitted connection, its socket; dropping it closes the socket and frees its place.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    stream: UnixStream,
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

impl Shared {
    /// The list of connections, those gone already taken out.
    fn all(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Connection>>> {
        let mut all = lock(&self.all);
        all.retain(|w| w.strong_count() > 0);
        all
    }

    /// The connections open now.
    fn open(&self) -> Vec<Arc<Connection>> {
        self.all().iter().filter_map(Weak::upgrade).collect()
    }
}

impl Connection {
    pub(crate) fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub(crate) fn peer(&self) -> Peer {
        self.peer
    }

    /// End the connection's traffic both ways: the thread reading it sees the end, and
    /// the peer does too. The socket itself closes when the record goes.
    pub(crate) fn close(&self) {
        // Fails only when the peer is gone already (ENOTCONN): nothing left to end.
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// A request on this connection is in flight until the returned guard goes.
    pub(crate) fn busy(&self) -> Busy<'_> {
        self.begin();
        Busy(self)
    }

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

    /// Admit the connection `stream` from `peer`, or say why not (too many already) and
    /// give it back.
    pub(crate) fn admit(
        &self,
        stream: UnixStream,
        peer: Peer,
    ) -> Result<Arc<Connection>, (UnixStream, String)> {
        let live = self.shared.live.fetch_add(1, Ordering::SeqCst);
        if live >= self.shared.max {
            self.shared.live.fetch_sub(1, Ordering::SeqCst);
            let why = format!(
                "the daemon serves at most {} connections at once, and has them all; try again later",
                self.shared.max
            );
            return Err((stream, why));
        }
        // A peer that takes no answer for this long is cut off (the write fails), rather
        // than holding the threads that answer it forever.
        if let Err(e) = stream.set_write_timeout(Some(WRITE_TIMEOUT)) {
            tracing::debug!(error = %e, "no write timeout on a connection");
        }
        let conn = Arc::new(Connection {
            shared: Arc::clone(&self.shared),
            stream,
            peer,
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        });
        conn.touch();
        self.shared.all().push(Arc::downgrade(&conn));
        Ok(conn)
    }

    /// Wait until no connection has a request in flight (so every answer is written), at
    /// most `timeout`; whether none has.
    pub(crate) fn wait_quiet(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            if self
                .shared
                .open()
                .iter()
                .all(|c| c.in_flight.load(Ordering::SeqCst) == 0)
            {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Close every connection (their threads end as they see it).
    pub(crate) fn close_all(&self) {
        for conn in self.shared.open() {
            conn.close();
        }
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
        for conn in shared.open().into_iter().filter(|c| c.idle_past(idle)) {
            tracing::info!(
                pid = conn.peer.pid,
                uid = conn.peer.uid,
                "closing a connection idle for {idle:?}"
            );
            conn.close();
        }
    }
}

/// A request in flight on a connection, from [`Connection::busy`] to its drop.
pub(crate) struct Busy<'a>(&'a Connection);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}
