package e2e

// Static pods with image volumes on a real kubelet (kubelet_test.go), in every mode:
// Kubernetes v1.37.2's image-volume cases (test/e2e_node/image_volume.go and the
// conformance case of test/e2e/common/node/image_volume.go) ported to static pods, with
// their images' stand-ins; what a node sees more (two containers on one image, three images
// one of them an index, a directory sub path, hostUsers: false); the kubelet and, apart,
// containerd restarted under a running pod; and every manifest deleted, after which no
// mount, directory, lease or view is left. Every mode must do the same: the expected
// outcomes are Kubernetes' own.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// The images of Kubernetes' image-volume tests (test/utils/image/manifest.go), and the
// reference its "not existing" cases use.
const (
	kittenImage  = "registry.k8s.io/e2e-test-images/kitten:1.8"
	kubeBusybox  = "registry.k8s.io/e2e-test-images/busybox:1.37.0-2"
	invalidImage = "localhost/invalid"
)

// kubeletImages are stand-ins for kubeletImages' images, with what the tests read: the
// kitten's data.json names kitten.jpg, its os-release is Alpine's, and (from the busybox
// base) etc/passwd has root.
func kubeletImages() []upstreamImage {
	shell := map[string]any{"Cmd": []string{"/bin/sh"}}
	return []upstreamImage{
		{names: []string{kubeBusybox}, config: shell},
		{names: []string{kittenImage}, config: shell, files: []entry{
			{Name: "data.json", Body: `{"name": "kitten", "image": "kitten.jpg"}` + "\n"},
			{Name: "kitten.jpg", Body: "a kitten stand-in\n"},
			{Name: "etc/os-release", Body: "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.22.0\n"},
		}},
	}
}

// Waits, generous for a loaded machine: the kubelet syncs a pod in a second or so here.
const (
	podStartLimit = 3 * time.Minute
	podFailLimit  = 2 * time.Minute
)

// kubeletScene is what a kubelet case works with.
type kubeletScene struct {
	k    *kubelet
	c    *cluster
	imgs *testImages
	mode string
	mu   sync.Mutex
	// notes and timings go to the report.
	notes   []string
	timings map[string]time.Duration
}

func (x *kubeletScene) note(format string, args ...any) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.notes = append(x.notes, fmt.Sprintf(format, args...))
}

// kubeletCase is one case; run applies its pods and checks what the kubelet reports.
type kubeletCase struct {
	name string
	run  func(x *kubeletScene) error
}

// The specs' parts, as a pod manifest has them.

func imageVolume(name, ref, pullPolicy string) map[string]any {
	source := map[string]any{"reference": ref}
	if pullPolicy != "" {
		source["pullPolicy"] = pullPolicy
	}
	return map[string]any{"name": name, "image": source}
}

func volumeMount(name, path, subPath string) map[string]any {
	m := map[string]any{"name": name, "mountPath": path}
	if subPath != "" {
		m["subPath"] = subPath
	}
	return m
}

// sleeper is a container of the e2e busybox that sleeps until told to stop.
func sleeper(name string, mounts ...map[string]any) map[string]any {
	return map[string]any{
		"name": name, "image": kubeBusybox, "imagePullPolicy": "IfNotPresent",
		"command":      []string{"/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"},
		"volumeMounts": mounts,
	}
}

func podSpec(volumes []map[string]any, containers ...map[string]any) map[string]any {
	return map[string]any{
		"restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
		"containers": containers, "volumes": volumes,
	}
}

// start applies a pod and waits until all its containers run.
func (x *kubeletScene) start(name string, spec map[string]any) (*kubePod, error) {
	if err := x.k.apply(name, spec); err != nil {
		return nil, err
	}
	return x.k.waitPod(name, "running", podStartLimit, (*kubePod).running)
}

// waitReason waits until container 0 of the pod waits for reason.
func (x *kubeletScene) waitReason(name, reason string) error {
	_, err := x.k.waitPod(name, "waiting with "+reason, podFailLimit, func(p *kubePod) bool {
		return len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Waiting != nil &&
			p.Status.ContainerStatuses[0].State.Waiting.Reason == reason
	})
	return err
}

// read checks that the file at path in a container of p has want in it.
func (x *kubeletScene) read(p *kubePod, container, path, want string) error {
	cs, ok := p.container(container)
	if !ok {
		return errorf("pod %s has no container %s: %s", p.Metadata.Name, container, p)
	}
	out, err := x.c.exec(cs.id(), "/bin/cat", path)
	if err != nil {
		return errorf("pod %s, %s: reading %s: %v: %s", p.Metadata.Name, container, path, err, out)
	}
	if !strings.Contains(out, want) {
		return errorf("pod %s, %s: %s has %q, want %q in it", p.Metadata.Name, container, path, elide(out, 200), want)
	}
	return nil
}

// kitten checks the kitten image at path, as Kubernetes' verifyFileContents does.
func (x *kubeletScene) kitten(p *kubePod, path string) error {
	if err := x.read(p, "test-container", filepath.Join(path, "data.json"), "kitten.jpg"); err != nil {
		return err
	}
	return x.read(p, "test-container", filepath.Join(path, "etc", "os-release"), "Alpine Linux")
}

// volumeEntries lists the volume directories of the sandbox of container 0 of p.
func (x *kubeletScene) volumeEntries(p *kubePod) ([]string, error) {
	sandbox, err := x.c.sandboxOf(p.Status.ContainerStatuses[0].id())
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(x.c.seen(x.c.volumesDir(sandbox)))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

const volumePath = "/volume"

// kubeletCases run side by side, after the timed pods.
var kubeletCases = []kubeletCase{
	{"conformance: pull policy Always", func(x *kubeletScene) error {
		p, err := x.start("always", podSpec([]map[string]any{imageVolume("volume", kittenImage, "Always")},
			sleeper("test-container", volumeMount("volume", volumePath, ""))))
		if err != nil {
			return err
		}
		return x.kitten(p, volumePath)
	}},
	{"e2e_node: multiple volumes", func(x *kubeletScene) error {
		p, err := x.start("multiple-volumes", podSpec(
			[]map[string]any{imageVolume("volume-0", kittenImage, ""), imageVolume("volume-1", kittenImage, "")},
			sleeper("test-container", volumeMount("volume-0", volumePath+"-0", ""), volumeMount("volume-1", volumePath+"-1", ""))))
		if err != nil {
			return err
		}
		for i := range 2 {
			if err := x.kitten(p, fmt.Sprintf("%s-%d", volumePath, i)); err != nil {
				return err
			}
		}
		return nil
	}},
	{"e2e_node: image volume not existing (ImagePullBackOff)", func(x *kubeletScene) error {
		if err := x.k.apply("not-existing", podSpec([]map[string]any{imageVolume("volume", invalidImage, "")},
			sleeper("test-container", volumeMount("volume", volumePath, "")))); err != nil {
			return err
		}
		return x.waitReason("not-existing", "ImagePullBackOff")
	}},
	{"e2e_node: image volume not existing but unused", func(x *kubeletScene) error {
		p, err := x.start("unused", podSpec([]map[string]any{imageVolume("volume", invalidImage, "")},
			sleeper("test-container")))
		if err != nil {
			return err
		}
		cs, _ := p.container("test-container")
		out, err := x.c.exec(cs.id(), "/bin/ls", "/")
		if err != nil {
			return errorf("ls /: %v: %s", err, out)
		}
		if slices.Contains(strings.Fields(out), strings.TrimPrefix(volumePath, "/")) {
			return errorf("the unused volume is mounted: ls / has %q", out)
		}
		return nil
	}},
	{"e2e_node: multiple pods, same image", func(x *kubeletScene) error {
		var pods []string
		for i := range 2 {
			name := fmt.Sprintf("same-image-%d", i)
			p, err := x.start(name, podSpec([]map[string]any{imageVolume("volume", kittenImage, "")},
				sleeper("test-container", volumeMount("volume", volumePath, ""))))
			if err != nil {
				return err
			}
			if err := x.kitten(p, volumePath); err != nil {
				return err
			}
			pods = append(pods, name)
		}
		// The first pod again, once the second runs.
		p, err := x.k.waitPod(pods[0], "running", podStartLimit, (*kubePod).running)
		if err != nil {
			return err
		}
		return x.kitten(p, volumePath)
	}},
	{"e2e_node: valid subPath", func(x *kubeletScene) error {
		p, err := x.start("subpath", podSpec([]map[string]any{imageVolume("volume", kittenImage, "")},
			sleeper("test-container", volumeMount("volume", volumePath, "etc"))))
		if err != nil {
			return err
		}
		return x.read(p, "test-container", filepath.Join(volumePath, "passwd"), "root:")
	}},
	{"e2e_node: subPath not existing (CreateContainerError)", func(x *kubeletScene) error {
		if err := x.k.apply("subpath-missing", podSpec([]map[string]any{imageVolume("volume", kittenImage, "")},
			sleeper("test-container", volumeMount("volume", volumePath, "not-existing")))); err != nil {
			return err
		}
		return x.waitReason("subpath-missing", "CreateContainerError")
	}},
	{"two containers, one image", func(x *kubeletScene) error {
		p, err := x.start("two-containers", podSpec([]map[string]any{imageVolume("data", x.imgs.Data, "")},
			sleeper("a", volumeMount("data", "/data", "")), sleeper("b", volumeMount("data", "/data", ""))))
		if err != nil {
			return err
		}
		for _, name := range []string{"a", "b"} {
			if err := x.read(p, name, "/data/hello.txt", "hello from the data image"); err != nil {
				return err
			}
		}
		entries, err := x.volumeEntries(p)
		if err != nil {
			return err
		}
		if want := []string{shortHexFull(x.imgs.DataManifest)}; !slices.Equal(entries, want) {
			return errorf("the pod's volume directories: %v, want %v (one volume for both containers)", entries, want)
		}
		return nil
	}},
	{"directory subPath", func(x *kubeletScene) error {
		p, err := x.start("directory-subpath", podSpec([]map[string]any{imageVolume("data", x.imgs.Data, "")},
			sleeper("test-container", volumeMount("data", "/sub", "sub"))))
		if err != nil {
			return err
		}
		return x.read(p, "test-container", "/sub/inner.txt", "inner")
	}},
	{"hostUsers: false", func(x *kubeletScene) error {
		spec := podSpec([]map[string]any{imageVolume("data", x.imgs.Data, "")},
			sleeper("test-container", volumeMount("data", "/data", "")))
		spec["hostUsers"] = false
		p, err := x.start("host-users-false", spec)
		if err != nil {
			return err
		}
		if err := x.read(p, "test-container", "/data/hello.txt", "hello from the data image"); err != nil {
			return err
		}
		cs, _ := p.container("test-container")
		out, err := x.c.exec(cs.id(), "/bin/cat", "/proc/self/uid_map")
		if err != nil {
			return errorf("uid_map: %v: %s", err, out)
		}
		if f := strings.Fields(out); len(f) != 3 || f[0] != "0" || f[1] == "0" {
			return errorf("the pod is not in a user namespace of its own: uid_map %q", out)
		}
		owner, err := x.c.exec(cs.id(), "/bin/stat", "-c", "%u:%g", "/data/hello.txt")
		if err != nil || strings.TrimSpace(owner) != "0:0" {
			return errorf("owner of /data/hello.txt inside: %v: %q, want 0:0", err, owner)
		}
		x.note("hostUsers: false: uid_map %s", strings.Join(strings.Fields(out), " "))
		return nil
	}},
}

// threeImages is the timed pods' spec: the data image, the other one and the index, none
// unpacked before the first such pod.
func threeImages(imgs *testImages) map[string]any {
	return podSpec([]map[string]any{imageVolume("data", imgs.Data, ""), imageVolume("other", imgs.Other, ""),
		imageVolume("multi", imgs.Multi, "")},
		sleeper("test-container", volumeMount("data", "/data", ""), volumeMount("other", "/other", ""),
			volumeMount("multi", "/multi", "")))
}

// checkThreeImages reads each volume of a threeImages pod and checks its directories: by
// image target, the index's digest for the index.
func (x *kubeletScene) checkThreeImages(p *kubePod) error {
	for path, want := range map[string]string{"/data/hello.txt": "hello from the data image",
		"/other/other.txt": "the other image", "/multi/platform.txt": "host"} {
		if err := x.read(p, "test-container", path, want); err != nil {
			return err
		}
	}
	entries, err := x.volumeEntries(p)
	if err != nil {
		return err
	}
	want := []string{shortHexFull(x.imgs.DataManifest), shortHexFull(x.imgs.MultiIndex)}
	if len(entries) != 3 || !slices.Contains(entries, want[0]) || !slices.Contains(entries, want[1]) {
		return errorf("the pod's volume directories: %v, want three with %v", entries, want)
	}
	return nil
}

// timedStart applies a pod alone and times it from its manifest to Running.
func (x *kubeletScene) timedStart(label, name string, spec map[string]any) (*kubePod, error) {
	start := time.Now()
	p, err := x.start(name, spec)
	if err != nil {
		return nil, err
	}
	x.mu.Lock()
	x.timings[label] = time.Since(start)
	x.mu.Unlock()
	return p, nil
}
