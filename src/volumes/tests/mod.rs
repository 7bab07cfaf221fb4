//! The engine's decisions, without root: a fake backend and a fake mount table
//! (fake_backend.rs, fake_mounts.rs) stand in for the store and the kernel, so leases,
//! planning, undo, retries and ownership are checked in milliseconds as any user. What
//! the kernel and the real stores do is checked by the suites in cli/tests/, as root.

mod cleanup;
mod fake_backend;
mod fake_mounts;
mod mutate;
mod ownership;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fake_backend::{image, FakeBackend};
use fake_mounts::FakeMounts;

use super::{ImageVolumes, LABEL_IMAGE, LABEL_MANIFEST, LABEL_SANDBOX};
use crate::backend::{Backend, NoProgress, ResolvedImage};
use crate::cri::{IdMapping, ImageSpec, Mount};
use crate::error::{Error, ErrorKind};
use crate::mount::MountSpec;

const SANDBOX: &str = "sb1";

struct Harness {
    dir: tempfile::TempDir,
    backend: Arc<FakeBackend>,
    mounts: Arc<FakeMounts>,
    volumes: ImageVolumes,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(FakeBackend::new(dir.path().join("layers")));
    let mounts = Arc::new(FakeMounts::default());
    let volumes = open(dir.path(), &backend, &mounts);
    Harness {
        dir,
        backend,
        mounts,
        volumes,
    }
}

fn open(dir: &Path, backend: &Arc<FakeBackend>, mounts: &Arc<FakeMounts>) -> ImageVolumes {
    ImageVolumes::with_mount_table(
        dir.join("state"),
        Arc::clone(backend) as _,
        Arc::new(NoProgress),
        Arc::clone(mounts) as _,
    )
    .unwrap()
}

impl Harness {
    /// A new engine on the same store and mount table: a restarted process.
    fn restart(&mut self) {
        self.volumes = open(self.dir.path(), &self.backend, &self.mounts);
    }

    fn state(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path().join("state")).unwrap()
    }

    fn target(&self, sandbox: &str, image: &ResolvedImage) -> PathBuf {
        self.state()
            .join("image-volumes")
            .join(sandbox)
            .join(image.digest.hex())
    }

    fn mutate(&self, sandbox: &str, mounts: &mut [Mount]) -> crate::Result<()> {
        self.volumes.mutate_mounts(sandbox, "", None, mounts)
    }

    /// What a call left behind for `sandbox`: leases, views, mountpoints, directories.
    fn assert_nothing_left(&self, sandbox: &str) {
        assert!(!self.backend.leases().contains(&sandbox.to_owned()));
        assert_eq!(self.backend.views(), Vec::<String>::new());
        assert_eq!(self.mounts.mountpoints(), Vec::<PathBuf>::new());
        let dir = self.state().join("image-volumes").join(sandbox);
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}

fn image_mount(reference: &str) -> Mount {
    Mount {
        container_path: "/data".to_owned(),
        readonly: true,
        image: Some(ImageSpec {
            image: reference.to_owned(),
            ..ImageSpec::default()
        }),
        ..Mount::default()
    }
}

fn idmapped_mount(reference: &str) -> Mount {
    let range = vec![IdMapping {
        container_id: 0,
        host_id: 100_000,
        length: 65_536,
    }];
    Mount {
        uid_mappings: range.clone(),
        gid_mappings: range,
        ..image_mount(reference)
    }
}
