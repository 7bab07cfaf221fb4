//! Serving ttrpc on the daemon's socket: an accept loop, and for each connection a few
//! threads waiting for its requests. The thread a request wakes reads it, runs it and
//! writes the answer itself; before it runs it, it makes sure another thread waits
//! (spawning one if none does), so requests on one connection run side by side.
//!
//! Why not ttrpc-rust's server (docs/design.md, "The daemon's transport"): its sync server
//! hands every request from a reader thread to a handler thread and the answer on to a
//! writer thread. Each of those hand-offs is a thread wake-up, and they made a warm call
//! through `imv serve` cost a multiple of what it costs in process (the figures are in
//! docs/design.md). Here a request costs the one wake-up of the thread blocked reading the
//! socket. It also lets every frame get an answer (ttrpc-rust skipped some), and closes
//! connections without the hang its `disconnect` had.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use protobuf::Message;
use ttrpc::Code;

use super::connections::Connection;
use super::peer::Peer;
use super::wire::{self, Frame};
use crate::locks::lock;

/// What a request is run with.
pub(crate) struct Call {
    /// Who sent it.
    pub peer: Peer,
    /// The caller's timeout (ttrpc's `timeout_nano`): 0 for none, negative when the
    /// deadline had passed when it was sent.
    pub timeout_nano: i64,
}

/// Runs requests: the service behind the socket.
pub(crate) trait Dispatch: Send + Sync {
    /// The answer to `method` of `service` with `payload` (the request message's bytes).
    fn call(&self, call: &Call, service: &str, method: &str, payload: &[u8]) -> ttrpc::Response;
}

/// The accept loop, on a thread of its own until [`stop`](Self::stop).
pub(super) struct Listening {
    listener: Arc<UnixListener>,
    thread: Option<JoinHandle<()>>,
}

impl Listening {
    /// Accept connections on `listener` and hand each to `accept`.
    pub(super) fn start(
        listener: UnixListener,
        accept: impl Fn(UnixStream) + Send + 'static,
    ) -> io::Result<Listening> {
        let listener = Arc::new(listener);
        let accepting = Arc::clone(&listener);
        let thread = std::thread::Builder::new()
            .name("imv-accept".to_owned())
            .spawn(move || loop {
                match accepting.accept() {
                    Ok((stream, _)) => accept(stream),
                    // Shut down by `stop`: accept fails with EINVAL from then on.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // EMFILE and the like: the peer waits in the backlog meanwhile.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                }
            })?;
        Ok(Listening {
            listener,
            thread: Some(thread),
        })
    }

    /// Stop accepting and wait for the loop to end. Connections already accepted go on.
    pub(super) fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        // shutdown(2) on a listening socket wakes a blocked accept with EINVAL.
        if let Err(e) = rustix::net::shutdown(&*self.listener, rustix::net::Shutdown::Both) {
            tracing::warn!(error = %e, "could not shut the listening socket down");
            return;
        }
        if thread.join().is_err() {
            tracing::warn!("the accept loop panicked");
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Most threads one connection has: as many of its requests run at once; more wait in the
/// socket until one is done. (A connection has 1 thread when it is new, 2 once it has
/// served a request: one running it or waiting, one waiting.)
pub(super) const MAX_THREADS_PER_CONNECTION: usize = 8;

/// Serve `connection` with `service`, on threads of its own, until either side closes it.
pub(super) fn serve(connection: Arc<Connection>, service: Arc<dyn Dispatch>) -> io::Result<()> {
    let closing = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )?;
    let served = Arc::new(Served {
        connection,
        service,
        closing,
        reading: Mutex::new(()),
        writing: Mutex::new(()),
        idle: AtomicUsize::new(0),
        threads: AtomicUsize::new(0),
        closed: AtomicBool::new(false),
    });
    served.spawn()
}

/// One connection being served.
///
/// Its threads wait for a request each in an epoll instance of its own, where the socket
/// is registered with EPOLLEXCLUSIVE: a request wakes one waiting thread, not all, and
/// never a thread busy with another request. So a request costs one wake-up, and
/// requests that arrive while others run are read by the threads waiting.
struct Served {
    connection: Arc<Connection>,
    service: Arc<dyn Dispatch>,
    /// Readable once the connection is closed (never read): wakes every waiting thread,
    /// where the socket's end wakes only one of them.
    closing: OwnedFd,
    /// Held by the thread reading: frames are read whole, by one thread at a time.
    reading: Mutex<()>,
    /// Held while an answer is written: answers go out whole.
    writing: Mutex<()>,
    /// Threads not running a request: waiting for one, writing an answer, starting or
    /// ending. A thread that reads a request spawns another when none is idle; a thread
    /// that has answered ends when two others are idle. (Counting the threads that woke
    /// for nothing, or were starting, as busy once made a thread start and end on most
    /// requests.)
    idle: AtomicUsize,
    threads: AtomicUsize,
    closed: AtomicBool,
}

impl Served {
    /// One more thread for the connection, unless it has the most it may have.
    fn spawn(self: &Arc<Self>) -> io::Result<()> {
        if self.threads.fetch_add(1, Ordering::SeqCst) >= MAX_THREADS_PER_CONNECTION {
            self.threads.fetch_sub(1, Ordering::SeqCst);
            return Ok(());
        }
        // Idle from now: a request that comes before the thread runs is no reason for
        // another one (see `run`).
        self.idle.fetch_add(1, Ordering::SeqCst);
        let served = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("imv-conn".to_owned())
            .spawn(move || {
                if let Err(e) = served.run() {
                    tracing::warn!(error = %e, "a connection's thread failed; closing the connection");
                    served.close();
                }
                served.idle.fetch_sub(1, Ordering::SeqCst);
                served.threads.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            self.idle.fetch_sub(1, Ordering::SeqCst);
            self.threads.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }

    /// Wait for a request, read it, run it, answer; again, until the connection ends or
    /// this thread is spare. Returns counted idle.
    fn run(self: &Arc<Self>) -> io::Result<()> {
        use rustix::event::epoll;
        let waiting = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &waiting,
            self.connection.stream(),
            epoll::EventData::new_u64(0),
            epoll::EventFlags::IN | epoll::EventFlags::EXCLUSIVE,
        )?;
        epoll::add(
            &waiting,
            &self.closing,
            epoll::EventData::new_u64(1),
            epoll::EventFlags::IN,
        )?;
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 2];
        loop {
            let Some(frame) = self.next_frame(&waiting, &mut events)? else {
                return Ok(());
            };
            let others_idle = self.idle.fetch_sub(1, Ordering::SeqCst) - 1;
            // The connection is busy while this runs and until its answer is written: its
            // idle clock stops (connections.rs), and shutdown waits for the answer.
            let busy = self.connection.busy();
            if others_idle == 0 {
                // The next request needs a thread waiting while this one runs.
                if let Err(e) = self.spawn() {
                    tracing::warn!(error = %e, "no thread to read the next request meanwhile");
                }
            }
            let stream_id = frame.stream_id();
            let answer =
                catch_unwind(AssertUnwindSafe(|| self.answer(frame))).unwrap_or_else(|_| {
                    let status =
                        ttrpc::get_status(Code::INTERNAL, "the request panicked in the daemon");
                    wire::response_frame(stream_id, &wire::failed(status))
                });
            self.idle.fetch_add(1, Ordering::SeqCst);
            {
                let _turn = lock(&self.writing);
                if let Err(e) = wire::write_frame(self.connection.stream(), &answer) {
                    tracing::debug!(pid = self.connection.peer().pid, error = %e, "an answer was not delivered");
                    self.close();
                }
            }
            drop(busy);
            // Two others are idle already: this one is spare.
            if self.idle.load(Ordering::SeqCst) > 2 {
                return Ok(());
            }
        }
    }

    /// Wait for the next request and read it. `None` when this thread should end: the
    /// connection is closing, or the peer closed it or broke it (both handled here).
    fn next_frame(
        &self,
        waiting: &OwnedFd,
        events: &mut [rustix::event::epoll::Event],
    ) -> io::Result<Option<Frame>> {
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Ok(None);
            }
            match rustix::event::epoll::wait(waiting, &mut *events, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            let frame = {
                let _turn = lock(&self.reading);
                if self.closed.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                // Another thread may have read what woke this one.
                match rustix::net::recv(
                    self.connection.stream(),
                    &mut [0u8; 1],
                    rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
                ) {
                    Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
                    Ok(_) | Err(_) => wire::read_frame(self.connection.stream()),
                }
            };
            return match frame {
                Ok(Some(frame)) => Ok(Some(frame)),
                Ok(None) => {
                    // The peer sends no more; answers still being made are written before
                    // the socket closes (with the last thread).
                    self.stop_reading();
                    Ok(None)
                }
                Err(e) => {
                    tracing::debug!(pid = self.connection.peer().pid, error = %e, "connection ended");
                    self.close();
                    Ok(None)
                }
            };
        }
    }

    /// End the connection both ways, now.
    fn close(&self) {
        self.connection.close();
        self.stop_reading();
    }

    /// Read no more requests: the threads waiting end, and the others once their request
    /// is answered.
    fn stop_reading(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Wakes every thread waiting (the eventfd stays readable: it is never read). A
        // failure leaves nothing to do: the counter is far from full.
        let _ = rustix::io::write(&self.closing, &1u64.to_ne_bytes());
    }

    /// The answer frame to `frame`.
    fn answer(&self, frame: Frame) -> Vec<u8> {
        let peer = self.connection.peer();
        let refuse = |stream_id: u32, code: Code, why: String| {
            tracing::warn!(pid = peer.pid, uid = peer.uid, "{why}");
            wire::response_frame(stream_id, &wire::failed(ttrpc::get_status(code, why)))
        };
        let (stream_id, payload) = match frame {
            Frame::TooLarge { stream_id, length } => {
                return refuse(
                    stream_id,
                    Code::INVALID_ARGUMENT,
                    format!(
                        "a frame of {length} bytes is over the limit of {} bytes",
                        wire::MAX_PAYLOAD
                    ),
                );
            }
            Frame::Whole {
                stream_id, type_, ..
            } if type_ != wire::TYPE_REQUEST => {
                return refuse(
                    stream_id,
                    Code::UNKNOWN,
                    format!(
                        "frame type {type_} is not a request (type {}); this service takes requests only",
                        wire::TYPE_REQUEST
                    ),
                );
            }
            // Clients open odd streams; even ones are the server's (containerd's ttrpc
            // server answers them so too).
            Frame::Whole { stream_id, .. } if stream_id % 2 != 1 => {
                return refuse(
                    stream_id,
                    Code::INVALID_ARGUMENT,
                    format!(
                        "stream ID {stream_id}: StreamID must be odd for client initiated streams"
                    ),
                );
            }
            Frame::Whole {
                stream_id, payload, ..
            } => (stream_id, payload),
        };
        let request = match ttrpc::Request::parse_from_bytes(&payload) {
            Ok(request) => request,
            Err(e) => {
                return refuse(
                    stream_id,
                    Code::INVALID_ARGUMENT,
                    format!("a request that cannot be decoded: {e}"),
                )
            }
        };
        let call = Call {
            peer,
            timeout_nano: request.timeout_nano,
        };
        let response =
            self.service
                .call(&call, &request.service, &request.method, &request.payload);
        wire::response_frame(stream_id, &response)
    }
}
