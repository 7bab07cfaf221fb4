//! Mounts found at a volume's path: taken over, adopted by their layers, or refused.

use super::*;

#[test]
fn a_foreign_mount_at_a_volume_path_is_refused_and_leaves_no_view() {
    let h = harness();
    let app = image("app:1", 2);
    h.backend.add(&app);
    let target = h.target(SANDBOX, &app);
    std::fs::create_dir_all(&target).unwrap();
    let tmpfs = MountSpec {
        kind: "tmpfs".to_owned(),
        source: "tmpfs".to_owned(),
        options: vec!["size=1m".to_owned()],
    };
    h.mounts.plant(&target, &tmpfs);

    let err = h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.to_string()
            .contains("tmpfs from \"tmpfs\" is mounted there"),
        "{err}"
    );
    assert_eq!(h.backend.views(), Vec::<String>::new());
    assert_eq!(
        h.mounts.mountpoints(),
        [target],
        "the foreign mount was touched"
    );
}

#[test]
fn a_restarted_engine_takes_over_what_the_view_mounts() {
    let mut h = harness();
    let app = image("app:1", 3);
    h.backend.add(&app);
    h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap();
    h.restart();
    let mut again = [image_mount("app:1")];
    h.mutate(SANDBOX, &mut again).unwrap();
    assert_eq!(
        again[0].host_path,
        h.target(SANDBOX, &app).to_string_lossy()
    );
    assert_eq!(
        h.mounts.calls("mount_all"),
        1,
        "mounted again instead of taken over"
    );
    assert_eq!(h.backend.calls("view"), 1);
}

#[test]
fn a_volume_mounted_without_its_view_is_adopted_by_its_layers() {
    for layers in [1, 3] {
        let mut h = harness();
        let app = image("app:1", layers);
        h.backend.add(&app);
        h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap();
        // A crash between the mount and the view: the view never came to be.
        let target = h.target(SANDBOX, &app);
        h.backend
            .remove("overlayfs", &target.to_string_lossy())
            .unwrap();
        h.restart();

        h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap();
        assert_eq!(
            h.mounts.calls("mount_all"),
            1,
            "{layers} layers: mounted again"
        );
        assert_eq!(h.mounts.mountpoints(), std::slice::from_ref(&target));
        assert_eq!(h.backend.views(), [target.to_string_lossy().into_owned()]);
    }
}

#[test]
fn a_viewless_mount_of_another_image_is_refused_and_the_view_made_for_it_removed() {
    let h = harness();
    let (app, other) = (image("app:1", 1), image("other:1", 1));
    h.backend.add(&app);
    h.backend.add(&other);
    // The other image's volume, mounted where app's goes.
    h.mutate("sb2", &mut [image_mount("other:1")]).unwrap();
    let other_layer = h
        .backend
        .mounts("overlayfs", &h.target("sb2", &other).to_string_lossy());
    let target = h.target(SANDBOX, &app);
    std::fs::create_dir_all(&target).unwrap();
    h.mounts.plant(&target, &other_layer.unwrap()[0]);
    let views_before = h.backend.views();

    let err = h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(
        err.to_string().contains("no view it could be made from"),
        "{err}"
    );
    assert_eq!(
        h.backend.views(),
        views_before,
        "the view made to compare stayed"
    );
}

#[test]
fn a_volume_is_not_reused_with_another_mapping() {
    let h = harness();
    h.backend.add(&image("app:1", 2));
    h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap();
    let err = h
        .mutate(SANDBOX, &mut [idmapped_mount("app:1")])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("other uid/gid mappings"), "{err}");
}

#[test]
fn an_idmapped_volume_clears_the_mappings_and_is_taken_over_after_a_restart() {
    let mut h = harness();
    let app = image("app:1", 2);
    h.backend.add(&app);
    let mut mounts = [idmapped_mount("app:1")];
    h.mutate(SANDBOX, &mut mounts).unwrap();
    assert!(mounts[0].uid_mappings.is_empty() && mounts[0].gid_mappings.is_empty());
    assert_eq!(h.mounts.calls("mount_idmapped"), 1);
    let target = h.target(SANDBOX, &app);
    let labels = h.backend.labels(&target.to_string_lossy());
    assert_eq!(
        labels["containerd.io/snapshot/uidmapping"],
        "0:100000:65536"
    );

    h.restart();
    h.mutate(SANDBOX, &mut [idmapped_mount("app:1")]).unwrap();
    assert_eq!(
        h.mounts.calls("mount_idmapped"),
        1,
        "mounted again instead of taken over"
    );
    // Found idmapped after the restart: a request without a mapping does not reuse it.
    let err = h.mutate(SANDBOX, &mut [image_mount("app:1")]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
}
