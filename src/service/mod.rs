//! The ttrpc service `imv.v1.ImageVolumes` (proto/imv/v1/imv.proto): the daemon's server,
//! a client, and the translation between the wire types and the crate's.
//!
//! This layer is an adapter (docs/design.md, "Layers"): requests go through the same
//! [`ImageVolumes`](crate::ImageVolumes) methods as every other caller, so they are
//! validated and carried out exactly as a local call would be. What lives here is transport only: the unix socket and who may connect
//! ([`Server`]), deadlines, draining on shutdown, and status codes that are the
//! [`ErrorKind`](crate::ErrorKind) numbers (gRPC codes).
//!
//! The library never installs signal handlers: the `imv serve` command does, and calls
//! [`Server::stop_accepting`] and [`Server::shutdown`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use imv::service::{Server, ServerConfig};
//! use imv::{Config, ImageVolumes};
//!
//! let volumes = Arc::new(ImageVolumes::open(Config::default())?);
//! let server = Server::start(volumes, ServerConfig::new("/run/imv/imv.sock"))?;
//! // ... until it is time to stop:
//! server.shutdown();
//! # Ok::<(), imv::Error>(())
//! ```

mod client;
mod connections;
mod convert;
mod handler;
mod hosted;
mod observer;
mod peer;
mod refusals;
mod server;
mod transport;
mod wire;

pub use client::Client;
pub use hosted::HostedService;
pub use observer::CallObserver;
pub use server::{
    Server, ServerConfig, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_SOCKET,
};

/// The code generated from proto/imv/v1/*.proto by build.rs (ttrpc-codegen, rust-protobuf).
/// The ttrpc half refers to the messages as `super::imv`, hence the two sibling modules.
mod generated {
    include!(concat!(env!("OUT_DIR"), "/proto/generated.rs"));
}

/// The wire types of `imv.v1`, as generated: messages, the service trait, the raw client.
///
/// [`Mount`](api::Mount), [`ImageSpec`](api::ImageSpec), [`IDMapping`](api::IDMapping) and
/// [`MountPropagation`](api::MountPropagation) are wire-compatible with CRI `runtime.v1`.
/// Messages keep fields they do not know (`special_fields`), so bytes from a newer CRI
/// survive a decode and encode.
pub mod api {
    pub use super::generated::imv::*;
    pub use super::generated::imv_ttrpc::{
        create_image_volumes, ImageVolumes as ImageVolumesService, ImageVolumesClient,
    };
}

/// The fully qualified service name, as on the wire (`/imv.v1.ImageVolumes/<Method>`).
pub const SERVICE_NAME: &str = "imv.v1.ImageVolumes";
