//! The sandbox's lease: one per sandbox, holding everything its volumes need (views and,
//! while they are unpacked, layers), as containerd's CRI plugin keeps one. Created once,
//! then known to this process, so a sandbox's second volume needs no call to make it.

use std::collections::HashSet;
use std::sync::Mutex;

use super::call::Call;
use super::ImageVolumes;
use crate::crash_points;
use crate::error::Result;
use crate::locks::lock;

/// What waits for a lease's creation (see `Backend::start_create_lease`).
pub(super) type PendingLease = Box<dyn FnOnce() -> Result<()> + Send>;

/// The sandboxes this process knows a lease of: it made or found them. The set's mutex is
/// held only inside these methods.
#[derive(Default)]
pub(super) struct KnownLeases(Mutex<HashSet<String>>);

impl KnownLeases {
    pub fn contains(&self, sandbox_id: &str) -> bool {
        lock(&self.0).contains(sandbox_id)
    }

    /// Forget the sandbox's lease (it was deleted, or may have been).
    pub fn forget(&self, sandbox_id: &str) {
        lock(&self.0).remove(sandbox_id);
    }

    /// Note the outcome of creating `sandbox_id`'s lease: whether this creation made it
    /// (AlreadyExists is a lease made before, and known from now on), or the failure.
    pub fn record(&self, sandbox_id: &str, created: Result<()>) -> Result<bool> {
        let made = match created {
            Ok(()) => true,
            Err(e) if e.is_already_exists() => false,
            Err(e) => return Err(e),
        };
        lock(&self.0).insert(sandbox_id.to_owned());
        Ok(made)
    }
}

impl ImageVolumes {
    /// Make sure the sandbox's lease exists: created once, then known (until this process
    /// deletes it, or a view finds it gone). The caller holds the sandbox's lock.
    pub(super) fn ensure_lease(&self, sandbox_id: &str, call: &mut Call) -> Result<()> {
        // The creation this call started, if any: its outcome first.
        if let Some(pending) = call.pending_lease.take() {
            match self.lease_outcome(sandbox_id, call, pending()) {
                Ok(()) => return Ok(()),
                // Deleted meanwhile (a failing call of this sandbox): make it anew below.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        // The set's lock is not held across the call: other sandboxes go on meanwhile.
        if self.leases.contains(sandbox_id) {
            return Ok(());
        }
        let created = self.backend.create_lease(sandbox_id);
        self.lease_outcome(sandbox_id, call, created)
    }

    /// Record the outcome of creating the sandbox's lease.
    fn lease_outcome(&self, sandbox_id: &str, call: &mut Call, created: Result<()>) -> Result<()> {
        let created = self
            .leases
            .record(sandbox_id, created)
            .map_err(|e| e.context(format!("creating lease for sandbox {sandbox_id:?}")))?;
        if created {
            crash_points::reached(crash_points::LEASE_CREATED);
        }
        call.lease_created |= created;
        Ok(())
    }

    /// Wait for a lease creation this call started and never needed; a failure to create
    /// it is only logged (nothing of this call depended on it).
    pub(super) fn settle_lease(&self, sandbox_id: &str, call: &mut Call) {
        if let Some(pending) = call.pending_lease.take() {
            if let Err(e) = self.lease_outcome(sandbox_id, call, pending()) {
                tracing::debug!(sandbox = sandbox_id, error = %e, "the lease started alongside was not made");
            }
        }
    }
}
