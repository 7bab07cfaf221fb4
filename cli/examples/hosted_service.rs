//! A ttrpc server of one's own (as a Rust shim built with the containerd-shim crate has)
//! hosting `imv.v1.ImageVolumes` beside whatever else it serves: the service runs in this
//! process, on this program's socket. Any ttrpc client of the service talks to it: imv's
//! (`imv --socket SOCKET ...`), Go's generated `NewImageVolumesClient`, the Go bindings.
//!
//! ```sh
//! cargo run -p imv-cli --example hosted_service -- /tmp/shim.sock /tmp/imv-root /tmp/imv-state
//! imv --socket /tmp/shim.sock status
//! ```
//!
//! It stops on SIGTERM or SIGINT.

use std::sync::Arc;

use imv::service::HostedService;
use imv::{Config, ImageVolumes};
use nix::sys::signal::{SigSet, Signal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, root, state] = &args[..] else {
        eprintln!("usage: hosted_service SOCKET ROOT STATE");
        std::process::exit(2);
    };
    // Block the stop signals before any thread starts, so that every thread inherits the
    // mask and sigwait below is the one that takes them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block()?;

    let volumes = Arc::new(ImageVolumes::open(Config::new(root, state))?);
    let mut server = ttrpc::Server::new()
        .bind(&format!("unix://{socket}"))?
        // A shim registers its task service here too; each service is a map of methods.
        .register_service(HostedService::new(volumes).methods());
    server.start()?;
    eprintln!("serving imv.v1.ImageVolumes on {socket}");
    stop.wait()?;
    server.shutdown();
    let _ = std::fs::remove_file(socket);
    Ok(())
}
