package imv

import (
	"context"
	"errors"
	"fmt"
	"sync"

	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	imvv1 "github.com/imv-project/imv/go-bindings/api/v1"
)

// DefaultSocket is where `imv serve` listens unless told otherwise.
const DefaultSocket = "/run/imv/imv.sock"

// Client is an [ImageVolumes] served by an imv daemon (`imv serve`) over its ttrpc socket,
// the service imv.v1.ImageVolumes. It is safe for concurrent use: each call runs on a
// connection of its own while it runs (calls.go), so calls run in parallel on the daemon;
// a few connections are kept open for the next calls.
//
// A context's deadline travels with each request (ttrpc's timeout): the daemon refuses a
// request whose deadline passed before its work started (DeadlineExceeded, nothing done).
// Work that has started runs to its end on the daemon, whatever the client does; a caller
// that gave up and retries finds the volume mounted and reuses it.
//
// When a connection breaks during a call (the daemon restarted), the call fails with
// Unavailable and the next call dials again. A kept connection the daemon closed while
// no call used it is replaced without failing the call: the request never left.
type Client struct {
	socket string
	slots  chan struct{} // one per call running: at most maxConnections
	kept   chan struct{} // signalled when a connection is kept for the next call

	mu     sync.Mutex
	idle   []*conn            // kept for the next calls
	busy   map[*conn]struct{} // in use by a call
	closed bool
}

var _ ImageVolumes = (*Client)(nil)

// Dial connects to the imv daemon listening on socket (a unix socket path; "" means
// [DefaultSocket]). Unavailable when no daemon answers there.
func Dial(ctx context.Context, socket string) (*Client, error) {
	if socket == "" {
		socket = DefaultSocket
	}
	c := &Client{socket: socket, slots: make(chan struct{}, maxConnections), kept: make(chan struct{}, 1), busy: map[*conn]struct{}{}}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cn, _, err := c.connection(ctx)
	if err != nil {
		return nil, err
	}
	c.keep(cn)
	return c, nil
}

// MutateMounts implements [ImageVolumes.MutateMounts].
//
// Only the image mounts are sent. Each is converted by its wire bytes (a CRI Mount's
// encoding decodes as an imv.v1.Mount: the schemas share field numbers and types), so
// every field goes over, also fields of a newer CRI than this package knows. The answer
// sets nothing but HostPath and Image.ImageRef on the caller's mounts (and takes applied
// mappings off).
func (c *Client) MutateMounts(ctx context.Context, mounts []*runtime.Mount, snapshotter, sandboxID string, platform imagespec.Platform) error {
	return c.MutateMountsWith(ctx, mounts, snapshotter, sandboxID, platform, MutateOptions{})
}

// MutateMountsWith implements [ImageVolumes.MutateMountsWith]: the options go as the
// request's mount_label and ignore_label_without_selinux.
func (c *Client) MutateMountsWith(ctx context.Context, mounts []*runtime.Mount, snapshotter, sandboxID string, platform imagespec.Platform, opts MutateOptions) error {
	idx := imageMounts(mounts)
	if len(idx) == 0 {
		return ctx.Err()
	}
	spec, err := formatPlatform(platform)
	if err != nil {
		return err
	}
	req := &imvv1.MutateMountsRequest{
		SandboxId:   sandboxID,
		Snapshotter: snapshotter,
		Platform:    spec,
		Mounts:      make([]*imvv1.Mount, len(idx)),

		MountLabel:                opts.MountLabel,
		IgnoreLabelWithoutSelinux: opts.IgnoreLabelWithoutSELinux,
	}
	for j, i := range idx {
		if req.Mounts[j], err = toWire(mounts[i]); err != nil {
			return newError(codes.InvalidArgument, fmt.Sprintf("mounts[%d]: %v", i, err))
		}
	}
	resp := &imvv1.MutateMountsResponse{}
	if err := c.call(ctx, "MutateMounts", req, resp); err != nil {
		return err
	}
	if len(resp.GetMounts()) != len(idx) {
		return newError(codes.Internal, fmt.Sprintf("imv daemon at %s answered %d mounts for %d", c.socket, len(resp.GetMounts()), len(idx)))
	}
	for j, i := range idx {
		hp := resp.Mounts[j].GetHostPath()
		if hp == "" {
			return newError(codes.Internal, fmt.Sprintf("imv daemon at %s set no host_path on mounts[%d]", c.socket, i))
		}
		mounts[i].HostPath = hp
		mounts[i].Image.ImageRef = resp.Mounts[j].GetImage().GetImageRef()
		// The daemon applied the mappings and took them off the mount it returns: the
		// runtime must not map the volume again.
		if len(resp.Mounts[j].GetUidMappings()) == 0 && len(resp.Mounts[j].GetGidMappings()) == 0 {
			mounts[i].UidMappings, mounts[i].GidMappings = nil, nil
		}
	}
	return nil
}

// toWire re-encodes a CRI mount as an imv.v1.Mount, unknown fields included.
func toWire(m *runtime.Mount) (*imvv1.Mount, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out imvv1.Mount
	if err := proto.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CleanupImageMounts implements [ImageVolumes.CleanupImageMounts].
func (c *Client) CleanupImageMounts(ctx context.Context, sandboxID, snapshotter string) error {
	return c.call(ctx, "Cleanup", &imvv1.CleanupRequest{SandboxId: sandboxID, Snapshotter: snapshotter}, &imvv1.CleanupResponse{})
}

// Release implements [ImageVolumes.Release].
func (c *Client) Release(ctx context.Context, sandboxID string) error {
	return c.call(ctx, "Release", &imvv1.ReleaseRequest{SandboxId: sandboxID}, &imvv1.ReleaseResponse{})
}

// Volumes implements [ImageVolumes.Volumes].
func (c *Client) Volumes(ctx context.Context) ([]Volume, error) {
	resp := &imvv1.ListResponse{}
	if err := c.call(ctx, "List", &imvv1.ListRequest{}, resp); err != nil {
		return nil, err
	}
	vols := make([]Volume, len(resp.GetVolumes()))
	for i, v := range resp.GetVolumes() {
		vols[i] = Volume{
			SandboxID:   v.GetSandboxId(),
			Target:      v.GetTarget(),
			ImageDigest: v.GetImageDigest(),
			Image:       v.GetImage(),
			Mounted:     v.GetMounted(),
		}
	}
	return vols, nil
}

// Status returns what the daemon reports about itself: version, backend, directories and
// counts.
func (c *Client) Status(ctx context.Context) (*imvv1.StatusResponse, error) {
	resp := &imvv1.StatusResponse{}
	if err := c.call(ctx, "Status", &imvv1.StatusRequest{}, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// Import imports the image(s) at path into the daemon's embedded store, naming the image
// name when the source holds exactly one ("" keeps the names it carries; an image of the
// same name is replaced), and returns the images imported. path is an OCI image layout
// directory, an OCI archive or a `docker save` tarball on the daemon's host.
//
// The daemon reads path with its own privileges, so path must be absolute
// (InvalidArgument otherwise: the daemon's working directory is not the caller's). The
// daemon is on this host, so an absolute path means the same file to both, unless the
// daemon runs in a mount namespace of its own. FailedPrecondition when the daemon uses
// containerd (use `ctr images import`).
func (c *Client) Import(ctx context.Context, path, name string) ([]Image, error) {
	return c.ImportWith(ctx, path, ImportOptions{Name: name})
}

// ImportWith is [Client.Import] with opts: images picked by tag and named by a base name
// (a layout of several images tagged "one", "two" imports with a BaseName).
func (c *Client) ImportWith(ctx context.Context, path string, opts ImportOptions) ([]Image, error) {
	resp := &imvv1.ImportResponse{}
	if err := c.call(ctx, "Import", &imvv1.ImportRequest{Path: path, Name: opts.Name, BaseName: opts.BaseName, Tag: opts.Tag}, resp); err != nil {
		return nil, err
	}
	return imagesFromWire(resp.GetImages()), nil
}

// Images lists the images of the daemon's store (the embedded one, or containerd's
// namespace), sorted by name.
func (c *Client) Images(ctx context.Context) ([]Image, error) {
	resp := &imvv1.ImagesResponse{}
	if err := c.call(ctx, "Images", &imvv1.ImagesRequest{}, resp); err != nil {
		return nil, err
	}
	return imagesFromWire(resp.GetImages()), nil
}

// RemoveImage removes the image ref names (a name, name@digest, a digest or an image ID)
// from the daemon's embedded store, collects garbage, and returns the image removed.
// Volumes mounted from it stay mounted: their sandbox's lease keeps their layers until
// CleanupImageMounts and Release. NotFound for an unknown ref; FailedPrecondition when the
// daemon uses containerd (use `ctr images rm`).
func (c *Client) RemoveImage(ctx context.Context, ref string) (Image, error) {
	resp := &imvv1.RemoveImageResponse{}
	if err := c.call(ctx, "RemoveImage", &imvv1.RemoveImageRequest{Reference: ref}, resp); err != nil {
		return Image{}, err
	}
	if resp.GetImage() == nil {
		return Image{}, newError(codes.Internal, fmt.Sprintf("imv daemon at %s removed %q but did not say which image it was", c.socket, ref))
	}
	return imageFromWire(resp.GetImage()), nil
}

// GC removes from the daemon's embedded store the snapshots and blobs that no image, lease
// or volume references. FailedPrecondition when the daemon uses containerd, which
// collects its own garbage.
func (c *Client) GC(ctx context.Context) (GCStats, error) {
	resp := &imvv1.GcResponse{}
	if err := c.call(ctx, "Gc", &imvv1.GcRequest{}, resp); err != nil {
		return GCStats{}, err
	}
	return GCStats{Snapshots: resp.GetSnapshots(), Blobs: resp.GetBlobs(), Ingests: resp.GetIngests()}, nil
}

func imageFromWire(i *imvv1.Image) Image {
	return Image{Name: i.GetName(), Digest: i.GetDigest(), MediaType: i.GetMediaType(), Size: i.GetSize(), ArtifactType: i.GetArtifactType()}
}

func imagesFromWire(ws []*imvv1.Image) []Image {
	out := make([]Image, len(ws))
	for i, w := range ws {
		out[i] = imageFromWire(w)
	}
	return out
}

// Close implements [ImageVolumes.Close]: it closes the connections; calls in progress
// fail with Unavailable. Closing twice is fine.
func (c *Client) Close() error {
	c.mu.Lock()
	conns := c.idle
	for cn := range c.busy {
		conns = append(conns, cn)
	}
	c.idle, c.busy, c.closed = nil, map[*conn]struct{}{}, true
	c.mu.Unlock()
	var errs []error
	for _, cn := range conns {
		errs = append(errs, cn.Close())
	}
	return errors.Join(errs...)
}
