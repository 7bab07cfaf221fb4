//! `imv_set_log`: the library's log, handed to a C host (containerd's logger, through the Go
//! bindings) instead of going nowhere.
//!
//! The bridge is a `tracing` subscriber of its own, not tracing-subscriber's registry: it
//! keeps no spans (the library records none outside the daemon, which has its own
//! subscriber) and forwards each event of imv's own code as one line, so the core trait's
//! few methods are all it takes. Its level and callback change at any time; the subscriber
//! is installed once per process, as `tracing` allows.

use std::ffi::{c_char, c_void, CString};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

use super::boundary::{guard, FfiError};
use super::{imv_error, imv_status};
use crate::locks::lock;

/// Levels of `imv_set_log`, the most severe first: a level forwards the events at it and
/// above.
// For the header: Rust reads the level as an i32 (`level_from_i32`).
#[allow(dead_code)]
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum imv_log_level {
    /// Nothing is forwarded.
    IMV_LOG_OFF = 0,
    /// Errors (a call that failed for a reason the caller's error does not carry).
    IMV_LOG_ERROR = 1,
    /// Warnings (something left behind, a fallback taken).
    IMV_LOG_WARN = 2,
    /// What was done: a volume mounted, an image unpacked or imported (a line per volume).
    IMV_LOG_INFO = 3,
    /// Each step of a call.
    IMV_LOG_DEBUG = 4,
    /// Each call to containerd and the kernel, with its duration.
    IMV_LOG_TRACE = 5,
}

/// Where the log goes: called once per event, from any thread of the process (the caller's,
/// or one of the library's), possibly from several at once; `target` names the module
/// (`imv::volumes::making`), `message` is the event's text and fields (`mounted image
/// volume sandbox=pod1 ...`). Both strings are valid for the call only. The callback must
/// not call into imv.
pub type imv_log_fn = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        level: i32,
        target: *const c_char,
        message: *const c_char,
    ),
>;

/// The level events are forwarded at and above; 0 forwards none.
static LEVEL: AtomicI32 = AtomicI32::new(0);

/// The host's callback and its pointer.
static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Whether this process's tracing dispatcher is the bridge (installed by the first call),
/// or another subscriber was there first.
static INSTALLED: OnceLock<bool> = OnceLock::new();

#[derive(Clone, Copy)]
struct Sink {
    callback: unsafe extern "C" fn(*mut c_void, i32, *const c_char, *const c_char),
    user: *mut c_void,
}

// SAFETY: `imv_set_log`'s contract lets the library call the callback with `user` from any
// thread; the pointer is only ever passed back to it.
unsafe impl Send for Sink {}

/// Send the library's log, for every handle of the process, to `callback`: the events of
/// imv's own code at `level` (an `imv_log_level`) and more severe. Until the first call the
/// library logs nothing. A later call replaces the level and the callback (the previous
/// callback may still be running on another thread when it returns); `IMV_LOG_OFF`, or a
/// NULL callback, stops the log.
///
/// FAILED_PRECONDITION when the process already has a `tracing` subscriber of its own (a
/// Rust host): the library's events go to that one. INVALID_ARGUMENT for a level that is
/// no `imv_log_level`.
///
/// # Safety
/// `callback` is NULL or a function as `imv_log_fn` describes, safe to call with `user`
/// from any thread until a later `imv_set_log` replaces it and returns; `err` as for
/// `imv_open`.
#[no_mangle]
pub unsafe extern "C" fn imv_set_log(
    level: i32,
    callback: imv_log_fn,
    user: *mut c_void,
    err: *mut *mut imv_error,
) -> imv_status {
    guard(err, || {
        if !(0..=5).contains(&level) {
            return Err(FfiError::invalid(format!(
                "log level {level} is not an imv_log_level (0 to 5)"
            )));
        }
        let installed =
            *INSTALLED.get_or_init(|| tracing::subscriber::set_global_default(Bridge).is_ok());
        if !installed {
            return Err(FfiError {
                status: imv_status::IMV_FAILED_PRECONDITION,
                message: "this process has a tracing subscriber of its own: imv's events go \
                          to it"
                    .to_owned(),
            });
        }
        let sink = callback.map(|callback| Sink { callback, user });
        *lock(&SINK) = sink;
        LEVEL.store(if sink.is_some() { level } else { 0 }, Ordering::Release);
        Ok(())
    })
}

fn level_number(level: &Level) -> i32 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// Whether an event comes from imv's own code: its dependencies' events (h2, tower) are
/// theirs, and would drown the library's at trace level.
fn is_imv(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    target == "imv" || target.starts_with("imv::")
}

/// The subscriber: forwards events, keeps no spans.
struct Bridge;

impl Subscriber for Bridge {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // The level changes at run time: imv's callsites are asked each time, others never.
        if is_imv(metadata) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        is_imv(metadata) && level_number(metadata.level()) <= LEVEL.load(Ordering::Acquire)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let Some(sink) = *lock(&SINK) else {
            return;
        };
        let mut line = Line::default();
        event.record(&mut line);
        let metadata = event.metadata();
        let message = CString::new(line.text.replace('\0', "\\0")).unwrap_or_default();
        let target = CString::new(metadata.target()).unwrap_or_default();
        // SAFETY: the callback and `user` are the host's, callable from any thread
        // (`imv_set_log`'s contract); the strings outlive the call.
        unsafe {
            (sink.callback)(
                sink.user,
                level_number(metadata.level()),
                target.as_ptr(),
                message.as_ptr(),
            )
        };
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// An event's text: its message, then ` key=value` for each field (values with spaces,
/// quotes or `=` quoted).
#[derive(Default)]
struct Line {
    text: String,
}

impl Line {
    fn field(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.insert_str(0, value);
            return;
        }
        let plain = !value.is_empty()
            && !value
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '=');
        if plain {
            let _ = write!(self.text, " {}={value}", field.name());
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.field(field, &format!("{value:?}"));
    }
}
