use oci_spec::image::Descriptor;

use super::host::arm_variant;
use super::matcher::DOCKER_REFERENCE_TYPE;
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

/// Found by cli/tests/properties/: a decoded version or feature holding a character the
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
    let pi3 = "processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\nCPU architecture: 7\n";
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
    assert!(!p("linux", "amd64", "").only().matches(&needs(&["a"])));
}

#[test]
fn os_versions_are_not_compared_and_os_features_are() {
    // imv mounts images on Linux: containerd's Windows host/image version rules are not
    // kept. What an image requires of the OS must still be offered.
    let with = |version: &str, features: &[&str]| Platform {
        os_version: version.into(),
        os_features: features.iter().map(|f| (*f).to_owned()).collect(),
        ..p("linux", "amd64", "")
    };
    let m = with("1", &["a", "b"]).only();
    assert!(m.matches(&with("2", &[])));
    assert!(m.matches(&with("", &["b", "a"])));
    assert!(!m.matches(&with("1", &["c"])));
}

#[test]
fn ranks_put_exact_before_fallbacks() {
    let m = parsed("linux/arm/v7").only();
    let (v7, v5, v8) = (
        p("linux", "arm", "v7"),
        p("linux", "arm", "v5"),
        p("linux", "arm", "v8"),
    );
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
        let mut obj =
            serde_json::json!({"os": parts.next().unwrap(), "architecture": parts.next().unwrap()});
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
        p("linux", "aarch64", "v8").normalize(),
        p("linux", "arm64", "")
    );
    assert_eq!(p("linux", "arm", "").normalize(), p("linux", "arm", "v7"));
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
