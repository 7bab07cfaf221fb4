//! Between the wire types of `imv.v1` and the crate's: mounts, volumes, errors.
//!
//! Everything here is a field-for-field copy; the one judgement call is said where it is
//! made (an unknown propagation number).

use std::path::PathBuf;

use protobuf::Enum;
use ttrpc::Code;

use super::api;
use crate::backend::GcStats;
use crate::backend::ImageRecord;
use crate::cri::{IdMapping, ImageSpec, Mount, MountPropagation};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind};
use crate::status::Status;
use crate::volumes::VolumeInfo;

/// A wire mount as the engine's [`Mount`].
///
/// A propagation number this crate does not know (a newer CRI) becomes `Private` here:
/// the engine never reads propagation, and the server answers with the caller's own
/// message (only `host_path` changed), so the number goes back to the caller intact.
pub(crate) fn mount_from_proto(m: &api::Mount) -> Mount {
    Mount {
        container_path: m.container_path.clone(),
        host_path: m.host_path.clone(),
        readonly: m.readonly,
        selinux_relabel: m.selinux_relabel,
        propagation: MountPropagation::from_i32(m.propagation.value()).unwrap_or_default(),
        uid_mappings: m.uidMappings.iter().map(id_mapping_from_proto).collect(),
        gid_mappings: m.gidMappings.iter().map(id_mapping_from_proto).collect(),
        recursive_read_only: m.recursive_read_only,
        image: m.image.as_ref().map(|s| ImageSpec {
            image: s.image.clone(),
            annotations: s
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            user_specified_image: s.user_specified_image.clone(),
            runtime_handler: s.runtime_handler.clone(),
            image_ref: s.image_ref.clone(),
        }),
        image_sub_path: m.image_sub_path.clone(),
        mount_options: m.mount_options.clone(),
    }
}

/// The engine's [`Mount`] as a wire mount.
pub(crate) fn mount_to_proto(m: &Mount) -> api::Mount {
    let mut out = api::Mount::new();
    out.container_path = m.container_path.clone();
    out.host_path = m.host_path.clone();
    out.readonly = m.readonly;
    out.selinux_relabel = m.selinux_relabel;
    out.propagation = protobuf::EnumOrUnknown::from_i32(m.propagation as i32);
    out.uidMappings = m.uid_mappings.iter().map(id_mapping_to_proto).collect();
    out.gidMappings = m.gid_mappings.iter().map(id_mapping_to_proto).collect();
    out.recursive_read_only = m.recursive_read_only;
    if let Some(s) = &m.image {
        let mut spec = api::ImageSpec::new();
        spec.image = s.image.clone();
        spec.annotations = s
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        spec.user_specified_image = s.user_specified_image.clone();
        spec.runtime_handler = s.runtime_handler.clone();
        spec.image_ref = s.image_ref.clone();
        out.image = protobuf::MessageField::some(spec);
    }
    out.image_sub_path = m.image_sub_path.clone();
    out.mount_options = m.mount_options.clone();
    out
}

fn id_mapping_from_proto(m: &api::IDMapping) -> IdMapping {
    IdMapping {
        host_id: m.host_id,
        container_id: m.container_id,
        length: m.length,
    }
}

fn id_mapping_to_proto(m: &IdMapping) -> api::IDMapping {
    let mut out = api::IDMapping::new();
    out.host_id = m.host_id;
    out.container_id = m.container_id;
    out.length = m.length;
    out
}

/// A volume as the wire's.
pub(crate) fn volume_to_proto(v: &VolumeInfo) -> api::Volume {
    let mut out = api::Volume::new();
    out.sandbox_id = v.sandbox_id.clone();
    out.target = v.target.to_string_lossy().into_owned();
    out.image_digest = v.image_digest.to_string();
    out.image = v.image.clone().unwrap_or_default();
    out.mounted = v.mounted;
    out
}

/// A wire volume as the crate's; a malformed digest from the daemon is Internal.
pub(crate) fn volume_from_proto(v: &api::Volume) -> Result<VolumeInfo, Error> {
    let image_digest = Digest::parse(&v.image_digest).map_err(|e| {
        Error::internal(format!(
            "the daemon sent volume {:?} with a bad image digest: {e}",
            v.target
        ))
    })?;
    Ok(VolumeInfo {
        sandbox_id: v.sandbox_id.clone(),
        target: PathBuf::from(&v.target),
        image_digest,
        image: (!v.image.is_empty()).then(|| v.image.clone()),
        mounted: v.mounted,
    })
}

/// An image record as the wire's.
pub(crate) fn image_to_proto(r: &ImageRecord) -> api::Image {
    let mut out = api::Image::new();
    out.name = r.name.clone();
    out.digest = r.digest.to_string();
    out.media_type = r.media_type.clone();
    out.size = r.size;
    out.artifact_type = r.artifact_type.clone().unwrap_or_default();
    out
}

/// A wire image as the crate's record; a malformed digest from the daemon is Internal.
pub(crate) fn image_from_proto(i: &api::Image) -> Result<ImageRecord, Error> {
    let digest = Digest::parse(&i.digest).map_err(|e| {
        Error::internal(format!(
            "the daemon sent image {:?} with a bad digest: {e}",
            i.name
        ))
    })?;
    Ok(ImageRecord {
        name: i.name.clone(),
        digest,
        media_type: i.media_type.clone(),
        size: i.size,
        artifact_type: (!i.artifact_type.is_empty()).then(|| i.artifact_type.clone()),
    })
}

/// Garbage collection counts as the wire's.
pub(crate) fn gc_to_proto(s: &GcStats) -> api::GcResponse {
    let mut out = api::GcResponse::new();
    out.snapshots = s.snapshots as u64;
    out.blobs = s.blobs as u64;
    out.ingests = s.ingests as u64;
    out
}

/// Wire counts as the crate's (saturating: a count past usize is no count a store holds).
pub(crate) fn gc_from_proto(r: &api::GcResponse) -> GcStats {
    let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    GcStats {
        snapshots: count(r.snapshots),
        blobs: count(r.blobs),
        ingests: count(r.ingests),
    }
}

/// The ttrpc status for an engine error: the kind's number is the gRPC code; the message
/// goes without the kind's name, which the receiving side puts back from the code.
pub(crate) fn status_of(e: &Error) -> ttrpc::Error {
    let code = Code::from_i32(e.kind().grpc_code()).unwrap_or(Code::INTERNAL);
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.message()))
}

/// The error kind for a status code from the daemon.
///
/// The kinds the engine and the daemon produce come back as themselves. Of the rest: codes
/// that say "not now" (deadline, cancelled, exhausted, aborted) are Unavailable, so a caller
/// retries; codes that say "this daemon will not do it" (unimplemented: an older daemon;
/// unauthenticated) are FailedPrecondition; anything else is Internal.
pub(crate) fn kind_of_code(code: i32) -> ErrorKind {
    match code {
        3 => ErrorKind::InvalidArgument,
        5 => ErrorKind::NotFound,
        6 => ErrorKind::AlreadyExists,
        7 => ErrorKind::PermissionDenied,
        9 => ErrorKind::FailedPrecondition,
        14 => ErrorKind::Unavailable,
        13 => ErrorKind::Internal,
        // CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED
        1 | 4 | 8 | 10 => ErrorKind::Unavailable,
        // UNIMPLEMENTED, UNAUTHENTICATED
        12 | 16 => ErrorKind::FailedPrecondition,
        _ => ErrorKind::Internal,
    }
}

/// The Status RPC's answer.
pub(crate) fn status_to_proto(s: &Status) -> api::StatusResponse {
    let mut out = api::StatusResponse::new();
    out.version = s.version.clone();
    out.backend = s.backend.clone();
    out.root = s
        .root
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.state = s.state.to_string_lossy().into_owned();
    out.volumes = s.volumes;
    out.mounted = s.mounted;
    out.sandboxes = s.sandboxes;
    out.requests_in_flight = s.requests_in_flight;
    out
}

pub(crate) fn status_from_proto(s: &api::StatusResponse) -> Status {
    Status {
        version: s.version.clone(),
        backend: s.backend.clone(),
        root: (!s.root.is_empty()).then(|| PathBuf::from(&s.root)),
        state: PathBuf::from(&s.state),
        volumes: s.volumes,
        mounted: s.mounted,
        sandboxes: s.sandboxes,
        requests_in_flight: s.requests_in_flight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message;

    fn full_mount() -> Mount {
        Mount {
            container_path: "/data".into(),
            host_path: String::new(),
            readonly: true,
            selinux_relabel: true,
            propagation: MountPropagation::HostToContainer,
            uid_mappings: vec![IdMapping {
                host_id: 1000,
                container_id: 0,
                length: 1,
            }],
            gid_mappings: vec![IdMapping {
                host_id: 2000,
                container_id: 1,
                length: 2,
            }],
            recursive_read_only: true,
            image: Some(ImageSpec {
                image: "example.com/app:1".into(),
                annotations: [("a".to_string(), "b".to_string())].into(),
                user_specified_image: "app:1".into(),
                runtime_handler: "runc".into(),
                image_ref: "sha256:00".into(),
            }),
            image_sub_path: "etc".into(),
            mount_options: vec!["noexec".into()],
        }
    }

    #[test]
    fn mount_round_trips_through_the_wire() {
        let m = full_mount();
        let bytes = mount_to_proto(&m).write_to_bytes().unwrap();
        let back = mount_from_proto(&api::Mount::parse_from_bytes(&bytes).unwrap());
        assert_eq!(back, m);
    }

    #[test]
    fn unknown_propagation_is_private_for_the_engine() {
        let mut p = mount_to_proto(&full_mount());
        p.propagation = protobuf::EnumOrUnknown::from_i32(7);
        assert_eq!(mount_from_proto(&p).propagation, MountPropagation::Private);
    }

    #[test]
    fn engine_kinds_survive_the_status_code() {
        for kind in [
            ErrorKind::InvalidArgument,
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::FailedPrecondition,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
        ] {
            let ttrpc::Error::RpcStatus(s) = status_of(&Error::new(kind, "m")) else {
                panic!("not a status")
            };
            assert_eq!(kind_of_code(s.code.value()), kind);
            assert_eq!(s.message, "m");
        }
        assert_eq!(kind_of_code(4), ErrorKind::Unavailable);
        assert_eq!(kind_of_code(12), ErrorKind::FailedPrecondition);
        assert_eq!(kind_of_code(2), ErrorKind::Internal);
    }

    #[test]
    fn image_and_gc_round_trip() {
        let r = ImageRecord {
            name: "example.com/app:1".into(),
            digest: Digest::of(b"m"),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 1234,
            artifact_type: None,
        };
        assert_eq!(image_from_proto(&image_to_proto(&r)).unwrap(), r);
        let artifact = ImageRecord {
            artifact_type: Some("application/vnd.cncf.model.manifest.v1+json".into()),
            ..r.clone()
        };
        assert_eq!(
            image_from_proto(&image_to_proto(&artifact)).unwrap(),
            artifact
        );
        let mut bad = image_to_proto(&r);
        bad.digest = "md5:x".into();
        assert_eq!(
            image_from_proto(&bad).unwrap_err().kind(),
            ErrorKind::Internal
        );
        let s = GcStats {
            snapshots: 3,
            blobs: 7,
            ingests: 2,
        };
        assert_eq!(gc_from_proto(&gc_to_proto(&s)), s);
    }

    #[test]
    fn volume_round_trips() {
        let v = VolumeInfo {
            sandbox_id: "s".into(),
            target: "/run/imv/image-volumes/s/ab".into(),
            image_digest: Digest::of(b"x"),
            image: Some("a:1".into()),
            mounted: true,
        };
        assert_eq!(volume_from_proto(&volume_to_proto(&v)).unwrap(), v);
        let none = VolumeInfo { image: None, ..v };
        assert_eq!(volume_from_proto(&volume_to_proto(&none)).unwrap(), none);
        let mut bad = volume_to_proto(&none);
        bad.image_digest = "nope".into();
        assert_eq!(
            volume_from_proto(&bad).unwrap_err().kind(),
            ErrorKind::Internal
        );
    }

    #[test]
    fn the_image_digest_keeps_the_number_of_the_field_it_was_called_manifest() {
        let mut v = api::Volume::new();
        v.image_digest = "x".into();
        // Field 3, length-delimited: (3 << 3) | 2.
        assert_eq!(v.write_to_bytes().unwrap(), [0x1a, 1, b'x']);
    }
}
