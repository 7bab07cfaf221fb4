//! `imv.v1.ImageVolumes` on someone else's ttrpc server: a shim built with the
//! containerd-shim crate, or any program with a `ttrpc::Server` of ttrpc-rust, registers
//! it beside its own services and serves image volumes in process, on its own socket.
//!
//! It is the same service `imv serve` runs (handler.rs: deadlines, a bound on requests
//! running at once, a panic turned into Internal), behind the generated service trait
//! instead of imv's own loop (transport.rs). Who may connect is the host's business: its
//! socket, its permissions, its accept hook. The peer's credentials are read for the log
//! only.
//!
//! ```no_run
//! # fn main() -> imv::Result<()> {
//! use std::sync::Arc;
//! use imv::service::HostedService;
//!
//! let volumes = Arc::new(imv::ImageVolumes::open(imv::Config::default())?);
//! let mut server = ttrpc::Server::new()
//!     .bind("unix:///run/my-shim/shim.sock")
//!     .expect("bind")
//!     .register_service(HostedService::new(volumes).methods());
//! server.start().expect("start");
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use ttrpc::{MethodHandler, TtrpcContext};

use super::api;
use super::handler::{Gate, Service};
use super::observer::CallObserver;
use super::peer::{peer_cred, Peer};
use super::server::DEFAULT_MAX_CONCURRENT_REQUESTS;
use super::transport::Call;
use crate::volumes::ImageVolumes;

/// The service over one [`ImageVolumes`], for a ttrpc server of the caller's.
pub struct HostedService {
    service: Service,
}

impl HostedService {
    /// The service over `volumes`, at most [`DEFAULT_MAX_CONCURRENT_REQUESTS`] requests
    /// running at once (more wait, until their deadline).
    pub fn new(volumes: Arc<ImageVolumes>) -> Self {
        Self::with_max_concurrent_requests(volumes, DEFAULT_MAX_CONCURRENT_REQUESTS)
    }

    /// [`new`](Self::new), at most `max` requests running at once.
    pub fn with_max_concurrent_requests(volumes: Arc<ImageVolumes>, max: usize) -> Self {
        HostedService {
            service: Service::new(volumes, Arc::new(Gate::new(max.max(1))), None),
        }
    }

    /// [`with_max_concurrent_requests`](Self::with_max_concurrent_requests), `observer`
    /// told of every call answered (a host's metrics).
    pub fn with_observer(
        volumes: Arc<ImageVolumes>,
        max: usize,
        observer: Arc<dyn CallObserver>,
    ) -> Self {
        HostedService {
            service: Service::new(volumes, Arc::new(Gate::new(max.max(1))), Some(observer)),
        }
    }

    /// The methods to register on a `ttrpc::Server` (`register_service`).
    pub fn methods(self) -> HashMap<String, Box<dyn MethodHandler + Send + Sync>> {
        api::create_image_volumes(Arc::new(self))
    }
}

/// What handler.rs runs a request with: the peer (as the kernel saw it connect; unknown
/// is uid `u32::MAX` in the log) and the caller's timeout.
fn call_of(ctx: &TtrpcContext) -> Call {
    // SAFETY: the descriptor is the connection's, open for as long as the server handles
    // this request on it (ttrpc-rust closes it only after the connection ends).
    let fd = unsafe { BorrowedFd::borrow_raw(ctx.fd) };
    let peer = peer_cred(fd).unwrap_or(Peer {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    });
    Call {
        peer,
        timeout_nano: ctx.timeout_nano,
    }
}

impl api::ImageVolumesService for HostedService {
    fn mutate_mounts(
        &self,
        ctx: &TtrpcContext,
        req: api::MutateMountsRequest,
    ) -> ttrpc::Result<api::MutateMountsResponse> {
        self.service.mutate_mounts(&call_of(ctx), req)
    }

    fn cleanup(
        &self,
        ctx: &TtrpcContext,
        req: api::CleanupRequest,
    ) -> ttrpc::Result<api::CleanupResponse> {
        self.service.cleanup(&call_of(ctx), req)
    }

    fn release(
        &self,
        ctx: &TtrpcContext,
        req: api::ReleaseRequest,
    ) -> ttrpc::Result<api::ReleaseResponse> {
        self.service.release(&call_of(ctx), req)
    }

    fn list(&self, ctx: &TtrpcContext, req: api::ListRequest) -> ttrpc::Result<api::ListResponse> {
        self.service.list(&call_of(ctx), req)
    }

    fn status(
        &self,
        ctx: &TtrpcContext,
        req: api::StatusRequest,
    ) -> ttrpc::Result<api::StatusResponse> {
        self.service.status(&call_of(ctx), req)
    }

    fn import(
        &self,
        ctx: &TtrpcContext,
        req: api::ImportRequest,
    ) -> ttrpc::Result<api::ImportResponse> {
        self.service.import(&call_of(ctx), req)
    }

    fn images(
        &self,
        ctx: &TtrpcContext,
        req: api::ImagesRequest,
    ) -> ttrpc::Result<api::ImagesResponse> {
        self.service.images(&call_of(ctx), req)
    }

    fn remove_image(
        &self,
        ctx: &TtrpcContext,
        req: api::RemoveImageRequest,
    ) -> ttrpc::Result<api::RemoveImageResponse> {
        self.service.remove_image(&call_of(ctx), req)
    }

    fn gc(&self, ctx: &TtrpcContext, req: api::GcRequest) -> ttrpc::Result<api::GcResponse> {
        self.service.gc(&call_of(ctx), req)
    }
}
