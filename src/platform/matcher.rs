//! Matching platforms and picking a manifest out of an index, as containerd's
//! `platforms.Only` and `images.Manifest` do.

use oci_spec::image::{Descriptor, MediaType};

use super::Platform;
use crate::media_type;

/// The annotation buildx puts on attestation manifests (SBOM, provenance) in an index.
pub(super) const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

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
    /// The matcher for `want` (normalized): it and what its CPU also runs.
    pub(super) fn only(want: Platform) -> Matcher {
        let candidates = platform_vector(&want);
        Matcher { want, candidates }
    }

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

pub(super) fn is_runnable_media_type(mt: &MediaType) -> bool {
    let media_type = mt.to_string();
    // What an index may point at that can be run: an image manifest, or a nested index
    // (which the caller resolves again).
    media_type::is_manifest(&media_type) || media_type::is_index(&media_type)
}

/// buildx stores SBOM and provenance as image manifests in the index with platform
/// `unknown/unknown`; they never match a real platform, and this makes sure they cannot
/// win either when their platform is missing.
pub(super) fn is_attestation(desc: &Descriptor) -> bool {
    desc.annotations()
        .as_ref()
        .and_then(|a| a.get(DOCKER_REFERENCE_TYPE))
        .is_some_and(|v| v == "attestation-manifest")
}

pub(super) fn feature_count(p: &Platform) -> usize {
    let mut features: Vec<&String> = p.os_features.iter().collect();
    features.sort();
    features.dedup();
    features.len()
}

/// Whether the normalized `p` matches the normalized candidate `c` (containerd's
/// `matcher.Match`, less its Windows host/image version rules: imv mounts images on Linux):
/// same OS, architecture and variant, and every OS feature `p` requires is one `c` offers.
pub(super) fn candidate_matches(c: &Platform, p: &Platform) -> bool {
    c.os == p.os
        && c.architecture == p.architecture
        && c.variant == p.variant
        && p.os_features.iter().all(|f| c.os_features.contains(f))
}

/// The platforms `p` (normalized) can run, best first (containerd's `platformVector`).
pub(super) fn platform_vector(p: &Platform) -> Vec<Platform> {
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
pub(super) fn numeric_variant(variant: &str) -> Option<u32> {
    let digits = variant.strip_prefix('v').unwrap_or(variant);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 2 {
        return None;
    }
    digits.parse().ok()
}

/// The arm64 variants containerd knows: `v8`, `v8.1` ... `v8.9`, `v9`, `v9.1` ... `v9.7`.
pub(super) fn arm64_version(variant: &str) -> Option<(u32, u32)> {
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
