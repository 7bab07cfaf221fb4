//! Errors: a kind that mirrors containerd's errdefs (and gRPC codes), and a message that
//! names the value and the path involved.

use std::fmt;
use std::io;
use std::path::Path;

/// What went wrong, in the vocabulary containerd's errdefs and gRPC status codes share.
///
/// The numbers are part of the stable interface: C statuses and ttrpc status codes are
/// these numbers, and the command's exit codes are mapped from them (cli/src/exit.rs,
/// other numbers); never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorKind {
    /// The caller passed something malformed or disallowed (gRPC code 3).
    InvalidArgument = 3,
    /// The image, snapshot, lease or path does not exist (gRPC code 5).
    NotFound = 5,
    /// The thing to create exists already (gRPC code 6).
    AlreadyExists = 6,
    /// The caller may not do this: a peer the daemon does not serve (gRPC code 7).
    PermissionDenied = 7,
    /// The system is not in a state that allows the operation (gRPC code 9).
    FailedPrecondition = 9,
    /// The backend (containerd, the database) cannot be reached right now (gRPC code 14).
    Unavailable = 14,
    /// A bug or an unexpected failure of the system underneath (gRPC code 13).
    Internal = 13,
}

impl ErrorKind {
    /// A short, stable, lower-case name (`not found`, `invalid argument`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }

    /// The gRPC status code this kind maps to.
    pub fn grpc_code(self) -> i32 {
        self as i32
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The crate's error: a kind plus a message that says what failed and on what.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// InvalidArgument.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// NotFound.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// AlreadyExists.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }

    /// FailedPrecondition.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }

    /// Unavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// Internal.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// An I/O error while doing `what` on `path`. The kind follows the errno: ENOENT is
    /// NotFound, EEXIST AlreadyExists, EINVAL InvalidArgument, anything else Internal.
    pub fn io(what: &str, path: &Path, err: io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            io::ErrorKind::InvalidInput => ErrorKind::InvalidArgument,
            _ => ErrorKind::Internal,
        };
        Error {
            kind,
            message: format!("{what} {}: {err}", path.display()),
            source: Some(Box::new(err)),
        }
    }

    /// The same error with `context: ` put in front of its message.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The same error with another kind.
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this is NotFound.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// Whether this is AlreadyExists.
    pub fn is_already_exists(&self) -> bool {
        self.kind == ErrorKind::AlreadyExists
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Attach "what on which path" to I/O results.
pub trait IoContext<T> {
    /// Turn an `io::Error` into an [`Error`] that names `what` and `path`.
    fn at(self, what: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(what, path, e))
    }
}

/// Attach "what on which path" to rustix results.
impl<T> IoContext<T> for rustix::io::Result<T> {
    fn at(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(what, path, e.into()))
    }
}

/// A prefix of `s` of at most `max` bytes, cut on a character boundary (for messages).
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// How long a value may be and still be quoted whole in a message.
const SHOWN_MAX: usize = 80;

/// `s` quoted for a message: whole when short, else its start and its length, so an
/// error names the offending value without carrying megabytes of it.
pub(crate) fn shown(s: &str) -> String {
    if s.len() > SHOWN_MAX {
        format!("{:?}... ({} bytes)", truncate(s, SHOWN_MAX), s.len())
    } else {
        format!("{s:?}")
    }
}
