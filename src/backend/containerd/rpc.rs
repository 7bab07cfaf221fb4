//! The wire: one lazily made tokio runtime and gRPC channel per backend, requests with the
//! namespace and lease headers, and gRPC statuses turned into the crate's errors.
//!
//! The [`Backend`](crate::Backend) trait is synchronous and its callers may be anyone's
//! threads (a Go program through cgo, a ttrpc server, a tokio task of the host). So a call
//! never runs the future on the caller's thread: it is spawned on the backend's own runtime
//! and the caller waits on a plain channel. That works from inside another tokio runtime too,
//! where `Runtime::block_on` would panic.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::error::{Error, ErrorKind, Result};
use crate::locks::lock;

/// containerd reads the namespace of a request from this header.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// containerd adds what a request creates to the lease this header names.
const LEASE_HEADER: &str = "containerd-lease";

/// Worker threads of the backend's runtime: the work is waiting on a socket, not computing.
const WORKER_THREADS: usize = 2;

/// Tries of a call that failed with Unavailable. The channel reconnects on its own after
/// containerd restarts, but the first call on a connection that went away fails; a few short
/// retries hide a restart without making "containerd is down" slow to report.
const TRIES: u32 = 4;
const RETRY_DELAY: Duration = Duration::from_millis(150);

/// Largest gRPC message accepted (an image list of a big node is more than tonic's 4 MiB).
pub(super) const MAX_MESSAGE: usize = 64 << 20;

/// The connection to one containerd, in one namespace.
pub(super) struct Rpc {
    address: PathBuf,
    namespace: AsciiMetadataValue,
    runtime: Mutex<Option<Runtime>>,
    channel: OnceLock<Channel>,
}

impl Rpc {
    /// Nothing is started or connected until the first call: a library loaded by containerd
    /// itself is opened before containerd serves its socket.
    /// The namespace every request is made in.
    pub(super) fn namespace(&self) -> &str {
        self.namespace.to_str().unwrap_or_default()
    }

    pub(super) fn new(address: &Path, namespace: &str) -> Result<Self> {
        validate_namespace(namespace)?;
        let namespace = AsciiMetadataValue::try_from(namespace)
            .map_err(|_| Error::invalid(format!("namespace {namespace:?}: not a header value")))?;
        Ok(Rpc {
            address: address.to_owned(),
            namespace,
            runtime: Mutex::new(None),
            channel: OnceLock::new(),
        })
    }

    /// The socket path.
    pub(super) fn address(&self) -> &Path {
        &self.address
    }

    fn handle(&self) -> Result<Handle> {
        let mut runtime = lock(&self.runtime);
        if let Some(rt) = runtime.as_ref() {
            return Ok(rt.handle().clone());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("imv-containerd")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::internal(format!("starting the containerd client runtime: {e}")))?;
        let handle = rt.handle().clone();
        *runtime = Some(rt);
        Ok(handle)
    }

    fn channel(&self, handle: &Handle) -> Result<Channel> {
        if let Some(ch) = self.channel.get() {
            return Ok(ch.clone());
        }
        // The URI is required by tonic but unused: the connector dials the unix socket.
        let endpoint = Endpoint::from_static("http://[::]:50051")
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        let path = self.address.clone();
        let connector = tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        // A lazy channel spawns its worker on the current runtime: enter ours.
        let _guard = handle.enter();
        let ch = endpoint.connect_with_connector_lazy(connector);
        Ok(self.channel.get_or_init(|| ch).clone())
    }

    /// The `containerd-lease` header value for `lease`.
    pub(super) fn lease(lease: &str) -> Result<AsciiMetadataValue> {
        AsciiMetadataValue::try_from(lease)
            .map_err(|_| Error::invalid(format!("lease {lease:?}: not a header value")))
    }

    /// A request carrying the namespace and, when given, the lease.
    pub(super) fn request<T>(&self, message: T, lease: Option<&AsciiMetadataValue>) -> Request<T> {
        let mut request = Request::new(message);
        let md: &mut MetadataMap = request.metadata_mut();
        md.insert(NAMESPACE_HEADER, self.namespace.clone());
        if let Some(lease) = lease {
            md.insert(LEASE_HEADER, lease.clone());
        }
        request
    }

    /// Run the call `make` builds on the backend's runtime and wait for it. `what` says what
    /// was asked, for the error message. Unavailable is retried a few times (see [`TRIES`]).
    pub(super) fn call<T, F, Fut>(&self, what: &str, make: F) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<T, Status>> + Send + 'static,
        T: Send + 'static,
    {
        let handle = self.handle()?;
        let channel = self.channel(&handle)?;
        let mut attempt = 1;
        loop {
            let (tx, rx) = mpsc::sync_channel(1);
            let future = make(channel.clone());
            let start = std::time::Instant::now();
            handle.spawn(async move {
                let _ = tx.send(future.await);
            });
            let answer = rx.recv();
            // Where the time of a mutate goes, call by call (IMV_LOG=imv=trace).
            tracing::trace!(
                what,
                elapsed_us = start.elapsed().as_micros() as u64,
                "containerd call"
            );
            let status = match answer {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(status)) => status,
                // The task was dropped: the runtime is shutting down.
                Err(_) => {
                    return Err(Error::unavailable(format!(
                        "{what}: the containerd client is shutting down"
                    )))
                }
            };
            if status.code() == Code::Unavailable && attempt < TRIES {
                tracing::debug!(address = %self.address.display(), what, attempt, error = %status.message(), "containerd unavailable, retrying");
                std::thread::sleep(RETRY_DELAY * attempt);
                attempt += 1;
                continue;
            }
            return Err(self.status_error(what, status));
        }
    }

    /// Start the call `make` builds on the backend's runtime and return at once; `done` gets
    /// its outcome on a runtime thread. No retries: for work whose caller does not wait.
    pub(super) fn spawn<F, Fut, D>(&self, what: String, make: F, done: D) -> Result<()>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<(), Status>> + Send + 'static,
        D: FnOnce(Result<()>) + Send + 'static,
    {
        let handle = self.handle()?;
        let channel = self.channel(&handle)?;
        let future = make(channel);
        let address = self.address.clone();
        handle.spawn(async move {
            let outcome = future
                .await
                .map_err(|status| status_error(&address, &what, status));
            done(outcome);
        });
        Ok(())
    }

    /// [`spawn`](Self::spawn), the outcome sent to the returned receiver: for a caller that
    /// waits for it later, after work of its own ([`answer`] takes it).
    pub(super) fn start<F, Fut>(&self, what: String, make: F) -> Result<mpsc::Receiver<Result<()>>>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<(), Status>> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        self.spawn(what, make, move |outcome| {
            let _ = tx.send(outcome);
        })?;
        Ok(rx)
    }

    /// A gRPC status as the crate's error: the code sets the kind, the message says what was
    /// asked and, for a connection failure, of which containerd.
    pub(super) fn status_error(&self, what: &str, status: Status) -> Error {
        status_error(&self.address, what, status)
    }
}

/// Wait for the outcome of a call [`Rpc::start`] started.
pub(super) fn answer(started: &mpsc::Receiver<Result<()>>) -> Result<()> {
    started
        .recv()
        .unwrap_or_else(|_| Err(Error::unavailable("the containerd client is shutting down")))
}

/// A gRPC status from the containerd at `address` as the crate's error (see
/// [`Rpc::status_error`]).
fn status_error(address: &Path, what: &str, status: Status) -> Error {
    let kind = match status.code() {
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
        Code::FailedPrecondition | Code::Aborted => ErrorKind::FailedPrecondition,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    };
    let mut detail = status.message().to_owned();
    // A transport failure keeps its reason (no such file, connection refused) in the
    // source chain, not in the message.
    let mut source = std::error::Error::source(&status);
    while let Some(e) = source {
        let text = e.to_string();
        if !detail.contains(&text) {
            detail = format!("{detail}: {text}");
        }
        source = e.source();
    }
    if kind == ErrorKind::Unavailable {
        Error::new(
            kind,
            format!(
                "{what}: containerd at {} is unavailable: {detail}",
                address.display()
            ),
        )
    } else {
        Error::new(kind, format!("{what}: {detail}"))
    }
}

impl Drop for Rpc {
    fn drop(&mut self) {
        // Never block in drop (the caller may be a runtime thread of its own): tasks still
        // running are dropped, their callers get "shutting down".
        let runtime = self
            .runtime
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(rt) = runtime {
            rt.shutdown_background();
        }
    }
}

/// containerd's rule for namespaces: labels of letters, digits, `-` and `_`, separated by
/// dots, starting with a letter or digit, at most 76 characters.
fn validate_namespace(namespace: &str) -> Result<()> {
    let ok = !namespace.is_empty()
        && namespace.len() <= 76
        && namespace.split('.').all(|label| {
            label
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "containerd namespace {namespace:?}: letters, digits, '-', '_' and '.' only"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_follow_containerd_rules() {
        for ok in ["k8s.io", "default", "moby", "a-b_c.d1"] {
            validate_namespace(ok).unwrap();
        }
        for bad in ["", ".x", "x.", "a/b", "a b", "ünï", "-x", &"a".repeat(77)] {
            assert_eq!(
                validate_namespace(bad).unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn statuses_map_to_kinds() {
        let rpc = Rpc::new(Path::new("/nowhere.sock"), "k8s.io").unwrap();
        for (code, kind) in [
            (Code::NotFound, ErrorKind::NotFound),
            (Code::AlreadyExists, ErrorKind::AlreadyExists),
            (Code::InvalidArgument, ErrorKind::InvalidArgument),
            (Code::FailedPrecondition, ErrorKind::FailedPrecondition),
            (Code::Unavailable, ErrorKind::Unavailable),
            (Code::Unknown, ErrorKind::Internal),
        ] {
            let e = rpc.status_error("stat", Status::new(code, "boom"));
            assert_eq!(e.kind(), kind, "{code:?}");
            assert!(e.message().contains("boom"), "{e}");
        }
        let e = rpc.status_error("x", Status::unavailable("down"));
        assert!(e.message().contains("/nowhere.sock"), "{e}");
    }

    #[test]
    fn a_missing_socket_is_unavailable_and_names_it() {
        use crate::backend::containerd::api::containerd::services::leases::v1::{
            leases_client::LeasesClient, ListRequest,
        };
        let rpc = Rpc::new(Path::new("/nonexistent/imv-test.sock"), "default").unwrap();
        let err = rpc
            .call("listing leases", |ch| async move {
                LeasesClient::new(ch)
                    .list(ListRequest::default())
                    .await
                    .map(|r| r.into_inner())
            })
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(
            err.message().contains("/nonexistent/imv-test.sock"),
            "{err}"
        );
    }
}
