//! Cleanup, release and listing.

use super::*;

#[test]
fn cleanup_unmounts_and_removes_everything_of_the_sandbox_only_and_repeats() {
    let h = harness();
    h.backend.add(&image("one:1", 1));
    h.backend.add(&image("two:1", 3));
    let mut mounts = [image_mount("one:1"), image_mount("two:1")];
    mounts[1].container_path = "/two".to_owned();
    h.mutate("sb1", &mut mounts).unwrap();
    h.mutate("sb2", &mut [image_mount("one:1")]).unwrap();

    h.volumes.cleanup("sb1", "").unwrap();
    let kept = h.target("sb2", &image("one:1", 1));
    assert_eq!(h.mounts.mountpoints(), std::slice::from_ref(&kept));
    assert_eq!(h.backend.views(), [kept.to_string_lossy().into_owned()]);
    assert!(!h.state().join("image-volumes/sb1").exists());
    // The lease stays until release.
    assert_eq!(h.backend.leases(), ["sb1", "sb2"]);
    h.volumes.cleanup("sb1", "").unwrap();
}

#[test]
fn release_drops_the_lease_and_a_second_release_does_nothing() {
    let h = harness();
    h.backend.add(&image("app:1", 2));
    h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap();
    h.volumes.release(SANDBOX).unwrap();
    h.assert_nothing_left(SANDBOX);
    h.volumes.release(SANDBOX).unwrap();
    assert_eq!(h.backend.calls("delete_lease"), 2);
    // Made anew afterwards: the engine forgot the lease it deleted.
    h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap();
    assert_eq!(h.backend.leases(), [SANDBOX]);
}

#[test]
fn a_failed_unmount_keeps_the_volume_and_says_so() {
    let h = harness();
    h.backend.add(&image("app:1", 2));
    h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap();
    h.mounts.fail_next(
        "unmount_recursive",
        Error::unavailable("fake: target is busy"),
    );
    let err = h.volumes.cleanup(SANDBOX, "").unwrap_err();
    assert!(err.to_string().contains("1 volumes failed"), "{err}");
    assert_eq!(h.mounts.mountpoints().len(), 1);
    assert_eq!(
        h.backend.views().len(),
        1,
        "the view of a mounted volume went"
    );
    // Tried again, it converges.
    h.volumes.cleanup(SANDBOX, "").unwrap();
    assert_eq!(h.mounts.mountpoints(), Vec::<PathBuf>::new());
    assert_eq!(h.backend.views(), Vec::<String>::new());
}

#[test]
fn listing_names_each_volume_its_image_and_whether_it_is_mounted() {
    let h = harness();
    let app = image("app:1", 1);
    h.backend.add(&app);
    h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap();
    let listed = h.volumes.volumes().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sandbox_id, SANDBOX);
    assert_eq!(listed[0].image_digest, app.digest);
    assert_eq!(listed[0].image.as_deref(), Some("app:1"));
    assert!(listed[0].mounted);
}
