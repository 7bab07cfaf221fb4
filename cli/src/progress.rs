//! Progress bars for long work (imports, unpacks) and a log writer that does not tear them.
//!
//! The library only reports progress through [`imv::Progress`]; drawing is the binary's
//! job, and only on a terminal: when stderr is a pipe or a file (CI, scripts, logs) nothing
//! is drawn, so the output stays clean and diffable.

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;

/// Bars on stderr, one per task, keyed by the task name the library gives.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    /// Bars when stderr is a terminal, `None` otherwise.
    pub fn for_stderr() -> Option<Arc<Self>> {
        io::stderr().is_terminal().then(|| {
            Arc::new(Bars {
                multi: MultiProgress::new(),
                bars: Mutex::new(HashMap::new()),
            })
        })
    }

    fn bars(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProgressBar>> {
        // A panic while holding the lock must not also break every later progress report.
        self.bars.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn byte_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner:.green} {msg:40!} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .expect("valid template")
    .progress_chars("=> ")
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.green} {msg:40!} {bytes} {elapsed}")
        .expect("valid template")
}

impl imv::Progress for Bars {
    fn begin(&self, task: &str, total: Option<u64>) {
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(byte_style()),
            None => ProgressBar::new_spinner().with_style(spinner_style()),
        }
        .with_message(task.to_string());
        let bar = self.multi.add(bar);
        // Ticking keeps the spinner and rate alive while a big blob is hashed or unpacked.
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Some(old) = self.bars().insert(task.to_string(), bar) {
            old.finish_and_clear();
        }
    }

    fn advance(&self, task: &str, bytes: u64) {
        if let Some(bar) = self.bars().get(task) {
            bar.inc(bytes);
        }
    }

    fn end(&self, task: &str) {
        if let Some(bar) = self.bars().remove(task) {
            bar.finish_and_clear();
        }
    }
}

/// Where log lines go: stderr, with any bars lifted out of the way while a line is written.
#[derive(Clone)]
pub struct LogWriter {
    bars: Option<Arc<Bars>>,
}

impl LogWriter {
    pub fn new(bars: Option<Arc<Bars>>) -> Self {
        LogWriter { bars }
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // tracing-subscriber formats an event into one buffer and writes it in one go, so
        // suspending around each write keeps a log line whole and the bars intact.
        match &self.bars {
            Some(bars) => bars.multi.suspend(|| io::stderr().write(buf)),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
