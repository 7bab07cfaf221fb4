//! A mutate or a release killed at every step between its effects (the crash points of
//! src/crash_points.rs), on the embedded store and on containerd, plain and idmapped: the
//! next mutate converges to the volume a clean run mounts, and the next release to nothing
//! left. A kubelet retries CreateContainer after a crash; that retry must not be stuck.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::TestEnv;

type Trees = std::collections::BTreeMap<
    std::ffi::OsString,
    std::collections::BTreeMap<PathBuf, common::Node>,
>;
use imv_testkit::image_builder::sample_image;

const SAMPLE: &str = "example.com/imv/sample:1";
/// The sample's layers under another config: a second volume of the same layers, which a
/// process that has mounted the first can mount the quick way (volumes/deferred_view.rs).
const TWIN: &str = "example.com/imv/twin:1";
const SANDBOX: &str = "sb";

/// How a scenario's commands reach the store.
#[derive(Clone, Copy, Debug)]
enum Store {
    Embedded,
    Containerd,
}

/// One scenario: the store, and whether the volume is idmapped (hostUsers: false).
#[derive(Clone, Copy, Debug)]
struct Scenario {
    store: Store,
    idmapped: bool,
}

/// What one `imv` run did.
#[derive(Debug, PartialEq)]
enum Outcome {
    Succeeded,
    Killed,
}

/// A store with the sample image, closed so the `imv` command owns it.
struct Round {
    env: TestEnv,
    scenario: Scenario,
}

impl Round {
    fn new(scenario: Scenario) -> Round {
        let mut env = match scenario.store {
            Store::Embedded => TestEnv::new_local(),
            Store::Containerd => TestEnv::new_containerd(),
        };
        env.import(SAMPLE, &sample_image());
        env.import(TWIN, &sample_image().label("twin", "yes"));
        env.close();
        Round { env, scenario }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imv"));
        cmd.arg("--root")
            .arg(&self.env.root)
            .arg("--state")
            .arg(&self.env.state);
        if let Store::Containerd = self.scenario.store {
            let (daemon, namespace) = self.env.daemon();
            cmd.args(["--backend", "containerd", "--address"])
                .arg(&daemon.address)
                .args(["--namespace", namespace]);
        }
        cmd.args(args)
            .env_remove("IMV_SOCKET")
            .env_remove("IMV_CRASH_AT")
            .env_remove("IMV_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Run `imv ARGS` (a mutate reads its mounts from stdin), killed at `crash_at` if it
    /// gets there; any other end than success or that kill fails the test.
    fn run(&self, args: &[&str], crash_at: Option<&str>, why: &str) -> (Outcome, String) {
        use std::io::Write;
        use std::os::unix::process::ExitStatusExt;
        let mut cmd = self.command(args);
        if let Some(point) = crash_at {
            cmd.env("IMV_CRASH_AT", point);
        }
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(self.mounts_json().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let outcome = match (out.status.code(), out.status.signal()) {
            (Some(0), _) => Outcome::Succeeded,
            (None, Some(9)) if crash_at.is_some() => Outcome::Killed,
            _ => panic!(
                "{why}: imv {args:?} ended {:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        };
        (outcome, stdout)
    }

    fn mounts_json(&self) -> String {
        let mounts: Vec<serde_json::Value> = [(SAMPLE, "/data"), (TWIN, "/twin")]
            .into_iter()
            .map(|(image, path)| {
                let mut mount = serde_json::json!({
                    "container_path": path,
                    "readonly": true,
                    "image": {"image": image},
                });
                if self.scenario.idmapped {
                    let map = serde_json::json!([{"container_id": 0, "host_id": 100000, "length": 65536}]);
                    mount["uidMappings"] = map.clone();
                    mount["gidMappings"] = map;
                }
                mount
            })
            .collect();
        serde_json::Value::from(mounts).to_string()
    }

    fn mutate(&self, crash_at: Option<&str>, why: &str) -> Outcome {
        let args = ["mutate", "--sandbox", SANDBOX, "--mounts", "-", "--json"];
        self.run(&args, crash_at, why).0
    }

    fn release(&self, crash_at: Option<&str>, why: &str) -> Outcome {
        self.run(&["release", "--sandbox", SANDBOX], crash_at, why)
            .0
    }

    fn sandbox_dir(&self) -> PathBuf {
        self.env.state.join("image-volumes").join(SANDBOX)
    }

    /// The volumes' trees by directory name, checking each is the one mount at its target
    /// and that `imv volumes` lists both as mounted.
    fn volume_trees(&self, why: &str) -> Trees {
        let mut trees = Trees::new();
        for entry in std::fs::read_dir(self.sandbox_dir()).unwrap() {
            let target = entry.unwrap().path();
            assert_eq!(
                self.env.mounts_under(&target),
                std::slice::from_ref(&target),
                "{why}: mounts at the volume"
            );
            trees.insert(target.file_name().unwrap().into(), common::tree(&target));
        }
        assert_eq!(trees.len(), 2, "{why}: volumes {:?}", trees.keys());
        let (_, listed) = self.run(&["volumes", "--sandbox", SANDBOX, "--json"], None, why);
        let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
        let listed = listed.as_array().unwrap();
        assert_eq!(listed.len(), 2, "{why}: imv volumes says {listed:?}");
        for volume in listed {
            assert_eq!(
                volume["mounted"], true,
                "{why}: imv volumes says {listed:?}"
            );
        }
        trees
    }

    /// Nothing of the sandbox is left: directory, mount, view or lease.
    fn assert_nothing_left(mut self) {
        assert!(
            !self.sandbox_dir().exists(),
            "{} is left",
            self.sandbox_dir().display()
        );
        assert_eq!(
            self.env.mounts_under(&self.env.state),
            Vec::<PathBuf>::new()
        );
        self.env.reopen();
        common::assert_nothing_left(&self.env, SANDBOX);
    }
}

/// Kill a mutate, then a release, at every crash point, in `scenario`; return the points
/// each reached (killed there).
fn crash_everywhere(scenario: Scenario) -> Vec<&'static str> {
    let clean = Round::new(scenario);
    assert_eq!(clean.mutate(None, "clean run"), Outcome::Succeeded);
    let want = clean.volume_trees("clean run");
    assert_eq!(clean.release(None, "clean run"), Outcome::Succeeded);
    clean.assert_nothing_left();

    let mut reached = Vec::new();
    for &point in imv::CRASH_POINTS {
        let why = format!("{scenario:?}, killed at {point}");
        let round = Round::new(scenario);
        if round.mutate(Some(point), &why) == Outcome::Killed {
            reached.push(point);
            // The kubelet's retry finishes the volumes.
            assert_eq!(round.mutate(None, &why), Outcome::Succeeded, "{why}");
            assert_eq!(round.volume_trees(&why), want, "{why}");
            assert_eq!(round.release(None, &why), Outcome::Succeeded, "{why}");
            round.assert_nothing_left();
            // Or the pod is deleted instead: the release takes what the mutate made.
            let why = format!("{why}, then released");
            let round = Round::new(scenario);
            assert_eq!(round.mutate(Some(point), &why), Outcome::Killed, "{why}");
            assert_eq!(round.release(None, &why), Outcome::Succeeded, "{why}");
            round.assert_nothing_left();
            continue;
        }
        assert_eq!(round.volume_trees(&why), want, "{why}");
        if round.release(Some(point), &why) == Outcome::Killed {
            reached.push(point);
            // The next mutate finds the volumes whole or makes them again...
            assert_eq!(round.mutate(None, &why), Outcome::Succeeded, "{why}");
            assert_eq!(round.volume_trees(&why), want, "{why}");
            // ... and the next release, killed there again and then run to its end,
            // leaves nothing.
            assert_eq!(round.release(Some(point), &why), Outcome::Killed, "{why}");
            assert_eq!(round.release(None, &why), Outcome::Succeeded, "{why}");
        }
        round.assert_nothing_left();
    }
    reached
}

const MUTATE_CAREFUL: &[&str] = &[
    "lease-created",
    "layer-committed",
    "volume-dir-created",
    "view-created",
];
const RELEASE: &[&str] = &["unmounted", "volumes-removed", "cleaned-up"];

fn points(lists: &[&[&'static str]]) -> Vec<&'static str> {
    lists.concat()
}

#[test]
fn embedded_store_plain() {
    let scenario = Scenario {
        store: Store::Embedded,
        idmapped: false,
    };
    assert_eq!(
        crash_everywhere(scenario),
        points(&[MUTATE_CAREFUL, &["mounted"], RELEASE])
    );
}

#[test]
fn embedded_store_idmapped() {
    let scenario = Scenario {
        store: Store::Embedded,
        idmapped: true,
    };
    assert_eq!(
        crash_everywhere(scenario),
        points(&[MUTATE_CAREFUL, &["idmap-layer-staged", "mounted"], RELEASE])
    );
}

/// (No idmapped scenario on containerd: the tests' containerd, Debian's 1.6, declares no
/// `remap-ids`, so imv refuses idmapped volumes there before any effect.)
#[test]
fn containerd_plain() {
    let scenario = Scenario {
        store: Store::Containerd,
        idmapped: false,
    };
    assert_eq!(
        crash_everywhere(scenario),
        // The first volume the careful way, the second (the twin) the quick way.
        points(&[MUTATE_CAREFUL, &["mounted-before-view", "mounted"], RELEASE])
    );
}

/// Every crash point is reached by some scenario above (a point no test reaches is a point
/// no test kills at).
#[test]
fn every_crash_point_is_reached_by_a_scenario() {
    let covered = points(&[
        MUTATE_CAREFUL,
        &["idmap-layer-staged", "mounted", "mounted-before-view"],
        RELEASE,
    ]);
    for point in imv::CRASH_POINTS {
        assert!(covered.contains(point), "{point} is in no scenario");
    }
}
