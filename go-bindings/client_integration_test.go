package imv

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
)

// No daemon on the socket: Dial says Unavailable, and names the socket.
func TestClientDaemonNotRunning(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "imv.sock")
	c, err := Dial(context.Background(), socket)
	if !errdefs.IsUnavailable(err) {
		t.Fatalf("got %v, %v; want Unavailable", c, err)
	}
	t.Logf("error: %v", err)
}

// The daemon goes away under a client: calls fail with Unavailable; once a daemon is back
// on the socket, the same client dials again.
func TestClientDaemonRestarts(t *testing.T) {
	requireRoot(t)
	dir := tempDir(t)
	args := []string{"--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state")}
	socket, stop := startDaemon(t, dir, args...)
	c := dial(t, socket)
	ctx := testContext(t)
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetBackend() != "local" || st.GetVersion() == "" {
		t.Errorf("status: %v", st)
	}

	stop()
	m := imageMount(sampleImage)
	if err := c.MutateMounts(ctx, mounts(m), "", "gone", imagespec.Platform{}); !errdefs.IsUnavailable(err) {
		t.Fatalf("daemon stopped: got %v, want Unavailable", err)
	}
	if _, err := c.Volumes(ctx); !errdefs.IsUnavailable(err) {
		t.Fatalf("daemon stopped, second call: got %v, want Unavailable", err)
	}

	startDaemon(t, dir, args...)
	if _, err := c.Volumes(ctx); err != nil {
		t.Fatalf("daemon back: %v", err)
	}
}

// The daemon is up but containerd behind it is not: Unavailable comes through from the
// daemon with its message.
func TestClientContainerdDown(t *testing.T) {
	requireRoot(t)
	dir := tempDir(t)
	socket, _ := startDaemon(t, dir, "--backend", "containerd", "--address", filepath.Join(dir, "no-containerd.sock"), "--state", filepath.Join(dir, "state"))
	c := dial(t, socket)
	err := c.MutateMounts(testContext(t), mounts(imageMount(sampleImage)), "", "down", imagespec.Platform{})
	if !errdefs.IsUnavailable(err) {
		t.Fatalf("got %v, want Unavailable", err)
	}
	t.Logf("error: %v", err)
}

// A deadline that has passed fails at once, as DeadlineExceeded.
func TestClientDeadline(t *testing.T) {
	requireRoot(t)
	dir := tempDir(t)
	socket, _ := startDaemon(t, dir, "--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"))
	c := dial(t, socket)
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if err := c.CleanupImageMounts(ctx, "sb", ""); !errors.Is(err, context.DeadlineExceeded) || !errdefs.IsDeadlineExceeded(err) {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
}

// Close, then calls: FailedPrecondition, and no dialling.
func TestClientClosed(t *testing.T) {
	requireRoot(t)
	dir := tempDir(t)
	socket, _ := startDaemon(t, dir, "--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"))
	c, err := Dial(context.Background(), socket)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal("second close:", err)
	}
	if _, err := c.Volumes(context.Background()); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("got %v, want FailedPrecondition", err)
	}
}
