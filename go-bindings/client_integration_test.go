package imv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
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

// A daemon that does not serve this user says so: PermissionDenied, with the reason, not
// a broken connection.
func TestClientRefusedPeer(t *testing.T) {
	requireRoot(t)
	dir := tempDir(t)
	socket, _ := startDaemon(t, dir, "--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"), "serve", "--allow-uid", "65534")
	c := dial(t, socket)
	err := c.CleanupImageMounts(testContext(t), "sb", "")
	if !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "uid 0 is not allowed") {
		t.Fatalf("got %v, want PermissionDenied naming uid 0", err)
	}
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

// The image store through the daemon (Client only: the C ABI has no such calls), run on
// every ttrpc env: the embedded store imports, lists, removes and collects; a daemon over
// containerd lists containerd's images and refuses the rest with FailedPrecondition.
var storeCases = []struct {
	name string
	run  func(t *testing.T, e *env, c *Client)
}{
	{"ImportAndImages", storeCaseImportAndImages},
	{"RelativePathRefused", storeCaseRelativePath},
	{"ImportWithBaseName", storeCaseImportWith},
}

func TestClientStore(t *testing.T) {
	for _, f := range factories {
		if !strings.HasPrefix(f.name, "ttrpc/") {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			e := f.setup(t)
			c, ok := e.iv.(*Client)
			if !ok {
				t.Fatalf("%s: %T is not a *Client", f.name, e.iv)
			}
			for _, sc := range storeCases {
				t.Run(sc.name, func(t *testing.T) { sc.run(t, e, c) })
			}
		})
	}
}

// A bare-tagged layout through the daemon: named by a base name; with neither a base name
// nor a name, the error says which to use.
func storeCaseImportWith(t *testing.T, e *env, c *Client) {
	if e.isContainerd() {
		t.Skip("the embedded store's import (containerd's is FailedPrecondition: see ImportAndImages)")
	}
	ctx := testContext(t)
	tagged := taggedLayout(t)
	if _, err := c.ImportWith(ctx, tagged, ImportOptions{}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "base-name") {
		t.Fatalf("no name: %v, want InvalidArgument naming --base-name", err)
	}
	images, err := c.ImportWith(ctx, tagged, ImportOptions{BaseName: "example.com/viaclient"})
	if err != nil {
		t.Fatal(err)
	}
	if len(images) != 1 || images[0].Name != "example.com/viaclient:v1" {
		t.Fatalf("imported %+v, want example.com/viaclient:v1", images)
	}
}

// isContainerd tells whether the env's backend is containerd.
func (e *env) isContainerd() bool { return strings.HasSuffix(e.name, "/containerd") }

func storeCaseImportAndImages(t *testing.T, e *env, c *Client) {
	ctx := testContext(t)
	const name = "example.com/imported:1"
	_, archive := sampleImages(t)

	// Either store lists the sample model as the artifact it is, and images as none.
	listed, err := c.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range listed {
		want := ""
		if i.Name == sampleModel {
			want = "application/vnd.cncf.model.manifest.v1+json"
		}
		if i.ArtifactType != want {
			t.Errorf("Images lists %s with artifact type %q, want %q", i.Name, i.ArtifactType, want)
		}
	}
	if !slices.ContainsFunc(listed, func(i Image) bool { return i.Name == sampleModel }) {
		t.Errorf("Images does not list %s: %+v", sampleModel, listed)
	}

	imported, err := c.Import(ctx, archive, name)
	if e.isContainerd() {
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "ctr images import") {
			t.Fatalf("Import with containerd: %v, want FailedPrecondition naming ctr", err)
		}
		images, err := c.Images(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(images, func(i Image) bool { return i.Name == sampleImage }) {
			t.Errorf("Images does not list containerd's %s: %+v", sampleImage, images)
		}
		if _, err := c.RemoveImage(ctx, sampleImage); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("RemoveImage with containerd: %v, want FailedPrecondition", err)
		}
		if _, err := c.GC(ctx); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("GC with containerd: %v, want FailedPrecondition", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	if len(imported) != 1 || imported[0].Name != name || !strings.HasPrefix(imported[0].Digest, "sha256:") ||
		imported[0].MediaType == "" || imported[0].Size == 0 {
		t.Fatalf("Import returned %+v", imported)
	}
	images, err := c.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(images, func(i Image) bool { return i.Name == name })
	if i < 0 || images[i] != imported[0] {
		t.Fatalf("Images: %+v, want %+v among them", images, imported[0])
	}
	if !slices.IsSortedFunc(images, func(a, b Image) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("Images not sorted by name: %+v", images)
	}

	// The daemon that imported it mounts it.
	sb := e.sandbox(t, "a")
	m := imageMount(name)
	e.mustMutate(t, mounts(m), sb)
	e.checkVolume(t, sb, m.HostPath, "")

	removed, err := c.RemoveImage(ctx, name)
	if err != nil || removed != imported[0] {
		t.Fatalf("RemoveImage: %+v, %v; want %+v", removed, err, imported[0])
	}
	if _, err := c.RemoveImage(ctx, name); !errdefs.IsNotFound(err) {
		t.Errorf("RemoveImage again: %v, want NotFound", err)
	}
	// Removed, but its volume stays mounted under the sandbox's lease.
	e.checkVolume(t, sb, m.HostPath, "")
	if _, err := c.GC(ctx); err != nil {
		t.Errorf("GC: %v", err)
	}
	e.checkVolume(t, sb, m.HostPath, "")
}

// A relative path is refused before anything is read, whatever the backend.
func storeCaseRelativePath(t *testing.T, e *env, c *Client) {
	if _, err := c.Import(testContext(t), "sample.tar", ""); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "not absolute") {
		t.Fatalf("Import of a relative path: %v, want InvalidArgument", err)
	}
}

// A connection the client keeps between calls is closed by the daemon (its idle timeout):
// the next call goes on a new connection instead of failing, since its request never left.
func TestClientKeptConnectionClosedByDaemon(t *testing.T) {
	requireRoot(t)
	dir := tempDir(t)
	socket, _ := startDaemon(t, dir, "--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"), "serve", "--idle-timeout", "1")
	c := dial(t, socket)
	ctx := testContext(t)
	if _, err := c.Status(ctx); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	kept := slices.Clone(c.idle)
	c.mu.Unlock()
	if len(kept) != 1 {
		t.Fatalf("%d connections kept after one call, want 1", len(kept))
	}
	// Wait until the daemon has closed it: a read then sees the end of the stream.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_ = kept[0].SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := kept[0].Read(make([]byte, 1)); errors.Is(err, io.EOF) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon did not close the idle connection within 20s")
		}
	}
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("after the daemon closed the kept connection: %v", err)
	}
}

// More calls at once than the daemon serves connections: the connections it refuses are
// not the callers' failures; those calls wait for one of the client's own connections.
// The daemon is stopped (SIGSTOP) while the calls dial, so that they all wait at once.
func TestClientCallsBeyondTheDaemonsConnections(t *testing.T) {
	dir, socket := startSampleDaemon(t, "--max-connections", "2")
	c := dial(t, socket)
	ctx := testContext(t)
	resume := pauseDaemon(t, c)
	const calls = 12
	errs := make(chan error, calls)
	for i := range calls {
		go func() {
			errs <- c.MutateMounts(ctx, mounts(imageMount(sampleImage)), "", fmt.Sprintf("sb%d", i), imagespec.Platform{})
		}()
	}
	// Every call has a connection (the kept one, or one dialled into the listen backlog)
	// before the daemon runs again.
	waitFor(t, "every call to have a connection", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.busy) == min(calls, maxConnections)
	})
	resume()
	for range calls {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for i := range calls {
		if err := c.CleanupImageMounts(ctx, fmt.Sprintf("sb%d", i), ""); err != nil {
			t.Error(err)
		}
	}
	log, err := os.ReadFile(filepath.Join(dir, "imv.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "refused a connection") {
		t.Errorf("the daemon refused no connection: the test did not test what it says\n%s", log)
	}
}

// A caller gives up while the daemon has its request: it gets its context's error, the
// connection (whose answer comes later) is dropped, and the next calls are answered
// right. The daemon is stopped (SIGSTOP) meanwhile, so the call cannot be answered first.
func TestClientGivesUpWhileTheDaemonWorks(t *testing.T) {
	_, socket := startSampleDaemon(t)
	c := dial(t, socket)
	ctx := testContext(t)
	resume := pauseDaemon(t, c)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	err := c.MutateMounts(short, mounts(imageMount(sampleImage)), "", "sb", imagespec.Platform{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("daemon stopped: got %v, want context.DeadlineExceeded", err)
	}
	resume()
	// The mutate was sent before the caller gave up: the daemon runs it (work that has
	// started runs to its end), and the next calls see its volume, not its answer.
	waitFor(t, "the abandoned mutate to be done", func() bool {
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.GetMounted() == 1
	})
	m := imageMount(sampleImage)
	if err := c.MutateMounts(ctx, mounts(m), "", "sb", imagespec.Platform{}); err != nil {
		t.Fatal(err)
	}
	if m.GetHostPath() == "" {
		t.Fatal("no host path")
	}
	if err := c.CleanupImageMounts(ctx, "sb", ""); err != nil {
		t.Fatal(err)
	}
}

// pauseDaemon stops the daemon c is connected to (SIGSTOP; its pid from a kept
// connection's peer credentials) until the returned function (also run at cleanup)
// resumes it.
func pauseDaemon(t *testing.T, c *Client) (resume func()) {
	t.Helper()
	c.mu.Lock()
	if len(c.idle) == 0 {
		c.mu.Unlock()
		t.Fatal("no kept connection to find the daemon by")
	}
	raw, err := c.idle[0].Conn.(*net.UnixConn).SyscallConn()
	c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	var cred *unix.Ucred
	if err := raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cred == nil {
		t.Fatalf("the daemon's credentials: %v", err)
	}
	if err := syscall.Kill(int(cred.Pid), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	resume = func() { once.Do(func() { _ = syscall.Kill(int(cred.Pid), syscall.SIGCONT) }) }
	t.Cleanup(resume)
	return resume
}

// waitFor polls cond until it holds; the test fails after 20 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 20s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
