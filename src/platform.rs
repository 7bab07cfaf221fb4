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

use oci_spec::image::{Descriptor, ImageConfiguration, MediaType};
use serde::{Deserialize, Serialize};

use crate::error::{truncate, Error, Result};
use crate::media_type;

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

/// The annotation buildx puts on attestation manifests (SBOM, provenance) in an index.
const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

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

    /// The platform an image configuration declares (for an image that is a single
    /// manifest, not an index), normalized.
    pub fn from_config(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.unwrap_or_default().to_string(),
            ..Platform::default()
        }
        .normalize()
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
        let want = self.clone().normalize();
        let candidates = platform_vector(&want);
        Matcher { want, candidates }
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

/// Matches and ranks platforms for one wanted platform, as containerd's
/// `platforms.Only`: the wanted platform itself first, then the ones its CPU also runs.
///
/// The fallbacks, as containerd has them today (platforms v1, `platformVector`):
/// - `amd64/vN` also runs `amd64/vN-1` ... `amd64` (v1), then `386`;
/// - `arm/vN` also runs `arm/vN-1` ... `arm/v5`;
/// - `arm64/v8.x` runs `arm64/v8.x-1` ... `arm64`; `arm64/v9.x` runs `arm64/v9.x-1` ...
///   `arm64/v9`, then `arm64/v8.(x+5)` ... `arm64`; every arm64 also runs 32-bit
///   `arm/v8`, `arm/v7`, `arm/v6`, `arm/v5`, in that order, after the arm64 ones;
/// - anything else matches only itself.
///
/// One deliberate difference: for an arm64 variant containerd has no table entry for
/// (say `arm64/v10`), containerd's `Only` matches nothing at all, not even that very
/// platform; here it matches itself, since a platform that refuses itself is never useful.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher {
    want: Platform,
    /// Accepted platforms, best first; all normalized.
    candidates: Vec<Platform>,
}

impl Matcher {
    /// The platform this matcher was built for, normalized.
    pub fn platform(&self) -> &Platform {
        &self.want
    }

    /// The platforms this matcher accepts, best first (OS version and features aside).
    pub fn candidates(&self) -> &[Platform] {
        &self.candidates
    }

    /// Where `p` (normalized first) ranks: 0 is an exact match, higher numbers are
    /// fallbacks further away; `None` when `p` does not match at all.
    pub fn rank(&self, p: &Platform) -> Option<usize> {
        let p = p.clone().normalize();
        self.candidates
            .iter()
            .position(|c| candidate_matches(c, &p))
    }

    /// Whether `p` (normalized first) can run where this matcher's platform runs.
    pub fn matches(&self, p: &Platform) -> bool {
        self.rank(p).is_some()
    }

    /// Whether `a` is a better choice than `b`: a match beats no match, a better rank
    /// beats a worse one, and at equal rank the one that declares more OS features wins
    /// (containerd's `Ordered(...).Less`).
    pub fn less(&self, a: &Platform, b: &Platform) -> bool {
        match (self.rank(a), self.rank(b)) {
            (Some(ra), Some(rb)) if ra == rb => feature_count(a) > feature_count(b),
            (Some(ra), Some(rb)) => ra < rb,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The best manifest for `want` among an index's `manifests`, as containerd's
/// `images.Manifest` picks it: entries whose media type is neither an image manifest nor
/// an index are skipped, as are buildx attestation manifests; an entry with a platform
/// must match `want` ([`Platform::only`]) and the best rank wins; an entry without a
/// platform matches anything but comes after every entry with a matching platform;
/// among equals the first in the index wins.
///
/// The result may be a nested index (resolve it again), or a manifest without a platform,
/// whose configuration the caller should check with [`Platform::from_image_config`] and
/// [`Matcher::matches`], as containerd does.
pub fn select_manifest<'a>(manifests: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let matcher = want.only();
    // Key: (rank, fewer features first), smaller is better; entries without a platform
    // get the worst key. Only a strictly better key replaces the current best, which keeps
    // the first of equals as containerd's stable sort does.
    let mut best: Option<(&Descriptor, (usize, usize))> = None;
    for desc in manifests {
        if !is_runnable_media_type(desc.media_type()) || is_attestation(desc) {
            continue;
        }
        let key = match desc.platform() {
            None => (usize::MAX, 0),
            Some(p) => {
                let p = Platform::from_oci(p);
                match matcher.rank(&p) {
                    Some(rank) => (rank, usize::MAX - feature_count(&p)),
                    None => continue,
                }
            }
        };
        if best.as_ref().is_none_or(|(_, best_key)| key < *best_key) {
            best = Some((desc, key));
        }
    }
    best.map(|(desc, _)| desc)
}

fn is_runnable_media_type(mt: &MediaType) -> bool {
    let media_type = mt.to_string();
    // What an index may point at that can be run: an image manifest, or a nested index
    // (which the caller resolves again).
    media_type::is_manifest(&media_type) || media_type::is_index(&media_type)
}

/// buildx stores SBOM and provenance as image manifests in the index with platform
/// `unknown/unknown`; they never match a real platform, and this makes sure they cannot
/// win either when their platform is missing.
fn is_attestation(desc: &Descriptor) -> bool {
    desc.annotations()
        .as_ref()
        .and_then(|a| a.get(DOCKER_REFERENCE_TYPE))
        .is_some_and(|v| v == "attestation-manifest")
}

fn feature_count(p: &Platform) -> usize {
    let mut features: Vec<&String> = p.os_features.iter().collect();
    features.sort();
    features.dedup();
    features.len()
}

/// Whether the normalized `p` matches the normalized candidate `c` (containerd's
/// `matcher.Match`): same OS, architecture and variant, a compatible OS version (checked
/// for Windows only), and every OS feature `p` requires is one `c` offers.
fn candidate_matches(c: &Platform, p: &Platform) -> bool {
    if c.os != p.os || c.architecture != p.architecture || c.variant != p.variant {
        return false;
    }
    if c.os == "windows" {
        if !windows_version_matches(&c.os_version, &p.os_version) {
            return false;
        }
        // containerd ignores `win32k` in what an image requires: every Windows host that
        // runs containers has it.
        return p
            .os_features
            .iter()
            .filter(|f| *f != "win32k")
            .all(|f| c.os_features.contains(f));
    }
    p.os_features.iter().all(|f| c.os_features.contains(f))
}

/// containerd's Windows host/container version compatibility, reduced to what matters:
/// with both versions known (`major.minor.build`), major and minor must be equal and the
/// build must be equal, except that hosts from Windows Server 2022 (build 20348) on run
/// containers from the previous LTSC release up to their own build (stable ABI).
fn windows_version_matches(host: &str, image: &str) -> bool {
    const LTSC_RELEASES: [u16; 2] = [20348, 26100];
    let (Some(h), Some(i)) = (windows_version(host), windows_version(image)) else {
        // Unknown on either side: containerd does not filter.
        return true;
    };
    if h.0 != i.0 || h.1 != i.1 {
        return false;
    }
    if h.2 < LTSC_RELEASES[0] {
        return h.2 == i.2;
    }
    let oldest = LTSC_RELEASES
        .iter()
        .rev()
        .find(|&&r| h.2 > r)
        .copied()
        .unwrap_or(LTSC_RELEASES[0]);
    oldest <= i.2 && i.2 <= h.2
}

fn windows_version(v: &str) -> Option<(u8, u8, u16)> {
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let build = parts.next()?.parse().ok()?;
    if (major, minor, build) == (0, 0, 0) {
        return None;
    }
    Some((major, minor, build))
}

/// The platforms `p` (normalized) can run, best first (containerd's `platformVector`).
fn platform_vector(p: &Platform) -> Vec<Platform> {
    let with = |architecture: &str, variant: &str| {
        Platform {
            architecture: architecture.to_string(),
            variant: variant.to_string(),
            ..p.clone()
        }
        .normalize()
    };
    let mut vector = vec![p.clone()];
    match p.architecture.as_str() {
        "amd64" => {
            if let Some(level) = numeric_variant(&p.variant) {
                vector.extend((1..level).rev().map(|l| with("amd64", &format!("v{l}"))));
            }
            vector.push(with("386", ""));
        }
        "arm" => {
            if let Some(version) = numeric_variant(&p.variant) {
                vector.extend((5..version).rev().map(|v| with("arm", &format!("v{v}"))));
            }
        }
        "arm64" => {
            let variant = if p.variant.is_empty() {
                "v8"
            } else {
                p.variant.as_str()
            };
            if let Some((major, minor)) = arm64_version(variant) {
                vector.clear();
                // v9.x is a superset of v8.(x+5) (capped at v8.9), so after the v9
                // levels come the v8 ones.
                let mut ranges = vec![(major, minor)];
                if major == 9 {
                    ranges.push((8, (minor + 5).min(9)));
                }
                for (major, top) in ranges {
                    for minor in (0..=top).rev() {
                        let v = if minor == 0 {
                            format!("v{major}")
                        } else {
                            format!("v{major}.{minor}")
                        };
                        vector.push(with("arm64", &v));
                    }
                }
                // Every arm64 CPU with a known variant also runs 32-bit ARM up to v8.
                let arm = with("arm", "v8");
                vector.extend(platform_vector(&arm));
            }
        }
        _ => {}
    }
    vector
}

/// `vN` (or `N`) as a number, for amd64 and arm variants.
fn numeric_variant(variant: &str) -> Option<u32> {
    let digits = variant.strip_prefix('v').unwrap_or(variant);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 2 {
        return None;
    }
    digits.parse().ok()
}

/// The arm64 variants containerd knows: `v8`, `v8.1` ... `v8.9`, `v9`, `v9.1` ... `v9.7`.
fn arm64_version(variant: &str) -> Option<(u32, u32)> {
    let rest = variant.strip_prefix('v')?;
    let (major, minor) = match rest.split_once('.') {
        Some((major, minor)) => (major, minor),
        None => (rest, "0"),
    };
    let (major, minor): (u32, u32) = match (major, minor.as_bytes()) {
        ("8", [d]) if d.is_ascii_digit() => (8, u32::from(d - b'0')),
        ("9", [d @ b'0'..=b'7']) => (9, u32::from(d - b'0')),
        _ => return None,
    };
    Some((major, minor))
}

/// Split the first component, `os[(version[+feature...])]`, into its parts, checking
/// the characters as containerd's `osRe` does and decoding `%XX` escapes.
fn parse_os_component(part: &str) -> std::result::Result<(String, String, Vec<String>), String> {
    let (name, options) = match part.split_once('(') {
        Some((name, rest)) => match rest.strip_suffix(')') {
            Some(options) => (name, Some(options)),
            None => return Err(format!("OS component {part:?} has an unclosed '('")),
        },
        None => (part, None),
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "OS component {part:?} must start with ASCII letters, digits, '_' or '-' and may only add (version+features)"
        ));
    }
    let Some(options) = options else {
        return Ok((name.to_string(), String::new(), Vec::new()));
    };
    let option_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'%' | b'-');
    let (version, features) = match options.split_once('+') {
        Some((version, features)) => (version, Some(features)),
        None => (options, None),
    };
    if !version.bytes().all(option_char) {
        return Err(format!(
            "OS version {version:?} contains a character outside [A-Za-z0-9_.%-]"
        ));
    }
    let version = decode_os_option(version)?;
    let mut parsed = Vec::new();
    if let Some(features) = features {
        for feature in features.split('+') {
            if feature.is_empty() || !feature.bytes().all(option_char) {
                return Err(format!("OS feature {feature:?} is empty or contains a character outside [A-Za-z0-9_.%-]"));
            }
            let feature = decode_os_option(feature)?;
            if !feature.is_empty() {
                parsed.push(feature);
            }
        }
    }
    Ok((name.to_string(), version, parsed))
}

/// Undo `%XX` escapes (Go's `url.PathUnescape`, as containerd uses).
fn decode_os_option(v: &str) -> std::result::Result<String, String> {
    if !v.contains('%') {
        return Ok(v.to_string());
    }
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            match byte {
                Some(b) if hex.is_some_and(|h| h.bytes().all(|c| c.is_ascii_hexdigit())) => {
                    out.push(b)
                }
                _ => return Err(format!("{v:?} has an invalid %-escape")),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{v:?} decodes to invalid UTF-8"))
}

/// Escape an OS version or feature for the `os(version+features)` syntax: every byte
/// outside `[A-Za-z0-9_.-]` as `%XX`. containerd's `encodeOSOption` escapes only `%+()/`,
/// but its parser (and ours) accepts only `[A-Za-z0-9_.%-]` there, so a value holding a
/// space or any other character would print as something neither can read back; `%XX`
/// of any byte decodes the same in both.
fn encode_os_option(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A component after the OS: containerd's `^[A-Za-z0-9_.-]+$`.
fn is_specifier_component(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// containerd's `normalizeOS`: lower-case, `macos` is `darwin`, empty is the host's OS.
fn normalize_os(os: &str) -> String {
    if os.is_empty() {
        return normalize_os(host_os());
    }
    let os = os.to_ascii_lowercase();
    if os == "macos" {
        return "darwin".to_string();
    }
    os
}

/// containerd's `normalizeArch`, plus `i686` as `386`.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "i386" | "i686" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let variant = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), variant)
        }
        "aarch64" | "arm64" => {
            let variant = match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".into(),
                _ => variant,
            };
            ("arm64".into(), variant)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let variant = match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), variant)
        }
        _ => (arch, variant),
    }
}

/// The GOOS values containerd knows (`isKnownOS`).
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

fn is_known_os(name: &str) -> bool {
    KNOWN_OS.contains(&name)
}

/// The GOARCH values containerd knows (`isKnownArch`).
const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

fn is_known_arch(name: &str) -> bool {
    KNOWN_ARCH.contains(&name)
}

/// The host OS in Go's spelling (GOOS), which is what images declare.
fn host_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        os => os,
    }
}

/// The host CPU architecture in Go's spelling (GOARCH), which is what images declare.
/// Rust names some architectures differently and leaves endianness out of the name.
fn host_arch() -> &'static str {
    let little = cfg!(target_endian = "little");
    match std::env::consts::ARCH {
        "x86" => "386",
        "x86_64" => "amd64",
        "aarch64" if little => "arm64",
        "aarch64" => "arm64be",
        "arm" if little => "arm",
        "arm" => "armbe",
        "loongarch64" => "loong64",
        "mips" | "mips32r6" if little => "mipsle",
        "mips" | "mips32r6" => "mips",
        "mips64" | "mips64r6" if little => "mips64le",
        "mips64" | "mips64r6" => "mips64",
        "powerpc" => "ppc",
        "powerpc64" if little => "ppc64le",
        "powerpc64" => "ppc64",
        "wasm32" => "wasm",
        arch => arch,
    }
}

/// The 32-bit ARM variant from the text of `/proc/cpuinfo` (its "CPU architecture"
/// field), falling back to the `uname` machine (`armv7l` ...) when the field is missing,
/// as under emulation; containerd's `getCPUVariant`. Unknown values give `unknown`, as in
/// containerd, so that such a host matches only images that say exactly that.
fn arm_variant(cpuinfo: Option<&str>, machine: Option<&str>) -> String {
    let field = |name: &str| {
        cpuinfo?.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    };
    let mut variant = match field("CPU architecture") {
        Some(v) => v,
        None => match machine.map(str::to_ascii_lowercase) {
            Some(m) if m == "aarch64" => "8".into(),
            // `armv7l` and the like: the digit after "armv" is the variant.
            Some(m) if m.starts_with("armv") && m.len() >= 5 => match m.as_bytes()[4] {
                d @ b'3'..=b'8' => char::from(d).to_string(),
                _ => "unknown".into(),
            },
            _ => return String::new(),
        },
    };
    // Raspberry Pi ARMv6 boards report "CPU architecture: 7" (a kernel quirk); their
    // model name gives them away.
    if variant == "7"
        && field("model name")
            .is_some_and(|m| m.to_ascii_lowercase().starts_with("armv6-compatible"))
    {
        variant = "6".into();
    }
    match variant.to_ascii_lowercase().as_str() {
        "8" | "aarch64" => "v8",
        "7" | "7m" | "?(12)" | "?(13)" | "?(14)" | "?(15)" | "?(16)" | "?(17)" => "v7",
        "6" | "6tej" => "v6",
        "5" | "5t" | "5te" | "5tej" => "v5",
        "4" | "4t" => "v4",
        "3" => "v3",
        _ => "unknown",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn p(os: &str, arch: &str, variant: &str) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.into(),
            ..Platform::default()
        }
    }

    #[test]
    fn parse_table() {
        let host = Platform::host();
        let cases: &[(&str, Platform)] = &[
            ("linux/amd64", p("linux", "amd64", "")),
            ("Linux/X86_64", p("linux", "amd64", "")),
            ("linux/x86-64", p("linux", "amd64", "")),
            ("linux/amd64/v1", p("linux", "amd64", "")),
            ("linux/amd64/v3", p("linux", "amd64", "v3")),
            ("linux/aarch64", p("linux", "arm64", "")),
            ("linux/arm64/v8", p("linux", "arm64", "")),
            ("linux/arm64/8", p("linux", "arm64", "")),
            ("linux/arm64/v8.0", p("linux", "arm64", "")),
            ("linux/arm64/v8.2", p("linux", "arm64", "v8.2")),
            ("linux/arm64/9", p("linux", "arm64", "v9")),
            ("linux/arm", p("linux", "arm", "v7")),
            ("linux/arm/7", p("linux", "arm", "v7")),
            ("linux/arm/v6", p("linux", "arm", "v6")),
            ("linux/arm/5", p("linux", "arm", "v5")),
            ("linux/armhf", p("linux", "arm", "v7")),
            ("linux/armel", p("linux", "arm", "v6")),
            ("linux/i386", p("linux", "386", "")),
            ("linux/i686", p("linux", "386", "")),
            ("linux/386", p("linux", "386", "")),
            ("linux/ppc64le", p("linux", "ppc64le", "")),
            ("linux/s390x", p("linux", "s390x", "")),
            ("macos/arm64", p("darwin", "arm64", "")),
            ("windows/amd64", p("windows", "amd64", "")),
            // containerd accepts any os/arch pair; only a bare component must be known.
            ("plan10/risc-z", p("plan10", "risc-z", "")),
            // A bare architecture: the host's OS.
            ("arm64", p(&host.os, "arm64", "")),
            ("armhf", p(&host.os, "arm", "v7")),
            ("x86_64", p(&host.os, "amd64", "")),
            // A bare OS: the host's CPU.
            ("linux", p("linux", &host.architecture, &host.variant)),
            ("Darwin", p("darwin", &host.architecture, &host.variant)),
        ];
        for (input, want) in cases {
            let got = Platform::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(&got, want, "parse({input:?})");
            let via_from_str: Platform = input.parse().unwrap();
            assert_eq!(&via_from_str, want);
        }
    }

    #[test]
    fn parse_os_version_and_features() {
        let got = Platform::parse("windows(10.0.17763+win32k+b%2Bc)/amd64").unwrap();
        assert_eq!(got.os, "windows");
        assert_eq!(got.os_version, "10.0.17763");
        assert_eq!(
            got.os_features,
            vec!["b+c".to_string(), "win32k".to_string()]
        );
        assert_eq!(got.architecture, "amd64");
        // Display escapes what it must and sorts features, so it parses back the same.
        let shown = got.to_string();
        assert_eq!(shown, "windows(10.0.17763+b%2Bc+win32k)/amd64");
        assert_eq!(Platform::parse(&shown).unwrap(), got);

        let got = Platform::parse("linux()/amd64").unwrap();
        assert_eq!(got, p("linux", "amd64", ""));
    }

    /// Found by tests/properties.rs: a decoded version or feature holding a character the
    /// parser does not take raw (a space, say) must be printed escaped, or the printed
    /// form does not parse.
    #[test]
    fn display_escapes_every_character_the_parser_refuses_raw() {
        for input in [
            "linux(+%20)/amd64",
            "windows(a%20b+%E2%82%AC+x%2Fy)/amd64",
            "windows(%3A%2A%3F)/amd64",
        ] {
            let got = Platform::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            let shown = got.to_string();
            assert_eq!(
                Platform::parse(&shown).ok(),
                Some(got),
                "{input} shown as {shown}"
            );
        }
        let got = Platform::parse("linux(a%20b+%E2%82%AC)/amd64").unwrap();
        assert_eq!(got.os_version, "a b");
        assert_eq!(got.os_features, vec!["\u{20ac}".to_string()]);
        assert_eq!(got.to_string(), "linux(a%20b+%E2%82%AC)/amd64");
    }

    #[test]
    fn parse_errors_name_the_input() {
        let long = "a".repeat(MAX_SPECIFIER_LEN + 1);
        let bad = [
            "",
            "/",
            "linux/",
            "/amd64",
            "linux//v7",
            "linux/amd64/v7/extra",
            "a/b/c/d/e",
            "linux/*",
            "*",
            "linux/amd 64",
            "linux/amd64/v7\0",
            "li nux/amd64",
            "linux(/amd64",
            "linux(1.0/amd64",
            "linux(1.0)x/amd64",
            "linux(1+)/amd64",
            "linux(%zz)/amd64",
            "linux(%ff)/amd64",
            "linux/ärm",
            "nosuchthing",
            "ünïcode",
            long.as_str(),
        ];
        for input in bad {
            let err = Platform::parse(input).expect_err(input);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{input:?}: {err}");
            let quoted = format!("{:?}", truncate(input, 64));
            let quoted = quoted.trim_end_matches('"');
            assert!(err.message().contains(quoted), "{input:?}: {err}");
        }
    }

    #[test]
    fn display() {
        assert_eq!(p("linux", "arm", "v7").to_string(), "linux/arm/v7");
        assert_eq!(p("linux", "amd64", "").to_string(), "linux/amd64");
        assert_eq!(p("", "amd64", "").to_string(), "unknown");
        assert_eq!(
            Platform::parse("linux/arm").unwrap().to_string(),
            "linux/arm/v7"
        );
        let with_version = Platform {
            os_version: "10.0.20348".into(),
            ..p("windows", "amd64", "")
        };
        assert_eq!(with_version.to_string(), "windows(10.0.20348)/amd64");
    }

    #[test]
    fn normalize_table() {
        let cases = [
            (p("LINUX", "AArch64", "V8"), p("linux", "arm64", "")),
            (p("linux", "arm64", "9.0"), p("linux", "arm64", "v9")),
            (p("linux", "arm", ""), p("linux", "arm", "v7")),
            (p("linux", "arm", "8"), p("linux", "arm", "v8")),
            (p("linux", "armhf", "v5"), p("linux", "arm", "v7")),
            (p("linux", "i386", "whatever"), p("linux", "386", "")),
            (p("linux", "x86_64", "v1"), p("linux", "amd64", "")),
            (p("linux", "amd64", "V2"), p("linux", "amd64", "v2")),
            (p("", "amd64", ""), p(host_os(), "amd64", "")),
        ];
        for (input, want) in cases {
            assert_eq!(input.clone().normalize(), want, "normalize({input:?})");
        }
        let features = Platform {
            os_features: vec!["b".into(), "a".into(), "b".into()],
            ..p("windows", "amd64", "")
        };
        assert_eq!(
            features.normalize().os_features,
            vec!["a".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn host_is_normalized_and_known() {
        let host = Platform::host();
        assert_eq!(host.clone().normalize(), host);
        assert!(is_known_os(&host.os), "{host}");
        assert!(is_known_arch(&host.architecture), "{host}");
        assert_eq!(host, Platform::host());
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        assert_eq!(host, p("linux", "amd64", ""));
        #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
        assert_eq!(host, p("linux", "arm64", ""));
    }

    #[test]
    fn arm_variant_from_cpuinfo() {
        let pi3 =
            "processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\nCPU architecture: 7\n";
        assert_eq!(arm_variant(Some(pi3), Some("armv7l")), "v7");
        let pi1 = "model name\t: ARMv6-compatible processor rev 7 (v6l)\nCPU architecture: 7\n";
        assert_eq!(arm_variant(Some(pi1), Some("armv6l")), "v6");
        let v8 = "CPU architecture: 8\n";
        assert_eq!(arm_variant(Some(v8), None), "v8");
        let odd = "cpu ARCHITECTURE :  5TEJ \n";
        assert_eq!(arm_variant(Some(odd), None), "v5");
        // No field (QEMU user mode): fall back to uname.
        assert_eq!(arm_variant(Some("processor: 0\n"), Some("armv6l")), "v6");
        assert_eq!(arm_variant(None, Some("aarch64")), "v8");
        assert_eq!(arm_variant(None, Some("armvXl")), "unknown");
        assert_eq!(arm_variant(None, Some("armvé")), "unknown");
        assert_eq!(arm_variant(None, Some("x86_64")), "");
        assert_eq!(arm_variant(None, None), "");
        assert_eq!(arm_variant(Some("CPU architecture: 42\n"), None), "unknown");
    }

    fn parsed(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    fn names(m: &Matcher) -> Vec<String> {
        m.candidates().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn only_fallbacks_follow_containerd() {
        let cases: &[(&str, &[&str])] = &[
            ("linux/amd64", &["linux/amd64", "linux/386"]),
            (
                "linux/amd64/v3",
                &[
                    "linux/amd64/v3",
                    "linux/amd64/v2",
                    "linux/amd64",
                    "linux/386",
                ],
            ),
            ("linux/386", &["linux/386"]),
            ("linux/arm/v5", &["linux/arm/v5"]),
            (
                "linux/arm/v7",
                &["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"],
            ),
            (
                "linux/arm/v8",
                &[
                    "linux/arm/v8",
                    "linux/arm/v7",
                    "linux/arm/v6",
                    "linux/arm/v5",
                ],
            ),
            (
                "linux/arm64",
                &[
                    "linux/arm64",
                    "linux/arm/v8",
                    "linux/arm/v7",
                    "linux/arm/v6",
                    "linux/arm/v5",
                ],
            ),
            (
                "linux/arm64/v8.2",
                &[
                    "linux/arm64/v8.2",
                    "linux/arm64/v8.1",
                    "linux/arm64",
                    "linux/arm/v8",
                    "linux/arm/v7",
                    "linux/arm/v6",
                    "linux/arm/v5",
                ],
            ),
            ("linux/s390x", &["linux/s390x"]),
            // Not in containerd's table: matches itself only (containerd: nothing).
            ("linux/arm64/v10", &["linux/arm64/v10"]),
        ];
        for (want, expect) in cases {
            assert_eq!(names(&parsed(want).only()), *expect, "only({want})");
        }
        // v9.x: the v9 levels, then v8.(x+5) capped at v8.9, then 32-bit arm.
        let v9_1 = names(&parsed("linux/arm64/v9.1").only());
        assert_eq!(
            &v9_1[..3],
            ["linux/arm64/v9.1", "linux/arm64/v9", "linux/arm64/v8.6"]
        );
        assert_eq!(v9_1[8], "linux/arm64");
        assert_eq!(v9_1[9], "linux/arm/v8");
        assert_eq!(v9_1.len(), 13);
        let v9_7 = names(&parsed("linux/arm64/v9.7").only());
        assert_eq!(v9_7[8], "linux/arm64/v8.9");
    }

    #[test]
    fn matches_normalizes_the_candidate() {
        let m = parsed("linux/arm64").only();
        assert!(m.matches(&p("linux", "aarch64", "v8")));
        assert!(m.matches(&p("Linux", "ARM64", "")));
        assert!(m.matches(&p("linux", "armhf", "")));
        assert!(m.matches(&p("linux", "arm", "")));
        assert!(!m.matches(&p("linux", "amd64", "")));
        assert!(!m.matches(&p("linux", "arm64", "v8.1")));
        assert!(!m.matches(&p("windows", "arm64", "")));
        assert!(!m.matches(&p("unknown", "unknown", "")));

        let m = parsed("linux/amd64").only();
        assert!(m.matches(&p("linux", "x86_64", "")));
        assert!(m.matches(&p("linux", "i386", "")));
        assert!(
            !m.matches(&p("linux", "amd64", "v2")),
            "a v1 CPU cannot run v2 code"
        );

        let m = parsed("linux/arm/v6").only();
        assert!(m.matches(&p("linux", "armel", "")));
        assert!(!m.matches(&p("linux", "arm", "")), "plain arm means v7");
    }

    #[test]
    fn os_features_must_be_offered() {
        let want = Platform {
            os_features: vec!["a".into(), "b".into()],
            ..p("linux", "amd64", "")
        };
        let m = want.only();
        let needs = |f: &[&str]| Platform {
            os_features: f.iter().map(|s| s.to_string()).collect(),
            ..p("linux", "amd64", "")
        };
        assert!(m.matches(&needs(&[])));
        assert!(m.matches(&needs(&["b"])));
        assert!(m.matches(&needs(&["b", "a"])));
        assert!(!m.matches(&needs(&["c"])));
        // More declared features win at equal rank.
        assert!(m.less(&needs(&["a"]), &needs(&[])));
        assert!(!m.less(&needs(&[]), &needs(&["a"])));
        assert!(!p("linux", "amd64", "").only().matches(&needs(&["a"])));
    }

    #[test]
    fn windows_versions() {
        let host = |v: &str| Platform {
            os_version: v.into(),
            ..p("windows", "amd64", "")
        };
        let m = host("10.0.17763.1").only();
        assert!(m.matches(&host("10.0.17763.5")));
        assert!(m.matches(&host("")));
        assert!(!m.matches(&host("10.0.20348.1")));
        // Windows Server 2025 runs 2022 and 2025 images, not older ones.
        let m = host("10.0.26100.1").only();
        assert!(m.matches(&host("10.0.20348.1")));
        assert!(m.matches(&host("10.0.26100.9")));
        assert!(!m.matches(&host("10.0.17763.1")));
        assert!(!m.matches(&host("10.0.26200.1")));
        // win32k is not something a host has to offer.
        let with_win32k = Platform {
            os_features: vec!["win32k".into()],
            ..host("")
        };
        assert!(m.matches(&with_win32k));
    }

    #[test]
    fn less_orders_exact_before_fallbacks() {
        let m = parsed("linux/arm/v7").only();
        let (v7, v6, v5, v8) = (
            p("linux", "arm", "v7"),
            p("linux", "arm", "v6"),
            p("linux", "arm", "v5"),
            p("linux", "arm", "v8"),
        );
        assert!(m.less(&v7, &v6));
        assert!(m.less(&v6, &v5));
        assert!(!m.less(&v6, &v7));
        assert!(!m.less(&v7, &v7));
        assert!(m.less(&v5, &v8), "a match beats no match");
        assert!(!m.less(&v8, &v5));
        assert!(!m.less(&v8, &v8));
        assert_eq!(m.rank(&v7), Some(0));
        assert_eq!(m.rank(&v5), Some(2));
        assert_eq!(m.rank(&v8), None);
    }

    fn desc(media_type: &str, platform: Option<&str>, digest_byte: char) -> Descriptor {
        let mut json = serde_json::json!({
            "mediaType": media_type,
            "digest": format!("sha256:{}", digest_byte.to_string().repeat(64)),
            "size": 1,
        });
        if let Some(platform) = platform {
            let mut parts = platform.split('/');
            let mut obj = serde_json::json!({"os": parts.next().unwrap(), "architecture": parts.next().unwrap()});
            if let Some(variant) = parts.next() {
                obj["variant"] = variant.into();
            }
            json["platform"] = obj;
        }
        serde_json::from_value(json).unwrap()
    }

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

    fn picked(manifests: &[Descriptor], want: &str) -> Option<String> {
        select_manifest(manifests, &parsed(want)).map(|d| d.digest().to_string()[7..8].to_string())
    }

    #[test]
    fn select_prefers_exact_then_fallbacks() {
        let index = [
            desc(OCI_MANIFEST, Some("linux/386"), 'a'),
            desc(OCI_MANIFEST, Some("linux/arm/v5"), 'b'),
            desc(OCI_MANIFEST, Some("linux/arm/v7"), 'c'),
            desc(DOCKER_MANIFEST, Some("linux/amd64"), 'd'),
            desc(OCI_MANIFEST, Some("linux/arm/v6"), 'e'),
            desc(OCI_MANIFEST, Some("linux/arm64/v8"), 'f'),
            desc(OCI_MANIFEST, Some("unknown/unknown"), '0'),
        ];
        assert_eq!(picked(&index, "linux/amd64").as_deref(), Some("d"));
        assert_eq!(picked(&index, "linux/386").as_deref(), Some("a"));
        assert_eq!(picked(&index, "linux/arm/v7").as_deref(), Some("c"));
        assert_eq!(picked(&index, "linux/arm/v6").as_deref(), Some("e"));
        assert_eq!(picked(&index, "linux/arm/v8").as_deref(), Some("c"));
        assert_eq!(picked(&index, "linux/arm64").as_deref(), Some("f"));
        assert_eq!(picked(&index, "linux/aarch64/8").as_deref(), Some("f"));
        assert_eq!(picked(&index, "linux/s390x"), None);
        assert_eq!(picked(&index, "windows/amd64"), None);
        // Without the amd64 entry, amd64 falls back to 386; without arm64, arm64 runs arm/v7.
        let no_amd64: Vec<_> = index
            .iter()
            .filter(|d| d.media_type().to_string() != DOCKER_MANIFEST)
            .cloned()
            .collect();
        assert_eq!(picked(&no_amd64, "linux/amd64").as_deref(), Some("a"));
        let no_arm64: Vec<_> = index[..5].to_vec();
        assert_eq!(picked(&no_arm64, "linux/arm64").as_deref(), Some("c"));
    }

    #[test]
    fn select_skips_non_manifests_and_attestations() {
        let mut attestation = desc(OCI_MANIFEST, None, '1');
        attestation.set_annotations(Some(
            [(
                DOCKER_REFERENCE_TYPE.to_string(),
                "attestation-manifest".to_string(),
            )]
            .into(),
        ));
        let index = [
            desc(
                "application/vnd.oci.image.layer.v1.tar",
                Some("linux/amd64"),
                '2',
            ),
            desc("application/vnd.oci.image.config.v1+json", None, '3'),
            attestation.clone(),
            desc(OCI_MANIFEST, Some("unknown/unknown"), '4'),
        ];
        assert_eq!(picked(&index, "linux/amd64"), None);
        // A descriptor with no platform matches anything, but only after real matches.
        let mut with_fallback = index.to_vec();
        with_fallback.push(desc(OCI_MANIFEST, None, '5'));
        assert_eq!(picked(&with_fallback, "linux/amd64").as_deref(), Some("5"));
        with_fallback.push(desc(
            "application/vnd.oci.image.index.v1+json",
            Some("linux/386"),
            '6',
        ));
        assert_eq!(picked(&with_fallback, "linux/amd64").as_deref(), Some("6"));
        assert_eq!(picked(&with_fallback, "linux/arm64").as_deref(), Some("5"));
        assert_eq!(picked(&[], "linux/amd64"), None);
    }

    #[test]
    fn select_keeps_first_of_equals() {
        let index = [
            desc(OCI_MANIFEST, Some("linux/amd64"), '7'),
            desc(DOCKER_MANIFEST, Some("linux/x86_64"), '8'),
        ];
        assert_eq!(picked(&index, "linux/amd64").as_deref(), Some("7"));
        let reversed = [index[1].clone(), index[0].clone()];
        assert_eq!(picked(&reversed, "linux/amd64").as_deref(), Some("8"));
    }

    #[test]
    fn from_config_and_serde() {
        assert_eq!(
            Platform::from_config("linux", "aarch64", Some("v8")),
            p("linux", "arm64", "")
        );
        assert_eq!(
            Platform::from_config("linux", "arm", None),
            p("linux", "arm", "v7")
        );
        let config: ImageConfiguration = serde_json::from_value(serde_json::json!({
            "architecture": "arm",
            "os": "linux",
            "variant": "v6",
            "os.features": ["z", "y"],
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .unwrap();
        let from = Platform::from_image_config(&config);
        assert_eq!(from.architecture, "arm");
        assert_eq!(from.variant, "v6");
        assert_eq!(from.os_features, vec!["y".to_string(), "z".to_string()]);
        // The image requires features y and z: a host must offer them.
        assert!(!parsed("linux/arm/v7").only().matches(&from));
        assert!(parsed("linux(+y+z)/arm/v7").only().matches(&from));
        assert!(!parsed("linux(+y+z)/arm/v5").only().matches(&from));

        let json = serde_json::to_value(&Platform {
            os_version: "1".into(),
            ..from.clone()
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"os": "linux", "architecture": "arm", "variant": "v6", "os.version": "1", "os.features": ["y", "z"]})
        );
        let plain = serde_json::to_value(p("linux", "amd64", "")).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"os": "linux", "architecture": "amd64"})
        );
        let back: Platform = serde_json::from_value(json).unwrap();
        assert_eq!(
            back,
            Platform {
                os_version: "1".into(),
                ..from
            }
        );
    }
}
