//! `imv serve`: the daemon. The library serves (imv::service::Server); this file owns
//! what only a program may do: signal handling and the process's exit.
//!
//! Signals: SIGTERM and SIGINT are blocked before any thread starts (threads inherit the
//! mask, so none of them is ever interrupted or killed by one) and taken synchronously
//! with sigwait, by a thread of their own. No handler runs in signal context.

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use imv::service::{Server, ServerConfig, DEFAULT_SOCKET};
use imv::{BackendConfig, Config, Error, ImageVolumes, Result, VolumeEvents};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Group;

use crate::cli::ServeArgs;
use crate::events;
use crate::metrics::{Endpoint, Metrics};

/// Serve until SIGTERM or SIGINT; then stop accepting, let the requests in flight finish,
/// remove the socket, and return. A second signal while waiting returns an error at once.
pub fn serve(config: Config, socket: Option<PathBuf>, args: ServeArgs) -> Result<()> {
    let signals = Signals::block()?;
    let publisher = publisher(&config, &args)?;
    let events = publisher.clone().map(|p| -> Arc<dyn VolumeEvents> { p });
    let group = args.group.as_deref().map(resolve_group).transpose()?;
    let metrics = args.metrics_address.map(|_| Arc::new(Metrics::new()));
    let server_config = ServerConfig {
        socket: socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        allowed_uids: args.allow_uids,
        group,
        max_concurrent_requests: args.max_requests,
        max_connections: args.max_connections,
        idle_timeout: (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout)),
        observer: metrics
            .clone()
            .map(|m| -> Arc<dyn imv::service::CallObserver> { m }),
    };
    // A daemon has no terminal to draw progress on, and requests run side by side: its
    // progress is what the metrics count of unpacks.
    let progress: Arc<dyn imv::backend::Progress> = match &metrics {
        Some(m) => m.clone(),
        None => Arc::new(imv::backend::NoProgress),
    };
    let config = Config {
        progress,
        events,
        ..config
    };
    // Another daemon on this socket holds the store too: say so now (AlreadyExists),
    // rather than after waiting for the store's lock (Unavailable).
    Server::check_socket_free(&server_config.socket)?;
    let volumes = Arc::new(ImageVolumes::open(config)?);
    let endpoint = match (args.metrics_address, metrics) {
        (Some(address), Some(metrics)) => Some(Endpoint::start(address, metrics, volumes.clone())?),
        _ => None,
    };
    let mut server = Server::start(volumes, server_config)?;

    let signal = signals.wait();
    tracing::info!(
        signal = signal.map_or("signal", Signal::as_str),
        in_flight = server.requests_in_flight(),
        "stopping"
    );
    server.stop_accepting();
    let since = Instant::now();
    let mut last_note = since;
    while !server.wait_idle(Some(Duration::from_millis(100))) {
        if let Some(signal) = signals.taken() {
            let left = server.requests_in_flight();
            tracing::error!(
                signal = signal.as_str(),
                in_flight = left,
                "second signal: exiting without waiting"
            );
            // Requests still running are cut off where they are; the engine converges on
            // the next mutate or cleanup of their sandboxes.
            std::mem::forget(server);
            return Err(Error::internal(format!(
                "stopped by a second signal with {left} requests in flight"
            )));
        }
        if last_note.elapsed() >= Duration::from_secs(5) {
            last_note = Instant::now();
            tracing::info!(
                in_flight = server.requests_in_flight(),
                waited_s = since.elapsed().as_secs(),
                "waiting for requests in flight"
            );
        }
    }
    server.shutdown();
    if let Some(endpoint) = endpoint {
        endpoint.stop();
    }
    // No request runs any more: the events of the last ones go out before the process does.
    if let Some(publisher) = publisher {
        let left = publisher.flush(EVENTS_FLUSH_TIMEOUT);
        if left > 0 {
            tracing::warn!(
                left,
                "events not published to containerd in time: dropped at exit"
            );
        }
    }
    Ok(())
}

/// How long `imv serve` waits at exit for its events to be published.
const EVENTS_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The events publisher `args` ask for: with the containerd backend, to its event
/// service unless --no-events; none with the embedded store (which has no event service).
fn publisher(config: &Config, args: &ServeArgs) -> Result<Option<Arc<events::Publisher>>> {
    let BackendConfig::Containerd { address, namespace } = &config.backend else {
        if let Some(events) = &args.events_address {
            return Err(Error::invalid(format!(
                "--events-address {} needs --backend containerd: the embedded store has no \
                 event service",
                events.display()
            )));
        }
        return Ok(None);
    };
    if args.no_events {
        return Ok(None);
    }
    let address = args
        .events_address
        .clone()
        .unwrap_or_else(|| events::ttrpc_address(address));
    tracing::info!(address = %address.display(), namespace, "publishing events to containerd");
    let publisher = events::Publisher::start(address, namespace.clone())
        .map_err(|e| Error::internal(format!("starting the events thread: {e}")))?;
    Ok(Some(Arc::new(publisher)))
}

/// SIGTERM and SIGINT, blocked on every thread and taken with sigwait by a thread of
/// their own, which hands them over on a channel.
struct Signals {
    taken: mpsc::Receiver<Signal>,
}

impl Signals {
    fn block() -> Result<Signals> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        // Only this thread's mask; threads started later (the waiter below, the server's)
        // inherit it.
        set.thread_block()
            .map_err(|e| Error::internal(format!("blocking SIGTERM and SIGINT: {e}")))?;
        let (tx, taken) = mpsc::channel();
        std::thread::Builder::new()
            .name("imv-signals".to_owned())
            .spawn(move || {
                while let Ok(signal) = set.wait() {
                    if tx.send(signal).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::internal(format!("starting the signal thread: {e}")))?;
        Ok(Signals { taken })
    }

    /// The next signal, waiting for it.
    fn wait(&self) -> Option<Signal> {
        self.taken.recv().ok()
    }

    /// A signal taken already, if any: no wait.
    fn taken(&self) -> Option<Signal> {
        self.taken.try_recv().ok()
    }
}

/// A group name or number as a gid.
fn resolve_group(group: &str) -> Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    if group.contains('\0') {
        return Err(Error::invalid(format!(
            "group {group:?} contains a NUL byte"
        )));
    }
    match Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(Error::not_found(format!("group {group:?} does not exist"))),
        Err(e) => Err(Error::internal(format!("looking up group {group:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imv::ErrorKind;

    #[test]
    fn groups_resolve_by_number_and_by_name() {
        assert_eq!(resolve_group("0").unwrap(), 0);
        assert_eq!(resolve_group("4242").unwrap(), 4242);
        assert_eq!(resolve_group("root").unwrap(), 0, "from /etc/group");
        let e = resolve_group("imv-no-such-group").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("imv-no-such-group"), "{e}");
        let e = resolve_group("a\0b").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    }
}
