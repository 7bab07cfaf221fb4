package e2e

// Suites written elsewhere, against the patched containerd in every mode: cri-tools'
// critest (the CRI validation suite the kubelet's runtimes are held to) and containerd's
// own integration/image_volume_linux_test.go, unmodified, each a test binary that
// integration/containerd/test builds (CRITEST, CONTAINERD_INTEGRATION_TEST). Their images
// are built here, busybox-based, and pushed with skopeo to the suite's registry, which
// containerd reaches under the images' own names (hosts.toml), so the suites run as
// written and nothing leaves the machine.
//
// What is checked: imv's modes give stock containerd's outcome case by case, except the
// cases listed in expectedDifferences (each with its reason, also in the README); a new
// difference fails.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// upstreamRegistries are the registries the upstream suites' images name.
var upstreamRegistries = []string{"registry.k8s.io", "k8s.gcr.io", "gcr.io", "ghcr.io"}

// Case outcomes, as both suites' reports are read.
const (
	passed  = "passed"
	failed  = "failed"
	skipped = "skipped"
)

// expectedDifference is a case where imv's modes differ from stock containerd on purpose.
type expectedDifference struct {
	// imv is imv's outcome (stock's is whatever it is: reported).
	imv string
	why string
}

// expectedDifferences, by case name (the suite's prefix, then its own name).
var expectedDifferences = map[string]expectedDifference{
	"critest: [k8s.io] Image Volume [Feature:ImageVolume] should return image digest in ContainerStatus mounts": {
		imv: passed,
		why: "KEP-5365: imv sets the mount's image_ref; containerd v2.4.2 leaves it empty, and critest skips",
	},
	"containerd: TestImageVolumeReusableAfterFailure": {
		imv: failed,
		why: "the error has containerd's phrase (failed to ensure image subpath), but imv undoes what a failed call made (all or nothing): the volume's snapshot the test then expects to remain is gone; the next container works",
	},
	"containerd: TestImageVolumeCheckVolatileOption": {
		imv: failed,
		why: "imv mounts a read-only view (an overlay with no upper directory, or a bind of a one-layer image's layer): overlayfs' volatile skips syncing an upper directory, which such a view has not",
	},
}

// upstreamImage is one image the suites pull: its names, and what it adds to the base.
type upstreamImage struct {
	names  []string
	config map[string]any
	files  []entry
}

// upstreamImages are the images critest v1.37.0 and containerd v2.4.2's image-volume tests
// pull, as far as a busybox can stand in for them. Not here, so failing alike in every
// mode: critest's test-image-digest (named by a digest no local build has) and
// nonewprivs (a program of its own).
func upstreamImages() []upstreamImage {
	tools := "gcr.io/k8s-staging-cri-tools/"
	shell := map[string]any{"Cmd": []string{"/bin/sh"}}
	return []upstreamImage{
		{names: []string{"registry.k8s.io/e2e-test-images/busybox:1.29-2"}, config: shell},
		{names: []string{"ghcr.io/containerd/busybox:1.36"}, config: shell},
		{names: []string{"registry.k8s.io/e2e-test-images/resource-consumer:1.10"}, config: shell},
		{names: []string{"registry.k8s.io/e2e-test-images/nginx:1.14-2"},
			config: map[string]any{"Entrypoint": []string{"/bin/httpd", "-f", "-p", "80", "-h", "/usr/share/nginx/html"}},
			files: []entry{{Name: "usr/", Dir: true}, {Name: "usr/share/", Dir: true}, {Name: "usr/share/nginx/", Dir: true},
				{Name: "usr/share/nginx/html/", Dir: true}, {Name: "usr/share/nginx/html/index.html", Body: "<h1>nginx stand-in</h1>\n"}}},
		// One image under both names: critest checks they are one image.
		{names: []string{"registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"},
			config: map[string]any{"Entrypoint": []string{"/bin/sleep", "2147483647"}},
			files:  []entry{{Name: "pause", Body: "pause stand-in\n", Mode: 0o755}}},
		// containerd's tests: a file /pause (rm fails EROFS; a sub path of it is refused).
		{names: []string{"registry.k8s.io/pause:3.10.2"},
			config: map[string]any{"Entrypoint": []string{"/bin/sleep", "2147483647"}},
			files:  []entry{{Name: "pause", Body: "pause stand-in\n", Mode: 0o755}}},
		{names: []string{"ghcr.io/containerd/alpine:3.14.0"}, config: shell,
			files: []entry{{Name: "etc/os-release", Body: "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.14.0\n"}}},
		{names: []string{tools + "test-image-latest:latest"}, config: shell},
		{names: []string{tools + "test-image-tag:test", tools + "test-image-tag:all"}, config: shell},
		{names: []string{tools + "test-image-1:latest"}, config: shell, files: []entry{{Name: "which", Body: "1\n"}}},
		{names: []string{tools + "test-image-2:latest"}, config: shell, files: []entry{{Name: "which", Body: "2\n"}}},
		{names: []string{tools + "test-image-3:latest"}, config: shell, files: []entry{{Name: "which", Body: "3\n"}}},
		{names: []string{tools + "test-image-tags:1", tools + "test-image-tags:2", tools + "test-image-tags:3"}, config: shell,
			files: []entry{{Name: "which", Body: "tags\n"}}},
		{names: []string{tools + "test-image-user-uid"}, config: map[string]any{"Cmd": []string{"/bin/sh"}, "User": "1002"}},
		{names: []string{tools + "test-image-user-username"}, config: map[string]any{"Cmd": []string{"/bin/sh"}, "User": "www-data"}},
		{names: []string{tools + "test-image-user-uid-group"}, config: map[string]any{"Cmd": []string{"/bin/sh"}, "User": "1003:1003"}},
		{names: []string{tools + "test-image-user-username-group"}, config: map[string]any{"Cmd": []string{"/bin/sh"}, "User": "www-data:www-data"}},
		// Its default user, default-user (1000), belongs to group-defined-in-image (50000).
		{names: []string{tools + "test-image-predefined-group"}, config: map[string]any{"Cmd": []string{"/bin/sh"}, "User": "1000"}},
	}
}

// pushImages builds images on a busybox base layer and pushes each name to r with skopeo.
func pushImages(t *testing.T, r *registry, ns *privateNS, dir, busyboxPath string, images []upstreamImage) {
	t.Helper()
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatal("no skopeo (Debian's skopeo package; scripts/setup installs it)")
	}
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		t.Fatalf("busybox (Debian's busybox-static): %v", err)
	}
	applets, err := exec.Command(busyboxPath, "--list").Output()
	if err != nil {
		t.Fatalf("%s --list: %v", busyboxPath, err)
	}
	base := []entry{{Name: "bin/", Dir: true}, {Name: "bin/busybox", Body: string(bb), Mode: 0o755}}
	// Absolute links, as in Alpine (containerd's tests count on bin/sh escaping a volume).
	for _, a := range strings.Fields(string(applets)) {
		if a != "busybox" {
			base = append(base, entry{Name: "bin/" + a, Link: "/bin/busybox"})
		}
	}
	base = append(base, entry{Name: "tmp/", Dir: true, Mode: 0o1777}, entry{Name: "etc/", Dir: true},
		entry{Name: "etc/passwd", Body: "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/sh\n" +
			"default-user:x:1000:1000:default-user:/home:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"},
		entry{Name: "etc/group", Body: "root:x:0:\nwww-data:x:33:\ndefault-user:x:1000:\n" +
			"group-defined-in-image:x:50000:default-user\nnogroup:x:65534:\n"},
		entry{Name: "root/", Dir: true, Mode: 0o700}, entry{Name: "home/", Dir: true})
	l := newLayout()
	for _, img := range images {
		// A file naming it makes each image one of its own: an image ID two names share
		// would list both names in every RepoTags critest reads.
		files := append([]entry{{Name: "image-name", Body: img.names[0] + "\n"}}, img.files...)
		layers := [][]entry{base, files}
		config := map[string]any{"Env": []string{"PATH=/bin:/usr/bin"}}
		for k, v := range img.config {
			config[k] = v
		}
		m := l.manifest(hostPlatform(), layers, config)
		for _, name := range img.names {
			l.tag(name, m)
		}
	}
	archive := filepath.Join(dir, "upstream.tar")
	if err := l.writeArchive(archive); err != nil {
		t.Fatal(err)
	}
	for _, img := range images {
		for _, name := range img.names {
			repo := name[strings.Index(name, "/")+1:]
			if !strings.Contains(repo[strings.LastIndex(repo, "/")+1:], ":") {
				repo += ":latest"
			}
			out, err := ns.command(skopeo, "copy", "--quiet", "--dest-tls-verify=false",
				"oci-archive:"+archive+":"+name, "docker://"+r.addr+"/"+repo).CombinedOutput()
			if err != nil {
				t.Fatalf("skopeo copy %s: %v\n%s", name, err, out)
			}
		}
	}
}

// TestUpstreamSuites runs critest and containerd's image-volume tests in every mode and
// compares the modes case by case.
func TestUpstreamSuites(t *testing.T) {
	critest, ctrTests := os.Getenv("CRITEST"), os.Getenv("CONTAINERD_INTEGRATION_TEST")
	if critest == "" && ctrTests == "" {
		t.Skip("CRITEST and CONTAINERD_INTEGRATION_TEST are unset (integration/containerd/test builds both and sets them)")
	}
	guardHostPaths(t)
	tl := toolsFromEnv(t)
	_, busyboxArchive, volumesArchive, err := buildImages(t.TempDir(), tl.busybox, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The suites' pods have a pod network: containerd, the registry and the suites run in
	// namespaces of their own (netns_test.go).
	tl.ns = startPrivateNS(t, t.TempDir(), "/var/lib")
	regDir := t.TempDir()
	tl.registry = startRegistryIn(t, regDir, tl.ns)
	pushImages(t, tl.registry, tl.ns, regDir, tl.busybox, upstreamImages())

	outcomes := map[string]map[string]string{} // case -> mode -> outcome
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			c := startCluster(t, tl, mode, busyboxImage, busyboxArchive, volumesArchive)
			record := func(suite string, got map[string]string) {
				for name, o := range got {
					key := suite + ": " + name
					if outcomes[key] == nil {
						outcomes[key] = map[string]string{}
					}
					outcomes[key][mode] = o
				}
			}
			if critest != "" {
				record("critest", runCritest(t, c, critest))
			}
			if ctrTests != "" {
				record("containerd", runContainerdTests(t, c, ctrTests))
			}
		})
	}
	report := compareUpstream(t, outcomes)
	printReport(report)
}

// runCritest runs critest against c and returns each spec's outcome.
func runCritest(t *testing.T, c *cluster, critest string) map[string]string {
	t.Helper()
	reportPath := filepath.Join(c.dir, "critest.json")
	endpoint := "unix://" + c.sock
	cmd := c.tools.ns.command(critest, "-runtime-endpoint", endpoint, "-image-endpoint", endpoint,
		"-ginkgo.json-report", reportPath, "-ginkgo.no-color", "-ginkgo.timeout", "40m")
	cmd.Dir = c.dir
	log, err := os.Create(filepath.Join(c.dir, "critest.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	start := time.Now()
	// critest exits non-zero when a spec fails; the report says which.
	_ = cmd.Run()
	b, err := os.ReadFile(reportPath)
	if err != nil {
		t.Fatalf("critest wrote no report (%v):\n%s", err, c.logTail("critest.log"))
	}
	var reports []struct {
		SpecReports []struct {
			ContainerHierarchyTexts []string
			LeafNodeText            string
			LeafNodeType            string
			State                   string
		}
	}
	if err := json.Unmarshal(b, &reports); err != nil {
		t.Fatalf("critest's report: %v", err)
	}
	got := map[string]string{}
	for _, r := range reports {
		for _, s := range r.SpecReports {
			if s.LeafNodeType != "It" {
				continue
			}
			name := strings.Join(append(s.ContainerHierarchyTexts, s.LeafNodeText), " ")
			switch s.State {
			case passed, skipped:
				got[name] = s.State
			default: // failed, panicked, timedout, interrupted, aborted
				got[name] = failed
			}
		}
	}
	if len(got) == 0 {
		t.Fatalf("critest ran no specs:\n%s", c.logTail("critest.log"))
	}
	t.Logf("critest: %d specs in %s", len(got), time.Since(start).Round(time.Second))
	return got
}

var goTestLine = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)

// runContainerdTests runs containerd's image-volume integration tests against c, whose
// containerd runs as a copy named so that the restart test finds and kills only it (by
// name, with pkill), and is started again by a supervisor, as a node's service manager
// would.
func runContainerdTests(t *testing.T, c *cluster, bin string) map[string]string {
	t.Helper()
	const name = "ctrd-upstream"
	copyPath := filepath.Join(c.dir, name)
	if b, err := os.ReadFile(filepath.Join(c.tools.bin, "containerd")); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(copyPath, b, 0o755); err != nil {
		t.Fatal(err)
	}
	c.stopContainerd()
	c.containerdBin = copyPath
	c.startContainerd()
	stop := c.superviseContainerd()
	defer stop()

	cmd := c.tools.ns.command(bin, "-test.run", "^TestImageVolume", "-test.v", "-test.timeout", "15m",
		"-cri-endpoint", "unix://"+c.sock, "-containerd-bin", name)
	cmd.Dir = c.dir
	out, _ := cmd.CombinedOutput()
	if err := os.WriteFile(filepath.Join(c.dir, "containerd-integration.log"), out, 0o644); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		m := goTestLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		got[m[2]] = map[string]string{"PASS": passed, "FAIL": failed, "SKIP": skipped}[m[1]]
	}
	if len(got) == 0 {
		t.Fatalf("containerd's tests ran nothing:\n%s", out)
	}
	return got
}

// compareUpstream checks imv's modes against stock case by case and formats the report.
func compareUpstream(t *testing.T, outcomes map[string]map[string]string) string {
	t.Helper()
	ran := modes()
	var names []string
	for name := range outcomes {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "\n### Suites written elsewhere (critest v1.37.0, containerd %s's image-volume tests)\n\n", "v2.4.2")
	totals := map[string]map[string]int{}
	var differences []string
	for _, name := range names {
		byMode := outcomes[name]
		for _, mode := range ran {
			if totals[mode] == nil {
				totals[mode] = map[string]int{}
			}
			totals[mode][byMode[mode]]++
		}
		stock, haveStock := byMode[modeStock]
		for _, mode := range ran {
			if mode == modeStock || !haveStock {
				continue
			}
			got := byMode[mode]
			if exp, ok := expectedDifferences[name]; ok {
				if got != exp.imv {
					t.Errorf("%s [%s]: %s, expected %s (%s); stock: %s", name, mode, got, exp.imv, exp.why, stock)
				}
				continue
			}
			if got != stock {
				t.Errorf("%s: %s in %s mode, %s in stock mode", name, got, mode, stock)
				differences = append(differences, fmt.Sprintf("- %s: %s %s, stock %s", name, mode, got, stock))
			}
		}
	}
	b.WriteString("| mode | passed | failed | skipped |\n|---|---:|---:|---:|\n")
	for _, mode := range ran {
		fmt.Fprintf(&b, "| %s | %d | %d | %d |\n", mode, totals[mode][passed], totals[mode][failed], totals[mode][skipped])
	}
	b.WriteString("\nExpected differences (imv's outcome, stock's, why):\n\n")
	for _, name := range names {
		if exp, ok := expectedDifferences[name]; ok {
			fmt.Fprintf(&b, "- %s: imv %s, stock %s: %s\n", name, exp.imv, outcomes[name][modeStock], exp.why)
		}
	}
	for name := range expectedDifferences {
		if outcomes[name] == nil {
			t.Errorf("expected difference %q: no such case ran", name)
		}
	}
	if len(differences) > 0 {
		b.WriteString("\nUnexpected differences:\n\n" + strings.Join(differences, "\n") + "\n")
	}
	var failing []string
	for _, name := range names {
		if outcomes[name][modeStock] == failed {
			failing = append(failing, name)
		}
	}
	if len(failing) > 0 {
		b.WriteString("\nFailing in stock mode too (the machine, or a stand-in image):\n\n- " + strings.Join(failing, "\n- ") + "\n")
	}
	return b.String()
}
