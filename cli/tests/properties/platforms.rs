//! Properties of platforms.

use proptest::prelude::*;

use imv::{ErrorKind, Platform};

use super::cases;

/// Strings shaped like platform specifiers: known and unknown OSes and architectures in
/// any case, variants, Windows versions and features with `%`-escapes, and junk.
fn platform_like() -> impl Strategy<Value = String> {
    let os = prop_oneof![
        Just("linux"),
        Just("Linux"),
        Just("windows"),
        Just("darwin"),
        Just("macos"),
        Just("freebsd"),
        Just("foo"),
        Just(""),
    ];
    let option = prop_oneof![
        "[A-Za-z0-9_.-]{0,6}",
        "10\\.0\\.(17763|20348|26100)(\\.[0-9]{1,4})?",
        "%(25|2B|2F|28|29|20|41|zz|2)",
        "[A-Za-z0-9_.%+()/ -]{0,6}",
    ];
    let options = prop_oneof![
        3 => Just(String::new()),
        2 => (option.clone(), prop::collection::vec(option, 0..3)).prop_map(|(v, f)| {
            let mut s = format!("({v}");
            for f in f {
                s.push('+');
                s.push_str(&f);
            }
            s.push(')');
            s
        }),
    ];
    let arch = prop_oneof![
        Just("amd64"),
        Just("x86_64"),
        Just("X86-64"),
        Just("386"),
        Just("i686"),
        Just("arm"),
        Just("armhf"),
        Just("armel"),
        Just("arm64"),
        Just("aarch64"),
        Just("riscv64"),
        Just("s390x"),
        Just("bar"),
        Just(""),
    ];
    let variant = prop_oneof![
        Just(""),
        Just("v1"),
        Just("V2"),
        Just("v5"),
        Just("7"),
        Just("v8"),
        Just("8"),
        Just("v8.2"),
        Just("9"),
        Just("v9.0"),
        Just("v9.7"),
        Just("v10"),
        Just("x.y"),
    ];
    let shape = 0..4usize;
    (os, options, arch, variant, shape).prop_map(
        |(os, options, arch, variant, shape)| match shape {
            0 => format!("{os}{options}"),
            1 => arch.to_owned(),
            2 => format!("{os}{options}/{arch}"),
            _ => format!("{os}{options}/{arch}/{variant}"),
        },
    )
}

/// Platforms built field by field, not through the parser: what an image config or an
/// index entry may declare.
fn platform_struct() -> impl Strategy<Value = Platform> {
    (
        "[A-Za-z]{0,6}|linux|windows",
        "[A-Za-z0-9_-]{0,6}|amd64|arm|arm64|aarch64|x86_64",
        "[A-Za-z0-9.]{0,4}|v7|v8|v9.1",
        "[A-Za-z0-9.+%() -]{0,8}|10\\.0\\.20348\\.1",
        prop::collection::vec("[A-Za-z0-9+%() ]{0,5}", 0..3),
    )
        .prop_map(
            |(os, architecture, variant, os_version, os_features)| Platform {
                os,
                architecture,
                variant,
                os_version,
                os_features,
            },
        )
}

proptest! {
    #![proptest_config(cases(512))]

    /// Parsing never panics; errors are InvalidArgument.
    #[test]
    fn platform_parse_never_panics(s in prop_oneof![any::<String>(), platform_like()]) {
        if let Err(e) = Platform::parse(&s) {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e);
        }
    }

    /// What the parser returns, Display writes in a form the parser reads back to the
    /// same value; and a platform always matches itself.
    #[test]
    fn platform_display_round_trips(s in platform_like()) {
        if let Ok(p) = Platform::parse(&s) {
            let shown = p.to_string();
            let back = Platform::parse(&shown);
            prop_assert_eq!(back.as_ref().ok(), Some(&p), "{:?} shown as {:?}: {:?}", s, shown, back);
            prop_assert!(p.only().matches(&p), "{:?} does not match itself", p);
        }
    }

    /// For platforms from configs and index entries: normalization is idempotent and a
    /// platform matches itself.
    #[test]
    fn platform_normalize_idempotent_and_self_matching(p in platform_struct()) {
        let n = p.clone().normalize();
        prop_assert_eq!(n.clone().normalize(), n.clone());
        prop_assert!(p.only().matches(&p), "{:?} does not match itself", p);
        prop_assert_eq!(p.only().rank(&p), Some(0));
    }
}
