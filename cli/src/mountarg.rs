//! `--mount image=REF,container-path=PATH[,sub-path=P][,readonly=true|false]`: one CRI
//! image mount written on the command line.
//!
//! The parser only checks syntax. What an image mount may be (read-only, no host path, a
//! safe sub path) is the library's to decide, so that the CLI, the C ABI and the ttrpc
//! service reject the same things with the same words; hence `readonly=false` is passed
//! through for the library to refuse.

use imv::{ImageSpec, Mount};

/// The keys `--mount` accepts, for messages.
const KEYS: &str = "image, container-path, sub-path, readonly";

/// Parse one `--mount` value into a CRI mount. Errors name the offending part; clap puts
/// them after "invalid value '...' for '--mount <MOUNT>'".
pub fn parse(s: &str) -> Result<Mount, String> {
    let mut image: Option<String> = None;
    let mut container_path: Option<String> = None;
    let mut sub_path: Option<String> = None;
    // Image volumes must be read-only (KEP-4639), so that is what an unsaid readonly means.
    let mut readonly: Option<bool> = None;

    for item in s.split(',') {
        if item.is_empty() {
            return Err("empty item (two commas in a row, or a trailing comma?)".into());
        }
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        let slot = match key {
            "image" => &mut image,
            "container-path" => &mut container_path,
            "sub-path" => &mut sub_path,
            "readonly" => {
                if readonly.is_some() {
                    return Err("readonly given twice".into());
                }
                // A bare `readonly`, as `docker run --mount` allows, means true.
                readonly = Some(match value {
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(v) => return Err(format!("readonly must be true or false, not {v:?}")),
                });
                continue;
            }
            _ => return Err(format!("unknown key {key:?} (known keys: {KEYS})")),
        };
        let Some(value) = value else {
            return Err(format!("{key} needs a value ({key}=...)"));
        };
        // An empty value parses: what the library makes of it (an InvalidArgument naming the
        // mount, exit code 3) is the answer, as for a `--mounts` file.
        if slot.is_some() {
            return Err(format!("{key} given twice"));
        }
        *slot = Some(value.to_string());
    }

    let image = image.ok_or("image=REF is missing")?;
    let container_path = container_path.ok_or("container-path=PATH is missing")?;
    Ok(Mount {
        container_path,
        readonly: readonly.unwrap_or(true),
        image: Some(ImageSpec {
            image,
            ..ImageSpec::default()
        }),
        image_sub_path: sub_path.unwrap_or_default(),
        ..Mount::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_of(m: &Mount) -> &str {
        &m.image.as_ref().unwrap().image
    }

    #[test]
    fn minimal_mount_is_read_only() {
        let m = parse("image=example.com/app:1,container-path=/data").unwrap();
        assert_eq!(image_of(&m), "example.com/app:1");
        assert_eq!(m.container_path, "/data");
        assert!(m.readonly);
        assert!(m.host_path.is_empty());
        assert!(m.image_sub_path.is_empty());
    }

    #[test]
    fn all_keys_in_any_order() {
        let m =
            parse("readonly=true,sub-path=etc/conf,container-path=/c,image=app@sha256:ab").unwrap();
        assert_eq!(image_of(&m), "app@sha256:ab");
        assert_eq!(m.container_path, "/c");
        assert_eq!(m.image_sub_path, "etc/conf");
        assert!(m.readonly);
    }

    #[test]
    fn values_may_contain_equals_signs() {
        let m = parse("image=a,container-path=/x=y").unwrap();
        assert_eq!(m.container_path, "/x=y");
    }

    #[test]
    fn explicit_readonly_false_is_passed_through() {
        // The library rejects it; the CLI must not hide the request.
        let m = parse("image=a,container-path=/c,readonly=false").unwrap();
        assert!(!m.readonly);
    }

    #[test]
    fn bare_readonly_means_true() {
        assert!(
            parse("image=a,container-path=/c,readonly")
                .unwrap()
                .readonly
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("image=a,container-path=/c,host-path=/etc").unwrap_err();
        assert!(e.contains("unknown key \"host-path\""), "{e}");
        assert!(e.contains("known keys"), "{e}");
    }

    #[test]
    fn missing_required_keys() {
        assert!(parse("container-path=/c")
            .unwrap_err()
            .contains("image=REF is missing"));
        assert!(parse("image=a")
            .unwrap_err()
            .contains("container-path=PATH is missing"));
        assert!(parse("").is_err());
    }

    #[test]
    fn malformed_items() {
        assert!(parse("image=a,,container-path=/c")
            .unwrap_err()
            .contains("empty item"));
        assert!(parse("image=a,container-path=/c,")
            .unwrap_err()
            .contains("empty item"));
        assert!(parse("image,container-path=/c")
            .unwrap_err()
            .contains("needs a value"));
        assert_eq!(
            parse("image=,container-path=").unwrap().container_path,
            "",
            "left to the library to refuse"
        );
        assert!(parse("image=a,image=b,container-path=/c")
            .unwrap_err()
            .contains("given twice"));
        assert!(parse("image=a,container-path=/c,readonly=yes")
            .unwrap_err()
            .contains("true or false"));
        assert!(parse("image=a,container-path=/c,readonly,readonly")
            .unwrap_err()
            .contains("twice"));
    }
}
