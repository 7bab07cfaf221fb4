// Package imv gives a container runtime Kubernetes image volumes (KEP-4639) with the
// contract of containerd's CRI plugin (internal/cri/server/container_image_mount.go):
// MutateMounts at CreateContainer, CleanupImageMounts when the sandbox stops, Release when
// it is removed. CRI types go in and out.
//
// Two implementations of [ImageVolumes]:
//
//   - [Library] runs imv in this process through cgo, over the C ABI of libimv
//     (include/imv.h). Build with cgo and link libimv.a: see the README.
//   - [Client] talks to an imv daemon (`imv serve`) over its ttrpc socket.
//
// Both report failures as *[Error], which satisfies containerd's errdefs predicates
// (errdefs.IsNotFound, errdefs.IsInvalidArgument, ...).
package imv

import (
	"context"
	"fmt"
	"strings"

	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageVolumes is what a container runtime needs from imv. Implementations are safe for
// concurrent use by many goroutines.
type ImageVolumes interface {
	// MutateMounts mounts the image of every mount in mounts that has Image set, read-only,
	// for sandbox sandboxID, and sets that mount's HostPath in place (the volume, or the
	// resolved ImageSubPath inside it), and its Image.ImageRef to the ID of the image
	// mounted (KEP-5365: the config's digest, or an artifact's target digest, as
	// containerd's PullImage returns it). Mounts without an image, and nil entries, are
	// left alone. A volume the sandbox already has for the same image manifest is reused.
	//
	// snapshotter is the snapshotter to unpack into and take the view from ("" for the
	// default, overlayfs). platform picks the manifest of a multi-platform image; the zero
	// Platform means the host's.
	//
	// All or nothing: on error no mount is changed and what this call mounted is undone.
	// Errors: InvalidArgument (a read-write image mount, HostPath already set, a bad sandbox
	// ID or platform), NotFound (the image, or the sub path), Unavailable (the daemon or
	// containerd cannot be reached).
	MutateMounts(ctx context.Context, mounts []*runtime.Mount, snapshotter, sandboxID string, platform imagespec.Platform) error

	// MutateMountsWith is MutateMounts with opts: the volumes get its SELinux mount label.
	// A pod's volumes share one label: a volume mounted with another, or none, is
	// FailedPrecondition. Errors as MutateMounts, and FailedPrecondition for a label on a
	// host without SELinux (unless opts says to ignore it there).
	MutateMountsWith(ctx context.Context, mounts []*runtime.Mount, snapshotter, sandboxID string, platform imagespec.Platform, opts MutateOptions) error

	// CleanupImageMounts unmounts and removes every image volume of sandbox sandboxID
	// (recursively, so mounts nested inside do not make it fail). Idempotent: a sandbox
	// with no volumes is fine. The sandbox's lease stays until Release.
	CleanupImageMounts(ctx context.Context, sandboxID, snapshotter string) error

	// Release cleans the sandbox up as CleanupImageMounts does, each view removed from the
	// snapshotter it was made in (the sandbox's lease records it), then drops its lease so
	// that what only it kept can be garbage collected. Idempotent. Call it when the sandbox
	// is removed.
	Release(ctx context.Context, sandboxID string) error

	// Volumes lists the image volumes under the state directory, sorted by sandbox, then
	// target.
	Volumes(ctx context.Context) ([]Volume, error)

	// Close releases the implementation's resources. Mounted volumes stay: they belong to
	// their sandboxes. Calls after Close fail with FailedPrecondition.
	Close() error
}

// ImportOptions says how an import names the images it finds and which it takes.
type ImportOptions struct {
	// Name names the one image the source holds (or the one Tag picks); with more,
	// InvalidArgument. "" keeps the names the source gives.
	Name string
	// BaseName names every image tagged with a bare tag (an OCI layout's
	// org.opencontainers.image.ref.name "one", as umoci, skopeo and buildah write them)
	// BaseName:tag, as `ctr images import --base-name` does.
	BaseName string
	// Tag takes only the image(s) tagged Tag (a layout's ref.name, or a `docker save`
	// RepoTag's tag), as skopeo's oci:DIR:TAG; NotFound, listing the tags, when none is.
	Tag string
}

// MutateOptions is what MutateMountsWith asks of the volumes beyond CRI's mounts.
type MutateOptions struct {
	// MountLabel is the SELinux context every file of the volumes gets (the context= mount
	// option), e.g. the pod's mount label "system_u:object_r:container_file_t:s0:c1,c2";
	// "" for none. user:role:type[:level], printable ASCII without spaces or quotes
	// (InvalidArgument otherwise).
	MountLabel string
	// IgnoreLabelWithoutSELinux mounts without MountLabel on a host without SELinux,
	// instead of failing with FailedPrecondition.
	IgnoreLabelWithoutSELinux bool
}

// Volume is one image volume found under the state directory.
type Volume struct {
	// SandboxID is the sandbox the volume belongs to.
	SandboxID string
	// Target is the volume's directory: <state>/image-volumes/<sandbox>/<image digest hex>.
	Target string
	// ImageDigest is the digest of the image it was made from ("sha256:..."): the digest
	// its name points at (the index of a multi-platform image, not the platform's
	// manifest), as Image.Digest. Its hex names Target.
	ImageDigest string
	// Image is the reference it was requested by; empty when unknown.
	Image string
	// Mounted tells whether Target was a mountpoint when the list was made.
	Mounted bool
}

// Image is one image of an imv store.
type Image struct {
	// Name is a reference such as "example.com/app:1".
	Name string
	// Digest is the digest of its target ("sha256:..."): a manifest, or an index for a
	// multi-platform image.
	Digest string
	// MediaType is the media type of the target.
	MediaType string
	// Size is the size of the target blob in bytes.
	Size uint64
	// ArtifactType says what an OCI artifact is (its artifactType, else its config's media
	// type); empty for an image.
	ArtifactType string
}

// GCStats says what a garbage collection of the embedded store removed.
type GCStats struct {
	// Snapshots is the number of snapshots (layers and views) removed.
	Snapshots uint64
	// Blobs is the number of content blobs removed.
	Blobs uint64
	// Ingests is the number of partial files of interrupted imports removed.
	Ingests uint64
}

// imageMounts returns the indexes of the mounts that carry an image: the only ones imv is
// given, since the others are left alone by contract.
func imageMounts(mounts []*runtime.Mount) []int {
	var idx []int
	for i, m := range mounts {
		if m != nil && m.GetImage() != nil {
			idx = append(idx, i)
		}
	}
	return idx
}

// formatPlatform writes p as the specifier imv parses (containerd's platforms.FormatAll
// syntax): "os/arch[/variant]", with "os(version+feature...)" when an OS version or
// features are set. The zero Platform is "", which imv reads as the host's platform.
func formatPlatform(p imagespec.Platform) (string, error) {
	if p.OS == "" && p.Architecture == "" && p.Variant == "" && p.OSVersion == "" && len(p.OSFeatures) == 0 {
		return "", nil
	}
	if p.OS == "" || p.Architecture == "" {
		return "", newError(codes.InvalidArgument, fmt.Sprintf("invalid platform (OS %q, architecture %q): OS and architecture must both be set (or neither, for the host's)", p.OS, p.Architecture))
	}
	os := p.OS
	if p.OSVersion != "" || len(p.OSFeatures) > 0 {
		opts := []string{escapeOSOption(p.OSVersion)}
		for _, f := range p.OSFeatures {
			opts = append(opts, escapeOSOption(f))
		}
		os += "(" + strings.Join(opts, "+") + ")"
	}
	s := os + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s, nil
}

// escapeOSOption percent-encodes what the specifier syntax reserves in an OS version or
// feature (anything but letters, digits, '_', '.' and '-'), as containerd does.
func escapeOSOption(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
