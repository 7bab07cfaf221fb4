//! Events: what the engine tells `Config::events` (on both backends), and what `imv serve`
//! publishes from it to containerd's event service, read back with `ctr events` from the
//! test's own containerd. Needs root (mounts) and containerd.

mod common;

use common::serve::Serve;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{image_mount, Containerd, TestEnv};
use imv::service::Client;
use imv::{ErrorKind, ImageVolumes, VolumeEvent, VolumeEventKind, VolumeEvents};
use imv_testkit::image_builder::sample_image;

const SAMPLE: &str = "example.com/imv/sample:1";

/// Keeps every event it is told.
#[derive(Default)]
struct Recorder(Mutex<Vec<VolumeEvent>>);

impl VolumeEvents for Recorder {
    fn publish(&self, event: VolumeEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Recorder {
    /// The events told since the last call.
    fn take(&self) -> Vec<VolumeEvent> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn open_recording(env: &TestEnv) -> (ImageVolumes, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let mut config = env.config();
    config.events = Some(recorder.clone());
    (ImageVolumes::open(config).expect("open"), recorder)
}

fn mutate(iv: &ImageVolumes, sandbox: &str, images: &[&str]) -> imv::Result<Vec<PathBuf>> {
    let mut mounts: Vec<_> = images
        .iter()
        .enumerate()
        .map(|(i, image)| image_mount(image, &format!("/v{i}")))
        .collect();
    iv.mutate_mounts(sandbox, "", None, &mut mounts)?;
    Ok(mounts.iter().map(|m| PathBuf::from(&m.host_path)).collect())
}

/// Mounted once per volume, nothing for a reuse by the same process or for a call that
/// failed (and undid its volume), taken over after a restart, cleaned up per volume,
/// released once per lease.
fn engine_events(mut env: TestEnv) {
    let digests = env.import(SAMPLE, &sample_image());
    env.close();
    let snapshotter = "overlayfs";
    let (iv, events) = open_recording(&env);

    // Two mounts of one image in one call: one volume, one event.
    let hosts = mutate(&iv, "pod1", &[SAMPLE, SAMPLE]).unwrap();
    let host = hosts[0].clone();
    let mounted = VolumeEvent {
        kind: VolumeEventKind::Mounted,
        sandbox_id: "pod1".into(),
        image: Some(SAMPLE.into()),
        image_digest: Some(digests.manifest.clone()),
        target: Some(host.clone()),
        snapshotter: Some(snapshotter.into()),
    };
    assert_eq!(events.take(), vec![mounted.clone()]);
    mutate(&iv, "pod1", &[SAMPLE]).unwrap();
    assert_eq!(
        events.take(),
        vec![],
        "a reuse by the same process is no event"
    );

    // A call that fails on its second image undoes its first volume: nothing happened.
    let err = mutate(&iv, "pod2", &[SAMPLE, "example.com/imv/missing:1"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(events.take(), vec![]);

    // A restart: the new process checks the volume it finds mounted and takes it over.
    drop(iv);
    let (iv, events) = open_recording(&env);
    assert_eq!(mutate(&iv, "pod1", &[SAMPLE]).unwrap(), vec![host.clone()]);
    let reused = VolumeEvent {
        kind: VolumeEventKind::Reused,
        ..mounted.clone()
    };
    assert_eq!(events.take(), vec![reused]);

    iv.cleanup("pod1", "").unwrap();
    let cleaned = VolumeEvent {
        kind: VolumeEventKind::CleanedUp,
        image: None,
        ..mounted.clone()
    };
    assert_eq!(events.take(), vec![cleaned.clone()]);
    iv.cleanup("pod1", "").unwrap();
    assert_eq!(events.take(), vec![], "nothing left to clean up");

    iv.release("pod1").unwrap();
    let released = VolumeEvent {
        kind: VolumeEventKind::Released,
        sandbox_id: "pod1".into(),
        image: None,
        image_digest: None,
        target: None,
        snapshotter: None,
    };
    assert_eq!(events.take(), vec![released]);
    iv.release("pod1").unwrap();
    assert_eq!(events.take(), vec![], "no lease left to release");

    // A release with a volume still mounted tells both.
    mutate(&iv, "pod3", &[SAMPLE]).unwrap();
    events.take();
    iv.release("pod3").unwrap();
    let kinds: Vec<_> = events.take().into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![VolumeEventKind::CleanedUp, VolumeEventKind::Released]
    );
}

on_both_backends!(engine_events);

/// `ctr events` on a containerd, its lines as they come.
struct Subscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Subscriber {
    /// Subscribe, and return once the subscription is live: a namespace made after the
    /// start shows up as an event.
    fn start(daemon: &Containerd) -> Subscriber {
        let mut child = Command::new("ctr")
            .arg("--address")
            .arg(&daemon.address)
            .arg("events")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ctr events");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let subscriber = Subscriber { child, lines };
        let until = Instant::now() + Duration::from_secs(20);
        for n in 0.. {
            let probe = format!("imv-events-probe-{}-{n}", std::process::id());
            daemon.ctr("default", &["namespaces", "create", &probe]);
            daemon.ctr("default", &["namespaces", "remove", &probe]);
            let seen = subscriber.until(Duration::from_millis(500), |l| l.contains(&probe));
            if seen.iter().any(|l| l.contains(&probe)) {
                break;
            }
            assert!(Instant::now() < until, "ctr events never showed a probe");
        }
        subscriber
    }

    /// Lines until one satisfies `done` (included) or `wait` passes.
    fn until(&self, wait: Duration, done: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let stop = done(&line);
                    lines.push(line);
                    if stop {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        lines
    }

    /// The imv events (topic /image-volumes/...) of `namespace` among the next lines,
    /// until `n` came (at most 30 s), as (topic, payload).
    fn image_volume_events(&self, namespace: &str, n: usize) -> Vec<(String, serde_json::Value)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut found = Vec::new();
        while found.len() < n {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            // <date> <time> <zone> <tz> <namespace> <topic> <json>
            let fields: Vec<&str> = line.splitn(7, ' ').collect();
            if fields.len() == 7
                && fields[4] == namespace
                && fields[5].starts_with("/image-volumes/")
            {
                let payload = serde_json::from_str(fields[6])
                    .unwrap_or_else(|e| panic!("{line}: payload is not JSON: {e}"));
                found.push((fields[5].to_owned(), payload));
            }
        }
        found
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mutate_through(client: &Client, sandbox: &str) -> String {
    let mut mounts = vec![image_mount(SAMPLE, "/data")];
    client
        .mutate_mounts(sandbox, "", None, &mut mounts)
        .unwrap();
    mounts[0].host_path.clone()
}

#[test]
fn imv_serve_publishes_to_containerd_and_ctr_events_shows_them() {
    let mut env = TestEnv::new_containerd();
    let digests = env.import(SAMPLE, &sample_image());
    env.close();
    let (daemon, namespace) = env.daemon();
    let namespace = namespace.to_owned();
    let subscriber = Subscriber::start(daemon);

    let mut serve = Serve::start(&env, &[]);
    let client = serve.client();
    let host = mutate_through(&client, "pod1");
    let events = subscriber.image_volume_events(&namespace, 1);
    let want_labels = serde_json::json!({
        "sandbox": "pod1",
        "image_digest": digests.manifest.to_string(),
        "host_path": host,
        "snapshotter": "overlayfs",
    });
    assert_eq!(
        events,
        vec![(
            "/image-volumes/mount".to_owned(),
            serde_json::json!({"name": SAMPLE, "labels": want_labels})
        )],
        "{}",
        serve.log()
    );

    // A restart of imv serve: the volume is taken over.
    drop(client);
    let status = serve.stop();
    assert!(
        status.success(),
        "imv serve exited with {status}:\n{}",
        serve.log()
    );
    let serve = Serve::start(&env, &[]);
    let client = serve.client();
    assert_eq!(mutate_through(&client, "pod1"), host);
    client.cleanup("pod1", "").unwrap();
    client.release("pod1").unwrap();
    let events = subscriber.image_volume_events(&namespace, 3);
    let topics: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            "/image-volumes/reuse",
            "/image-volumes/cleanup",
            "/image-volumes/release"
        ],
        "{}",
        serve.log()
    );
    assert_eq!(events[0].1["labels"], want_labels);
    // A cleanup knows the volume by its digest, not by the reference it was asked by.
    assert_eq!(events[1].1["name"], digests.manifest.to_string());
    assert_eq!(events[1].1["labels"]["host_path"], host.as_str());
    // A release is of the sandbox: no image (ctr leaves the empty name out).
    assert_eq!(
        events[2].1["labels"],
        serde_json::json!({"sandbox": "pod1"})
    );
    assert!(events[2].1["name"].as_str().unwrap_or("").is_empty());

    // --no-events: nothing (the probe's own event comes through, none of imv's before it).
    drop(client);
    drop(serve);
    let serve = Serve::start(&env, &["--no-events"]);
    let client = serve.client();
    mutate_through(&client, "pod2");
    client.release("pod2").unwrap();
    daemon.ctr("default", &["namespaces", "create", "imv-events-after"]);
    daemon.ctr("default", &["namespaces", "remove", "imv-events-after"]);
    let lines = subscriber.until(Duration::from_secs(20), |l| l.contains("imv-events-after"));
    assert!(
        lines.iter().any(|l| l.contains("imv-events-after")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l
            .split(' ')
            .nth(5)
            .is_some_and(|t| t.starts_with("/image-volumes/"))),
        "--no-events published: {lines:?}"
    );
}

/// A unix socket at `path` that forwards each connection to `upstream`, holding every
/// answer back by `delay`: a slow event service. Runs until the test process ends.
fn slow_proxy(path: &Path, upstream: PathBuf, delay: Duration) {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let Ok(server) = UnixStream::connect(&upstream) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut c_in, &mut s_out));
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 64 << 10];
                while let Ok(n @ 1..) = s_in.read(&mut buf) {
                    std::thread::sleep(delay);
                    if c_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// SIGTERM right after a burst of requests, with an event service slow to answer: the
/// events of every one of them reach containerd before imv serve exits (it sends its
/// queue first, for a few seconds at most).
#[test]
fn the_last_events_are_published_before_imv_serve_exits() {
    let mut env = TestEnv::new_containerd();
    env.import(SAMPLE, &sample_image());
    env.close();
    let (daemon, namespace) = env.daemon();
    let namespace = namespace.to_owned();
    let subscriber = Subscriber::start(daemon);
    // 24 events at 40 ms each: about a second to send, after the last answer.
    let slow = env.dir.join("slow.sock");
    slow_proxy(
        &slow,
        PathBuf::from(format!("{}.ttrpc", daemon.address.display())),
        Duration::from_millis(40),
    );
    let mut serve = Serve::start(&env, &["--events-address", slow.to_str().unwrap()]);
    // Each of 8 clients mounts its sandbox, cleans it up and releases it, at once: 24
    // events queued in a burst, and the daemon told to stop as the last answer comes.
    std::thread::scope(|s| {
        for i in 0..8 {
            let client = serve.client();
            s.spawn(move || {
                let sandbox = format!("burst{i}");
                mutate_through(&client, &sandbox);
                client.cleanup(&sandbox, "").unwrap();
                client.release(&sandbox).unwrap();
            });
        }
    });
    let status = serve.stop();
    assert!(status.success(), "exit {status}:\n{}", serve.log());
    let events = subscriber.image_volume_events(&namespace, 24);
    let count = |topic: &str| events.iter().filter(|(t, _)| t == topic).count();
    assert_eq!(
        (
            count("/image-volumes/mount"),
            count("/image-volumes/cleanup"),
            count("/image-volumes/release")
        ),
        (8, 8, 8),
        "{events:?}\n{}",
        serve.log()
    );
}

/// A containerd event service that never answers (a socket nobody accepts on) or is not
/// there at all delays and then drops events; every request still succeeds.
#[test]
fn an_event_service_that_is_down_or_stuck_never_holds_up_a_request() {
    let mut env = TestEnv::new_containerd();
    env.import(SAMPLE, &sample_image());
    env.close();
    let stuck = env.dir.join("stuck.sock");
    let _listener = UnixListener::bind(&stuck).unwrap();
    let missing = env.dir.join("missing.sock");
    for (what, address) in [("stuck", &stuck), ("missing", &missing)] {
        let serve = Serve::start(&env, &["--events-address", address.to_str().unwrap()]);
        let client = serve.client();
        for round in 0..3 {
            let sandbox = format!("{what}-{round}");
            let host = mutate_through(&client, &sandbox);
            assert!(imv_testkit::mounts::is_mountpoint(Path::new(&host)));
            client.cleanup(&sandbox, "").unwrap();
            client.release(&sandbox).unwrap();
        }
        // The events thread gives up on each event after its tries, and says so.
        let until = Instant::now() + Duration::from_secs(60);
        while !serve.log().contains("could not publish an event") {
            assert!(
                Instant::now() < until,
                "{what}: no warning:\n{}",
                serve.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn events_need_the_containerd_backend() {
    let env = TestEnv::new_closed();
    let (code, _, err) = common::run_imv(
        &env.root,
        &env.state,
        &[
            "serve",
            "--socket",
            "/nonexistent/imv.sock",
            "--events-address",
            "/x.sock",
        ],
        "",
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("--events-address /x.sock needs --backend containerd"),
        "{err}"
    );
}
