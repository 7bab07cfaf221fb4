//go:build cgo

package imv

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
)

func init() {
	factories = append(factories,
		envFactory{"cgo/local", setupCgoLocal},
		envFactory{"cgo/containerd", setupCgoContainerd},
	)
}

func openLibrary(t *testing.T, opts Options) *Library {
	t.Helper()
	l, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func setupCgoLocal(t *testing.T) *env {
	requireRoot(t)
	dir := tempDir(t)
	state := filepath.Join(dir, "state")
	l := openLibrary(t, Options{Root: filepath.Join(dir, "root"), State: state})
	layout, _ := sampleImages(t)
	if err := l.Import(context.Background(), layout, sampleImage); err != nil {
		t.Fatal(err)
	}
	model, _ := modelImages(t)
	if err := l.Import(context.Background(), model, ""); err != nil {
		t.Fatal(err)
	}
	return &env{name: "cgo/local", iv: l, state: state}
}

func setupCgoContainerd(t *testing.T) *env {
	requireRoot(t)
	dir := tempDir(t)
	state := filepath.Join(dir, "state")
	const ns = "imv-go-cgo"
	address, leases := containerdNamespace(t, ns)
	l := openLibrary(t, Options{Backend: BackendContainerd, ContainerdAddress: address, ContainerdNamespace: ns, State: state})
	return &env{name: "cgo/containerd", iv: l, state: state, leases: leases}
}

func TestLibraryVersion(t *testing.T) {
	if Version() == "" {
		t.Error("empty version")
	}
	if err := checkABI(); err != nil {
		t.Error(err)
	}
}

// In-process, a containerd that is not there is Unavailable, and says which socket.
func TestLibraryContainerdDown(t *testing.T) {
	requireRoot(t)
	dir := tempDir(t)
	l := openLibrary(t, Options{Backend: BackendContainerd, ContainerdAddress: filepath.Join(dir, "no-containerd.sock"), State: filepath.Join(dir, "state")})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := imageMount(sampleImage)
	err := l.MutateMounts(ctx, mounts(m), "", "down", imagespec.Platform{})
	if !errdefs.IsUnavailable(err) {
		t.Fatalf("got %v, want Unavailable", err)
	}
	t.Logf("error: %v", err)
	if m.HostPath != "" {
		t.Errorf("host_path set on failure: %q", m.HostPath)
	}
	if err := l.Release(ctx, "down"); !errdefs.IsUnavailable(err) && err != nil {
		t.Errorf("release: %v", err)
	}
}

// Library-only: Import on the containerd backend is FailedPrecondition.
func TestLibraryImportNeedsLocal(t *testing.T) {
	requireRoot(t)
	dir := tempDir(t)
	l := openLibrary(t, Options{Backend: BackendContainerd, ContainerdAddress: filepath.Join(dir, "none.sock"), State: filepath.Join(dir, "state")})
	layout, _ := sampleImages(t)
	if err := l.Import(context.Background(), layout, "x"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("got %v, want FailedPrecondition", err)
	}
}

// ImportWith names a bare-tagged image by a base name, or picks it by tag with a name; with
// neither, the error says which to use.
func TestLibraryImportWith(t *testing.T) {
	requireRoot(t)
	dir := tempDir(t)
	l := openLibrary(t, Options{Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "state")})
	ctx := context.Background()
	tagged := taggedLayout(t)
	if err := l.ImportWith(ctx, tagged, ImportOptions{}); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "base-name") {
		t.Fatalf("no name: %v, want InvalidArgument naming --base-name", err)
	}
	if err := l.ImportWith(ctx, tagged, ImportOptions{Tag: "v2", Name: "example.com/x:1"}); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "v1") {
		t.Fatalf("unknown tag: %v, want NotFound listing v1", err)
	}
	if err := l.ImportWith(ctx, tagged, ImportOptions{BaseName: "example.com/base"}); err != nil {
		t.Fatal(err)
	}
	if err := l.ImportWith(ctx, tagged, ImportOptions{Tag: "v1", Name: "example.com/picked:2"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"example.com/base:v1", "example.com/picked:2"} {
		ms := mounts(imageMount(name))
		if err := l.MutateMounts(ctx, ms, "", "imp", imagespec.Platform{}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := os.Stat(filepath.Join(ms[0].HostPath, "data/hello.txt")); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := l.Release(ctx, "imp"); err != nil {
		t.Fatal(err)
	}
}

// A closed library refuses calls instead of touching a freed handle.
func TestLibraryClosed(t *testing.T) {
	requireRoot(t)
	dir := tempDir(t)
	l, err := Open(Options{Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal("second close:", err)
	}
	if _, err := l.Volumes(context.Background()); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("got %v, want FailedPrecondition", err)
	}
}

// TestLibrarySetLog: imv's events reach the Go function SetLog was given, from libimv's
// threads, at the level asked and above; LogOff stops them.
func TestLibrarySetLog(t *testing.T) {
	e := setupCgoLocal(t)
	type event struct {
		level           LogLevel
		target, message string
	}
	var mu sync.Mutex
	var got []event
	collect := func(level LogLevel, target, message string) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, event{level, target, message})
	}
	seen := func() []event {
		mu.Lock()
		defer mu.Unlock()
		return append([]event(nil), got...)
	}
	t.Cleanup(func() { _ = SetLog(LogOff, nil) })
	if err := SetLog(LogTrace+1, collect); !errdefs.IsInvalidArgument(err) {
		t.Errorf("SetLog(LogTrace+1): %v, want InvalidArgument", err)
	}
	if err := SetLog(LogInfo, collect); err != nil {
		t.Fatal(err)
	}
	sb := e.sandbox(t, "logged")
	e.mustMutate(t, mounts(imageMount(sampleImage)), sb)
	events := seen()
	i := slices.IndexFunc(events, func(ev event) bool {
		return ev.level == LogInfo && strings.HasPrefix(ev.message, "mounted image volume") && strings.Contains(ev.message, "sandbox="+sb)
	})
	if i < 0 {
		t.Fatalf("no info event for the volume mounted: %+v", events)
	}
	if target := events[i].target; !strings.HasPrefix(target, "imv::") {
		t.Errorf("target %q", target)
	}
	for _, ev := range events {
		if ev.level > LogInfo {
			t.Errorf("an event above the level asked: %+v", ev)
		}
	}
	if err := SetLog(LogOff, collect); err != nil {
		t.Fatal(err)
	}
	n := len(seen())
	e.mustMutate(t, mounts(imageMount(sampleImage)), e.sandbox(t, "quiet"))
	if len(seen()) != n {
		t.Errorf("events after LogOff: %+v", seen()[n:])
	}
}
