//! The methods of `imv.v1.ImageVolumes`: translate, call [`ImageVolumes`], translate back.
//!
//! Around each call: the request's deadline, a bound on how many calls run at once, a
//! refusal once the server drains for shutdown, a log line, and a panic turned into an
//! Internal status (ttrpc's sync server would otherwise lose the worker thread and leave
//! the caller waiting for an answer that never comes).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use protobuf::Message;
use ttrpc::Code;

use super::api;
use super::convert;
use super::observer::{self, CallObserver};
use super::transport::{Call, Dispatch};
use crate::error::{Error, Result};
use crate::locks::lock;
use crate::platform::Platform;
use crate::volumes::ImageVolumes;

/// Admission of requests: at most `max` run at once; none once draining.
pub(crate) struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
    max: usize,
}

struct GateState {
    running: usize,
    draining: bool,
}

/// One admitted request; dropping it lets the next one in.
struct Ticket<'a>(&'a Gate);

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.running -= 1;
        drop(state);
        self.0.changed.notify_all();
    }
}

impl Gate {
    pub(crate) fn new(max: usize) -> Self {
        Gate {
            state: Mutex::new(GateState {
                running: 0,
                draining: false,
            }),
            changed: Condvar::new(),
            max: max.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // The state is two counters that stay consistent whatever panicked while holding it.
        lock(&self.state)
    }

    /// Wait for a free slot until `deadline`. Refused when draining or when the deadline
    /// passes first: then no work was started.
    fn admit(&self, deadline: Option<Instant>) -> std::result::Result<Ticket<'_>, ttrpc::Error> {
        let mut state = self.lock();
        loop {
            if state.draining {
                return Err(status(Code::UNAVAILABLE, "the daemon is shutting down"));
            }
            if state.running < self.max {
                state.running += 1;
                return Ok(Ticket(self));
            }
            state = self.wait(state, deadline).ok_or_else(|| {
                deadline_exceeded("the deadline passed while waiting for a free request slot")
            })?;
        }
    }

    /// Wait for a change of the state, until `deadline` at most; `None` once it passed.
    fn wait<'a>(
        &'a self,
        state: MutexGuard<'a, GateState>,
        deadline: Option<Instant>,
    ) -> Option<MutexGuard<'a, GateState>> {
        let Some(deadline) = deadline else {
            return Some(
                self.changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        };
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let (state, _) = self
            .changed
            .wait_timeout(state, deadline - now)
            .unwrap_or_else(PoisonError::into_inner);
        Some(state)
    }

    /// Refuse new requests from now on; those running go on.
    pub(crate) fn drain(&self) {
        self.lock().draining = true;
        self.changed.notify_all();
    }

    /// Wait until no request runs, at most `timeout` (`None`: as long as it takes).
    /// Whether none runs.
    pub(crate) fn wait_idle(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut state = self.lock();
        while state.running > 0 {
            match self.wait(state, deadline) {
                Some(next) => state = next,
                None => return false,
            }
        }
        true
    }

    /// Requests running now.
    pub(crate) fn running(&self) -> usize {
        self.lock().running
    }
}

fn status(code: Code, message: &str) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

fn deadline_exceeded(message: &str) -> ttrpc::Error {
    status(Code::DEADLINE_EXCEEDED, message)
}

/// The service over one [`ImageVolumes`].
pub(crate) struct Service {
    volumes: Arc<ImageVolumes>,
    gate: Arc<Gate>,
    observer: Option<Arc<dyn CallObserver>>,
}

impl Service {
    pub(crate) fn new(
        volumes: Arc<ImageVolumes>,
        gate: Arc<Gate>,
        observer: Option<Arc<dyn CallObserver>>,
    ) -> Self {
        Service {
            volumes,
            gate,
            observer,
        }
    }

    /// Run `work` for one request of `method`, under the request's deadline.
    ///
    /// ttrpc carries a relative timeout (`timeout_nano`, 0 for none); the deadline counts
    /// from when this handler got the request, and a negative timeout means it had passed
    /// when the caller sent it. Work is started only before the deadline. Work already
    /// started runs to its end even if the deadline passes meanwhile: the engine's steps
    /// are not cancellable, a mutate stopped half-way would have to undo what it made
    /// anyway, and its result stays correct: a caller that gave up and retries finds the
    /// volume mounted and reused.
    fn serve<T>(
        &self,
        ctx: &Call,
        method: &'static str,
        sandbox: &str,
        work: impl FnOnce() -> Result<T>,
    ) -> ttrpc::Result<T> {
        let received = Instant::now();
        let result = self.serve_timed(ctx, method, sandbox, received, work);
        if let Some(observer) = &self.observer {
            observer.call_done(method, observer::outcome(&result), received.elapsed());
        }
        result
    }

    /// [`serve`](Self::serve) from `received` on, the observer aside.
    fn serve_timed<T>(
        &self,
        ctx: &Call,
        method: &'static str,
        sandbox: &str,
        received: Instant,
        work: impl FnOnce() -> Result<T>,
    ) -> ttrpc::Result<T> {
        let deadline = match ctx.timeout_nano {
            0 => None,
            n if n < 0 => Some(received),
            n => received.checked_add(Duration::from_nanos(n.unsigned_abs())),
        };
        let span = tracing::info_span!(
            "request",
            method,
            sandbox = (!sandbox.is_empty()).then_some(sandbox),
            peer_pid = ctx.peer.pid,
            peer_uid = ctx.peer.uid,
        );
        let _span = span.enter();

        if deadline.is_some_and(|d| Instant::now() >= d) {
            tracing::info!("refused: the deadline passed before the work started");
            return Err(deadline_exceeded(
                "the deadline passed before the work started",
            ));
        }
        let _ticket = match self.gate.admit(deadline) {
            Ok(ticket) => ticket,
            Err(e) => {
                tracing::info!(error = ?e, "refused");
                return Err(e);
            }
        };
        let result = catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            Err(Error::internal(format!("{method} panicked: {what}")))
        });
        // In microseconds: a warm call takes a fraction of a millisecond.
        let elapsed_us = u64::try_from(received.elapsed().as_micros()).unwrap_or(u64::MAX);
        match &result {
            // Reads are frequent (operators, probes) and change nothing: keep them quiet.
            Ok(_) if matches!(method, "List" | "Status" | "Images") => {
                tracing::debug!(elapsed_us, "done")
            }
            Ok(_) => tracing::info!(elapsed_us, "done"),
            Err(e) => tracing::warn!(elapsed_us, code = e.kind().grpc_code(), error = %e, "failed"),
        }
        result.map_err(|e| convert::status_of(&e))
    }
}

impl Service {
    pub(super) fn mutate_mounts(
        &self,
        ctx: &Call,
        req: api::MutateMountsRequest,
    ) -> ttrpc::Result<api::MutateMountsResponse> {
        self.serve(ctx, "MutateMounts", &req.sandbox_id, || {
            let platform = match req.platform.as_str() {
                "" => None,
                p => Some(Platform::parse(p)?),
            };
            let mut mounts: Vec<_> = req.mounts.iter().map(convert::mount_from_proto).collect();
            let options = crate::MutateOptions {
                mount_label: req.mount_label.clone(),
                ignore_label_without_selinux: req.ignore_label_without_selinux,
            };
            let outcomes = self.volumes.mutate_mounts_with(
                &req.sandbox_id,
                &req.snapshotter,
                platform.as_ref(),
                &options,
                &mut mounts,
            )?;
            // The caller's own messages go back with host_path and the image's image_ref
            // set (and applied mappings taken off), so fields this schema does not know
            // (kept in special_fields) pass through untouched.
            let mut response = api::MutateMountsResponse::new();
            response.mounts = req.mounts;
            for outcome in outcomes {
                let wire = &mut response.mounts[outcome.index];
                wire.host_path = outcome.host_path.to_string_lossy().into_owned();
                wire.image.mut_or_insert_default().image_ref = outcome.image_ref;
                // ... and the uid/gid mappings the volume applied taken off (the runtime
                // must not map it again).
                if outcome.mappings_applied {
                    wire.uidMappings.clear();
                    wire.gidMappings.clear();
                }
            }
            Ok(response)
        })
    }

    pub(super) fn cleanup(
        &self,
        ctx: &Call,
        req: api::CleanupRequest,
    ) -> ttrpc::Result<api::CleanupResponse> {
        self.serve(ctx, "Cleanup", &req.sandbox_id, || {
            self.volumes.cleanup(&req.sandbox_id, &req.snapshotter)?;
            Ok(api::CleanupResponse::new())
        })
    }

    pub(super) fn release(
        &self,
        ctx: &Call,
        req: api::ReleaseRequest,
    ) -> ttrpc::Result<api::ReleaseResponse> {
        self.serve(ctx, "Release", &req.sandbox_id, || {
            self.volumes.release(&req.sandbox_id)?;
            Ok(api::ReleaseResponse::new())
        })
    }

    pub(super) fn list(
        &self,
        ctx: &Call,
        req: api::ListRequest,
    ) -> ttrpc::Result<api::ListResponse> {
        self.serve(ctx, "List", &req.sandbox_id, || {
            let mut response = api::ListResponse::new();
            response.volumes = self
                .volumes
                .volumes()?
                .iter()
                .filter(|v| req.sandbox_id.is_empty() || v.sandbox_id == req.sandbox_id)
                .map(convert::volume_to_proto)
                .collect();
            Ok(response)
        })
    }

    pub(super) fn status(
        &self,
        ctx: &Call,
        _req: api::StatusRequest,
    ) -> ttrpc::Result<api::StatusResponse> {
        self.serve(ctx, "Status", "", || {
            Ok(convert::status_to_proto(
                &self.volumes.status(self.gate.running())?,
            ))
        })
    }

    /// The path is read with the daemon's privileges: any allowed peer can have any file
    /// the daemon can read opened as an image (proto/imv/v1/imv.proto says so to callers).
    /// It must be absolute, since a relative one would be resolved against the daemon's
    /// working directory, which the caller neither knows nor chose. Each import is logged
    /// with the path, inside the request's span (peer pid and uid).
    pub(super) fn import(
        &self,
        ctx: &Call,
        req: api::ImportRequest,
    ) -> ttrpc::Result<api::ImportResponse> {
        self.serve(ctx, "Import", "", || {
            let path = Path::new(&req.path);
            if !path.is_absolute() {
                return Err(Error::invalid(format!(
                    "import path {:?} is not absolute: the daemon reads it on its own host, \
                     where the caller's working directory means nothing",
                    req.path
                )));
            }
            let given = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            let options = crate::ImportOptions {
                name: given(&req.name),
                base_name: given(&req.base_name),
                tag: given(&req.tag),
            };
            tracing::info!(path = %path.display(), name = req.name, base_name = req.base_name, tag = req.tag, "importing");
            let mut response = api::ImportResponse::new();
            response.images = self
                .volumes
                .import_with(path, &options)?
                .iter()
                .map(convert::image_to_proto)
                .collect();
            Ok(response)
        })
    }

    pub(super) fn images(
        &self,
        ctx: &Call,
        _req: api::ImagesRequest,
    ) -> ttrpc::Result<api::ImagesResponse> {
        self.serve(ctx, "Images", "", || {
            let mut response = api::ImagesResponse::new();
            response.images = self
                .volumes
                .images()?
                .iter()
                .map(convert::image_to_proto)
                .collect();
            Ok(response)
        })
    }

    pub(super) fn remove_image(
        &self,
        ctx: &Call,
        req: api::RemoveImageRequest,
    ) -> ttrpc::Result<api::RemoveImageResponse> {
        self.serve(ctx, "RemoveImage", "", || {
            tracing::info!(reference = %req.reference, "removing image");
            let record = self.volumes.remove_image(&req.reference)?;
            let mut response = api::RemoveImageResponse::new();
            response.image = protobuf::MessageField::some(convert::image_to_proto(&record));
            Ok(response)
        })
    }

    pub(super) fn gc(&self, ctx: &Call, _req: api::GcRequest) -> ttrpc::Result<api::GcResponse> {
        self.serve(ctx, "Gc", "", || {
            Ok(convert::gc_to_proto(&self.volumes.gc()?))
        })
    }
}

impl Dispatch for Service {
    fn call(&self, ctx: &Call, service: &str, method: &str, payload: &[u8]) -> ttrpc::Response {
        if service != super::SERVICE_NAME {
            return unknown(ctx, service, method);
        }
        match method {
            "MutateMounts" => unary(ctx, method, payload, |r| self.mutate_mounts(ctx, r)),
            "Cleanup" => unary(ctx, method, payload, |r| self.cleanup(ctx, r)),
            "Release" => unary(ctx, method, payload, |r| self.release(ctx, r)),
            "List" => unary(ctx, method, payload, |r| self.list(ctx, r)),
            "Status" => unary(ctx, method, payload, |r| self.status(ctx, r)),
            "Import" => unary(ctx, method, payload, |r| self.import(ctx, r)),
            "Images" => unary(ctx, method, payload, |r| self.images(ctx, r)),
            "RemoveImage" => unary(ctx, method, payload, |r| self.remove_image(ctx, r)),
            "Gc" => unary(ctx, method, payload, |r| self.gc(ctx, r)),
            _ => unknown(ctx, service, method),
        }
    }
}

/// Decode the request message, run `method`, encode its answer.
fn unary<Req: Message, Res: Message>(
    ctx: &Call,
    method: &str,
    payload: &[u8],
    run: impl FnOnce(Req) -> ttrpc::Result<Res>,
) -> ttrpc::Response {
    let request = match Req::parse_from_bytes(payload) {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!(
                method,
                pid = ctx.peer.pid,
                uid = ctx.peer.uid,
                error = %e,
                "a request that cannot be decoded; answering InvalidArgument"
            );
            return super::wire::failed(ttrpc::get_status(
                Code::INVALID_ARGUMENT,
                format!(
                    "/{}/{method}: the request cannot be decoded: {e}",
                    super::SERVICE_NAME
                ),
            ));
        }
    };
    let answer = run(request).and_then(|response| {
        response
            .write_to_bytes()
            .map_err(|e| status(Code::INTERNAL, &format!("encoding the answer: {e}")))
    });
    match answer {
        Ok(bytes) => super::wire::ok(bytes),
        Err(ttrpc::Error::RpcStatus(s)) => super::wire::failed(s),
        Err(e) => super::wire::failed(ttrpc::get_status(Code::INTERNAL, e.to_string())),
    }
}

fn unknown(ctx: &Call, service: &str, method: &str) -> ttrpc::Response {
    tracing::warn!(
        pid = ctx.peer.pid,
        uid = ctx.peer.uid,
        service,
        method,
        "a request for an unknown method"
    );
    super::wire::failed(ttrpc::get_status(
        Code::UNIMPLEMENTED,
        format!("/{service}/{method}: no such method"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_bounds_and_drains() {
        let gate = Gate::new(1);
        let first = gate.admit(None).unwrap();
        assert_eq!(gate.running(), 1);
        // Full: a request with a near deadline is refused without running.
        let soon = Instant::now() + Duration::from_millis(20);
        let Err(ttrpc::Error::RpcStatus(s)) = gate.admit(Some(soon)) else {
            panic!("admitted past the bound")
        };
        assert_eq!(s.code.value(), Code::DEADLINE_EXCEEDED as i32);
        assert!(!gate.wait_idle(Some(Duration::from_millis(10))));
        drop(first);
        assert!(gate.wait_idle(Some(Duration::from_millis(10))));
        gate.drain();
        let Err(ttrpc::Error::RpcStatus(s)) = gate.admit(None) else {
            panic!("admitted while draining")
        };
        assert_eq!(s.code.value(), Code::UNAVAILABLE as i32);
    }
}
