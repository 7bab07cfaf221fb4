//! What a view of a parent will mount, known without making one (the engine then mounts
//! first and makes the view right after: see volumes/deferred_view.rs).
//!
//! Two ways to know:
//! - **seen**: two views of one parent mounted alike, so a view's mounts do not depend on
//!   its key (overlayfs: the parent's directories; a snapshotter that copies differs);
//! - **predicted**: the layer just unpacked was extracted into an active snapshot whose
//!   mounts name its directories, and committing keeps them (overlayfs keeps a snapshot's
//!   directory from prepare to commit). A view of the new top then mounts the same
//!   directories read-only: a bind of the one layer made `ro`, or the overlay's lower
//!   directories with the extraction's upper one on top and no upper or work directory.
//!
//! A prediction is a model of the snapshotter, so it is trusted only once it has come true:
//! per snapshotter and kind of extraction mount (bind or overlay), the first
//! [`PROOF`] predictions are checked against real views before anything is mounted from
//! one; a single miss (or a predicted mount that fails) stops predictions for that
//! snapshotter and kind for the life of the process. This is what lets a cold volume skip
//! the view's round trip and metadata commits before its mount, as a warm one does.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::digest::Digest;
use crate::locks::lock;
use crate::mount::MountSpec;

/// Predictions that must come true, per snapshotter and kind, before one is mounted from.
const PROOF: u32 = 2;

/// What the views of one parent mounted, as far as this process has seen or predicted.
#[derive(Clone, Debug, PartialEq)]
enum ViewMounts {
    /// One view, mounting this.
    Seen(Vec<MountSpec>),
    /// Two or more views (or a prediction and a view), all mounting this.
    Alike(Vec<MountSpec>),
    /// No view yet: predicted from the extraction of the top layer, by `rule`.
    Predicted {
        mounts: Vec<MountSpec>,
        rule: &'static str,
    },
    /// Views that mounted differently (a snapshotter that copies, say): ask every time.
    Differ,
}

/// How far a prediction rule has proved itself for one snapshotter.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    /// Came true this many times, never missed.
    Held(u32),
    /// Missed once: not used again.
    Broken,
}

#[derive(Default)]
struct Memo {
    /// By (snapshotter, parent).
    parents: HashMap<(String, Digest), ViewMounts>,
    /// By (snapshotter, rule).
    rules: HashMap<(String, &'static str), Rule>,
}

/// The memo of one backend: see the module's documentation.
#[derive(Default)]
pub(super) struct ViewMountsMemo(Mutex<Memo>);

impl ViewMountsMemo {
    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        lock(&self.0)
    }

    /// What a new view of `parent` will mount, if this process knows.
    pub(super) fn known(&self, snapshotter: &str, parent: &Digest) -> Option<Vec<MountSpec>> {
        let memo = self.memo();
        match memo
            .parents
            .get(&(snapshotter.to_owned(), parent.clone()))?
        {
            ViewMounts::Alike(mounts) => Some(mounts.clone()),
            ViewMounts::Predicted { mounts, rule } => {
                match memo.rules.get(&(snapshotter.to_owned(), *rule)) {
                    Some(Rule::Held(n)) if *n >= PROOF => Some(mounts.clone()),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Note what a view of `parent` mounted: it makes the parent's mounts known once two
    /// agree, and proves or breaks a prediction.
    pub(super) fn saw(&self, snapshotter: &str, parent: &Digest, mounts: &[MountSpec]) {
        let mut memo = self.memo();
        let key = (snapshotter.to_owned(), parent.clone());
        let next = match memo.parents.get(&key) {
            None => ViewMounts::Seen(mounts.to_vec()),
            Some(ViewMounts::Seen(m) | ViewMounts::Alike(m)) if m == mounts => {
                ViewMounts::Alike(m.clone())
            }
            Some(ViewMounts::Predicted { mounts: m, rule }) => {
                let rule = (snapshotter.to_owned(), *rule);
                if m == mounts {
                    let held = memo.rules.entry(rule).or_insert(Rule::Held(0));
                    if let Rule::Held(n) = held {
                        *n += 1;
                    }
                    ViewMounts::Alike(mounts.to_vec())
                } else {
                    tracing::info!(snapshotter, rule = rule.1, predicted = ?m, viewed = ?mounts, "a view mounted otherwise than its extraction predicted: views in this snapshotter are made before their mounts from now on");
                    memo.rules.insert(rule, Rule::Broken);
                    ViewMounts::Seen(mounts.to_vec())
                }
            }
            Some(_) => ViewMounts::Differ,
        };
        memo.parents.insert(key, next);
    }

    /// The top layer `top` was just extracted into a snapshot that mounted as `extraction`,
    /// and committed: predict its views (unless some view was seen already).
    pub(super) fn extracted(&self, snapshotter: &str, top: &Digest, extraction: &[MountSpec]) {
        let Some((rule, mounts)) = view_of_extraction(extraction) else {
            return;
        };
        let mut memo = self.memo();
        memo.parents
            .entry((snapshotter.to_owned(), top.clone()))
            .or_insert(ViewMounts::Predicted { mounts, rule });
    }

    /// Mounting what [`known`](Self::known) said failed: forget it, and a prediction's rule
    /// is broken.
    pub(super) fn failed(&self, snapshotter: &str, parent: &Digest) {
        let mut memo = self.memo();
        let removed = memo
            .parents
            .remove(&(snapshotter.to_owned(), parent.clone()));
        if let Some(ViewMounts::Predicted { rule, .. }) = removed {
            memo.rules
                .insert((snapshotter.to_owned(), rule), Rule::Broken);
        }
    }

    /// The parent's layers are gone, or unpacked anew into new directories: whatever was
    /// known of its views is stale.
    pub(super) fn forget(&self, snapshotter: &str, parent: &Digest) {
        self.memo()
            .parents
            .remove(&(snapshotter.to_owned(), parent.clone()));
    }
}

/// What a view of a freshly committed snapshot mounts, from the mounts of the active
/// snapshot it was extracted into (containerd's overlayfs snapshotter, which keeps the
/// directory at commit), with the rule used; None for anything else.
fn view_of_extraction(extraction: &[MountSpec]) -> Option<(&'static str, Vec<MountSpec>)> {
    let [m] = extraction else {
        return None;
    };
    match m.kind.as_str() {
        // The first layer: its directory bound read-write; a view binds it read-only.
        "bind" => {
            let mut options = m.options.clone();
            let rw = single(&options, |o| o == "rw")?;
            options[rw] = "ro".to_owned();
            Some((
                "bind",
                vec![MountSpec {
                    kind: m.kind.clone(),
                    source: m.source.clone(),
                    options,
                }],
            ))
        }
        // A layer on a parent: the upper directory becomes the top lower one.
        "overlay" => {
            let options = &m.options;
            let upper = &options[single(options, |o| o.starts_with("upperdir="))?];
            single(options, |o| o.starts_with("workdir="))?;
            single(options, |o| o.starts_with("lowerdir="))?;
            let upper = upper.strip_prefix("upperdir=")?;
            let options = options
                .iter()
                .filter(|o| !o.starts_with("upperdir=") && !o.starts_with("workdir="))
                .map(|o| match o.strip_prefix("lowerdir=") {
                    Some(lower) => format!("lowerdir={upper}:{lower}"),
                    None => o.clone(),
                })
                .collect();
            Some((
                "overlay",
                vec![MountSpec {
                    kind: m.kind.clone(),
                    source: m.source.clone(),
                    options,
                }],
            ))
        }
        _ => None,
    }
}

/// The index of the one option `is` matches; None for none or several.
fn single(options: &[String], is: impl Fn(&str) -> bool) -> Option<usize> {
    let mut found = options.iter().enumerate().filter(|(_, o)| is(o));
    let (i, _) = found.next()?;
    found.next().is_none().then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, source: &str, options: &[&str]) -> MountSpec {
        MountSpec {
            kind: kind.to_owned(),
            source: source.to_owned(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    #[test]
    fn a_first_layer_is_viewed_as_its_directory_read_only() {
        let extraction = [spec("bind", "/s/snapshots/7/fs", &["rw", "rbind"])];
        let (rule, view) = view_of_extraction(&extraction).unwrap();
        assert_eq!(rule, "bind");
        assert_eq!(view, [spec("bind", "/s/snapshots/7/fs", &["ro", "rbind"])]);
    }

    #[test]
    fn a_layer_on_a_parent_is_viewed_as_all_lower_directories() {
        let extraction = [spec(
            "overlay",
            "overlay",
            &[
                "index=off",
                "workdir=/s/snapshots/9/work",
                "upperdir=/s/snapshots/9/fs",
                "lowerdir=/s/snapshots/8/fs:/s/snapshots/7/fs",
                "userxattr",
            ],
        )];
        let (rule, view) = view_of_extraction(&extraction).unwrap();
        assert_eq!(rule, "overlay");
        assert_eq!(
            view,
            [spec(
                "overlay",
                "overlay",
                &[
                    "index=off",
                    "lowerdir=/s/snapshots/9/fs:/s/snapshots/8/fs:/s/snapshots/7/fs",
                    "userxattr"
                ]
            )]
        );
    }

    #[test]
    fn other_extractions_predict_nothing() {
        for extraction in [
            vec![],
            vec![spec("bind", "/a", &["ro", "rbind"])],
            vec![spec("bind", "/a", &["rw", "rbind", "rw"])],
            vec![spec("overlay", "overlay", &["lowerdir=/a", "upperdir=/b"])],
            vec![spec(
                "overlay",
                "overlay",
                &["lowerdir=/a", "upperdir=/b", "upperdir=/c", "workdir=/w"],
            )],
            vec![spec("btrfs", "/dev/x", &["subvolid=5"])],
            vec![
                spec("bind", "/a", &["rw", "rbind"]),
                spec("bind", "/b", &["rw", "rbind"]),
            ],
        ] {
            assert!(view_of_extraction(&extraction).is_none(), "{extraction:?}");
        }
    }

    #[test]
    fn predictions_are_used_once_two_came_true_and_never_after_a_miss() {
        let memo = ViewMountsMemo::default();
        let extraction = |n: u32| [spec("bind", &format!("/s/{n}/fs"), &["rw", "rbind"])];
        let view = |n: u32| [spec("bind", &format!("/s/{n}/fs"), &["ro", "rbind"])];
        let top = |n: u32| Digest::of(n.to_string().as_bytes());
        for n in 0..PROOF {
            memo.extracted("overlayfs", &top(n), &extraction(n));
            assert_eq!(memo.known("overlayfs", &top(n)), None, "not yet proven");
            memo.saw("overlayfs", &top(n), &view(n));
            // The prediction and the view agree: the parent's views are known.
            assert_eq!(memo.known("overlayfs", &top(n)).unwrap(), view(n));
        }
        memo.extracted("overlayfs", &top(10), &extraction(10));
        assert_eq!(memo.known("overlayfs", &top(10)).unwrap(), view(10));
        // Per snapshotter and rule.
        memo.extracted("other", &top(11), &extraction(11));
        assert_eq!(memo.known("other", &top(11)), None);
        // A miss breaks the rule.
        memo.extracted("overlayfs", &top(12), &extraction(12));
        memo.saw("overlayfs", &top(12), &view(99));
        memo.extracted("overlayfs", &top(13), &extraction(13));
        assert_eq!(memo.known("overlayfs", &top(13)), None);
    }

    #[test]
    fn a_failed_predicted_mount_breaks_the_rule() {
        let memo = ViewMountsMemo::default();
        let top = |n: u32| Digest::of(n.to_string().as_bytes());
        for n in 0..=PROOF {
            memo.extracted("sn", &top(n), &[spec("bind", "/a", &["rw"])]);
            memo.saw("sn", &top(n), &[spec("bind", "/a", &["ro"])]);
        }
        memo.forget("sn", &top(0));
        memo.extracted("sn", &top(0), &[spec("bind", "/a", &["rw"])]);
        assert!(memo.known("sn", &top(0)).is_some());
        memo.failed("sn", &top(0));
        memo.extracted("sn", &top(0), &[spec("bind", "/a", &["rw"])]);
        assert_eq!(memo.known("sn", &top(0)), None);
        // What was seen of other parents stays.
        assert!(memo.known("sn", &top(1)).is_some());
    }
}
