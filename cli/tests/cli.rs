//! The `imv` binary's argument handling, run as a user would run it.
//!
//! These cases fail before the store is opened, so they need neither root nor a working
//! engine. Each run gets its own temporary --root and --state, so nothing touches
//! /var/lib/imv or /run/imv even if a case unexpectedly got as far as the store.

mod common;

/// Run `imv` with a fresh temporary --root and --state, and check it created neither:
/// the failure happened before the store was opened.
fn imv_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (root, state) = (dir.path().join("root"), dir.path().join("state"));
    let out = common::run_imv(&root, &state, args, stdin);
    assert!(
        !root.exists() && !state.exists(),
        "imv {args:?} created --root or --state"
    );
    out
}

fn imv(args: &[&str]) -> (i32, String, String) {
    imv_stdin(args, "")
}

const MOUNT: &str = "image=example.com/app:1,container-path=/data";

#[test]
fn help_documents_exit_codes_and_examples() {
    let (code, out, _) = imv(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Exit codes:"));
    assert!(out.contains("4  not found"));
    for cmd in [
        "import", "images", "rmi", "gc", "mutate", "cleanup", "release", "volumes",
    ] {
        let (code, out, err) = imv(&[cmd, "--help"]);
        assert_eq!(code, 0, "{cmd}: {err}");
        assert!(out.contains("Example"), "`imv {cmd} --help` has no example");
    }
}

#[test]
fn mutate_without_sandbox_is_a_usage_error() {
    let (code, _, err) = imv(&["mutate", "--mount", MOUNT]);
    assert_eq!(code, 2);
    assert!(err.contains("--sandbox"), "{err}");
}

#[test]
fn mutate_without_any_mount_is_a_usage_error() {
    let (code, _, err) = imv(&["mutate", "--sandbox", "s"]);
    assert_eq!(code, 2);
    assert!(err.contains("--mount"), "{err}");
}

#[test]
fn mount_with_unknown_key_names_it() {
    let (code, _, err) = imv(&[
        "mutate",
        "--sandbox",
        "s",
        "--mount",
        &format!("{MOUNT},host-path=/etc"),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown key \"host-path\""), "{err}");
    assert!(
        err.contains("container-path"),
        "the message lists the known keys: {err}"
    );
}

#[test]
fn mount_with_bad_syntax_says_what_is_wrong() {
    for (mount, says) in [
        ("image=a", "container-path=PATH is missing"),
        ("container-path=/c", "image=REF is missing"),
        ("image=a,,container-path=/c", "empty item"),
        ("image,container-path=/c", "needs a value"),
        ("image=a,container-path=/c,readonly=no", "true or false"),
    ] {
        let (code, _, err) = imv(&["mutate", "--sandbox", "s", "--mount", mount]);
        assert_eq!(code, 2, "{mount}: {err}");
        assert!(err.contains(says), "{mount}: {err}");
    }
}

#[test]
fn missing_mounts_file_is_not_found() {
    let (code, _, err) = imv(&[
        "mutate",
        "--sandbox",
        "s",
        "--mounts",
        "/nonexistent/imv-mounts.json",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(err.starts_with("imv: "), "{err}");
    assert!(err.contains("/nonexistent/imv-mounts.json"), "{err}");
}

#[test]
fn a_mounts_file_that_is_a_directory_or_not_utf8_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let latin1 = dir.path().join("mounts.json");
    std::fs::write(&latin1, b"[{\"container_path\": \"/caf\xe9\"}]").unwrap();
    for (path, says) in [
        (dir.path().to_path_buf(), "is a directory"),
        (latin1, "not UTF-8"),
    ] {
        let (code, _, err) = imv(&[
            "mutate",
            "--sandbox",
            "s",
            "--mounts",
            path.to_str().unwrap(),
        ]);
        assert_eq!(code, 3, "{}: {err}", path.display());
        assert!(err.starts_with("imv: invalid argument: "), "{err}");
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn malformed_mounts_on_stdin_is_invalid_argument() {
    let (code, _, err) = imv_stdin(
        &[
            "mutate",
            "--sandbox",
            "s",
            "--mounts",
            "-",
            "--mount",
            MOUNT,
        ],
        "[{",
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.starts_with("imv: invalid argument: <stdin>"), "{err}");
}

#[test]
fn bad_log_filter_is_a_usage_error() {
    let (code, _, err) = imv(&["--log-level", "imv=loud", "volumes"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn rmi_needs_a_reference() {
    let (code, _, _) = imv(&["rmi"]);
    assert_eq!(code, 2);
}

/// Bad input is exit code 3 (the README's table), however it comes: an argument that is
/// not UTF-8 (refused before the store is opened), an empty container path (the library's
/// refusal, naming the mount).
#[test]
fn bad_input_in_arguments_is_invalid_argument() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let (root, state) = (dir.path().join("root"), dir.path().join("state"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imv"))
        .arg("--root")
        .arg(&root)
        .arg("--state")
        .arg(&state)
        .args(["mutate", "--sandbox"])
        .arg(std::ffi::OsStr::from_bytes(b"bad\xff"))
        .args(["--mount", MOUNT])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("UTF-8"));
    assert!(!root.exists() && !state.exists());

    let (code, _, err) = common::run_imv(
        &root,
        &state,
        &[
            "mutate",
            "--sandbox",
            "s",
            "--mount",
            "image=example.com/app:1,container-path=",
        ],
        "",
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("container path is empty"), "{err}");
}

/// A --root or --state that names a file is bad input (3), not "already exists" (5).
#[test]
fn a_root_or_state_that_is_a_file_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let dir_ok = dir.path().join("ok");
    for (root, state, what) in [
        (&file, &dir_ok, "store root"),
        (&dir_ok, &file, "state directory"),
    ] {
        let (code, _, err) = common::run_imv(root, state, &["volumes"], "");
        assert_eq!(code, 3, "{err}");
        assert!(
            err.contains(&format!("the {what} ")) && err.contains("is not a directory"),
            "{err}"
        );
    }
}
