//! The host's platform, in Go's spelling (what images declare).

/// The host OS in Go's spelling (GOOS), which is what images declare.
pub(super) fn host_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        os => os,
    }
}

/// The host CPU architecture in Go's spelling (GOARCH), which is what images declare.
/// Rust names some architectures differently and leaves endianness out of the name.
pub(super) fn host_arch() -> &'static str {
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
pub(super) fn arm_variant(cpuinfo: Option<&str>, machine: Option<&str>) -> String {
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
