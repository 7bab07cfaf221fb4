//! Image references (`[domain/]path[:tag][@digest]`), parsed by the grammar of the
//! distribution project's `reference` package and normalized as containerd and docker do:
//! `busybox` is `docker.io/library/busybox:latest`.
//!
//! References come from users, pod specs and archives: everything is validated and bounded,
//! and a bad reference is InvalidArgument naming it.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{truncate, Error, Result};

/// The registry a reference without a domain refers to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy name of [`DEFAULT_DOMAIN`], rewritten to it.
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace of official images on [`DEFAULT_DOMAIN`] (`busybox` is `library/busybox`).
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag a reference without tag or digest gets.
pub const DEFAULT_TAG: &str = "latest";
/// The longest name (domain and path) the grammar allows.
pub const NAME_MAX_LEN: usize = 255;
/// The longest tag the grammar allows.
const TAG_MAX_LEN: usize = 128;
/// No valid reference is longer (name, `:`, tag, `@`, `sha256:` and 64 hex); longer input
/// is refused before anything else looks at it.
const REFERENCE_MAX_LEN: usize = NAME_MAX_LEN + 1 + TAG_MAX_LEN + 1 + 71;

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The registry (`example.com:5000`), when the reference names one. Always set after
    /// [`Reference::normalize`].
    pub domain: Option<String>,
    /// The repository path inside the registry (`library/busybox`).
    pub path: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// The digest, if any.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parse `s` as written, without defaults: `busybox` has no domain and no tag.
    ///
    /// The first path component is a domain when it contains `.` or `:`, is `localhost`,
    /// or has upper-case letters (docker's rule: repository paths are lower case, so such a
    /// component can only be a host). InvalidArgument, naming `s`, when `s` is not a
    /// reference.
    pub fn parse(s: &str) -> Result<Reference> {
        if s.len() > REFERENCE_MAX_LEN {
            return Err(Error::invalid(format!(
                "reference {:?}...: {} bytes is longer than any valid reference",
                truncate(s, 64),
                s.len()
            )));
        }
        let bad = |why: &str| Error::invalid(format!("invalid reference {s:?}: {why}"));
        if s.is_empty() {
            return Err(bad("empty"));
        }

        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let digest = Digest::parse(d).map_err(|e| bad(e.message()))?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(bad(&format!(
                    "tag {tag:?} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
                )));
            }
        }
        if name.is_empty() {
            return Err(bad("no repository name"));
        }
        if name.len() > NAME_MAX_LEN {
            return Err(bad(&format!(
                "the name is longer than {NAME_MAX_LEN} characters"
            )));
        }

        let (domain, path) = match name.split_once('/') {
            Some((first, remainder)) if is_domain_like(first) => (Some(first), remainder),
            _ => (None, name),
        };
        if let Some(domain) = domain {
            if !valid_domain(domain) {
                return Err(bad(&format!(
                    "{domain:?} is not a valid registry host[:port]"
                )));
            }
        }
        for component in path.split('/') {
            if component.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(bad("repository name must be lowercase"));
            }
            if !valid_path_component(component) {
                return Err(bad(&format!(
                    "path component {component:?} must be lower-case letters and digits, \
                     separated by '.', '_', '__' or dashes"
                )));
            }
        }
        Ok(Reference {
            domain: domain.map(str::to_owned),
            path: path.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// Parse `s` and [`normalize`](Self::normalize) it, refusing, as docker does, a bare
    /// 64-hex-digit name (an image ID is not a repository) and a name that is too long
    /// once normalized.
    pub fn parse_normalized(s: &str) -> Result<Reference> {
        let r = Reference::parse(s)?;
        if r.domain.is_none() && is_hex(&r.path) && r.path.len() == 64 {
            return Err(Error::invalid(format!(
                "invalid reference {s:?}: a repository name cannot be 64 hexadecimal digits"
            )));
        }
        let n = r.normalize();
        // The limit is on the full name, as docker's ParseNormalizedNamed checks it: a
        // 250-byte `name` is fine as written but not as `docker.io/library/name`, and a
        // normalized reference must parse again.
        let len = n.name().len();
        if len > NAME_MAX_LEN {
            return Err(Error::invalid(format!(
                "invalid reference {:?}: the normalized name is {len} characters, longer than {NAME_MAX_LEN}",
                truncate(s, 64)
            )));
        }
        Ok(n)
    }

    /// The fully qualified form: a domain (`docker.io` when none, `index.docker.io`
    /// rewritten), `library/` for single-component names on `docker.io`, and tag `latest`
    /// when there is neither tag nor digest (a reference by digest keeps no tag).
    pub fn normalize(&self) -> Reference {
        let domain = match self.domain.as_deref() {
            None | Some(LEGACY_DEFAULT_DOMAIN) => DEFAULT_DOMAIN,
            Some(d) => d,
        };
        let path = if domain == DEFAULT_DOMAIN && !self.path.contains('/') {
            format!("{OFFICIAL_REPO_PREFIX}{}", self.path)
        } else {
            self.path.clone()
        };
        let tag = match (&self.tag, &self.digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (tag, _) => tag.clone(),
        };
        Reference {
            domain: Some(domain.to_owned()),
            path,
            tag,
            digest: self.digest.clone(),
        }
    }

    /// The name without tag or digest (`docker.io/library/busybox` once normalized).
    pub fn name(&self) -> String {
        match &self.domain {
            Some(d) => format!("{d}/{}", self.path),
            None => self.path.clone(),
        }
    }
}

impl fmt::Display for Reference {
    /// `name[:tag][@digest]`: the normalized form for a normalized reference.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;
    /// Same as [`Reference::parse`] (no normalization).
    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

/// Normalize the reference `s` and return it as a string
/// (`busybox` → `docker.io/library/busybox:latest`).
pub fn normalize(s: &str) -> Result<String> {
    Ok(Reference::parse_normalized(s)?.to_string())
}

/// Whether `s` is a digest in the form this crate accepts (`sha256:` and 64 lower-case hex
/// digits) rather than a name.
pub fn looks_like_digest(s: &str) -> bool {
    s.starts_with("sha256:") && Digest::parse(s).is_ok()
}

/// Whether `s` names an image by its content, so it cannot come to mean another image: a
/// full digest or image ID (`sha256:<64 hex>`, or the 64 hex digits alone) or `name@digest`.
pub fn is_content_addressed(s: &str) -> bool {
    let digest = s.rsplit_once('@').map_or(s, |(_, d)| d);
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.len() == 64 && is_hex(hex) && (digest.starts_with("sha256:") || !s.contains('@'))
}

/// Whether `s` could be an image ID or a prefix of one: 12 to 64 lower-case hex digits,
/// optionally after `sha256:`. Such a string is also a valid repository name; callers
/// decide which wins (docker tries the ID first).
pub fn looks_like_id_prefix(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (12..=64).contains(&hex.len()) && is_hex(hex)
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// docker's `splitDockerDomain` rule for the first component.
fn is_domain_like(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

/// `[\w][\w.-]{0,127}` with `\w` = `[A-Za-z0-9_]`.
fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !b.is_empty()
        && b.len() <= TAG_MAX_LEN
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `host[:port]`, host being dot-separated domain components or a bracketed IPv6 address.
fn valid_domain(domain: &str) -> bool {
    let valid_port = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = domain.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        return after.is_empty() || after.strip_prefix(':').is_some_and(valid_port);
    }
    let host = match domain.split_once(':') {
        Some((host, port)) if valid_port(port) => host,
        Some(_) => return false,
        None => domain,
    };
    !host.is_empty() && host.split('.').all(valid_domain_component)
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn valid_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn valid_path_component(c: &str) -> bool {
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A run of separators between two alphanumerics.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_addressed_references() {
        let hex = "a".repeat(64);
        for yes in [
            format!("sha256:{hex}"),
            hex.clone(),
            format!("example.com/app@sha256:{hex}"),
            format!("example.com/app:1@sha256:{hex}"),
        ] {
            assert!(is_content_addressed(&yes), "{yes}");
        }
        for no in [
            "example.com/app:1".to_owned(),
            format!("sha256:{}", &hex[..12]),
            hex[..12].to_owned(),
            format!("example.com/app@{hex}"),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha512:{hex}"),
        ] {
            assert!(!is_content_addressed(&no), "{no}");
        }
    }

    use super::*;
    use crate::error::ErrorKind;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// Found by cli/tests/properties/: the name limit applies to the normalized name, or
    /// the normalized string of a 250-byte name would not parse again.
    #[test]
    fn name_limit_applies_after_normalization() {
        let long = "a".repeat(NAME_MAX_LEN - "docker.io/library/".len() + 1);
        assert!(Reference::parse(&long).is_ok());
        let err = Reference::parse_normalized(&long).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains("normalized name"), "{err}");
        // At the limit exactly, it normalizes, and the result parses back.
        let fits = "a".repeat(NAME_MAX_LEN - "docker.io/library/".len());
        let n = normalize(&fits).unwrap();
        assert_eq!(normalize(&n).unwrap(), n);
    }

    #[test]
    fn normalizes_like_docker() {
        let d = format!("sha256:{HEX}");
        let cases: Vec<(String, String)> = vec![
            ("busybox".into(), "docker.io/library/busybox:latest".into()),
            (
                "busybox:1.36".into(),
                "docker.io/library/busybox:1.36".into(),
            ),
            (
                "library/busybox".into(),
                "docker.io/library/busybox:latest".into(),
            ),
            ("user/app".into(), "docker.io/user/app:latest".into()),
            (
                "docker.io/busybox".into(),
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "index.docker.io/user/app:v1".into(),
                "docker.io/user/app:v1".into(),
            ),
            ("example.com/app".into(), "example.com/app:latest".into()),
            ("example.com/app:1".into(), "example.com/app:1".into()),
            (
                "example.com:5000/a/b/c:v1.2-rc_3".into(),
                "example.com:5000/a/b/c:v1.2-rc_3".into(),
            ),
            ("localhost/app".into(), "localhost/app:latest".into()),
            (
                "localhost:5000/app".into(),
                "localhost:5000/app:latest".into(),
            ),
            // A port-less "localhost:5000" is docker.io/library/localhost with tag 5000.
            (
                "localhost:5000".into(),
                "docker.io/library/localhost:5000".into(),
            ),
            ("[::1]:5000/app".into(), "[::1]:5000/app:latest".into()),
            ("[fe80::1]/app".into(), "[fe80::1]/app:latest".into()),
            ("Example.COM/app".into(), "Example.COM/app:latest".into()),
            (
                "a/b__c/d-e--f/g.h:_T".into(),
                "docker.io/a/b__c/d-e--f/g.h:_T".into(),
            ),
            (
                format!("busybox@{d}"),
                format!("docker.io/library/busybox@{d}"),
            ),
            (
                format!("busybox:1@{d}"),
                format!("docker.io/library/busybox:1@{d}"),
            ),
            (
                format!("example.com/app@{d}"),
                format!("example.com/app@{d}"),
            ),
        ];
        for (input, want) in cases {
            let got = normalize(&input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got, want, "normalizing {input:?}");
            // Normalizing is idempotent.
            assert_eq!(normalize(&got).unwrap(), want, "re-normalizing {got:?}");
        }
    }

    #[test]
    fn parses_parts() {
        let r = Reference::parse("example.com:5000/team/app:1.0").unwrap();
        assert_eq!(r.domain.as_deref(), Some("example.com:5000"));
        assert_eq!(r.path, "team/app");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.digest, None);
        assert_eq!(r.name(), "example.com:5000/team/app");
        assert_eq!(r.to_string(), "example.com:5000/team/app:1.0");

        let r: Reference = "busybox".parse().unwrap();
        assert_eq!(
            (r.domain.as_deref(), r.path.as_str(), r.tag.as_deref()),
            (None, "busybox", None)
        );
        let n = r.normalize();
        assert_eq!(n.name(), "docker.io/library/busybox");
        assert_eq!(n.tag.as_deref(), Some("latest"));

        let r = Reference::parse_normalized(&format!("app@sha256:{HEX}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.unwrap().hex(), HEX);
    }

    #[test]
    fn refuses_bad_references() {
        let long_path = "a".repeat(NAME_MAX_LEN + 1);
        let long_tag = format!("app:{}", "t".repeat(TAG_MAX_LEN + 1));
        let huge = "a/".repeat(10_000);
        let cases: Vec<String> = vec![
            "".into(),
            "Busybox".into(),
            "user/App".into(),
            "app:".into(),
            ":tag".into(),
            "app:-tag".into(),
            "app:.tag".into(),
            "app:t@g".into(),
            "app@".into(),
            "app@sha256:abc".into(),
            format!("app@sha512:{HEX}{HEX}"),
            format!("app@sha256:{}", HEX.to_uppercase()),
            "app@@sha256".into(),
            "/app".into(),
            "app/".into(),
            "a//b".into(),
            "a/../b".into(),
            "../etc".into(),
            "a/./b".into(),
            "-app".into(),
            "app-".into(),
            "a___b".into(),
            "a..b".into(),
            "a._b".into(),
            "a.b__c/app".into(),
            "a b".into(),
            "a\0b".into(),
            "example.com:port/app".into(),
            "example.com:/app".into(),
            "-example.com/app".into(),
            "exa_mple.com/app".into(),
            "[zz::1]/app".into(),
            "[::1/app".into(),
            "[::1]x/app".into(),
            "é/app".into(),
            HEX.into(),
            long_path,
            long_tag,
            huge,
        ];
        for input in cases {
            let err = match normalize(&input) {
                Ok(r) => panic!("{input:?} accepted as {r:?}"),
                Err(e) => e,
            };
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{input:?}: {err}");
            let shown = truncate(&input, 64);
            assert!(
                err.message()
                    .contains(&format!("{shown:?}").trim_end_matches('"').to_string()),
                "{err}"
            );
        }
        // A bare 64-hex name is a valid path, but not as a normalized image name.
        assert!(Reference::parse(HEX).is_ok());
        assert!(normalize(&format!("example.com/{HEX}")).is_ok());
    }

    #[test]
    fn name_length_limit_is_255() {
        let ok = format!(
            "example.com/{}",
            "a".repeat(NAME_MAX_LEN - "example.com/".len())
        );
        assert!(Reference::parse(&ok).is_ok());
        let too_long = format!("{ok}a");
        assert!(Reference::parse(&too_long).is_err());
    }

    #[test]
    fn digest_and_id_helpers() {
        let cases = [
            (format!("sha256:{HEX}"), true, true),
            (HEX.to_string(), false, true),
            (HEX[..12].to_string(), false, true),
            (HEX[..11].to_string(), false, false),
            (format!("sha256:{}", &HEX[..12]), false, true),
            ("busybox".to_string(), false, false),
            (format!("sha256:{}", HEX.to_uppercase()), false, false),
            (format!("sha512:{HEX}"), false, false),
            (format!("{HEX}0"), false, false),
        ];
        for (s, digest, id) in cases {
            assert_eq!(looks_like_digest(&s), digest, "looks_like_digest({s:?})");
            assert_eq!(looks_like_id_prefix(&s), id, "looks_like_id_prefix({s:?})");
        }
    }
}
