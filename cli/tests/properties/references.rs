//! Properties of image references.

use proptest::prelude::*;

use imv::__property_tests::{normalize_reference, Reference};
use imv::ErrorKind;

use super::cases;

/// Strings shaped like references, valid or nearly so: domains with ports and IPv6,
/// path components with every separator the grammar knows (and some it does not), tags,
/// digests good and bad, and the occasional very long component.
fn reference_like() -> impl Strategy<Value = String> {
    let domain = prop_oneof![
        Just(String::new()),
        Just("docker.io/".to_owned()),
        Just("index.docker.io/".to_owned()),
        Just("localhost/".to_owned()),
        Just("localhost:5000/".to_owned()),
        Just("[::1]:5000/".to_owned()),
        Just("[fe80::1]/".to_owned()),
        Just("Example.COM/".to_owned()),
        Just("ex-ample.com:80/".to_owned()),
        "[a-zA-Z0-9.:-]{1,12}/",
    ];
    let component = prop_oneof![
        4 => "[a-z0-9]{1,8}",
        2 => "[a-z0-9]{1,4}([._]|__|-{1,3})[a-z0-9]{1,4}",
        1 => "[a-zA-Z0-9._-]{0,6}",
        1 => "library",
        1 => "[a-f0-9]{64}",
        1 => "[a-z]{60,130}",
        // Just under the 255-byte name limit, before and after `docker.io/library/`.
        1 => "[a-z]{230,255}",
    ];
    let path = prop::collection::vec(component, 1..4).prop_map(|c| c.join("/"));
    let tag = prop_oneof![
        Just(String::new()),
        Just(":latest".to_owned()),
        ":[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}",
        ":[A-Za-z0-9_.:-]{0,6}",
        ":[a-z]{127,130}",
    ];
    let digest = prop_oneof![
        Just(String::new()),
        "@sha256:[a-f0-9]{64}",
        "@sha256:[a-fA-F0-9]{60,66}",
        "@[a-z0-9]{1,8}:[a-z0-9]{1,8}",
    ];
    (domain, path, tag, digest).prop_map(|(d, p, t, g)| format!("{d}{p}{t}{g}"))
}

proptest! {
    #![proptest_config(cases(512))]

    /// Parsing never panics, whatever the input; errors are InvalidArgument.
    #[test]
    fn reference_parse_never_panics(s in prop_oneof![any::<String>(), reference_like()]) {
        for r in [Reference::parse(&s), Reference::parse_normalized(&s)] {
            if let Err(e) = r {
                prop_assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}", e);
            }
        }
    }

    /// normalize(normalize(x)) == normalize(x), and the normalized string parses back to
    /// the normalized value, unchanged by another normalization.
    #[test]
    fn reference_normalize_is_idempotent(s in reference_like()) {
        if let Ok(once) = normalize_reference(&s) {
            let twice = normalize_reference(&once);
            prop_assert_eq!(twice.as_ref().ok(), Some(&once), "{:?} -> {:?} -> {:?}", s, once, twice);
        }
        if let Ok(r) = Reference::parse(&s) {
            let n = r.normalize();
            prop_assert_eq!(n.normalize(), n.clone());
        }
    }

    /// Display of a parsed normalized reference parses back to the same value.
    #[test]
    fn reference_display_round_trips(s in reference_like()) {
        if let Ok(r) = Reference::parse_normalized(&s) {
            let shown = r.to_string();
            let back = Reference::parse(&shown);
            prop_assert_eq!(back.as_ref().ok(), Some(&r), "{:?} shown as {:?}: {:?}", s, shown, back);
        }
        if let Ok(r) = Reference::parse(&s) {
            // Without normalization too: Display is the inverse of parse.
            let back = Reference::parse(&r.to_string());
            prop_assert_eq!(back.ok(), Some(r));
        }
    }
}
