//! Platforms (`os/arch[/variant]`): parsing, normalization and matching with the semantics
//! of containerd's `platforms` package (`Parse`, `Normalize`, `Only`), and picking a
//! manifest out of an image index the way containerd's `images.Manifest` does.
//!
//! Everything here works on normalized platforms: `x86_64` is `amd64`, `aarch64` is
//! `arm64`, `armhf` is `arm/v7`, plain `arm` is `arm/v7`, `arm64/v8` is plain `arm64`.
//! Input (platform strings, index descriptors) is untrusted: nothing here panics on it.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use crate::error::{truncate, Error, Result};

mod host;
mod matcher;
mod specifier;
#[cfg(test)]
mod tests;

use host::{arm_variant, host_arch, host_os};
pub use matcher::{select_manifest, Matcher};
use specifier::{
    encode_os_option, is_known_arch, is_known_os, is_specifier_component, normalize_arch,
    normalize_os, parse_os_component,
};

/// An OCI platform, normalized (`x86_64` is `amd64`, `aarch64` is `arm64`, ...).
///
/// Serialized with the OCI field names (`os`, `architecture`, `variant`, `os.version`,
/// `os.features`); empty optional fields are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture, e.g. `amd64`.
    pub architecture: String,
    /// CPU variant, e.g. `v7`; empty when none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
    /// OS version (Windows); usually empty.
    #[serde(
        rename = "os.version",
        alias = "os_version",
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// OS features (Windows); usually empty.
    #[serde(
        rename = "os.features",
        alias = "os_features",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub os_features: Vec<String>,
}

/// Longest platform specifier [`Platform::parse`] accepts. containerd has no limit, but
/// real specifiers are a few dozen bytes and error messages quote the input, so a bound
/// keeps an untrusted caller from making us format megabytes.
const MAX_SPECIFIER_LEN: usize = 512;

impl Platform {
    /// Parse `os/arch[/variant]` (or `arch` alone, or `os` alone, as containerd allows)
    /// and normalize it. Errors are InvalidArgument naming the string.
    ///
    /// The OS component may carry a version and features as in containerd,
    /// `windows(10.0.17763+win32k)/amd64`, with `%`-escapes for `%+()/`.
    ///
    /// Differences from containerd's `platforms.Parse`: the result is normalized (plain
    /// `arm` comes back as `arm/v7`, `arm64/v8` as `arm64`, where containerd leaves that to
    /// `Normalize`), `i686` is accepted as `386`, and specifiers longer than 512 bytes are
    /// refused. Like containerd, a two- or three-part specifier with an OS or architecture
    /// nobody knows (`foo/bar`) is accepted: only a single bare component must be known.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid(format!("invalid platform {s:?}: {why}"));
        if s.is_empty() {
            return Err(bad("empty specifier"));
        }
        if s.len() > MAX_SPECIFIER_LEN {
            return Err(Error::invalid(format!(
                "invalid platform {:?}...: longer than {MAX_SPECIFIER_LEN} bytes",
                truncate(s, 64)
            )));
        }
        if s.contains('*') {
            return Err(bad("wildcards are not supported"));
        }
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() > 3 {
            return Err(bad("too many components, want os/arch[/variant]"));
        }
        let (os, os_version, os_features) =
            parse_os_component(parts[0]).map_err(|why| bad(&why))?;
        for part in &parts[1..] {
            if !is_specifier_component(part) {
                return Err(bad(&format!(
                    "component {part:?} must be non-empty and contain only ASCII letters, digits, '_', '.' and '-'"
                )));
            }
        }
        let os = normalize_os(&os);

        let mut p = Platform {
            os,
            os_version,
            os_features,
            ..Platform::default()
        };
        match parts.as_slice() {
            [single] => {
                if is_known_os(&p.os) {
                    // An OS alone means "this OS on the host's CPU".
                    let host = Platform::host();
                    p.architecture = host.architecture;
                    p.variant = host.variant;
                } else {
                    let (arch, variant) = normalize_arch(single, "");
                    if !is_known_arch(&arch) {
                        return Err(bad("unknown operating system or architecture"));
                    }
                    // An architecture alone means "the host's OS on that CPU".
                    p = Platform {
                        os: Platform::host().os,
                        architecture: arch,
                        variant,
                        ..Platform::default()
                    };
                }
            }
            [_, arch] => (p.architecture, p.variant) = normalize_arch(arch, ""),
            [_, arch, variant] => (p.architecture, p.variant) = normalize_arch(arch, variant),
            _ => return Err(bad("too many components, want os/arch[/variant]")),
        }
        Ok(p.normalize())
    }

    /// The platform of this host, normalized: the OS and CPU this crate was built for,
    /// and for 32-bit ARM the variant the kernel reports in `/proc/cpuinfo` (as
    /// containerd's `platforms.DefaultSpec`).
    pub fn host() -> Self {
        static HOST: OnceLock<Platform> = OnceLock::new();
        HOST.get_or_init(|| {
            let architecture = host_arch().to_string();
            // containerd reads the variant for arm64 too, but the kernel always reports
            // "8" there, which normalizes to no variant: only 32-bit ARM needs the read.
            let variant = if architecture == "arm" || architecture == "armbe" {
                let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok();
                let machine = rustix::system::uname()
                    .machine()
                    .to_string_lossy()
                    .into_owned();
                arm_variant(cpuinfo.as_deref(), Some(&machine))
            } else {
                String::new()
            };
            Platform {
                os: normalize_os(host_os()),
                architecture,
                variant,
                ..Platform::default()
            }
            .normalize()
        })
        .clone()
    }

    /// The normalized form of this platform (containerd's `platforms.Normalize`): OS and
    /// architecture lower-cased and mapped to their Go names (`macos` is `darwin`,
    /// `x86_64` is `amd64`, `aarch64` is `arm64`, `armhf` is `arm/v7`, `armel` is
    /// `arm/v6`, `i386` is `386`), the variant spelled `vN` (`arm` defaults to `v7`,
    /// `arm64/v8` and `amd64/v1` lose their variant), OS features sorted and de-duplicated.
    /// An empty OS is the host's OS.
    pub fn normalize(mut self) -> Self {
        self.os = normalize_os(&self.os);
        (self.architecture, self.variant) = normalize_arch(&self.architecture, &self.variant);
        self.os_features.sort();
        self.os_features.dedup();
        self
    }

    /// The platform of an OCI image configuration, normalized, including its OS version
    /// and features.
    pub fn from_image_config(config: &ImageConfiguration) -> Self {
        Platform {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            variant: config.variant().clone().unwrap_or_default(),
            os_version: config.os_version().clone().unwrap_or_default(),
            os_features: config.os_features().clone().unwrap_or_default(),
        }
        .normalize()
    }

    /// The platform of an index entry (`Descriptor.platform`), normalized.
    pub fn from_oci(p: &oci_spec::image::Platform) -> Self {
        // oci-spec turns unknown names into `Other(name)` and prints them back as they
        // were, so the round trip through Display keeps every value.
        Platform {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone().unwrap_or_default(),
            os_version: p.os_version().clone().unwrap_or_default(),
            os_features: p.os_features().clone().unwrap_or_default(),
        }
        .normalize()
    }

    /// A matcher with containerd's `platforms.Only` semantics for this platform: it
    /// matches this platform and the ones its CPU can also run, ranked best first.
    pub fn only(&self) -> Matcher {
        Matcher::only(self.clone().normalize())
    }
}

impl fmt::Display for Platform {
    /// `os[(version[+feature...])]/arch[/variant]`, as containerd's `FormatAll`; `unknown`
    /// when the OS is empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.os.is_empty() {
            return f.write_str("unknown");
        }
        f.write_str(&self.os)?;
        let mut features: Vec<&str> = self
            .os_features
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        features.sort_unstable();
        features.dedup();
        if !self.os_version.is_empty() || !features.is_empty() {
            write!(f, "({}", encode_os_option(&self.os_version))?;
            for feature in features {
                write!(f, "+{}", encode_os_option(feature))?;
            }
            f.write_str(")")?;
        }
        for part in [&self.architecture, &self.variant] {
            if !part.is_empty() {
                write!(f, "/{part}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Platform::parse(s)
    }
}
