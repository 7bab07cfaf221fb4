//! Platforms (`os/arch[/variant]`): parsing, normalization and matching with the semantics
//! of containerd's `platforms.Only`, and picking a manifest out of an image index.
//!
//! TO BE IMPLEMENTED (helper): see the signatures below.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An OCI platform, normalized (`x86_64` is `amd64`, `aarch64` is `arm64`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture, e.g. `amd64`.
    pub architecture: String,
    /// CPU variant, e.g. `v7`; empty when none.
    pub variant: String,
    /// OS version (Windows); usually empty.
    pub os_version: String,
    /// OS features (Windows); usually empty.
    pub os_features: Vec<String>,
}

impl Platform {
    /// Parse `os/arch[/variant]` (or `arch` alone, or `os` alone, as containerd allows)
    /// and normalize it. Errors are InvalidArgument naming the string.
    pub fn parse(s: &str) -> Result<Self> {
        let _ = s;
        Err(Error::internal("platform parsing not implemented"))
    }

    /// The platform of this host, normalized.
    pub fn host() -> Self {
        unimplemented!()
    }
}
