package e2e

// The scenarios, run against every mode of the patched containerd (imv in process, imv over
// ttrpc, containerd's own code). Each returns an error for what went wrong; notes record
// what a reader comparing the modes side by side wants to see.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

const busyboxImage = "localhost/imv-e2e/busybox:1"

// scene is what a scenario works with.
type scene struct {
	c     *cluster
	imgs  *testImages
	mode  string
	notes []string
	n     int
}

func (s *scene) note(format string, args ...any) {
	s.notes = append(s.notes, fmt.Sprintf(format, args...))
}

// name makes a pod or container name unique within the cluster.
func (s *scene) name(base string) string {
	s.n++
	return fmt.Sprintf("%s-%d", base, s.n)
}

func (s *scene) imv() bool { return s.mode != modeStock }

// scenario is one case of the suite.
type scenario struct {
	name string
	run  func(s *scene) error
	// stockFails says why stock containerd is expected to fail this case (its outcome is
	// reported, not asserted); empty when stock must pass like imv.
	stockFails string
}

var scenarios = []scenario{
	{name: "one volume, cold: exec reads it, writes fail with EROFS", run: oneVolume},
	{name: "warm: a second pod on the same image", run: warmSecondPod},
	{name: "several volumes in one container; a multi-platform image is named by its index", run: severalVolumes},
	{name: "the kubelet's reference: an image ID, for two containers of a pod", run: byImageID},
	{name: "image_sub_path", run: subPath},
	{name: "bad image_sub_path values are refused with containerd's messages", run: badSubPaths},
	{name: "errors: missing image, read-write mount", run: badMounts},
	{name: "two containers of one pod created at once on a cold image", run: concurrentContainers,
		stockFails: "containerd v2.4.2 prepares one writable snapshot per target for both calls; one fails and its undo unmounts the other's volume"},
	{name: "several pods in parallel on one cold image", run: parallelPods},
	{name: "StopPodSandbox unmounts and removes; RemovePodSandbox drops the lease; GC frees the view", run: stopAndRemove},
	{name: "containerd restarts with a pod running; a new container reuses the volume", run: restart},
	{name: "containerd TestImageVolumeReusableAfterFailure", run: reusableAfterFailure},
	{name: "containerd TestImageVolumeSetupIfContainerdRestarts (target snapshot first)", run: targetSnapshotFirst},
	{name: "containerd TestImageVolumeCheckVolatileOption (mount options)", run: mountOptions},
	{name: "a pod in a user namespace (hostUsers: false): the volume's files are root's inside", run: userNamespace},
	{name: "CRI 1.36/1.37 fields: the image's ID in the status (KEP-5365), mount_options applied (KEP-5855)", run: criFields},
	{name: "config.toml's image_volumes table: in `containerd config dump`; imv's log in containerd's", run: configSection},
	{name: "metrics: containerd's /v1/metrics counts and times the calls by implementation; imv serve's /metrics", run: callMetrics},
	{name: "OCI artifacts pulled from a registry (a ModelPack model, an empty-config artifact): files read, writes fail", run: artifactVolumes,
		stockFails: "containerd v2.4.2 cannot mount an OCI artifact (containerd #11381, #11907): it unpacks a volume against its config's rootfs, which an artifact's config has not (\"mismatched image rootfs and manifest layers\")"},
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// volumeDir is where the CRI plugin mounts image hex for pod p.
func (s *scene) volumeDir(p *pod, digest string) string {
	return filepath.Join(s.c.volumesDir(p.id), strings.TrimPrefix(digest, "sha256:"))
}

// expectRead checks that cat of path in the container prints want.
func (s *scene) expectRead(container, path, want string) error {
	out, err := s.c.exec(container, "/bin/cat", path)
	if err != nil {
		return errorf("reading %s: %v", path, err)
	}
	if !strings.Contains(out, strings.TrimSpace(want)) {
		return errorf("reading %s: got %q, want %q", path, out, want)
	}
	return nil
}

// dataReader runs a new pod with one container, "reader", that has the data image's volume
// at /data; it returns the pod and the container's ID.
func (s *scene) dataReader(base string) (*pod, string, error) {
	p, err := s.c.runPod(s.name(base))
	if err != nil {
		return nil, "", err
	}
	id, err := p.run("reader", volume{Image: s.imgs.Data, ContainerPath: "/data"})
	if err != nil {
		return nil, "", err
	}
	return p, id, nil
}

func oneVolume(s *scene) error {
	p, id, err := s.dataReader("one")
	if err != nil {
		return err
	}
	if err := s.expectRead(id, "/data/hello.txt", "hello from the data image"); err != nil {
		return err
	}
	if err := s.expectRead(id, "/data/layer2.txt", "second layer"); err != nil {
		return err
	}
	out, err := s.c.exec(id, "/bin/touch", "/data/new")
	if err == nil || !strings.Contains(out, "Read-only file system") {
		return errorf("touch /data/new: want EROFS, got %v: %s", err, out)
	}
	// containerd's TestImageVolumeBasic "should be readonly content" removes a file.
	out, err = s.c.exec(id, "/bin/sh", "-c", "rm /data/hello.txt")
	if err == nil || !strings.Contains(out, "Read-only file system") {
		return errorf("rm /data/hello.txt: want EROFS, got %v: %s", err, out)
	}
	paths, err := s.c.hostPaths(id)
	if err != nil {
		return err
	}
	want := s.volumeDir(p, s.imgs.DataManifest)
	if paths["/data"] != want {
		return errorf("host path of /data: got %q, want %q", paths["/data"], want)
	}
	if !isMountpoint(want) {
		return errorf("%s is not a mountpoint", want)
	}
	s.note("host path <state>/image-volumes/<pod>/%s", shortHex(s.imgs.DataManifest))
	return p.remove()
}

func warmSecondPod(s *scene) error {
	for i := 0; i < 2; i++ {
		p, id, err := s.dataReader("warm")
		if err != nil {
			return errorf("pod %d: %v", i, err)
		}
		if err := s.expectRead(id, "/data/hello.txt", "hello from the data image"); err != nil {
			return err
		}
		if err := p.remove(); err != nil {
			return err
		}
	}
	return nil
}

func severalVolumes(s *scene) error {
	p, err := s.c.runPod(s.name("several"))
	if err != nil {
		return err
	}
	id, err := p.run("reader",
		volume{Image: s.imgs.Data, ContainerPath: "/data"},
		volume{Image: s.imgs.Other, ContainerPath: "/other"},
		volume{Image: s.imgs.Multi, ContainerPath: "/multi"},
		volume{Image: s.imgs.Data, ContainerPath: "/data-again"},
	)
	if err != nil {
		return err
	}
	for path, want := range map[string]string{
		"/data/hello.txt":       "hello from the data image",
		"/other/other.txt":      "the other image",
		"/multi/platform.txt":   "host",
		"/data-again/hello.txt": "hello from the data image",
	} {
		if err := s.expectRead(id, path, want); err != nil {
			return err
		}
	}
	paths, err := s.c.hostPaths(id)
	if err != nil {
		return err
	}
	// containerd names a volume by the image's target: the index of a multi-platform image.
	want := s.volumeDir(p, s.imgs.MultiIndex)
	if paths["/multi"] != want {
		got := paths["/multi"]
		if filepath.Base(got) == shortHexFull(s.imgs.MultiManifest) {
			return errorf("multi-platform image mounted at its platform manifest's digest %q, want the index's %q", got, want)
		}
		return errorf("host path of /multi: got %q, want %q", got, want)
	}
	if paths["/data"] != paths["/data-again"] {
		return errorf("one image twice in a container: two volumes %q and %q", paths["/data"], paths["/data-again"])
	}
	entries, err := os.ReadDir(s.c.volumesDir(p.id))
	if err != nil {
		return err
	}
	if len(entries) != 3 {
		return errorf("want 3 volumes for 3 images, found %d", len(entries))
	}
	s.note("multi-platform volume named by the index (%s)", shortHex(s.imgs.MultiIndex))
	return p.remove()
}

// byImageID names the image as the kubelet does (the image ID PullImage returned; the CRI
// plugin keeps a containerd image of that name for each image it knows).
func byImageID(s *scene) error {
	p, err := s.c.runPod(s.name("byid"))
	if err != nil {
		return err
	}
	want := s.volumeDir(p, s.imgs.DataManifest)
	for _, name := range []string{"first", "second"} {
		id, err := p.run(name, volume{Image: s.imgs.DataID, ContainerPath: "/data"})
		if err != nil {
			return err
		}
		if err := s.expectRead(id, "/data/hello.txt", "hello from the data image"); err != nil {
			return err
		}
		paths, err := s.c.hostPaths(id)
		if err != nil {
			return err
		}
		if paths["/data"] != want {
			return errorf("%s: host path of /data: got %q, want %q", name, paths["/data"], want)
		}
	}
	if n := len(mountsUnder(s.c.volumesDir(p.id))); n != 1 {
		return errorf("want one volume mount, found %d", n)
	}
	return p.remove()
}

func subPath(s *scene) error {
	p, err := s.c.runPod(s.name("subpath"))
	if err != nil {
		return err
	}
	id, err := p.run("reader", volume{Image: s.imgs.Data, ContainerPath: "/sub", SubPath: "sub"})
	if err != nil {
		return err
	}
	if err := s.expectRead(id, "/sub/inner.txt", "inner"); err != nil {
		return err
	}
	paths, err := s.c.hostPaths(id)
	if err != nil {
		return err
	}
	if want := filepath.Join(s.volumeDir(p, s.imgs.DataManifest), "sub"); paths["/sub"] != want {
		return errorf("host path of /sub: got %q, want %q", paths["/sub"], want)
	}
	return p.remove()
}

// badSubPaths ports containerd's TestImageVolumeBasic failure cases: each must fail
// CreateContainer with containerd's wording.
func badSubPaths(s *scene) error {
	p, err := s.c.runPod(s.name("badsub"))
	if err != nil {
		return err
	}
	cases := []struct{ sub, want string }{
		{"file.txt", "only directory subpath is supported"},
		{"non-existent-subpath", "no such file or directory"},
		{"/sub", "path escapes from parent"},
		{"sub/../../..", "path escapes from parent"},
		{"escape", "path escapes from parent"},
		{"abs-link", "path escapes from parent"},
	}
	var errs []error
	for _, tc := range cases {
		_, err := p.create(s.name("bad"), volume{Image: s.imgs.Data, ContainerPath: "/x", SubPath: tc.sub})
		switch {
		case err == nil:
			errs = append(errs, errorf("sub path %q: CreateContainer succeeded", tc.sub))
		case !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ImageVolumeMountFailed") ||
			!strings.Contains(err.Error(), "failed to ensure image subpath"):
			errs = append(errs, errorf("sub path %q: error does not say %q (and ImageVolumeMountFailed, failed to ensure image subpath): %v", tc.sub, tc.want, err))
		}
	}
	left := mountsUnder(s.c.volumesDir(p.id))
	s.note("after %d failed creates, %d volume mounts left for the pod", len(cases), len(left))
	if s.imv() && len(left) != 0 {
		errs = append(errs, errorf("failed creates left mounts behind: %v", left))
	}
	if err := p.remove(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func badMounts(s *scene) error {
	p, err := s.c.runPod(s.name("badmount"))
	if err != nil {
		return err
	}
	var errs []error
	_, err = p.create(s.name("missing"), volume{Image: "localhost/imv-e2e/no-such-image:1", ContainerPath: "/x"})
	if err == nil || !strings.Contains(err.Error(), "not found") || !strings.Contains(err.Error(), "ImageVolumeMountFailed") {
		errs = append(errs, errorf("missing image: want ImageVolumeMountFailed ... not found, got %v", err))
	} else {
		s.note("missing image: %s", criMessage(err))
	}
	_, err = p.create(s.name("rw"), volume{Image: s.imgs.Data, ContainerPath: "/x", ReadWrite: true})
	if err == nil || !strings.Contains(err.Error(), "readonly must be true") || !strings.Contains(err.Error(), "ImageVolumeMountFailed") {
		errs = append(errs, errorf("read-write: want ImageVolumeMountFailed ... readonly must be true, got %v", err))
	} else {
		s.note("read-write: %s", criMessage(err))
	}
	if left := mountsUnder(s.c.volumesDir(p.id)); len(left) != 0 {
		errs = append(errs, errorf("failed creates left mounts behind: %v", left))
	}
	if err := p.remove(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// criMessage is the part of a crictl error worth showing: from ImageVolumeMountFailed on.
func criMessage(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "ImageVolumeMountFailed"); i >= 0 {
		msg = msg[i:]
	}
	msg = strings.TrimSpace(strings.SplitN(msg, "\n", 2)[0])
	if len(msg) > 160 {
		msg = msg[:160] + "..."
	}
	return msg
}

func concurrentContainers(s *scene) error {
	p, err := s.c.runPod(s.name("concurrent"))
	if err != nil {
		return err
	}
	img := s.imgs.Cold[0]
	var wg sync.WaitGroup
	ids := make([]string, 2)
	errs := make([]error, 2)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], errs[i] = p.run(fmt.Sprintf("c%d", i), volume{Image: img, ContainerPath: "/data"})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return errorf("creating two containers at once: %v", err)
	}
	for _, id := range ids {
		if err := s.expectRead(id, "/data/cold.txt", "cold 0"); err != nil {
			return errorf("after concurrent creation: %v", err)
		}
	}
	if n := len(mountsUnder(s.c.volumesDir(p.id))); n != 1 {
		return errorf("want the volume mounted once, found %d mounts", n)
	}
	return p.remove()
}

func parallelPods(s *scene) error {
	const n = 4
	img := s.imgs.Cold[1]
	var wg sync.WaitGroup
	errs := make([]error, n)
	pods := make([]*pod, n)
	names := make([]string, n)
	for i := range names {
		names[i] = s.name("parallel")
	}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := s.c.runPod(names[i])
			if err != nil {
				errs[i] = err
				return
			}
			pods[i] = p
			id, err := p.run("reader", volume{Image: img, ContainerPath: "/data"})
			if err != nil {
				errs[i] = err
				return
			}
			errs[i] = s.expectRead(id, "/data/cold.txt", "cold 1")
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, p := range pods {
		if err := p.remove(); err != nil {
			return err
		}
	}
	return nil
}

func stopAndRemove(s *scene) error {
	p, _, err := s.dataReader("stop")
	if err != nil {
		return err
	}
	target := s.volumeDir(p, s.imgs.DataManifest)
	leases, err := s.c.leases()
	if err != nil {
		return err
	}
	if !slices.Contains(leases, p.id) {
		return errorf("no lease %s for the pod while its volume is mounted (leases: %v)", p.id, leases)
	}
	keys, err := s.c.snapshotKeys()
	if err != nil {
		return err
	}
	if !slices.Contains(keys, target) {
		return errorf("no snapshot keyed %s while the volume is mounted", target)
	}
	if err := p.stop(); err != nil {
		return err
	}
	if isMountpoint(target) {
		return errorf("%s still mounted after StopPodSandbox", target)
	}
	if _, err := os.Stat(s.c.volumesDir(p.id)); !os.IsNotExist(err) {
		return errorf("%s still there after StopPodSandbox (%v)", s.c.volumesDir(p.id), err)
	}
	if err := p.remove(); err != nil {
		return err
	}
	if leases, err = s.c.leases(); err != nil {
		return err
	}
	if slices.Contains(leases, p.id) {
		return errorf("lease %s still there after RemovePodSandbox", p.id)
	}
	// containerd collects garbage in the background after a lease goes.
	var stillThere bool
	for i := 0; i < 100; i++ {
		if keys, err = s.c.snapshotKeys(); err != nil {
			return err
		}
		if stillThere = slices.Contains(keys, target); !stillThere {
			break
		}
		sleep(100)
	}
	if stillThere {
		return errorf("snapshot %s still there 10 s after RemovePodSandbox", target)
	}
	return nil
}

func restart(s *scene) error {
	p, err := s.c.runPod(s.name("restart"))
	if err != nil {
		return err
	}
	first, err := p.run("first", volume{Image: s.imgs.Data, ContainerPath: "/data"})
	if err != nil {
		return err
	}
	target := s.volumeDir(p, s.imgs.DataManifest)
	before := mountsUnder(s.c.volumesDir(p.id))
	s.c.stopContainerd()
	if !isMountpoint(target) {
		return errorf("the volume went with containerd: %s not mounted while it is down", target)
	}
	s.c.startContainerd()
	second, err := p.run("second", volume{Image: s.imgs.Data, ContainerPath: "/data"})
	if err != nil {
		return errorf("new container after the restart: %v", err)
	}
	for _, id := range []string{first, second} {
		if err := s.expectRead(id, "/data/hello.txt", "hello from the data image"); err != nil {
			return err
		}
	}
	after := mountsUnder(s.c.volumesDir(p.id))
	if len(before) != 1 || len(after) != 1 {
		return errorf("want one volume mount before and after the restart, found %v then %v", before, after)
	}
	return p.remove()
}

// reusableAfterFailure ports containerd's TestImageVolumeReusableAfterFailure. containerd
// keeps the volume mounted and its snapshot after a failed sub path; imv undoes what the
// failed call made (all or nothing), so there it is gone. Either way the next container
// on the same image must work.
func reusableAfterFailure(s *scene) error {
	p, err := s.c.runPod(s.name("reuse"))
	if err != nil {
		return err
	}
	target := s.volumeDir(p, s.imgs.DataManifest)
	_, err = p.create(s.name("invalid"), volume{Image: s.imgs.Data, ContainerPath: "/x", SubPath: "does-not-exist"})
	if err == nil || !strings.Contains(err.Error(), "does-not-exist") {
		return errorf("a missing sub path: want an error naming it, got %v", err)
	}
	keys, err := s.c.snapshotKeys()
	if err != nil {
		return err
	}
	kept := slices.Contains(keys, target)
	s.note("after the failed sub path: snapshot kept=%v, mounted=%v", kept, isMountpoint(target))
	if s.imv() && (kept || isMountpoint(target)) {
		return errorf("imv left the failed call's volume behind (snapshot %v, mounted %v)", kept, isMountpoint(target))
	}
	if !s.imv() && !kept {
		return errorf("stock containerd is expected to keep the snapshot after a failed sub path")
	}
	id, err := p.run("valid", volume{Image: s.imgs.Data, ContainerPath: "/x", SubPath: "sub"})
	if err != nil {
		return err
	}
	if err := s.expectRead(id, "/x/inner.txt", "inner"); err != nil {
		return err
	}
	return p.remove()
}

// targetSnapshotFirst ports containerd's TestImageVolumeSetupIfContainerdRestarts: a
// snapshot (and then also the directory) already at the volume's key, as a crash between
// preparing and mounting leaves it, must be reused, and mounted only once for two
// containers.
func targetSnapshotFirst(s *scene) error {
	for _, withDir := range []bool{false, true} {
		p, err := s.c.runPod(s.name("prepared"))
		if err != nil {
			return err
		}
		target := s.volumeDir(p, s.imgs.DataManifest)
		// The image must be unpacked for its chain ID to exist as a snapshot: a first
		// volume of it in another pod does that.
		if err := s.unpack(s.imgs.Data); err != nil {
			return err
		}
		if out, err := s.c.ctr("snapshots", "--snapshotter", "overlayfs", "prepare", target, s.imgs.DataChainID); err != nil {
			return errorf("ctr snapshots prepare: %v: %s", err, out)
		}
		if withDir {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		}
		var mounts [][]string
		for i := 0; i < 2; i++ {
			id, err := p.run(fmt.Sprintf("running-%d", i), volume{Image: s.imgs.Data, ContainerPath: "/data"})
			if err != nil {
				return errorf("with the snapshot prepared first (dir too: %v): %v", withDir, err)
			}
			if err := s.expectRead(id, "/data/hello.txt", "hello from the data image"); err != nil {
				return err
			}
			mounts = append(mounts, mountsUnder(s.c.volumesDir(p.id)))
		}
		if len(mounts[0]) != 1 || len(mounts[1]) != 1 {
			return errorf("should not mount twice: %v then %v", mounts[0], mounts[1])
		}
		if err := p.remove(); err != nil {
			return err
		}
	}
	return nil
}

// mountOptions ports containerd's TestImageVolumeCheckVolatileOption. containerd mounts a
// writable snapshot with overlayfs' "volatile" (so unmounting it does not sync); imv
// mounts a read-only view, which has no upper directory to sync, so "volatile" has nothing
// to do there: checked instead is that the volume is read-only, nosuid and nodev.
func mountOptions(s *scene) error {
	p, _, err := s.dataReader("options")
	if err != nil {
		return err
	}
	target := s.volumeDir(p, s.imgs.DataManifest)
	m, ok := mountAt(target)
	fstype, mountOpts, superOpts := m.fstype, m.opts, m.superOpts
	if !ok {
		return errorf("%s is not mounted", target)
	}
	s.note("%s, mount options %s, fs options %s", fstype, mountOpts, elide(superOpts, 60))
	if fstype != "overlay" {
		return errorf("want an overlay, got %s", fstype)
	}
	if s.imv() {
		for _, o := range []string{"ro", "nosuid", "nodev"} {
			if !hasOption(mountOpts, o) {
				return errorf("mount options %q lack %s", mountOpts, o)
			}
		}
		if strings.Contains(superOpts, "upperdir=") {
			return errorf("a read-only view should have no upper dir: %s", superOpts)
		}
	} else if !hasOption(superOpts, "volatile") && !hasOption(superOpts, "fsync=volatile") {
		return errorf("stock containerd should mount with volatile: %s", superOpts)
	}
	return p.remove()
}

func hasOption(opts, o string) bool { return slices.Contains(strings.Split(opts, ","), o) }

func shortHex(digest string) string {
	h := shortHexFull(digest)
	if len(h) > 12 {
		h = h[:12] + "..."
	}
	return h
}

func shortHexFull(digest string) string { return strings.TrimPrefix(digest, "sha256:") }

func elide(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func sleep(ms int) { time.Sleep(time.Duration(ms) * time.Millisecond) }

// unpack makes sure image is unpacked in the overlayfs snapshotter, by making a volume of it
// in a pod of its own, then removing that pod.
func (s *scene) unpack(image string) error {
	p, err := s.c.runPod(s.name("unpack"))
	if err != nil {
		return err
	}
	if _, err := p.create("unpack", volume{Image: image, ContainerPath: "/x"}); err != nil {
		return err
	}
	return p.remove()
}

// userNamespace: a pod with hostUsers: false, its mappings sent with the mount as the
// kubelet sends them. Inside, the image's files are owned by root; on the host, by the
// pod's first host ID. Needs a runc with idmapped mounts (1.2 or later).
func userNamespace(s *scene) error {
	u := &userns{HostID: 100000, Length: 65536}
	p, err := s.c.runPodIn(s.name("userns"), u)
	if err != nil {
		return err
	}
	id, err := p.run("reader", volume{Image: s.imgs.Data, ContainerPath: "/data", Userns: u})
	if err != nil {
		return err
	}
	if err := s.expectRead(id, "/data/hello.txt", "hello from the data image"); err != nil {
		return err
	}
	out, err := s.c.exec(id, "/bin/stat", "-c", "%u:%g", "/data/hello.txt")
	if err != nil || strings.TrimSpace(out) != "0:0" {
		return errorf("owner of /data/hello.txt inside: %v: %q, want 0:0", err, out)
	}
	paths, err := s.c.hostPaths(id)
	if err != nil {
		return err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(paths["/data"], "hello.txt"), &st); err != nil {
		return err
	}
	s.note("owner on the host %d:%d, inside 0:0", st.Uid, st.Gid)
	if st.Uid != 100000 || st.Gid != 100000 {
		return errorf("owner of hello.txt on the host: %d:%d, want 100000:100000", st.Uid, st.Gid)
	}
	// The snapshotter was asked for the mapping with containerd's remap labels (it
	// declares remap-ids here), on the snapshot keyed by the volume's path.
	out, err = s.c.ctr("snapshots", "--snapshotter", "overlayfs", "info", paths["/data"])
	if err != nil {
		return errorf("ctr snapshots info %s: %v: %s", paths["/data"], err, out)
	}
	var info struct{ Labels map[string]string }
	// Whatever comes before the JSON is skipped.
	if err := json.Unmarshal([]byte(out[max(strings.Index(out, "{"), 0):]), &info); err != nil {
		return errorf("ctr snapshots info: %v: %s", err, out)
	}
	for _, l := range []string{"uidmapping", "gidmapping"} {
		if got := info.Labels["containerd.io/snapshot/"+l]; got != "0:100000:65536" {
			return errorf("the volume's snapshot has %s label %q, want 0:100000:65536 (labels %v)", l, got, info.Labels)
		}
	}
	return p.remove()
}

// pullID pulls ref as the kubelet does for an image volume (PullImage) and returns the
// image ID it answers, which the kubelet then puts in the mount; ImageStatus must know the
// image by ref, with that ID.
func (s *scene) pullID(ref string) (string, error) {
	out, err := s.c.crictl("pull", ref)
	if err != nil {
		return "", errorf("crictl pull %s: %v: %s", ref, err, out)
	}
	fields := strings.Fields(out)
	if len(fields) == 0 || !strings.HasPrefix(fields[len(fields)-1], "sha256:") {
		return "", errorf("crictl pull %s said %q", ref, out)
	}
	id := fields[len(fields)-1]
	status, err := s.c.crictl("inspecti", "-o", "json", ref)
	if err != nil {
		return "", errorf("crictl inspecti %s: %v: %s", ref, err, status)
	}
	var st struct {
		Status struct {
			ID   string `json:"id"`
			Size string `json:"size"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(status), &st); err != nil {
		return "", errorf("crictl inspecti %s: %v: %s", ref, err, status)
	}
	if st.Status.ID != id || st.Status.Size == "" || st.Status.Size == "0" {
		return "", errorf("ImageStatus of %s: id %q size %q, PullImage said %s", ref, st.Status.ID, st.Status.Size, id)
	}
	return id, nil
}

// artifactVolumes: the kubelet's path for an OCI artifact. PullImage from a registry (an
// artifact is kept whole, never unpacked), ImageStatus and ListImages know it by an ID of
// its own (two artifacts share their empty config), and a container mounts a ModelPack
// model and an empty-config artifact, by those IDs: raw layers are files, the tar layer is
// extracted, writes fail.
func artifactVolumes(s *scene) error {
	a := s.imgs.Artifacts
	modelID, err := s.pullID(a.Model)
	if err != nil {
		return err
	}
	dataID, err := s.pullID(a.Data)
	if err != nil {
		return err
	}
	if modelID == dataID {
		return errorf("two artifacts have one image ID %s", modelID)
	}
	list, err := s.c.crictl("images", "-o", "json")
	if err != nil {
		return errorf("crictl images: %v: %s", err, list)
	}
	for _, id := range []string{modelID, dataID} {
		if !strings.Contains(list, id) {
			return errorf("ListImages does not list %s: %s", id, list)
		}
	}
	p, err := s.c.runPod(s.name("models"))
	if err != nil {
		return err
	}
	id, err := p.run("reader",
		volume{Image: modelID, ContainerPath: "/models"},
		volume{Image: dataID, ContainerPath: "/data"})
	if err != nil {
		return err
	}
	if err := s.expectRead(id, "/models/docs/README.md", modelReadme); err != nil {
		return err
	}
	if err := s.expectRead(id, "/models/tokenizer.json", `{"version":"1.0"}`); err != nil {
		return err
	}
	if err := s.expectRead(id, "/data/hello.txt", dataHello); err != nil {
		return err
	}
	out, err := s.c.exec(id, "/bin/busybox", "sha256sum", "/models/model.safetensors")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(out), a.ModelWeightsSHA256) {
		return errorf("sha256sum /models/model.safetensors: %v: %q, want %s", err, out, a.ModelWeightsSHA256)
	}
	for _, cmd := range []string{"touch /models/new", "echo x >> /models/model.safetensors", "rm /data/hello.txt"} {
		out, err := s.c.exec(id, "/bin/sh", "-c", cmd)
		if err == nil || !strings.Contains(out, "Read-only file system") {
			return errorf("%s: want EROFS, got %v: %s", cmd, err, out)
		}
	}
	mounts, err := s.c.statusMounts(id)
	if err != nil {
		return err
	}
	if want := s.volumeDir(p, modelID); mounts["/models"].HostPath != want {
		return errorf("host path of /models: got %q, want %q", mounts["/models"].HostPath, want)
	}
	// KEP-5365: each volume's status carries the artifact's own ID, as PullImage gave it.
	for path, want := range map[string]string{"/models": modelID, "/data": dataID} {
		if got := mounts[path].imageRef(); got != want {
			return errorf("ContainerStatus: %s's image_ref %q, want %s", path, got, want)
		}
	}
	s.note("model %s and data %s mounted by their IDs", shortHex(modelID), shortHex(dataID))
	return p.remove()
}

// criFields: the CRI fields Kubernetes 1.36 and 1.37 added to a container's mounts.
// KEP-5365: ContainerStatus reports each image volume's image ID (image.image_ref), which
// must be what PullImage answered, as critest's "should return image digest in
// ContainerStatus mounts" checks; imv sets it, containerd v2.4.2 leaves it empty (noted).
// KEP-5855: a mount's mount_options are applied inside the container, to image volumes and
// other mounts alike, in every mode (patch 0003); "rw" on a read-only mount is refused.
func criFields(s *scene) error {
	// The data image is imported, not pulled: ImageStatus gives the ID PullImage would.
	wantID := s.imgs.DataID
	status, err := s.c.crictl("inspecti", "-o", "json", s.imgs.Data)
	if err != nil || !strings.Contains(status, `"id": "`+wantID+`"`) {
		return errorf("ImageStatus of %s does not give the ID %s: %v: %s", s.imgs.Data, wantID, err, status)
	}
	p, err := s.c.runPod(s.name("fields"))
	if err != nil {
		return err
	}
	plain := filepath.Join(s.c.dir, "plain-"+p.name)
	if err := os.MkdirAll(plain, 0o755); err != nil {
		return err
	}
	id, err := p.run("fields",
		volume{Image: wantID, ContainerPath: "/data", MountOptions: []string{"noexec"}},
		volume{HostPath: plain, ContainerPath: "/plain", ReadWrite: true, MountOptions: []string{"noexec", "nodev"}})
	if err != nil {
		return err
	}
	mounts, err := s.c.statusMounts(id)
	if err != nil {
		return err
	}
	got := mounts["/data"].imageRef()
	s.note("status image_ref of /data: %q", elide(got, 19))
	if s.imv() && got != wantID {
		return errorf("ContainerStatus: /data's image_ref %q, want the ID PullImage gave, %s", got, wantID)
	}
	if !slices.Equal(mounts["/data"].MountOptions, []string{"noexec"}) {
		return errorf("ContainerStatus: /data's mount_options %q", mounts["/data"].MountOptions)
	}
	info, err := s.c.exec(id, "/bin/cat", "/proc/self/mountinfo")
	if err != nil {
		return errorf("reading mountinfo: %v: %s", err, info)
	}
	for path, want := range map[string][]string{"/data": {"ro", "noexec"}, "/plain": {"rw", "noexec", "nodev"}} {
		opts, ok := mountinfoOptions(info, path)
		if !ok {
			return errorf("%s is not a mountpoint in the container", path)
		}
		for _, o := range want {
			if !hasOption(opts, o) {
				return errorf("%s is mounted %s in the container, without %s", path, opts, o)
			}
		}
	}
	_, err = p.create(s.name("rw"), volume{Image: wantID, ContainerPath: "/data", MountOptions: []string{"rw"}})
	if err == nil || !strings.Contains(err.Error(), `not allowed on a mount with readonly true`) {
		return errorf(`mount option "rw" on a read-only image volume: want it refused, got %v`, err)
	}
	return p.remove()
}

// mountinfoOptions returns the per-mount options of the mount at path in a mountinfo
// text (the last mount there, the one a process sees).
func mountinfoOptions(mountinfo, path string) (string, bool) {
	opts, ok := "", false
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == path {
			opts, ok = f[5], true
		}
	}
	return opts, ok
}

// configSection: the implementation is chosen in containerd's own config (the suite writes
// the runtime plugin's image_volumes table and passes no environment override), so
// `containerd config dump` shows the table with the suite's values, and containerd's log
// says the setting came from the config. With imv in process, imv's own log is in
// containerd's, at the table's log_level (debug): the volumes the earlier scenarios mounted
// are there, each line naming imv's module.
func configSection(s *scene) error {
	cfg := filepath.Join(s.c.dir, "config.toml")
	dump, err := exec.Command(filepath.Join(s.c.tools.bin, "containerd"), "--config", cfg, "config", "dump").CombinedOutput()
	if err != nil {
		return errorf("containerd config dump: %v: %s", err, dump)
	}
	table := regexp.MustCompile(`(?m)^\s*\[plugins\.'io\.containerd\.cri\.v1\.runtime'\.image_volumes\]\s*$`)
	loc := table.FindIndex(dump)
	if loc == nil {
		return errorf("containerd config dump has no image_volumes table:\n%s", dump)
	}
	rest := string(dump[loc[1]:])
	if next := strings.Index(rest, "\n  ["); next >= 0 {
		rest = rest[:next]
	}
	for key, want := range map[string]string{"implementation": implementation(s.mode), "address": filepath.Join(s.c.dir, "imv.sock"), "log_level": "debug"} {
		line := regexp.MustCompile(`(?m)^\s*` + key + ` = ['"]` + regexp.QuoteMeta(want) + `['"]\s*$`)
		if !line.MatchString(rest) {
			return errorf("config dump's image_volumes table lacks %s = %q:%s", key, want, rest)
		}
	}
	s.note("config dump: image_volumes.implementation = %q", implementation(s.mode))
	log, err := os.ReadFile(filepath.Join(s.c.dir, "containerd.log"))
	if err != nil {
		return err
	}
	started := map[string]string{modeCgo: "image volumes: imv in process (cgo)", modeTtrpc: "image volumes: imv daemon over ttrpc", modeStock: "image volumes: containerd's own implementation"}[s.mode]
	if !strings.Contains(string(log), started) || !strings.Contains(string(log), "implementation:config") {
		return errorf("containerd's log does not say %q from the config", started)
	}
	if s.mode == modeCgo {
		mounted := regexp.MustCompile(`level=info msg="mounted image volume.* imv="imv::volumes::making"`)
		debug := regexp.MustCompile(`level=debug msg=.* imv="imv::`)
		if !mounted.Match(log) || !debug.Match(log) {
			return errorf("containerd's log lacks imv's own lines (info: %v, debug: %v)", mounted.Match(log), debug.Match(log))
		}
		s.note("imv's log in containerd's: %d lines", len(regexp.MustCompile(`imv="imv::`).FindAll(log, -1)))
	}
	return nil
}

// callMetrics: containerd's own metrics (its [metrics] address) count and time every
// image-volume call by implementation, so a node compares modes with the tools it has; in
// ttrpc mode the imv daemon's /metrics counts the same calls from its side. By now the
// earlier scenarios have made containers with image volumes, some failing.
func callMetrics(s *scene) error {
	// A call that fails NotFound (counters start anew when containerd restarts).
	p, err := s.c.runPod(s.name("metrics"))
	if err != nil {
		return err
	}
	if _, err := p.create(s.name("missing"), volume{Image: "localhost/imv-e2e/no-such-image:1", ContainerPath: "/x"}); err == nil {
		return errorf("a container on a missing image was created")
	}
	if err := p.remove(); err != nil {
		return err
	}
	text, err := scrape("http://" + s.c.metrics + "/v1/metrics")
	if err != nil {
		return err
	}
	impl := implementation(s.mode)
	ok := metricValue(text, `containerd_cri_image_volume_calls_total{call="mutateMounts",code="OK",implementation="`+impl+`"}`)
	failed := metricValue(text, `containerd_cri_image_volume_calls_total{call="mutateMounts",code="NotFound",implementation="`+impl+`"}`)
	timed := metricValue(text, `containerd_cri_image_volume_call_duration_seconds_count{call="mutateMounts",implementation="`+impl+`"}`)
	cleanups := metricValue(text, `containerd_cri_image_volume_call_duration_seconds_count{call="cleanupImageMounts",implementation="`+impl+`"}`)
	if ok < 1 || failed < 1 || timed < ok+failed || cleanups < 1 {
		return errorf("containerd's metrics: mutateMounts %v OK, %v NotFound, %v timed, %v cleanups timed:\n%s", ok, failed, timed, cleanups, grepLines(text, "image_volume"))
	}
	if !strings.Contains(text, `le="0.0001"`) {
		return errorf("the call histogram lacks imv's buckets (le=0.0001)")
	}
	s.note("containerd: mutateMounts %v OK, %v NotFound", ok, failed)
	if s.mode != modeTtrpc {
		return nil
	}
	text, err = scrape("http://" + s.c.imvMetrics + "/metrics")
	if err != nil {
		return err
	}
	served := metricValue(text, `imv_calls_total{method="MutateMounts",code="OK"}`)
	// Not compared with containerd's: its counters began anew when the restart scenario
	// restarted it, and it also counts containers without image volumes.
	if served < 1 || !strings.Contains(text, "imv_volumes_mounted") || metricValue(text, "imv_unpack_bytes_total") <= 0 {
		return errorf("imv serve's metrics: %v MutateMounts OK (containerd: %v):\n%s", served, ok, grepLines(text, "imv_"))
	}
	s.note("imv serve: MutateMounts %v OK", served)
	return nil
}

// scrape GETs a metrics page.
func scrape(url string) (string, error) {
	res, err := http.Get(url)
	if err != nil {
		return "", errorf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		return "", errorf("GET %s: %s, %v", url, res.Status, err)
	}
	return string(body), nil
}

// metricValue is the value of the sample named (labels included, as written) in a
// Prometheus text page; 0 when absent.
func metricValue(text, sample string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	return 0
}

// grepLines keeps the lines of text that contain word (for messages).
func grepLines(text, word string) string {
	var keep []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, word) && !strings.Contains(line, "_bucket") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}
