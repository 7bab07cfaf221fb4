package imv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The behaviours every implementation over every backend must have. Each case gets the
// env's ImageVolumes and names its own sandboxes (released at the end, whatever happens).
var cases = []struct {
	name string
	run  func(t *testing.T, e *env)
}{
	{"MountsReadOnly", caseMountsReadOnly},
	{"UserNamespace", caseUserNamespace},
	{"MountLabel", caseMountLabel},
	{"LeavesOtherMounts", caseLeavesOtherMounts},
	{"Reuse", caseReuse},
	{"SubPath", caseSubPath},
	{"SubPathMissing", caseSubPathMissing},
	{"SubPathEscape", caseSubPathEscape},
	{"ReadWriteRejected", caseReadWriteRejected},
	{"HostPathPresetRejected", caseHostPathPresetRejected},
	{"UnknownImage", caseUnknownImage},
	{"AllOrNothing", caseAllOrNothing},
	{"BadSandboxID", caseBadSandboxID},
	{"Platform", casePlatform},
	{"CleanupIdempotent", caseCleanupIdempotent},
	{"Release", caseRelease},
	{"Canceled", caseCanceled},
	{"Concurrent", caseConcurrent},
	{"Artifact", caseArtifact},
	{"ImageRef", caseImageRef},
	{"MountOptions", caseMountOptions},
}

// TestImageVolumes runs every case on every implementation and backend.
func TestImageVolumes(t *testing.T) {
	for _, f := range factories {
		t.Run(f.name, func(t *testing.T) {
			e := f.setup(t)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) { c.run(t, e) })
			}
		})
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// sandbox returns a sandbox ID for this test, released when the test ends.
func (e *env) sandbox(t *testing.T, name string) string {
	t.Helper()
	id := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	id = id[strings.LastIndex(id, "-")+1:] + "-" + name
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.iv.Release(ctx, id); err != nil {
			t.Errorf("release %s: %v", id, err)
		}
	})
	return id
}

func imageMount(ref string) *runtime.Mount {
	return &runtime.Mount{ContainerPath: "/v", Readonly: true, Image: &runtime.ImageSpec{Image: ref}}
}

func mounts(ms ...*runtime.Mount) []*runtime.Mount { return ms }

// volumeDir is where sandbox's volumes live.
func (e *env) volumeDir(sandbox string) string {
	return filepath.Join(e.state, "image-volumes", sandbox)
}

// checkVolume checks that hostPath is a volume of sandbox: its root (hostPath minus
// subPath) is a mountpoint in the sandbox's directory, and what is under it is readable
// and read-only. It returns the volume root.
func (e *env) checkVolume(t *testing.T, sandbox, hostPath, subPath string) string {
	t.Helper()
	root := hostPath
	if subPath != "" {
		root = strings.TrimSuffix(hostPath, "/"+subPath)
		if root == hostPath {
			t.Fatalf("host path %s does not end with the sub path %s", hostPath, subPath)
		}
	}
	if filepath.Dir(root) != e.volumeDir(sandbox) {
		t.Fatalf("volume %s is not in %s", root, e.volumeDir(sandbox))
	}
	if !mountPoints(t)[root] {
		t.Fatalf("volume %s is not a mountpoint", root)
	}
	data := filepath.Join(root, "data")
	if got, err := os.ReadFile(filepath.Join(data, "hello.txt")); err != nil || string(got) != sampleHello {
		t.Errorf("read data/hello.txt: %q, %v", got, err)
	}
	err := os.WriteFile(filepath.Join(data, "written.txt"), []byte("x"), 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("writing into the volume: %v, want EROFS", err)
	}
	return root
}

func (e *env) mustMutate(t *testing.T, ms []*runtime.Mount, sandbox string) {
	t.Helper()
	if err := e.iv.MutateMounts(testContext(t), ms, "", sandbox, imagespec.Platform{}); err != nil {
		t.Fatalf("MutateMounts: %v", err)
	}
}

// expectRefused checks that mutating ms fails as is says, sets no host path, and leaves
// no volume behind.
func (e *env) expectRefused(t *testing.T, ms []*runtime.Mount, sandbox string, platform imagespec.Platform, is func(error) bool, want string) {
	t.Helper()
	before := make([]*runtime.Mount, len(ms))
	for i, m := range ms {
		before[i] = proto.Clone(m).(*runtime.Mount)
	}
	err := e.iv.MutateMounts(testContext(t), ms, "", sandbox, platform)
	if !is(err) {
		t.Fatalf("MutateMounts: %v, want %s", err, want)
	}
	t.Logf("%s: %v", want, err)
	if err.Error() == "" {
		t.Error("empty error message")
	}
	for i := range ms {
		if !proto.Equal(before[i], ms[i]) {
			t.Errorf("mounts[%d] changed on failure: %v", i, ms[i])
		}
	}
	if len(mountsUnder(t, e.volumeDir(sandbox))) != 0 {
		t.Errorf("volumes left mounted after a refused mutate: %v", mountsUnder(t, e.volumeDir(sandbox)))
	}
}

func caseMountsReadOnly(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	m := imageMount(sampleImage)
	e.mustMutate(t, mounts(m), sb)
	root := e.checkVolume(t, sb, m.HostPath, "")

	vols, err := e.iv.Volumes(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(vols, func(v Volume) bool { return v.Target == root })
	if i < 0 {
		t.Fatalf("Volumes does not list %s: %+v", root, vols)
	}
	if v := vols[i]; v.SandboxID != sb || !v.Mounted || !strings.HasPrefix(v.ImageDigest, "sha256:") || filepath.Base(root) != strings.TrimPrefix(v.ImageDigest, "sha256:") {
		t.Errorf("volume listed as %+v", v)
	}
}

// caseUserNamespace: a pod with hostUsers: false. The kubelet sends the pod's mappings
// with the mount; the volume shows the image's root-owned files as owned by the pod's
// host IDs, and the mappings come back off the mount (the runtime must not map again).
//
// The snapshotter is asked for the mapping with containerd's remap labels: the embedded
// store honours them; the tests' containerd (Debian's 1.6) has no snapshotter declaring
// remap-ids, so there the volume is refused, clearly and leaving nothing.
func caseUserNamespace(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	m := imageMount(sampleImage)
	mapping := []*runtime.IDMapping{{HostId: 100000, ContainerId: 0, Length: 65536}}
	m.UidMappings, m.GidMappings = mapping, mapping
	if e.leases != nil {
		err := e.iv.MutateMounts(testContext(t), mounts(m), "", sb, imagespec.Platform{})
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "remap-ids") {
			t.Errorf("mappings on containerd 1.6's overlayfs: %v, want FailedPrecondition naming remap-ids", err)
		}
		if m.HostPath != "" || len(m.UidMappings) != 1 {
			t.Errorf("the mount changed on failure: %v", m)
		}
		if _, err := os.Stat(e.volumeDir(sb)); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", e.volumeDir(sb), err)
		}
		return
	}
	e.mustMutate(t, mounts(m), sb)
	root := e.checkVolume(t, sb, m.HostPath, "")
	if len(m.UidMappings) != 0 || len(m.GidMappings) != 0 {
		t.Errorf("mappings left on the mount: uid %v, gid %v", m.UidMappings, m.GidMappings)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(root, "data", "hello.txt"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 100000 || st.Gid != 100000 {
		t.Errorf("data/hello.txt is owned by %d:%d, want 100000:100000", st.Uid, st.Gid)
	}
	// A mapping the kernel would refuse is refused up front, naming it.
	bad := imageMount(sampleImage)
	bad.UidMappings = []*runtime.IDMapping{{HostId: 100000, ContainerId: 0, Length: 0}}
	bad.GidMappings = mapping
	err := e.iv.MutateMounts(testContext(t), mounts(bad), "", e.sandbox(t, "b"), imagespec.Platform{})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "empty range") {
		t.Errorf("an empty mapping range: %v, want InvalidArgument naming it", err)
	}
}

// caseMountLabel: an SELinux mount label goes through MutateMountsWith. These machines
// have no SELinux: the label is refused, naming it, or ignored when asked.
func caseMountLabel(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	label := "system_u:object_r:container_file_t:s0:c1,c2"
	m := imageMount(sampleImage)
	err := e.iv.MutateMountsWith(testContext(t), mounts(m), "", sb, imagespec.Platform{}, MutateOptions{MountLabel: label})
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), label) {
		t.Errorf("a label without SELinux: %v, want FailedPrecondition naming it", err)
	}
	if m.HostPath != "" {
		t.Errorf("host path set on failure: %s", m.HostPath)
	}
	err = e.iv.MutateMountsWith(testContext(t), mounts(m), "", sb, imagespec.Platform{}, MutateOptions{MountLabel: "bad label", IgnoreLabelWithoutSELinux: true})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("a malformed label: %v, want InvalidArgument", err)
	}
	opts := MutateOptions{MountLabel: label, IgnoreLabelWithoutSELinux: true}
	if err := e.iv.MutateMountsWith(testContext(t), mounts(m), "", sb, imagespec.Platform{}, opts); err != nil {
		t.Fatalf("a label ignored without SELinux: %v", err)
	}
	e.checkVolume(t, sb, m.HostPath, "")
}

func caseLeavesOtherMounts(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	host := &runtime.Mount{ContainerPath: "/etc/hosts", HostPath: "/var/lib/pod/hosts", Readonly: false,
		Propagation: runtime.MountPropagation_PROPAGATION_BIDIRECTIONAL}
	empty := &runtime.Mount{ContainerPath: "/scratch"}
	before := []*runtime.Mount{proto.Clone(host).(*runtime.Mount), proto.Clone(empty).(*runtime.Mount)}
	img := imageMount(sampleImage)
	ms := mounts(host, img, nil, empty)
	e.mustMutate(t, ms, sb)
	if !proto.Equal(host, before[0]) || !proto.Equal(empty, before[1]) || ms[2] != nil {
		t.Errorf("non-image mounts changed: %v, %v, %v", host, ms[2], empty)
	}
	e.checkVolume(t, sb, img.HostPath, "")

	// Only non-image mounts: nothing to do, nothing checked (not even the sandbox ID).
	only := mounts(proto.Clone(host).(*runtime.Mount))
	if err := e.iv.MutateMounts(testContext(t), only, "", "", imagespec.Platform{}); err != nil {
		t.Errorf("no image mounts: %v", err)
	}
}

func caseReuse(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	first, second := imageMount(sampleImage), imageMount(sampleImage)
	second.ContainerPath = "/w"
	e.mustMutate(t, mounts(first, second), sb)
	if first.HostPath != second.HostPath {
		t.Errorf("one call, one image, two volumes: %s, %s", first.HostPath, second.HostPath)
	}
	// A second container of the pod.
	again := imageMount(sampleImage)
	e.mustMutate(t, mounts(again), sb)
	if again.HostPath != first.HostPath {
		t.Errorf("not reused: %s, then %s", first.HostPath, again.HostPath)
	}
	e.checkVolume(t, sb, again.HostPath, "")
	if n := len(mountsUnder(t, e.volumeDir(sb))); n != 1 {
		t.Errorf("%d mounts for one image in one sandbox", n)
	}
	// Another sandbox gets its own volume.
	other := e.sandbox(t, "b")
	m := imageMount(sampleImage)
	e.mustMutate(t, mounts(m), other)
	if m.HostPath == first.HostPath {
		t.Error("two sandboxes share a volume")
	}
}

func caseSubPath(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	whole, sub := imageMount(sampleImage), imageMount(sampleImage)
	sub.ImageSubPath = "data/opaque"
	e.mustMutate(t, mounts(whole, sub), sb)
	root := e.checkVolume(t, sb, sub.HostPath, "data/opaque")
	if root != whole.HostPath {
		t.Errorf("sub path %s is not inside the volume %s", sub.HostPath, whole.HostPath)
	}
	// The opaque directory shows only the top layer's file.
	entries, err := os.ReadDir(sub.HostPath)
	if err != nil || len(entries) != 1 || entries[0].Name() != "new.txt" {
		t.Errorf("data/opaque holds %v (%v), want only new.txt", entries, err)
	}
}

func caseSubPathMissing(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	m := imageMount(sampleImage)
	m.ImageSubPath = "data/no-such-dir"
	e.expectRefused(t, mounts(m), sb, imagespec.Platform{}, errdefs.IsNotFound, "NotFound")
}

func caseSubPathEscape(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	for _, p := range []string{"../../../etc", "/etc", "data/../../x"} {
		m := imageMount(sampleImage)
		m.ImageSubPath = p
		e.expectRefused(t, mounts(m), sb, imagespec.Platform{}, errdefs.IsInvalidArgument, "InvalidArgument for "+p)
	}
}

func caseReadWriteRejected(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	ok, rw := imageMount(sampleImage), imageMount(sampleImage)
	rw.Readonly = false
	e.expectRefused(t, mounts(ok, rw), sb, imagespec.Platform{}, errdefs.IsInvalidArgument, "InvalidArgument")
}

func caseHostPathPresetRejected(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	m := imageMount(sampleImage)
	m.HostPath = "/somewhere"
	e.expectRefused(t, mounts(m), sb, imagespec.Platform{}, errdefs.IsInvalidArgument, "InvalidArgument")
}

func caseUnknownImage(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	e.expectRefused(t, mounts(imageMount(unknownImage)), sb, imagespec.Platform{}, errdefs.IsNotFound, "NotFound")
}

// A call whose second mount fails leaves nothing of the first.
func caseAllOrNothing(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	good, bad := imageMount(sampleImage), imageMount(sampleImage)
	bad.ImageSubPath = "data/missing"
	e.expectRefused(t, mounts(good, bad), sb, imagespec.Platform{}, errdefs.IsNotFound, "NotFound")
	// Earlier volumes stay when a later call fails.
	e.mustMutate(t, mounts(good), sb)
	bad2 := imageMount(unknownImage)
	if err := e.iv.MutateMounts(testContext(t), mounts(bad2), "", sb, imagespec.Platform{}); !errdefs.IsNotFound(err) {
		t.Fatalf("got %v, want NotFound", err)
	}
	e.checkVolume(t, sb, good.HostPath, "")
}

func caseBadSandboxID(t *testing.T, e *env) {
	for _, id := range []string{"", "..", "../x", "a/b", "a\x00b", strings.Repeat("a", 77), "a..b"} {
		m := imageMount(sampleImage)
		err := e.iv.MutateMounts(testContext(t), mounts(m), "", id, imagespec.Platform{})
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("sandbox %q: %v, want InvalidArgument", id, err)
		}
		if m.HostPath != "" {
			t.Errorf("sandbox %q: host path set: %s", id, m.HostPath)
		}
		if err := e.iv.CleanupImageMounts(testContext(t), id, ""); !errdefs.IsInvalidArgument(err) {
			t.Errorf("cleanup of sandbox %q: %v, want InvalidArgument", id, err)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(e.state, "image-volumes")); len(entries) != 0 {
		for _, en := range entries {
			if strings.Contains(en.Name(), "..") || en.Name() == "a" {
				t.Errorf("a bad sandbox ID made %s", en.Name())
			}
		}
	}
}

func casePlatform(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	m := imageMount(sampleImage)
	host := imagespec.Platform{OS: "linux", Architecture: goruntime.GOARCH}
	if err := e.iv.MutateMounts(testContext(t), mounts(m), "", sb, host); err != nil {
		t.Fatalf("host platform %+v: %v", host, err)
	}
	e.checkVolume(t, sb, m.HostPath, "")

	other := imagespec.Platform{OS: "linux", Architecture: "s390x"}
	if goruntime.GOARCH == "s390x" {
		other.Architecture = "riscv64"
	}
	e.expectRefused(t, mounts(imageMount(sampleImage)), e.sandbox(t, "b"), other, errdefs.IsNotFound, "NotFound for "+other.Architecture)
	e.expectRefused(t, mounts(imageMount(sampleImage)), e.sandbox(t, "c"), imagespec.Platform{OS: "linux"}, errdefs.IsInvalidArgument, "InvalidArgument for a platform without architecture")
}

func caseCleanupIdempotent(t *testing.T, e *env) {
	ctx := testContext(t)
	sb := e.sandbox(t, "a")
	whole, sub := imageMount(sampleImage), imageMount(sampleImage)
	sub.ImageSubPath = "data"
	e.mustMutate(t, mounts(whole, sub), sb)
	for i := 0; i < 2; i++ {
		if err := e.iv.CleanupImageMounts(ctx, sb, ""); err != nil {
			t.Fatalf("cleanup %d: %v", i+1, err)
		}
		if ms := mountsUnder(t, e.volumeDir(sb)); len(ms) != 0 {
			t.Fatalf("still mounted after cleanup: %v", ms)
		}
		if _, err := os.Stat(e.volumeDir(sb)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the sandbox's directory is still there: %v", err)
		}
	}
	if err := e.iv.CleanupImageMounts(ctx, e.sandbox(t, "never-used"), ""); err != nil {
		t.Errorf("cleanup of a sandbox with no volumes: %v", err)
	}
	vols, err := e.iv.Volumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if v.SandboxID == sb {
			t.Errorf("listed after cleanup: %+v", v)
		}
	}
	// The sandbox can have volumes again.
	again := imageMount(sampleImage)
	e.mustMutate(t, mounts(again), sb)
	e.checkVolume(t, sb, again.HostPath, "")
}

func caseRelease(t *testing.T, e *env) {
	ctx := testContext(t)
	sb := e.sandbox(t, "a")
	m := imageMount(sampleImage)
	e.mustMutate(t, mounts(m), sb)
	if e.leases != nil && !slices.Contains(e.leases(t), sb) {
		t.Errorf("no lease %s in containerd: %v", sb, e.leases(t))
	}
	for i := 0; i < 2; i++ {
		if err := e.iv.Release(ctx, sb); err != nil {
			t.Fatalf("release %d: %v", i+1, err)
		}
		if ms := mountsUnder(t, e.volumeDir(sb)); len(ms) != 0 {
			t.Fatalf("still mounted after release: %v", ms)
		}
	}
	if e.leases != nil && slices.Contains(e.leases(t), sb) {
		t.Errorf("lease %s still in containerd after release", sb)
	}
	if err := e.iv.Release(ctx, "../x"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("release of a bad sandbox ID: %v, want InvalidArgument", err)
	}
}

// A context canceled before the call: nothing is done.
func caseCanceled(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := imageMount(sampleImage)
	if err := e.iv.MutateMounts(ctx, mounts(m), "", sb, imagespec.Platform{}); !errors.Is(err, context.Canceled) || !errdefs.IsCanceled(err) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if m.HostPath != "" {
		t.Errorf("host path set: %s", m.HostPath)
	}
	if _, err := os.Stat(e.volumeDir(sb)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a canceled call made %s: %v", e.volumeDir(sb), err)
	}
	if err := e.iv.CleanupImageMounts(ctx, sb, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("cleanup: %v, want context.Canceled", err)
	}
	if _, err := e.iv.Volumes(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("volumes: %v, want context.Canceled", err)
	}
}

// 64 goroutines at once: each mounts the image in a sandbox of its own and in one they all
// share, then they release their sandboxes (and the shared one) at once.
func caseConcurrent(t *testing.T, e *env) {
	const n = 64
	ctx := testContext(t)
	shared := e.sandbox(t, "shared")
	own := make([]string, n)
	for i := range own {
		own[i] = e.sandbox(t, fmt.Sprint(i))
	}
	ownPaths, sharedPaths := make([]string, n), make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			a, b := imageMount(sampleImage), imageMount(sampleImage)
			// Half take the shared sandbox first, so both orders race.
			order := []struct {
				m  *runtime.Mount
				sb string
			}{{a, own[i]}, {b, shared}}
			if i%2 == 1 {
				order[0], order[1] = order[1], order[0]
			}
			for _, o := range order {
				if err := e.iv.MutateMounts(ctx, mounts(o.m), "", o.sb, imagespec.Platform{}); err != nil {
					errs <- fmt.Errorf("goroutine %d, sandbox %s: %w", i, o.sb, err)
					return
				}
			}
			ownPaths[i], sharedPaths[i] = a.HostPath, b.HostPath
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for i := 0; i < n; i++ {
		if sharedPaths[i] != sharedPaths[0] {
			t.Errorf("the shared sandbox got two volumes: %s, %s", sharedPaths[0], sharedPaths[i])
		}
	}
	e.checkVolume(t, shared, sharedPaths[0], "")
	points := mountPoints(t)
	for i, p := range ownPaths {
		if !points[p] || filepath.Dir(p) != e.volumeDir(own[i]) {
			t.Errorf("goroutine %d: %s is not a mounted volume of %s", i, p, own[i])
		}
	}

	errs = make(chan error, 2*n)
	start = make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := e.iv.Release(ctx, own[i]); err != nil {
				errs <- fmt.Errorf("release %s: %w", own[i], err)
			}
			if i%8 == 0 {
				if err := e.iv.CleanupImageMounts(ctx, shared, ""); err != nil {
					errs <- fmt.Errorf("cleanup %s: %w", shared, err)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if ms := mountsUnder(t, filepath.Join(e.state, "image-volumes")); len(ms) != 0 {
		t.Errorf("still mounted after the releases: %d, e.g. %s", len(ms), ms[0])
	}
}

// caseArtifact: an OCI artifact (a ModelPack model) mounts as an image does, read-only:
// its raw layers are files (the stored blobs, so several links to one inode), its tar
// layer is extracted, a sub path resolves inside it, and the pod's next container reuses
// the volume.
func caseArtifact(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	m := imageMount(sampleModel)
	e.mustMutate(t, mounts(m), sb)
	root := m.HostPath
	if !strings.HasPrefix(root, e.volumeDir(sb)+"/") {
		t.Fatalf("host path %s is not under %s", root, e.volumeDir(sb))
	}
	var st syscall.Stat_t
	weights := filepath.Join(root, "model.safetensors")
	if err := syscall.Stat(weights, &st); err != nil || st.Size != 65536 || st.Mode&0o7777 != 0o444 || st.Nlink < 2 {
		t.Errorf("%s: %v, size %d, mode %o, %d links", weights, err, st.Size, st.Mode&0o7777, st.Nlink)
	}
	if b, err := os.ReadFile(filepath.Join(root, "docs", "README.md")); err != nil || string(b) != "# imv test model\n" {
		t.Errorf("docs/README.md: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(root, "new"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write into the volume: %v, want EROFS", err)
	}
	again := imageMount(sampleModel)
	e.mustMutate(t, mounts(again), sb)
	if again.HostPath != root {
		t.Errorf("the next container got %s, not %s", again.HostPath, root)
	}
	sub := imageMount(sampleModel)
	sub.ImageSubPath = "docs"
	e.mustMutate(t, mounts(sub), sb)
	if sub.HostPath != filepath.Join(root, "docs") {
		t.Errorf("sub path docs: %s", sub.HostPath)
	}
}

// caseImageRef (KEP-5365): every image mount comes back with the ID of the image it shows
// in Image.ImageRef, whatever the caller put there: an image's config digest (read here
// from the OCI layout mkimage wrote), an artifact's manifest digest (artifacts share one
// empty config); the same when the image is named by that ID, as the kubelet names it.
func caseImageRef(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	layout, _ := sampleImages(t)
	model, _ := modelImages(t)
	imageID, _ := layoutDigests(t, layout)
	_, modelManifest := layoutDigests(t, model)

	img, art := imageMount(sampleImage), imageMount(sampleModel)
	art.ContainerPath = "/models"
	img.Image.ImageRef = "what the caller said"
	e.mustMutate(t, mounts(img, art), sb)
	if got := img.GetImage().GetImageRef(); got != imageID {
		t.Errorf("image: ImageRef %q, want its config digest %s", got, imageID)
	}
	if got := art.GetImage().GetImageRef(); got != modelManifest {
		t.Errorf("artifact: ImageRef %q, want its manifest digest %s", got, modelManifest)
	}
	// By ID, twice (resolved, then remembered by the engine): the same volume and ID.
	for round := range 2 {
		byID := imageMount(imageID)
		e.mustMutate(t, mounts(byID), sb)
		if byID.HostPath != img.HostPath || byID.GetImage().GetImageRef() != imageID {
			t.Errorf("round %d by ID: %s with ImageRef %q, want %s with %s", round, byID.HostPath, byID.GetImage().GetImageRef(), img.HostPath, imageID)
		}
	}
}

// caseMountOptions (KEP-5855): Mount.mount_options are the runtime's to apply; imv mounts
// the volume as always and hands them back untouched, on image mounts and others.
func caseMountOptions(t *testing.T, e *env) {
	sb := e.sandbox(t, "a")
	img := imageMount(sampleImage)
	img.MountOptions = []string{"noexec", "nosuid", "x-custom=1"}
	plain := &runtime.Mount{ContainerPath: "/etc/hosts", HostPath: "/var/lib/pod/hosts", MountOptions: []string{"ro"}}
	e.mustMutate(t, mounts(img, plain), sb)
	e.checkVolume(t, sb, img.HostPath, "")
	if !slices.Equal(img.MountOptions, []string{"noexec", "nosuid", "x-custom=1"}) {
		t.Errorf("image mount's options changed: %q", img.MountOptions)
	}
	if !slices.Equal(plain.MountOptions, []string{"ro"}) {
		t.Errorf("plain mount's options changed: %q", plain.MountOptions)
	}
}

// layoutDigests reads the image an OCI layout holds (its first manifest): its config's
// digest and its manifest's.
func layoutDigests(t *testing.T, layout string) (config, manifest string) {
	t.Helper()
	var index imagespec.Index
	readJSON(t, filepath.Join(layout, "index.json"), &index)
	if len(index.Manifests) == 0 {
		t.Fatalf("%s: no manifests", layout)
	}
	manifest = index.Manifests[0].Digest.String()
	var m imagespec.Manifest
	readJSON(t, filepath.Join(layout, "blobs", "sha256", index.Manifests[0].Digest.Encoded()), &m)
	return m.Config.Digest.String(), manifest
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
