// Failures of containerd's on request, for the tests: documented where mod.rs declares
// the module.

use crate::digest::Digest;

#[cfg(debug_assertions)]
static FAIL_COMMIT: std::sync::Mutex<Vec<Digest>> = std::sync::Mutex::new(Vec::new());

/// Make the next background commit of the top layer `chain` fail: containerd is asked
/// to commit the extraction under its own key, which it refuses (AlreadyExists).
#[cfg(debug_assertions)]
pub fn fail_next_background_commit(chain: &Digest) {
    FAIL_COMMIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(chain.clone());
}

#[cfg(debug_assertions)]
static COPY_BLOBS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Make the backends of `namespace` copy an artifact's blobs through containerd's
/// content service, as when its content store is not visible to this process.
#[cfg(debug_assertions)]
pub fn copy_artifact_blobs_in(namespace: &str) {
    COPY_BLOBS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(namespace.to_owned());
}

/// Whether the backends of `namespace` must not link an artifact's blobs.
pub(super) fn copy_artifact_blobs(namespace: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        let copy = COPY_BLOBS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if copy.iter().any(|n| n == namespace) {
            return true;
        }
    }
    let _ = namespace;
    false
}

/// The name a background commit of the extraction `key` as `name` asks for.
pub(super) fn commit_name(name: &Digest, key: &str) -> String {
    #[cfg(debug_assertions)]
    {
        let mut fail = FAIL_COMMIT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = fail.iter().position(|d| d == name) {
            fail.remove(i);
            return key.to_owned();
        }
    }
    let _ = key;
    name.to_string()
}
