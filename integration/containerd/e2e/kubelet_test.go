package e2e

// A real kubelet (Kubernetes' own, built by integration/containerd/test: KUBELET) running
// static pods on the patched containerd. It runs standalone, with no API server, in the
// private namespaces of netns_test.go, with overlays on the fixed paths --root-dir does not
// cover: /var/lib (kubelet/pki, kubelet/device-plugins), /var/log (containers) and
// /usr/libexec (kubernetes). Its pods' cgroups are under a cgroup root of the test's own.
// The sysctls it sets at start are put back when it stops. Its API (/pods, with each static
// pod's status) is reached on 127.0.0.1 inside the namespaces, with anonymous auth.

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// kubeletOverlaid are the host directories the kubelet writes below whatever its flags say.
var kubeletOverlaid = []string{"/var/lib", "/var/log", "/usr/libexec"}

// kubeletSysctls are the sysctls the kubelet sets at start (protectKernelDefaults off).
var kubeletSysctls = []string{"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"}

// nodeName is the kubelet's node name: a static pod's name gets it as a suffix.
const nodeName = "imv-e2e-node"

// Ports inside the private network namespace, where nothing else listens.
const (
	kubeletPort = 20250
	healthzPort = 20248
)

// kubelet is one running kubelet on a cluster.
type kubelet struct {
	t          *testing.T
	c          *cluster
	bin        string
	root       string // --root-dir
	manifests  string // staticPodPath
	config     string
	cgroupRoot string // the pods' cgroup root, e.g. /ie2e-123-kubelet
	cmd        *exec.Cmd
	exited     chan struct{}
	http       *http.Client
}

const kubeletConfigTemplate = `{
  "apiVersion": "kubelet.config.k8s.io/v1beta1",
  "kind": "KubeletConfiguration",
  "staticPodPath": "@MANIFESTS@",
  "podLogsDir": "@DIR@/pod-logs",
  "volumePluginDir": "@DIR@/volume-plugins",
  "containerRuntimeEndpoint": "unix://@SOCK@",
  "imageServiceEndpoint": "unix://@SOCK@",
  "cgroupDriver": "cgroupfs",
  "cgroupRoot": "@CGROUP@",
  "failCgroupV1": false,
  "failSwapOn": false,
  "address": "127.0.0.1",
  "port": @PORT@,
  "readOnlyPort": 0,
  "healthzBindAddress": "127.0.0.1",
  "healthzPort": @HEALTHZ@,
  "authentication": {"anonymous": {"enabled": true}, "webhook": {"enabled": false}},
  "authorization": {"mode": "AlwaysAllow"},
  "resolvConf": "@DIR@/resolv.conf",
  "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                   "imagefs.available": "1%", "imagefs.inodesFree": "1%"},
  "imageGCHighThresholdPercent": 100,
  "imageGCLowThresholdPercent": 99,
  "syncFrequency": "10s",
  "fileCheckFrequency": "1s"
}
`

// startKubelet starts a kubelet on c (which must run in private namespaces), stopped, its
// pods removed, its cgroups removed and the sysctls put back when the test ends.
func startKubelet(t *testing.T, c *cluster, bin string) *kubelet {
	t.Helper()
	if c.tools.ns == nil {
		t.Fatal("the kubelet runs in the private namespaces (startPrivateNS)")
	}
	dir := filepath.Join(c.dir, "kubelet")
	k := &kubelet{t: t, c: c, bin: bin, root: filepath.Join(dir, "root"), manifests: filepath.Join(dir, "manifests"),
		config: filepath.Join(dir, "config.json"), cgroupRoot: "/" + filepath.Base(c.dir) + "-kubelet"}
	for _, d := range []string{k.root, k.manifests, filepath.Join(dir, "pod-logs"), filepath.Join(dir, "volume-plugins")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// No name servers: the pods need none, and the host's are not the test's to hand out.
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer("@MANIFESTS@", k.manifests, "@DIR@", dir, "@SOCK@", c.sock, "@CGROUP@", k.cgroupRoot,
		"@PORT@", fmt.Sprint(kubeletPort), "@HEALTHZ@", fmt.Sprint(healthzPort)).Replace(kubeletConfigTemplate)
	if err := os.WriteFile(k.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	k.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: c.tools.ns.dialContext,
		// The kubelet serves with a certificate it made itself at start.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a test's own kubelet
	}}
	saved := readSysctls(t)
	hierarchies := makeCgroupRoot(t, k.cgroupRoot)
	t.Cleanup(func() {
		k.stop()
		if out, err := c.crictl("rmp", "--all", "--force"); err != nil {
			t.Logf("cleanup: crictl rmp --all --force: %v\n%s", err, out)
		}
		removeCgroupRoot(t, hierarchies, k.cgroupRoot)
		writeSysctls(t, saved)
	})
	k.start()
	return k
}

// start runs the kubelet and waits for its health check.
func (k *kubelet) start() {
	k.t.Helper()
	log, err := os.OpenFile(filepath.Join(k.c.dir, "kubelet.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		k.t.Fatal(err)
	}
	defer log.Close()
	cmd := k.c.tools.ns.command(k.bin, "--config", k.config, "--root-dir", k.root,
		"--cert-dir", filepath.Join(k.root, "pki"), "--hostname-override", nodeName, "--v=2")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	k.cmd, k.exited = cmd, exited
	waitFor(k.t, 60*time.Second, "the kubelet's health check", func() bool {
		select {
		case <-exited:
			k.t.Fatalf("the kubelet exited at start-up:\n%s", k.c.logTail("kubelet.log"))
		default:
		}
		body, err := k.get(fmt.Sprintf("http://127.0.0.1:%d/healthz", healthzPort))
		return err == nil && strings.TrimSpace(body) == "ok"
	}, func() string { return k.c.logTail("kubelet.log") })
}

// stop stops the kubelet (SIGTERM; its pods keep running, as when a node's kubelet is
// restarted).
func (k *kubelet) stop() {
	if k.cmd == nil {
		return
	}
	// nsenter entered the namespaces and exec'd the kubelet: the process is the kubelet.
	stopProcess(k.cmd, 20*time.Second)
	<-k.exited
	k.cmd = nil
}

func (k *kubelet) get(url string) (string, error) {
	resp, err := k.http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), err
}

// kubePod is what the suite reads of a pod in the kubelet's /pods.
type kubePod struct {
	Metadata struct {
		Name string
		UID  string
	}
	Status struct {
		Phase             string
		ContainerStatuses []kubeContainer
	}
}

// kubeContainer is a container's status as the kubelet reports it.
type kubeContainer struct {
	Name         string
	ContainerID  string // containerd://<id>
	RestartCount int
	State        struct {
		Waiting *struct {
			Reason  string
			Message string
		}
		Running    *struct{}
		Terminated *struct {
			Reason   string
			ExitCode int
		}
	}
}

// id is the container's ID in containerd.
func (c kubeContainer) id() string { return strings.TrimPrefix(c.ContainerID, "containerd://") }

// running tells whether every container of the pod runs.
func (p *kubePod) running() bool {
	if p.Status.Phase != "Running" || len(p.Status.ContainerStatuses) == 0 {
		return false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Running == nil {
			return false
		}
	}
	return true
}

// container is the status of the pod's container name.
func (p *kubePod) container(name string) (kubeContainer, bool) {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == name {
			return cs, true
		}
	}
	return kubeContainer{}, false
}

func (p *kubePod) String() string {
	b, _ := json.Marshal(p.Status)
	return string(b)
}

// pods reads the kubelet's pods by name (the static pod's name with the node's).
func (k *kubelet) pods() (map[string]*kubePod, error) {
	body, err := k.get(fmt.Sprintf("https://127.0.0.1:%d/pods", kubeletPort))
	if err != nil {
		return nil, err
	}
	var list struct{ Items []*kubePod }
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		return nil, fmt.Errorf("the kubelet's /pods: %w", err)
	}
	out := map[string]*kubePod{}
	for _, p := range list.Items {
		out[strings.TrimSuffix(p.Metadata.Name, "-"+nodeName)] = p
	}
	return out, nil
}

// waitPod polls the kubelet until ok holds for static pod name, or limit passes.
func (k *kubelet) waitPod(name, what string, limit time.Duration, ok func(*kubePod) bool) (*kubePod, error) {
	var last *kubePod
	var lastErr error
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		pods, err := k.pods()
		if err != nil {
			lastErr = err
			continue
		}
		if p := pods[name]; p != nil {
			last = p
			if ok(p) {
				return p, nil
			}
		}
	}
	if last == nil {
		return nil, fmt.Errorf("pod %s: not %s after %s, and the kubelet does not list it (%v)", name, what, limit, lastErr)
	}
	return nil, fmt.Errorf("pod %s: not %s after %s; its status: %s", name, what, limit, last)
}

// apply writes a static pod's manifest (the kubelet sees it at once: it watches the
// directory).
func (k *kubelet) apply(name string, spec map[string]any) error {
	manifest := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": "default"},
		"spec":     spec,
	}
	b, err := json.MarshalIndent(manifest, "", "  ")
	if err != nil {
		return err
	}
	// Written aside and renamed, so the kubelet never reads half a file.
	tmp := filepath.Join(filepath.Dir(k.manifests), name+".json")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(k.manifests, name+".json"))
}

// remove deletes a static pod's manifest.
func (k *kubelet) remove(name string) error {
	return os.Remove(filepath.Join(k.manifests, name+".json"))
}

// readSysctls reads kubeletSysctls.
func readSysctls(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range kubeletSysctls {
		b, err := os.ReadFile("/proc/sys/" + s)
		if err != nil {
			t.Fatal(err)
		}
		out[s] = strings.TrimSpace(string(b))
	}
	return out
}

// writeSysctls puts saved back, and says which the kubelet had changed.
func writeSysctls(t *testing.T, saved map[string]string) {
	now := readSysctls(t)
	for _, s := range kubeletSysctls {
		if now[s] == saved[s] {
			continue
		}
		if err := os.WriteFile("/proc/sys/"+s, []byte(saved[s]), 0o644); err != nil {
			t.Errorf("putting back sysctl %s=%s (the kubelet set %s): %v", s, saved[s], now[s], err)
		}
	}
}

// cgroupHierarchies are the mounted cgroup hierarchies: the unified one (cgroup v2), or
// each v1 controller's (and the hybrid layout's unified one).
func cgroupHierarchies(t *testing.T) []string {
	t.Helper()
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}
	}
	var out []string
	for _, m := range mounts() {
		if (m.fstype == "cgroup" || m.fstype == "cgroup2") && strings.HasPrefix(m.point, "/sys/fs/cgroup/") {
			out = append(out, m.point)
		}
	}
	if len(out) == 0 {
		t.Fatal("no cgroup hierarchy mounted under /sys/fs/cgroup")
	}
	return out
}

// makeCgroupRoot makes the kubelet's cgroup root in every hierarchy (the kubelet wants it
// to exist). A v1 cpuset starts with no CPUs and no memory nodes: it gets its parent's.
func makeCgroupRoot(t *testing.T, root string) []string {
	t.Helper()
	hs := cgroupHierarchies(t)
	for _, h := range hs {
		dir := filepath.Join(h, root)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("making the kubelet's cgroup root: %v", err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if filepath.Base(h) != "cpuset" {
				continue
			}
			b, err := os.ReadFile(filepath.Join(h, f))
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, f), b, 0o644)
			}
			if err != nil {
				t.Fatalf("cgroup root %s: %s: %v", dir, f, err)
			}
		}
	}
	return hs
}

// removeCgroupRoot removes the cgroup root and what the kubelet made below it, deepest
// first (empty cgroups only: a cgroup with a process left in it stays, and is reported).
func removeCgroupRoot(t *testing.T, hierarchies []string, root string) {
	for _, h := range hierarchies {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, root), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
		for _, d := range dirs {
			var err error
			for i := 0; i < 50; i++ {
				if err = syscall.Rmdir(d); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil && !os.IsNotExist(err) {
				t.Errorf("cleanup: removing cgroup %s: %v", d, err)
			}
		}
	}
}

// sandboxOf is the pod sandbox ID of a container (crictl inspect).
func (c *cluster) sandboxOf(id string) (string, error) {
	out, err := c.crictl("inspect", "--output", "json", id)
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, out)
	}
	var doc struct{ Info struct{ SandboxID string } }
	if err := json.Unmarshal([]byte(out), &doc); err != nil || doc.Info.SandboxID == "" {
		return "", fmt.Errorf("crictl inspect %s: no sandbox ID (%v)", id, err)
	}
	return doc.Info.SandboxID, nil
}
