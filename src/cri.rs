//! The CRI `runtime.v1.Mount` and `ImageSpec`, mirrored field for field, so a mount from
//! the kubelet (through cgo, ttrpc or a crictl JSON file) maps onto these without loss.
//!
//! JSON uses the field names of the Go types generated from the CRI proto
//! (`container_path`, `host_path`, `uidMappings`, ...), which is what crictl reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// CRI `runtime.v1.Mount`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mount {
    /// Path of the mount within the container.
    pub container_path: String,
    /// Path of the mount on the host. For an image volume the caller leaves it empty and
    /// imv fills it in.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host_path: String,
    /// Read-only mount. Image volumes must be read-only (KEP-4639).
    pub readonly: bool,
    /// SELinux relabeling requested.
    #[serde(skip_serializing_if = "is_false")]
    pub selinux_relabel: bool,
    /// Mount propagation.
    #[serde(skip_serializing_if = "MountPropagation::is_private")]
    pub propagation: MountPropagation,
    /// User ID mappings of an idmapped mount.
    #[serde(
        rename = "uidMappings",
        alias = "uid_mappings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub uid_mappings: Vec<IdMapping>,
    /// Group ID mappings of an idmapped mount.
    #[serde(
        rename = "gidMappings",
        alias = "gid_mappings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub gid_mappings: Vec<IdMapping>,
    /// Recursively read-only.
    #[serde(skip_serializing_if = "is_false")]
    pub recursive_read_only: bool,
    /// The image to mount; a mount without one is not an image volume and is left alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSpec>,
    /// A directory inside the image to mount instead of its root (directories only, as in
    /// containerd and the Kubernetes docs).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub image_sub_path: String,
    /// Extra mount options requested by the kubelet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mount_options: Vec<String>,
}

/// CRI `runtime.v1.ImageSpec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageSpec {
    /// The image: a name, `name@digest`, or an image ID.
    pub image: String,
    /// Unstructured key-value annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The image as the user wrote it in the pod spec.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_specified_image: String,
    /// The runtime handler (RuntimeClass) the image was pulled for.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub runtime_handler: String,
    /// The digest of the image used for the volume: an output of the runtime in CRI (like
    /// a container status's image ID). imv, like containerd, reads `image` only and
    /// passes this field through unchanged.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub image_ref: String,
}

/// CRI `runtime.v1.IDMapping`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdMapping {
    /// First ID on the host.
    pub host_id: u32,
    /// First ID in the container.
    pub container_id: u32,
    /// How many IDs.
    pub length: u32,
}

/// CRI `runtime.v1.MountPropagation`. JSON takes the number or the proto name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(i32)]
pub enum MountPropagation {
    /// No propagation (`rprivate`).
    #[default]
    Private = 0,
    /// Mounts on the host propagate into the container (`rslave`).
    HostToContainer = 1,
    /// Both ways (`rshared`).
    Bidirectional = 2,
}

impl MountPropagation {
    /// The proto enum name.
    pub fn as_str(self) -> &'static str {
        match self {
            MountPropagation::Private => "PROPAGATION_PRIVATE",
            MountPropagation::HostToContainer => "PROPAGATION_HOST_TO_CONTAINER",
            MountPropagation::Bidirectional => "PROPAGATION_BIDIRECTIONAL",
        }
    }

    /// From the proto number; unknown numbers are `None`.
    pub fn from_i32(n: i32) -> Option<Self> {
        match n {
            0 => Some(MountPropagation::Private),
            1 => Some(MountPropagation::HostToContainer),
            2 => Some(MountPropagation::Bidirectional),
            _ => None,
        }
    }

    fn is_private(&self) -> bool {
        *self == MountPropagation::Private
    }
}

impl Serialize for MountPropagation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(*self as i32)
    }
}

impl<'de> Deserialize<'de> for MountPropagation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(i32),
            Name(String),
        }
        match Repr::deserialize(d)? {
            Repr::Number(n) => MountPropagation::from_i32(n)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown mount propagation {n}"))),
            Repr::Name(s) => [
                MountPropagation::Private,
                MountPropagation::HostToContainer,
                MountPropagation::Bidirectional,
            ]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown mount propagation {s:?}"))),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_crictl_style_json() {
        let json = r#"[{"container_path":"/data","readonly":true,"propagation":"PROPAGATION_HOST_TO_CONTAINER",
            "uidMappings":[{"host_id":1000,"container_id":0,"length":1}],
            "image":{"image":"example.com/app:1","annotations":{"a":"b"}},"image_sub_path":"etc"}]"#;
        let mounts: Vec<Mount> = serde_json::from_str(json).unwrap();
        assert_eq!(mounts[0].propagation, MountPropagation::HostToContainer);
        assert_eq!(mounts[0].uid_mappings[0].host_id, 1000);
        assert_eq!(mounts[0].image.as_ref().unwrap().annotations["a"], "b");
        let back = serde_json::to_string(&mounts).unwrap();
        let again: Vec<Mount> = serde_json::from_str(&back).unwrap();
        assert_eq!(again, mounts);
    }

    #[test]
    fn rejects_unknown_propagation() {
        assert!(serde_json::from_str::<Mount>(r#"{"propagation":7}"#).is_err());
    }
}
