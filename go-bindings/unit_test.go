package imv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// These tests need neither root nor a built imv.

func TestErrorPredicates(t *testing.T) {
	for _, tc := range []struct {
		code codes.Code
		is   func(error) bool
	}{
		{codes.InvalidArgument, errdefs.IsInvalidArgument},
		{codes.NotFound, errdefs.IsNotFound},
		{codes.AlreadyExists, errdefs.IsAlreadyExists},
		{codes.FailedPrecondition, errdefs.IsFailedPrecondition},
		{codes.Unavailable, errdefs.IsUnavailable},
		{codes.Internal, errdefs.IsInternal},
		{codes.DeadlineExceeded, errdefs.IsDeadlineExceeded},
		{codes.Canceled, errdefs.IsCanceled},
		{codes.Unknown, errdefs.IsUnknown},
	} {
		err := newError(tc.code, "the library's message")
		// Wrapped as a caller would, the predicate and the code must both survive.
		wrapped := fmt.Errorf("create container: %w", err)
		if !tc.is(wrapped) {
			t.Errorf("%v: predicate false for %v", tc.code, wrapped)
		}
		if err.Error() != "the library's message" {
			t.Errorf("%v: message %q changed", tc.code, err.Error())
		}
		var e *Error
		if !errors.As(wrapped, &e) || e.Code != tc.code {
			t.Errorf("%v: errors.As gave %+v", tc.code, e)
		}
		if s, ok := status.FromError(err); !ok || s.Code() != tc.code || s.Message() != "the library's message" {
			t.Errorf("%v: GRPCStatus gave %v", tc.code, s)
		}
	}
	// Only its own predicate.
	if errdefs.IsNotFound(newError(codes.InvalidArgument, "x")) {
		t.Error("InvalidArgument is NotFound")
	}
}

func TestFormatPlatform(t *testing.T) {
	for _, tc := range []struct {
		in   imagespec.Platform
		want string
		bad  bool
	}{
		{in: imagespec.Platform{}, want: ""},
		{in: imagespec.Platform{OS: "linux", Architecture: "amd64"}, want: "linux/amd64"},
		{in: imagespec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, want: "linux/arm/v7"},
		{in: imagespec.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.17763"}, want: "windows(10.0.17763)/amd64"},
		{in: imagespec.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0", OSFeatures: []string{"win32k", "a+b"}}, want: "windows(10.0+win32k+a%2Bb)/amd64"},
		{in: imagespec.Platform{OS: "linux"}, bad: true},
		{in: imagespec.Platform{Architecture: "amd64"}, bad: true},
	} {
		got, err := formatPlatform(tc.in)
		if tc.bad {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("%+v: got %q, %v; want InvalidArgument", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v: got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// A CRI mount crosses to imv.v1 by its wire bytes: every field, and fields of a newer CRI
// that neither schema knows, come back unchanged.
func TestToWireKeepsEveryField(t *testing.T) {
	m := &runtime.Mount{
		ContainerPath:     "/data",
		Readonly:          true,
		SelinuxRelabel:    true,
		Propagation:       runtime.MountPropagation_PROPAGATION_HOST_TO_CONTAINER,
		UidMappings:       []*runtime.IDMapping{{HostId: 1000, ContainerId: 0, Length: 65536}},
		GidMappings:       []*runtime.IDMapping{{HostId: 2000, ContainerId: 0, Length: 10}},
		RecursiveReadOnly: true,
		Image: &runtime.ImageSpec{
			Image:              "example.com/app@sha256:0123",
			Annotations:        map[string]string{"a": "1", "b": "2"},
			UserSpecifiedImage: "example.com/app:1",
			RuntimeHandler:     "runc",
			ImageRef:           "sha256:4567",
		},
		ImageSubPath: "etc/app",
		MountOptions: []string{"noexec", "nodev"},
	}
	// A field from the future: number 99, a string.
	m.ProtoReflect().SetUnknown(protowire.AppendString(protowire.AppendTag(nil, 99, protowire.BytesType), "from a newer CRI"))

	w, err := toWire(m)
	if err != nil {
		t.Fatal(err)
	}
	if w.GetContainerPath() != "/data" || !w.GetReadonly() || w.GetImage().GetImageRef() != "sha256:4567" ||
		w.GetImage().GetAnnotations()["b"] != "2" || w.GetImageSubPath() != "etc/app" ||
		w.GetUidMappings()[0].GetLength() != 65536 || len(w.GetMountOptions()) != 2 ||
		int32(w.GetPropagation()) != int32(m.Propagation) || !w.GetRecursiveReadOnly() || !w.GetSelinuxRelabel() {
		t.Errorf("fields lost: %v", w)
	}
	if len(w.ProtoReflect().GetUnknown()) == 0 {
		t.Error("the unknown field was dropped")
	}
	b, err := proto.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	back := &runtime.Mount{}
	if err := proto.Unmarshal(b, back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(m, back) {
		t.Errorf("round trip changed the mount:\n got %v\nwant %v", back, m)
	}
}

// Invalid UTF-8 cannot be encoded as a proto3 string: the client says which mount.
func TestClientRejectsInvalidUTF8BeforeSending(t *testing.T) {
	c := &Client{socket: "/nonexistent/imv.sock"}
	mounts := []*runtime.Mount{{ContainerPath: "/v", Readonly: true, Image: &runtime.ImageSpec{Image: "bad\xff"}}}
	err := c.MutateMounts(context.Background(), mounts, "", "sb", imagespec.Platform{})
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
}

// Mounts without an image never reach imv: no connection is even needed.
func TestNoImageMountsIsANoOp(t *testing.T) {
	c := &Client{socket: "/nonexistent/imv.sock"}
	mounts := []*runtime.Mount{{ContainerPath: "/etc/hosts", HostPath: "/var/lib/x/hosts"}, nil}
	if err := c.MutateMounts(context.Background(), mounts, "", "", imagespec.Platform{}); err != nil {
		t.Fatal(err)
	}
	if mounts[0].HostPath != "/var/lib/x/hosts" {
		t.Error("a mount without image changed")
	}
}

func TestParseLogLevel(t *testing.T) {
	for in, want := range map[string]LogLevel{"off": LogOff, "ERROR": LogError, "warn": LogWarn, "warning": LogWarn, " info ": LogInfo, "debug": LogDebug, "Trace": LogTrace} {
		got, err := ParseLogLevel(in)
		if err != nil || got != want {
			t.Errorf("ParseLogLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, _ := ParseLogLevel(got.String()); back != got {
			t.Errorf("%v does not read back: %v", got, back)
		}
	}
	if _, err := ParseLogLevel("verbose"); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `"verbose"`) {
		t.Errorf("ParseLogLevel(verbose): %v", err)
	}
}
