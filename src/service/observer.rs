//! What the service tells a watcher of its own (metrics) about each call it answers.

use std::time::Duration;

/// Told of every call the service answers, refused ones included: `imv serve
/// --metrics-address` counts and times them. Called on the request's thread after the
/// answer is made; keep it quick and never block.
pub trait CallObserver: Send + Sync {
    /// `method` (`MutateMounts`, `Cleanup`, ...) was answered with `code` (a gRPC code's
    /// name: `OK`, `InvalidArgument`, `NotFound`, `DeadlineExceeded`, ...), `elapsed` after
    /// the request was received.
    fn call_done(&self, method: &str, code: &str, elapsed: Duration);
}

/// The name of a ttrpc status code, as gRPC's Go code prints it (`codes.Code.String`).
pub(crate) fn code_name(code: ttrpc::Code) -> &'static str {
    use ttrpc::Code;
    match code {
        Code::OK => "OK",
        Code::CANCELLED => "Canceled",
        Code::UNKNOWN => "Unknown",
        Code::INVALID_ARGUMENT => "InvalidArgument",
        Code::DEADLINE_EXCEEDED => "DeadlineExceeded",
        Code::NOT_FOUND => "NotFound",
        Code::ALREADY_EXISTS => "AlreadyExists",
        Code::PERMISSION_DENIED => "PermissionDenied",
        Code::RESOURCE_EXHAUSTED => "ResourceExhausted",
        Code::FAILED_PRECONDITION => "FailedPrecondition",
        Code::ABORTED => "Aborted",
        Code::OUT_OF_RANGE => "OutOfRange",
        Code::UNIMPLEMENTED => "Unimplemented",
        Code::INTERNAL => "Internal",
        Code::UNAVAILABLE => "Unavailable",
        Code::DATA_LOSS => "DataLoss",
        Code::UNAUTHENTICATED => "Unauthenticated",
    }
}

/// The code name of a call's answer.
pub(crate) fn outcome<T>(result: &ttrpc::Result<T>) -> &'static str {
    match result {
        Ok(_) => "OK",
        Err(ttrpc::Error::RpcStatus(status)) => code_name(status.code()),
        Err(_) => "Unknown",
    }
}

impl std::fmt::Debug for dyn CallObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallObserver")
    }
}
