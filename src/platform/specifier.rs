//! The `os[(version+features)]/arch[/variant]` syntax and containerd's normalization of
//! its parts.

use super::host::host_os;

/// Split the first component, `os[(version[+feature...])]`, into its parts, checking
/// the characters as containerd's `osRe` does and decoding `%XX` escapes.
pub(super) fn parse_os_component(
    part: &str,
) -> std::result::Result<(String, String, Vec<String>), String> {
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
pub(super) fn decode_os_option(v: &str) -> std::result::Result<String, String> {
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
pub(super) fn encode_os_option(v: &str) -> String {
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
pub(super) fn is_specifier_component(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// containerd's `normalizeOS`: lower-case, `macos` is `darwin`, empty is the host's OS.
pub(super) fn normalize_os(os: &str) -> String {
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
pub(super) fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
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
pub(super) const KNOWN_OS: &[&str] = &[
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

pub(super) fn is_known_os(name: &str) -> bool {
    KNOWN_OS.contains(&name)
}

/// The GOARCH values containerd knows (`isKnownArch`).
pub(super) const KNOWN_ARCH: &[&str] = &[
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

pub(super) fn is_known_arch(name: &str) -> bool {
    KNOWN_ARCH.contains(&name)
}
