//! Running one command, or many at once, and measuring it: wall time, the child's own CPU
//! time and peak RSS (from `wait4`'s rusage, exact and free of sampling), and what a daemon
//! it talks to (containerd, `imv serve`) spent meanwhile: CPU from /proc/PID/stat, and peak
//! RSS growth from VmHWM after resetting it (`clear_refs` 5) before the command.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::R;

/// One measured step.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub wall: f64,
    /// User + system CPU of the command(s) run (summed over a group).
    pub client_cpu: f64,
    /// Peak RSS of the command (the largest of a group), KiB.
    pub client_rss_kib: u64,
    /// CPU the watched daemons spent during the step.
    pub daemon_cpu: f64,
    /// Per watched daemon: (name, peak RSS during the step minus RSS before it), KiB.
    pub daemon_rss_delta_kib: Vec<(String, i64)>,
}

/// A long-running process whose CPU and memory a step should include.
#[derive(Clone, Debug)]
pub struct Daemon {
    pub name: String,
    pub pid: u32,
}

struct DaemonMark {
    cpu: f64,
    rss_kib: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn proc_cpu(pid: u32) -> R<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')').ok_or("bad /proc/PID/stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks())
}

fn proc_status_kib(pid: u32, key: &str) -> R<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix(key) {
            let v = v
                .trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim();
            return Ok(v.parse()?);
        }
    }
    Err(format!("{key} not in /proc/{pid}/status").into())
}

fn mark(d: &Daemon) -> R<DaemonMark> {
    // Resets VmHWM to the current RSS (proc(5), clear_refs), so VmHWM afterwards is the
    // peak reached during the step.
    fs::write(format!("/proc/{}/clear_refs", d.pid), "5")?;
    Ok(DaemonMark {
        cpu: proc_cpu(d.pid)?,
        rss_kib: proc_status_kib(d.pid, "VmRSS")?,
    })
}

fn settle(d: &Daemon, m: &DaemonMark, s: &mut Sample) -> R<()> {
    s.daemon_cpu += proc_cpu(d.pid)? - m.cpu;
    let hwm = proc_status_kib(d.pid, "VmHWM")?;
    s.daemon_rss_delta_kib
        .push((d.name.clone(), hwm as i64 - m.rss_kib as i64));
    Ok(())
}

/// Where each command's stdout and stderr go, for a look after a failure.
pub struct Logs {
    dir: PathBuf,
    n: AtomicUsize,
}

impl Logs {
    pub fn new(dir: &Path) -> R<Self> {
        fs::create_dir_all(dir)?;
        Ok(Logs {
            dir: dir.to_owned(),
            n: AtomicUsize::new(0),
        })
    }

    fn next(&self) -> PathBuf {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{n:05}.log"))
    }
}

struct Running {
    pid: libc::pid_t,
    log: PathBuf,
    rss: PathBuf,
    what: String,
}

/// `cmd` run under GNU time, which writes the command's peak RSS (KiB) to `rss`.
///
/// Why not our own wait4's ru_maxrss: the kernel folds the pre-exec address space into it,
/// and std spawns with vfork semantics (CLONE_VM), so every child would report at least
/// this driver's RSS (tens of MiB after generating images). GNU time forks from a process
/// of about 2 MiB, so what it reports is the command's own peak, give or take that floor.
fn under_time(cmd: &Command, rss: &Path) -> Command {
    let mut c = Command::new("/usr/bin/time");
    c.args(["-f", "%M", "-o"])
        .arg(rss)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    c
}

fn spawn(cmd: &Command, logs: &Logs) -> R<Running> {
    let log = logs.next();
    let rss = log.with_extension("rss");
    let out = File::create(&log)?;
    let what = format!("{cmd:?}");
    fs::write(log.with_extension("cmd"), &what)?;
    let child = under_time(cmd, &rss)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    // Reaped below with wait4 (for its rusage), so the Child handle is never waited on.
    Ok(Running {
        pid: child.id() as libc::pid_t,
        log,
        rss,
        what,
    })
}

/// Wait for `r`; its CPU seconds (with GNU time's, which is next to nothing) and peak RSS
/// (KiB).
fn reap(r: &Running) -> R<(f64, u64)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data, written by the kernel.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; pointers are to live locals.
    let rc = unsafe { libc::wait4(r.pid, &mut status, 0, &mut ru) };
    if rc != r.pid {
        return Err(format!("wait4 {}: {}", r.pid, std::io::Error::last_os_error()).into());
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let out = fs::read_to_string(&r.log).unwrap_or_default();
        return Err(format!(
            "command failed (wait status {status}): {}\n{}",
            r.what,
            out.chars()
                .rev()
                .take(3000)
                .collect::<String>()
                .chars()
                .rev()
                .collect::<String>()
        )
        .into());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let rss = fs::read_to_string(&r.rss)?;
    let rss = rss
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("no peak RSS from GNU time in {}", r.rss.display()))?;
    Ok((tv(ru.ru_utime) + tv(ru.ru_stime), rss))
}

/// Run `cmds` all at once (one is a plain step), wait for every one, and measure.
pub fn run(cmds: Vec<Command>, daemons: &[Daemon], logs: &Logs) -> R<Sample> {
    let marks = daemons.iter().map(mark).collect::<R<Vec<_>>>()?;
    let start = Instant::now();
    let mut running = Vec::with_capacity(cmds.len());
    for c in &cmds {
        running.push(spawn(c, logs)?);
    }
    let mut s = Sample::default();
    let mut first_err = None;
    for r in &running {
        match reap(r) {
            Ok((cpu, rss)) => {
                s.client_cpu += cpu;
                s.client_rss_kib = s.client_rss_kib.max(rss);
            }
            // Keep reaping the others, so none is left a zombie; report the first failure.
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    s.wall = start.elapsed().as_secs_f64();
    if let Some(e) = first_err {
        return Err(e);
    }
    for (d, m) in daemons.iter().zip(&marks) {
        settle(d, m, &mut s)?;
    }
    Ok(s)
}

/// Run one command and measure it.
pub fn run1(cmd: Command, daemons: &[Daemon], logs: &Logs) -> R<Sample> {
    run(vec![cmd], daemons, logs)
}

/// Run a command untimed (setup, teardown); fail if it fails.
pub fn quiet(mut cmd: Command) -> R<String> {
    let what = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(format!(
            "{what}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
