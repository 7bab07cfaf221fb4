//! `imv serve`: the daemon. The library serves (imv::service::Server); this file owns
//! what only a program may do: signal handling and the process's exit.
//!
//! Signals: SIGTERM and SIGINT are blocked before any thread starts (threads inherit the
//! mask, so none of them is ever interrupted or killed by one) and taken synchronously
//! with sigwait on this thread. No handler runs in signal context.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imv::service::{Server, ServerConfig, DEFAULT_SOCKET};
use imv::{Config, Error, ImageVolumes, Result};

use crate::cli::ServeArgs;

/// Serve until SIGTERM or SIGINT; then stop accepting, let the requests in flight finish,
/// remove the socket, and return. A second signal while waiting returns an error at once.
pub fn serve(config: Config, socket: Option<PathBuf>, args: ServeArgs) -> Result<()> {
    let signals = Signals::block()?;
    let group = args.group.as_deref().map(resolve_group).transpose()?;
    let server_config = ServerConfig {
        socket: socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        allowed_uids: args.allow_uids,
        group,
        max_concurrent_requests: args.max_requests,
        max_connections: args.max_connections,
        idle_timeout: (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout)),
    };
    // A daemon has no terminal to draw progress on, and requests run side by side.
    let config = Config {
        progress: Arc::new(imv::backend::NoProgress),
        ..config
    };
    let volumes = Arc::new(ImageVolumes::open(config)?);
    let mut server = Server::start(volumes, server_config)?;

    let signal = signals.wait(None);
    tracing::info!(
        signal = signal.map_or("signal", signal_name),
        in_flight = server.requests_in_flight(),
        "stopping"
    );
    server.stop_accepting();
    let since = Instant::now();
    let mut last_note = since;
    while !server.wait_idle(Some(Duration::from_millis(100))) {
        if let Some(signal) = signals.wait(Some(Duration::ZERO)) {
            let left = server.requests_in_flight();
            tracing::error!(
                signal = signal_name(signal),
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
    Ok(())
}

/// SIGTERM and SIGINT, blocked on every thread and taken with sigwait.
struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    fn block() -> Result<Signals> {
        // SAFETY: sigset_t is plain data that sigemptyset initializes; pthread_sigmask only
        // changes this thread's mask (threads started later inherit it).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(Error::internal(format!(
                    "blocking SIGTERM and SIGINT: {}",
                    std::io::Error::from_raw_os_error(rc)
                )));
            }
            Ok(Signals { set })
        }
    }

    /// Wait for one of the signals, at most `timeout` (`None`: forever).
    fn wait(&self, timeout: Option<Duration>) -> Option<libc::c_int> {
        loop {
            let rc = match timeout {
                None => {
                    let mut signal = 0;
                    // SAFETY: `self.set` is an initialized set; `signal` is writable.
                    match unsafe { libc::sigwait(&self.set, &mut signal) } {
                        0 => signal,
                        _ => -1,
                    }
                }
                Some(t) => {
                    let ts = libc::timespec {
                        tv_sec: t.as_secs() as libc::time_t,
                        tv_nsec: t.subsec_nanos() as libc::c_long,
                    };
                    // SAFETY: as above; a null siginfo is allowed.
                    unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) }
                }
            };
            if rc > 0 {
                return Some(rc);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                _ if timeout.is_some() => return None,
                _ => continue,
            }
        }
    }
}

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}

/// A group name or number as a gid.
fn resolve_group(group: &str) -> Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group)
        .map_err(|_| Error::invalid(format!("group {group:?} contains a NUL byte")))?;
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: every pointer is valid for the call; `buf` outlives it and its length is
        // passed; the result points into `grp`/`buf`, which we read before they go.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(Error::internal(format!(
                "looking up group {group:?}: {}",
                std::io::Error::from_raw_os_error(rc)
            )));
        }
        if result.is_null() {
            return Err(Error::not_found(format!("group {group:?} does not exist")));
        }
        return Ok(grp.gr_gid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_resolve_by_number_and_name() {
        assert_eq!(resolve_group("1234").unwrap(), 1234);
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert!(resolve_group("no-such-group-imv")
            .unwrap_err()
            .is_not_found());
    }
}
