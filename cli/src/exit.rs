//! Exit codes: one per error kind, so a script can tell "no such image" from "bad input"
//! without parsing messages. The numbers are part of the command's interface (documented in
//! `imv --help` and the README); never renumber.

use std::process::ExitCode;

use imv::ErrorKind;

/// Success.
pub const OK: u8 = 0;
/// A bug, or an unexpected failure of the system underneath.
pub const INTERNAL: u8 = 1;
/// The command line could not be parsed. clap exits with it by itself; named here for the
/// tests that keep the error kinds off it.
#[cfg_attr(not(test), allow(dead_code))]
pub const USAGE: u8 = 2;
/// A value was malformed or is not allowed (e.g. `readonly=false` on an image volume).
pub const INVALID_ARGUMENT: u8 = 3;
/// The image, sandbox, lease or file does not exist.
pub const NOT_FOUND: u8 = 4;
/// The thing to create exists already.
pub const ALREADY_EXISTS: u8 = 5;
/// The system is not in a state that allows the operation.
pub const FAILED_PRECONDITION: u8 = 6;
/// The store or backend cannot be reached right now.
pub const UNAVAILABLE: u8 = 7;
/// The caller may not do this (a daemon that does not serve this user).
pub const PERMISSION_DENIED: u8 = 8;

/// The exit code for an error of `kind`.
pub fn code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Internal => INTERNAL,
        ErrorKind::InvalidArgument => INVALID_ARGUMENT,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::AlreadyExists => ALREADY_EXISTS,
        ErrorKind::FailedPrecondition => FAILED_PRECONDITION,
        ErrorKind::Unavailable => UNAVAILABLE,
        ErrorKind::PermissionDenied => PERMISSION_DENIED,
    }
}

/// [`code`] as a process exit code.
pub fn exit_code(kind: ErrorKind) -> ExitCode {
    ExitCode::from(code(kind))
}

/// The table printed after `imv --help` and copied into the README.
pub const HELP: &str = "\
Exit codes:
  0  success
  1  internal error (a bug, or an unexpected failure of the system underneath)
  2  usage error (the command line could not be parsed)
  3  invalid argument (e.g. readonly=false on an image volume, a bad --mounts file)
  4  not found (image, sandbox, file)
  5  already exists
  6  failed precondition (e.g. the operation needs the embedded store)
  7  unavailable (the store or backend cannot be reached)
  8  permission denied (the daemon does not serve this user)";

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorKind; 7] = [
        ErrorKind::Internal,
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::FailedPrecondition,
        ErrorKind::Unavailable,
        ErrorKind::PermissionDenied,
    ];

    #[test]
    fn each_kind_has_its_own_code() {
        let mut codes: Vec<u8> = ALL.iter().map(|k| code(*k)).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ALL.len());
        // 0 is success and 2 is clap's usage error: no error kind may take them.
        assert!(!codes.contains(&OK));
        assert!(!codes.contains(&USAGE));
    }

    #[test]
    fn codes_are_the_documented_ones() {
        assert_eq!(code(ErrorKind::Internal), 1);
        assert_eq!(code(ErrorKind::InvalidArgument), 3);
        assert_eq!(code(ErrorKind::NotFound), 4);
        assert_eq!(code(ErrorKind::AlreadyExists), 5);
        assert_eq!(code(ErrorKind::FailedPrecondition), 6);
        assert_eq!(code(ErrorKind::Unavailable), 7);
        assert_eq!(code(ErrorKind::PermissionDenied), 8);
    }

    #[test]
    fn help_lists_every_code() {
        for kind in ALL {
            let line = format!("  {}  {}", code(kind), kind.as_str());
            assert!(HELP.contains(&line), "exit code help lacks {line:?}");
        }
        assert!(HELP.contains("  2  usage error"));
    }
}
