package e2e

// TestKubelet: the kubelet cases (kubelet_cases_test.go) in every mode, in order: two
// timed pods, the rest side by side, the restarts, the deletion; and their report.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestKubelet runs the kubelet cases in every mode, one containerd and one kubelet per mode.
func TestKubelet(t *testing.T) {
	bin := os.Getenv("KUBELET")
	if bin == "" {
		t.Skip("KUBELET is unset (integration/containerd/test builds the kubelet and sets it)")
	}
	guardHostPaths(t)
	tl := toolsFromEnv(t)
	imgs, busyboxArchive, volumesArchive, err := buildImages(t.TempDir(), tl.busybox, kubeletColdPods)
	if err != nil {
		t.Fatal(err)
	}
	tl.ns = startPrivateNS(t, t.TempDir(), kubeletOverlaid...)
	regDir := t.TempDir()
	tl.registry = startRegistryIn(t, regDir, tl.ns)
	pushImages(t, tl.registry, tl.ns, regDir, tl.busybox, kubeletImages())

	version, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	// bench/cri runs this suite with release builds, quiet and loaded (IMV_E2E_BENCH_LOAD
	// busy loops beside the daemons, as in TestBenchmark).
	if n, err := strconv.Atoi(os.Getenv("IMV_E2E_BENCH_LOAD")); err == nil && n > 0 {
		defer startLoad(t, tl.busybox, n)()
	}
	build := os.Getenv("IMV_E2E_PROFILE")
	if build == "" {
		build = "debug"
	}
	report := &kubeletReport{version: strings.TrimSpace(string(version)), build: build, outcomes: map[string]map[string]error{}, timings: map[string]map[string]time.Duration{}}
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			c := startCluster(t, tl, mode, busyboxImage, busyboxArchive, volumesArchive)
			x := &kubeletScene{c: c, imgs: imgs, mode: mode, timings: map[string]time.Duration{}}
			// The containers' image, pulled once ahead, so the timed pods time the volumes.
			if out, err := c.crictl("pull", kubeBusybox); err != nil {
				t.Fatalf("crictl pull %s: %v: %s", kubeBusybox, err, out)
			}
			x.k = startKubelet(t, c, bin)
			start := time.Now()
			outcome := func(name string, err error) {
				t.Logf("%s: done at %s", name, time.Since(start).Round(time.Millisecond))
				if err != nil {
					t.Errorf("%s: %v", name, err)
				}
				report.record(name, mode, err)
			}
			runKubeletCases(t, x, outcome)
			report.notes = append(report.notes, prefixed(mode, x.notes)...)
			for label, d := range x.timings {
				report.time(label, mode, d)
			}
		})
	}
	text := report.format(modes())
	printReport(text)
}

const (
	timedCold     = "manifest to Running (the kubelet's sync included), three cold image volumes"
	timedWarm     = "manifest to Running (the kubelet's sync included), the same three, warm"
	timedColdCall = "mutateMounts inside containerd, the cold pod's container"
	timedWarmCall = "mutateMounts inside containerd, the warm pod's container"
)

// kubeletColdPods is how many pods of one cold image each are started one after another,
// for medians.
const kubeletColdPods = 7

var (
	timedOneCold     = fmt.Sprintf("manifest to Running, one cold one-layer image (median of %d)", kubeletColdPods)
	timedOneColdCall = fmt.Sprintf("mutateMounts inside containerd, one cold one-layer image (median of %d)", kubeletColdPods)
)

// callTotal is the time containerd's metrics say its mutateMounts calls took in all: the
// patch times each call in every mode, so a difference of two is the image-volume work of
// what ran between them alone, without the kubelet's sync.
func (x *kubeletScene) callTotal() (time.Duration, error) {
	text, err := x.k.get("http://" + x.c.metrics + "/v1/metrics")
	if err != nil {
		return 0, err
	}
	sum := metricValue(text, `containerd_cri_image_volume_call_duration_seconds_sum{call="mutateMounts",implementation="`+
		implementation(x.mode)+`"}`)
	if sum <= 0 {
		return 0, errorf("containerd's metrics time no mutateMounts:\n%s", grepLines(text, "image_volume"))
	}
	return time.Duration(sum * float64(time.Second)), nil
}

// timeCalls records, as label, callTotal less before.
func (x *kubeletScene) timeCalls(label string, before time.Duration) error {
	total, err := x.callTotal()
	if err != nil {
		return err
	}
	x.mu.Lock()
	x.timings[label] = total - before
	x.mu.Unlock()
	return nil
}

// oneColdImageEach starts kubeletColdPods pods one after another, each with a volume of a
// bench image no pod has used, and records the medians of their start and their call.
func (x *kubeletScene) oneColdImageEach() error {
	var starts, calls []time.Duration
	for i, image := range x.imgs.Bench[:kubeletColdPods] {
		before, err := x.callTotal()
		if err != nil {
			return err
		}
		begin := time.Now()
		p, err := x.start(fmt.Sprintf("cold-%d", i), podSpec([]map[string]any{imageVolume("bench", image, "")},
			sleeper("test-container", volumeMount("bench", "/bench", ""))))
		if err != nil {
			return err
		}
		starts = append(starts, time.Since(begin))
		after, err := x.callTotal()
		if err != nil {
			return err
		}
		calls = append(calls, after-before)
		if err := x.read(p, "test-container", "/bench/bench.txt", fmt.Sprintf("bench image %d", i)); err != nil {
			return err
		}
	}
	x.mu.Lock()
	x.timings[timedOneCold], x.timings[timedOneColdCall] = median(starts), median(calls)
	x.mu.Unlock()
	return nil
}

// runKubeletCases runs the timed pods, the cases side by side, the restarts, then the
// deletion of every manifest.
func runKubeletCases(t *testing.T, x *kubeletScene, outcome func(string, error)) {
	cold, err := x.timedStart(timedCold, "three-images", threeImages(x.imgs))
	if err == nil {
		err = x.checkThreeImages(cold)
	}
	if err == nil {
		err = x.timeCalls(timedColdCall, 0)
	}
	outcome("three images, one an index", err)
	if err != nil {
		return
	}
	warm, err := x.timedStart(timedWarm, "three-images-again", threeImages(x.imgs))
	if err == nil {
		err = x.checkThreeImages(warm)
	}
	if err == nil {
		err = x.timeCalls(timedWarmCall, x.timings[timedColdCall])
	}
	outcome("three images, a second pod", err)
	outcome(fmt.Sprintf("one cold image, %d pods one after another", kubeletColdPods), x.oneColdImageEach())

	var wg sync.WaitGroup
	errs := make([]error, len(kubeletCases))
	for i, kc := range kubeletCases {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = kc.run(x) }()
	}
	wg.Wait()
	for i, kc := range kubeletCases {
		outcome(kc.name, errs[i])
	}

	outcome("kubelet restarted under a running pod", x.restarted("three-images", func() error {
		x.k.stop()
		x.k.start()
		return nil
	}))
	outcome("containerd restarted under a running pod", x.restarted("three-images", func() error {
		x.c.stopContainerd()
		x.c.startContainerd()
		return nil
	}))
	outcome("every manifest deleted: nothing left", x.deleteAll())
}

// restarted restarts something under a running pod (restart), then checks that the pod
// kept running on the same container and volumes, and that a new container (the old one
// killed, the kubelet starts another) gets the same volumes.
func (x *kubeletScene) restarted(name string, restart func() error) error {
	p, err := x.k.waitPod(name, "running", podStartLimit, (*kubePod).running)
	if err != nil {
		return err
	}
	before := p.Status.ContainerStatuses[0]
	sandbox, err := x.c.sandboxOf(before.id())
	if err != nil {
		return err
	}
	mounts := x.c.mountsUnder(x.c.volumesDir(sandbox))
	if len(mounts) != 3 {
		return errorf("want the pod's three volume mounts before the restart, found %v", mounts)
	}
	if err := restart(); err != nil {
		return err
	}
	p, err = x.k.waitPod(name, "running on the same container", podStartLimit, func(p *kubePod) bool {
		return p.running() && p.Status.ContainerStatuses[0].ContainerID == before.ContainerID
	})
	if err != nil {
		return err
	}
	if after := x.c.mountsUnder(x.c.volumesDir(sandbox)); !slices.Equal(after, mounts) {
		return errorf("the volume mounts changed with the restart: %v, then %v", mounts, after)
	}
	if err := x.checkThreeImages(p); err != nil {
		return err
	}
	// A new container: the old one killed, the kubelet starts the next.
	if out, err := x.c.crictl("stop", "--timeout", "0", before.id()); err != nil {
		return errorf("crictl stop: %v: %s", err, out)
	}
	p, err = x.k.waitPod(name, "running a new container", podStartLimit, func(p *kubePod) bool {
		return p.running() && p.Status.ContainerStatuses[0].RestartCount > before.RestartCount
	})
	if err != nil {
		return err
	}
	if err := x.checkThreeImages(p); err != nil {
		return errorf("the new container: %v", err)
	}
	if after := x.c.mountsUnder(x.c.volumesDir(sandbox)); !slices.Equal(after, mounts) {
		return errorf("the new container's volumes are not the old ones: %v, then %v", mounts, after)
	}
	return nil
}

// deleteAll deletes every manifest, waits until the kubelet has removed every sandbox,
// then checks that no image volume, directory, lease or view is left.
func (x *kubeletScene) deleteAll() error {
	entries, err := os.ReadDir(x.k.manifests)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := x.k.remove(strings.TrimSuffix(e.Name(), ".json")); err != nil {
			return err
		}
	}
	var left string
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if left, err = x.c.crictl("pods", "--quiet"); err == nil && left == "" {
			break
		}
	}
	if left != "" {
		return errorf("sandboxes left 3 minutes after the manifests went: %s", left)
	}
	volumes := filepath.Join(x.c.criState, "image-volumes")
	if m := x.c.mountsUnder(volumes); len(m) > 0 {
		return errorf("mounts left under %s: %v", volumes, m)
	}
	if entries, err := os.ReadDir(x.c.seen(volumes)); err == nil && len(entries) > 0 {
		return errorf("directories left under %s: %d", volumes, len(entries))
	}
	leases, err := x.c.leases()
	if err != nil {
		return err
	}
	if len(leases) > 0 {
		return errorf("leases left: %v", leases)
	}
	// containerd collects the views in the background once their lease goes.
	var views []string
	for i := 0; i < 100; i++ {
		keys, err := x.c.snapshotKeys()
		if err != nil {
			return err
		}
		views = views[:0]
		for _, k := range keys {
			if strings.HasPrefix(k, volumes+"/") {
				views = append(views, k)
			}
		}
		if len(views) == 0 {
			return nil
		}
		sleep(100)
	}
	return errorf("volume snapshots left 10 s after the last sandbox: %v", views)
}

func prefixed(mode string, notes []string) []string {
	var out []string
	for _, n := range notes {
		out = append(out, fmt.Sprintf("- [%s] %s", mode, n))
	}
	return out
}

// kubeletReport is the kubelet cases' part of the e2e report.
type kubeletReport struct {
	version  string // the kubelet's --version
	build    string // imv's build: debug (the tests') or release (bench/cri)
	order    []string
	outcomes map[string]map[string]error
	timings  map[string]map[string]time.Duration
	notes    []string
}

func (r *kubeletReport) record(name, mode string, err error) {
	if r.outcomes[name] == nil {
		r.outcomes[name] = map[string]error{}
		r.order = append(r.order, name)
	}
	r.outcomes[name][mode] = err
}

func (r *kubeletReport) time(label, mode string, d time.Duration) {
	if r.timings[label] == nil {
		r.timings[label] = map[string]time.Duration{}
	}
	r.timings[label][mode] = d
}

func (r *kubeletReport) format(modes []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### A real kubelet (%s, standalone, static pods)\n\n", r.version)
	fmt.Fprintf(&b, "| case | %s |\n|---|%s\n", strings.Join(modes, " | "), strings.Repeat("---|", len(modes)))
	var errs []string
	for _, name := range r.order {
		cells := make([]string, len(modes))
		for i, mode := range modes {
			err, ok := r.outcomes[name][mode]
			switch {
			case !ok:
				cells[i] = "not run"
			case err == nil:
				cells[i] = "ok"
			default:
				cells[i] = "FAIL"
				errs = append(errs, fmt.Sprintf("- %s [%s]: %s", name, mode, oneLine(err.Error())))
			}
		}
		fmt.Fprintf(&b, "| %s | %s |\n", name, strings.Join(cells, " | "))
	}
	labels := make([]string, 0, len(r.timings))
	for label := range r.timings {
		labels = append(labels, label)
	}
	sort.Strings(labels)
	if len(labels) > 0 {
		fmt.Fprintf(&b, "\n| timing (one pod at a time; imv's %s build) | %s |\n|---|%s\n", r.build,
			strings.Join(modes, " | "), strings.Repeat("---:|", len(modes)))
		for _, label := range labels {
			cells := make([]string, len(modes))
			for i, mode := range modes {
				if d, ok := r.timings[label][mode]; ok {
					cells[i] = d.Round(time.Millisecond).String()
				} else {
					cells[i] = "-"
				}
			}
			fmt.Fprintf(&b, "| %s | %s |\n", label, strings.Join(cells, " | "))
		}
	}
	if len(errs)+len(r.notes) > 0 {
		b.WriteString("\n" + strings.Join(append(errs, r.notes...), "\n") + "\n")
	}
	return b.String()
}
