//! Mutate: what a call makes, reuses and asks for, and what a failure undoes.

use super::*;

#[test]
fn a_mutate_makes_the_lease_the_view_and_the_mount_and_sets_host_path() {
    let h = harness();
    let app = image("example.com/app:1", 3);
    h.backend.add(&app);
    let mut mounts = [
        Mount {
            container_path: "/etc".to_owned(),
            host_path: "/somewhere".to_owned(),
            ..Mount::default()
        },
        image_mount("example.com/app:1"),
    ];
    h.mutate(SANDBOX, &mut mounts).unwrap();

    let target = h.target(SANDBOX, &app);
    assert_eq!(mounts[1].host_path, target.to_string_lossy());
    assert_eq!(
        mounts[0].host_path, "/somewhere",
        "a mount without an image changed"
    );
    assert_eq!(h.backend.leases(), [SANDBOX]);
    let key = target.to_string_lossy().into_owned();
    assert_eq!(h.backend.views(), std::slice::from_ref(&key));
    let labels = h.backend.labels(&key);
    assert_eq!(labels[LABEL_IMAGE], "example.com/app:1");
    assert_eq!(labels[LABEL_SANDBOX], SANDBOX);
    assert_eq!(labels[LABEL_MANIFEST], app.manifest.to_string());
    assert_eq!(h.mounts.mountpoints(), std::slice::from_ref(&target));
    assert_eq!(h.mounts.fs_type_at(&target).as_deref(), Some("overlay"));
    assert_eq!(h.backend.calls("unpack"), 1);
}

#[test]
fn a_second_mutate_reuses_the_volume_with_no_new_view_lease_or_mount() {
    let h = harness();
    let app = image("app:1", 2);
    h.backend.add(&app);
    h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap();
    let mut again = [image_mount("app:1")];
    h.mutate(SANDBOX, &mut again).unwrap();

    assert_eq!(
        again[0].host_path,
        h.target(SANDBOX, &app).to_string_lossy()
    );
    assert_eq!(h.backend.calls("create_lease"), 1);
    assert_eq!(h.backend.calls("view"), 1);
    assert_eq!(h.mounts.calls("mount_all"), 1);
    // Asked once more by name: a tag may have come to mean another image.
    assert_eq!(h.backend.calls("resolve"), 2);
}

#[test]
fn a_reference_by_digest_is_not_resolved_again_while_its_volume_is_mounted() {
    let h = harness();
    let app = image("app:1", 1);
    h.backend.add(&app);
    let pinned = format!("app:1@{}", app.digest);
    h.mutate(SANDBOX, &mut [image_mount(&pinned)]).unwrap();
    let mut again = [image_mount(&pinned)];
    h.mutate(SANDBOX, &mut again).unwrap();
    assert_eq!(h.backend.calls("resolve"), 1);
    assert_eq!(
        again[0].host_path,
        h.target(SANDBOX, &app).to_string_lossy()
    );
}

#[test]
fn two_mounts_of_one_image_in_one_call_share_one_volume() {
    let h = harness();
    h.backend.add(&image("app:1", 2));
    let mut mounts = [image_mount("app:1"), image_mount("app:1")];
    mounts[1].container_path = "/other".to_owned();
    h.mutate(SANDBOX, &mut mounts).unwrap();
    assert_eq!(mounts[0].host_path, mounts[1].host_path);
    assert_eq!(h.mounts.calls("mount_all"), 1);
    assert_eq!(h.backend.calls("view"), 1);
}

#[test]
fn an_unknown_image_fails_the_call_before_anything_is_made() {
    let h = harness();
    h.backend.add(&image("app:1", 1));
    let mut mounts = [image_mount("app:1"), image_mount("missing:1")];
    let err = h.mutate(SANDBOX, &mut mounts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("mount 1"), "{err}");
    assert!(mounts.iter().all(|m| m.host_path.is_empty()));
    assert_eq!(h.backend.calls("view"), 0);
    // The lease started alongside the resolution was this call's: it is gone again.
    assert_eq!(h.backend.calls("create_lease"), 1);
    h.assert_nothing_left(SANDBOX);
}

#[test]
fn a_failing_mount_undoes_this_calls_volumes_and_keeps_earlier_ones() {
    let h = harness();
    let (one, two, three) = (image("one:1", 1), image("two:1", 2), image("three:1", 2));
    for i in [&one, &two, &three] {
        h.backend.add(i);
    }
    h.mutate(SANDBOX, &mut [image_mount("one:1")]).unwrap();

    // The call's second volume fails to mount; its first was mounted and made a view.
    let mut mounts = [image_mount("two:1"), image_mount("three:1")];
    mounts[1].container_path = "/three".to_owned();
    let (a, b) = (h.target(SANDBOX, &two), h.target(SANDBOX, &three));
    h.mounts.fail_next_after(
        "mount_all",
        1,
        Error::invalid("fake: this overlay does not mount"),
    );
    let err = h.mutate(SANDBOX, &mut mounts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    let earlier = h.target(SANDBOX, &one);
    assert_eq!(h.mounts.mountpoints(), std::slice::from_ref(&earlier));
    assert_eq!(h.backend.views(), [earlier.to_string_lossy().into_owned()]);
    assert_eq!(
        h.backend.leases(),
        [SANDBOX],
        "the earlier call's lease went"
    );
    assert!(
        !a.exists() && !b.exists(),
        "a directory of the failed call is left"
    );
    assert!(mounts.iter().all(|m| m.host_path.is_empty()));
}

#[test]
fn a_failed_first_call_removes_the_lease_it_made() {
    let h = harness();
    h.backend.add(&image("app:1", 2));
    h.backend
        .fail_next("view", Error::unavailable("fake: the snapshotter is busy"));
    let err = h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(h.backend.calls("delete_lease"), 1);
    h.assert_nothing_left(SANDBOX);
    // And the next call makes it all anew.
    h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap();
    assert_eq!(h.backend.leases(), [SANDBOX]);
}

#[test]
fn a_failing_lease_creation_fails_the_call_clean() {
    let h = harness();
    h.backend.add(&image("app:1", 1));
    h.backend.fail_next(
        "create_lease",
        Error::unavailable("fake: metadata is locked"),
    );
    let err = h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("creating lease"), "{err}");
    h.assert_nothing_left(SANDBOX);
}

#[test]
fn a_lease_deleted_behind_the_engines_back_is_made_again() {
    let h = harness();
    let (one, two) = (image("one:1", 1), image("two:1", 1));
    h.backend.add(&one);
    h.backend.add(&two);
    h.mutate(SANDBOX, &mut [image_mount("one:1")]).unwrap();
    h.backend.drop_lease(SANDBOX);

    // The engine believes in the lease; the unpack and the view find it gone, and the
    // engine makes sure of it for real and tries once more.
    h.mutate(SANDBOX, &mut [image_mount("two:1")]).unwrap();
    assert_eq!(h.backend.leases(), [SANDBOX]);
    assert_eq!(h.backend.calls("create_lease"), 2);
    assert!(h
        .backend
        .views()
        .contains(&h.target(SANDBOX, &two).to_string_lossy().into_owned()));
}

#[test]
fn a_second_sandbox_of_an_overlay_image_clones_the_first_ones_mount() {
    let h = harness();
    h.backend.add(&image("app:1", 2));
    h.mutate("sb1", &mut [image_mount("app:1")]).unwrap();
    h.mutate("sb2", &mut [image_mount("app:1")]).unwrap();
    assert_eq!(h.mounts.calls("mount_all"), 1);
    assert_eq!(h.mounts.calls("mount_twin"), 1);
    assert_eq!(h.mounts.mountpoints().len(), 2);
    // Once the twin is gone, the next volume is mounted from the specs again.
    h.volumes.cleanup("sb1", "").unwrap();
    h.mutate("sb3", &mut [image_mount("app:1")]).unwrap();
    assert_eq!(h.mounts.mountpoints().len(), 2);
}

#[test]
fn the_quick_way_mounts_first_and_makes_the_view_right_after() {
    let h = harness();
    let app = image("app:1", 2);
    h.backend.add(&app);
    h.mutate("sb1", &mut [image_mount("app:1")]).unwrap();
    h.backend.predict_views();
    h.mutate("sb2", &mut [image_mount("app:1")]).unwrap();
    h.volumes.wait_deferred(Some("sb2"));
    let key = h.target("sb2", &app).to_string_lossy().into_owned();
    assert!(h.backend.views().contains(&key));
    assert_eq!(h.backend.labels(&key)[LABEL_SANDBOX], "sb2");
    assert_eq!(h.backend.leases(), ["sb1", "sb2"]);
}

#[test]
fn mutate_says_what_it_did_for_each_image_mount_in_order() {
    let h = harness();
    let (one, two) = (image("one:1", 1), image("two:1", 2));
    h.backend.add(&one);
    h.backend.add(&two);
    let mut mounts = [
        idmapped_mount("one:1"),
        Mount {
            container_path: "/etc".to_owned(),
            ..Mount::default()
        },
        image_mount("two:1"),
    ];
    mounts[2].container_path = "/two".to_owned();
    let outcomes = h
        .volumes
        .mutate_mounts_with(SANDBOX, "", None, &Default::default(), &mut mounts)
        .unwrap();
    let want = [
        (0, h.target(SANDBOX, &one), true),
        (2, h.target(SANDBOX, &two), false),
    ];
    let got: Vec<_> = outcomes
        .iter()
        .map(|o| (o.index, o.host_path.clone(), o.mappings_applied))
        .collect();
    assert_eq!(got, want);
    assert!(
        mounts[0].uid_mappings.is_empty(),
        "applied mappings stayed on the mount"
    );
    for o in &outcomes {
        assert_eq!(mounts[o.index].host_path, o.host_path.to_string_lossy());
    }
}

/// KEP-5365: every image mount comes back with the ID of the image it shows, whatever the
/// caller put there: an image's config digest, an artifact's target digest (artifacts
/// share one empty config); for a reference by digest, the same ID when the volume is
/// remembered rather than resolved.
#[test]
fn mutate_sets_the_image_id_on_every_image_mount() {
    let h = harness();
    let plain = image("plain:1", 1);
    let mut artifact = image("model:1", 1);
    artifact.artifact_type = Some("application/vnd.cncf.model.manifest.v1+json".to_owned());
    h.backend.add(&plain);
    h.backend.add(&artifact);
    let mut mounts = [image_mount("plain:1"), image_mount("model:1")];
    mounts[1].container_path = "/model".to_owned();
    mounts[0].image.as_mut().unwrap().image_ref = "caller-said".to_owned();
    let outcomes = h
        .volumes
        .mutate_mounts_with(SANDBOX, "", None, &Default::default(), &mut mounts)
        .unwrap();
    let got: Vec<_> = outcomes.iter().map(|o| o.image_ref.clone()).collect();
    assert_eq!(got, [plain.config.to_string(), artifact.digest.to_string()]);
    for o in &outcomes {
        assert_eq!(
            mounts[o.index].image.as_ref().unwrap().image_ref,
            o.image_ref
        );
    }

    // By digest, twice: resolved, then remembered (no resolve); the same answer.
    let pinned = format!("plain:1@{}", plain.digest);
    for round in 0..2 {
        let resolves = h.backend.calls("resolve");
        let mut again = [image_mount(&pinned)];
        let outcomes = h
            .volumes
            .mutate_mounts_with(SANDBOX, "", None, &Default::default(), &mut again)
            .unwrap();
        assert_eq!(
            outcomes[0].image_ref,
            plain.config.to_string(),
            "round {round}"
        );
        assert_eq!(
            again[0].image.as_ref().unwrap().image_ref,
            outcomes[0].image_ref
        );
        assert_eq!(
            h.backend.calls("resolve") - resolves,
            1 - round,
            "round {round}"
        );
    }
}
