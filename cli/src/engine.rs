//! Where the commands run: on the store here, or on a daemon through `--socket`. Both are
//! an [`imv::Engine`], so each command is written once and its output and exit codes are
//! the same either way.

use std::path::Path;

use imv::service::Client;
use imv::{Config, Engine, ImageVolumes, Result};

/// The daemon on `socket` when given, else the store of `config`, opened by this process.
pub fn open(socket: Option<&Path>, config: Config) -> Result<Box<dyn Engine>> {
    Ok(match socket {
        Some(socket) => Box::new(Client::connect(socket)?),
        None => Box::new(ImageVolumes::open(config)?),
    })
}
