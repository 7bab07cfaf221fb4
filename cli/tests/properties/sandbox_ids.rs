//! Properties of sandbox IDs.

use std::path::{Component, Path};

use proptest::prelude::*;

use imv::__property_tests::{validate_sandbox_id, MAX_SANDBOX_ID_LEN};
use imv::ErrorKind;

use super::cases;

fn sandbox_id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9._/-]{0,80}",
        "[a-z0-9.\\x00/]{0,8}",
        prop::collection::vec(
            prop_oneof![
                Just(".."),
                Just("."),
                Just("/"),
                Just("a"),
                Just("-"),
                Just("\u{0}"),
                Just("é")
            ],
            0..10
        )
        .prop_map(|v| v.concat()),
        "[a-f0-9]{60,80}",
    ]
}

proptest! {
    #![proptest_config(cases(1024))]

    /// An accepted ID is a single normal path component: no `/`, NUL or `..`, at most
    /// 76 bytes.
    #[test]
    fn sandbox_id_accepted_is_one_component(id in sandbox_id_like()) {
        match validate_sandbox_id(&id) {
            Ok(()) => {
                prop_assert!(!id.contains('/') && !id.contains('\0') && !id.contains(".."), "{:?}", id);
                prop_assert!(id.len() <= MAX_SANDBOX_ID_LEN, "{:?}", id);
                let components: Vec<_> = Path::new(&id).components().collect();
                prop_assert!(
                    matches!(components.as_slice(), [Component::Normal(c)] if *c == id.as_str()),
                    "{:?} is {:?}", id, components
                );
            }
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::InvalidArgument),
        }
    }

    /// CRI sandbox IDs (64 hex digits) are always accepted.
    #[test]
    fn sandbox_id_cri_form_accepted(id in "[a-f0-9]{64}") {
        prop_assert!(validate_sandbox_id(&id).is_ok());
    }
}
