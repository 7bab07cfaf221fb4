package imv

// Each half of imv's ttrpc against the reference implementation of the other half:
// containerd/ttrpc's own client (through the generated NewImageVolumesClient) against the
// service as a Rust shim hosts it on ttrpc-rust's server, and this package's hand-framed
// client (calls.go) against containerd/ttrpc's own server.

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	imvv1 "github.com/imv-project/imv/go-bindings/api/v1"
)

func TestStockGoClientAgainstTheHostedService(t *testing.T) {
	dir, socket := startSampleHosted(t)
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	svc := imvv1.NewImageVolumesClient(client)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	st, err := svc.Status(ctx, &imvv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Backend != "local" {
		t.Fatalf("status: backend %q", st.Backend)
	}
	req := &imvv1.MutateMountsRequest{
		SandboxId: "pod1",
		Mounts: []*imvv1.Mount{{
			ContainerPath: "/data",
			Readonly:      true,
			Image:         &imvv1.ImageSpec{Image: sampleImage},
		}},
	}
	resp, err := svc.MutateMounts(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	host := resp.Mounts[0].HostPath
	if want := filepath.Join(dir, "state", "image-volumes", "pod1"); filepath.Dir(host) != want {
		t.Fatalf("host path %q, want one under %q", host, want)
	}
	hello, err := os.ReadFile(filepath.Join(host, "data", "hello.txt"))
	if err != nil || string(hello) != sampleHello {
		t.Fatalf("hello.txt: %q, %v", hello, err)
	}
	_, err = svc.MutateMounts(ctx, &imvv1.MutateMountsRequest{
		SandboxId: "pod1",
		Mounts:    []*imvv1.Mount{{ContainerPath: "/x", Readonly: true, Image: &imvv1.ImageSpec{Image: unknownImage}}},
	})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("unknown image: %v, want NotFound", err)
	}
	if _, err := svc.Release(ctx, &imvv1.ReleaseRequest{SandboxId: "pod1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(host); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after release, %s: %v", host, err)
	}
}

// referenceService answers as a daemon would, from canned data, and records what it got.
type referenceService struct {
	got []string
}

func unimplemented(method string) error {
	return status.Errorf(codes.Unimplemented, "the reference server has no %s", method)
}

func (s *referenceService) List(context.Context, *imvv1.ListRequest) (*imvv1.ListResponse, error) {
	return nil, unimplemented("List")
}

func (s *referenceService) Import(context.Context, *imvv1.ImportRequest) (*imvv1.ImportResponse, error) {
	return nil, unimplemented("Import")
}

func (s *referenceService) Images(context.Context, *imvv1.ImagesRequest) (*imvv1.ImagesResponse, error) {
	return nil, unimplemented("Images")
}

func (s *referenceService) RemoveImage(context.Context, *imvv1.RemoveImageRequest) (*imvv1.RemoveImageResponse, error) {
	return nil, unimplemented("RemoveImage")
}

func (s *referenceService) Gc(context.Context, *imvv1.GcRequest) (*imvv1.GcResponse, error) {
	return nil, unimplemented("Gc")
}

func (s *referenceService) MutateMounts(_ context.Context, r *imvv1.MutateMountsRequest) (*imvv1.MutateMountsResponse, error) {
	s.got = append(s.got, "MutateMounts "+r.SandboxId+" "+r.Snapshotter+" "+r.Platform)
	for _, m := range r.Mounts {
		if m.GetImage().GetImage() == unknownImage {
			return nil, status.Errorf(codes.NotFound, "image %q: not found", unknownImage)
		}
	}
	out := &imvv1.MutateMountsResponse{}
	for _, m := range r.Mounts {
		m.HostPath = "/volumes/" + r.SandboxId + m.ContainerPath
		out.Mounts = append(out.Mounts, m)
	}
	return out, nil
}

func (s *referenceService) Cleanup(_ context.Context, r *imvv1.CleanupRequest) (*imvv1.CleanupResponse, error) {
	s.got = append(s.got, "Cleanup "+r.SandboxId)
	return &imvv1.CleanupResponse{}, nil
}

func (s *referenceService) Release(_ context.Context, r *imvv1.ReleaseRequest) (*imvv1.ReleaseResponse, error) {
	s.got = append(s.got, "Release "+r.SandboxId)
	return &imvv1.ReleaseResponse{}, nil
}

func (s *referenceService) Status(context.Context, *imvv1.StatusRequest) (*imvv1.StatusResponse, error) {
	s.got = append(s.got, "Status")
	return &imvv1.StatusResponse{Version: "reference", Backend: "go"}, nil
}

func TestOurClientAgainstTheReferenceGoServer(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "ref.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	ref := &referenceService{}
	imvv1.RegisterImageVolumesService(srv, ref)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), l) }()
	defer func() {
		srv.Close()
		<-served
	}()

	c := dial(t, socket)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mounts := []*runtime.Mount{{
		ContainerPath: "/data",
		Readonly:      true,
		Image:         &runtime.ImageSpec{Image: sampleImage},
	}}
	platform := imagespec.Platform{OS: "linux", Architecture: "arm64"}
	if err := c.MutateMounts(ctx, mounts, "overlayfs", "pod1", platform); err != nil {
		t.Fatal(err)
	}
	if mounts[0].HostPath != "/volumes/pod1/data" {
		t.Fatalf("host path %q", mounts[0].HostPath)
	}
	bad := []*runtime.Mount{{ContainerPath: "/x", Readonly: true, Image: &runtime.ImageSpec{Image: unknownImage}}}
	if err := c.MutateMounts(ctx, bad, "", "pod1", platform); !errdefs.IsNotFound(err) {
		t.Fatalf("unknown image: %v, want NotFound", err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Version != "reference" {
		t.Fatalf("status: %v, %v", st, err)
	}
	if err := c.CleanupImageMounts(ctx, "pod1", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Release(ctx, "pod1"); err != nil {
		t.Fatal(err)
	}
	// A method the reference server does not implement is its Unimplemented, as is.
	if _, err := c.Images(ctx); status.Code(err) != codes.Unimplemented && !errdefs.IsNotImplemented(err) {
		t.Fatalf("images: %v, want Unimplemented", err)
	}
	want := []string{
		"MutateMounts pod1 overlayfs linux/arm64",
		"MutateMounts pod1  linux/arm64",
		"Status",
		"Cleanup pod1",
		"Release pod1",
	}
	if len(ref.got) != len(want) {
		t.Fatalf("the server got %q, want %q", ref.got, want)
	}
	for i := range want {
		if ref.got[i] != want[i] {
			t.Fatalf("the server got %q, want %q", ref.got, want)
		}
	}
}
