package e2e

// A private containerd (and, in ttrpc mode, an imv daemon) per mode: root, state, sockets,
// runc's root and the shim socket directory all under one temporary directory, never
// /run/containerd or /var/lib/containerd. Pods run with the host's network (no CNI).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Modes of the patched containerd, as the suite names them.
const (
	modeCgo   = "imv"
	modeTtrpc = "imv-ttrpc"
	modeStock = "stock"
)

// implementation is the patched containerd's image_volumes.implementation for a mode.
func implementation(mode string) string {
	if mode == modeStock {
		return "containerd"
	}
	return mode
}

// tools are the binaries the suite drives, from the environment (scripts/test sets it).
type tools struct {
	bin     string // containerd, containerd-shim-runc-v2, ctr, crictl
	imv     string // the imv command, for `imv serve` in ttrpc mode
	runc    string
	busybox string
	// registry, when set, is the suite's registry: each containerd reaches it as
	// registryName (hosts.toml).
	registry *registry
	// ns, when set, is where containerd runs, its pods on a CNI bridge (netns_test.go);
	// nil: the host's namespaces, pods on the host's network.
	ns *privateNS
}

// cluster is one running containerd in one mode.
type cluster struct {
	t      testing.TB
	tools  tools
	mode   string
	dir    string
	sock   string
	imvCmd *exec.Cmd
	// mu guards ctrd and ctrdExited, which a supervisor (superviseContainerd) also sets.
	mu   sync.Mutex
	ctrd *exec.Cmd
	// ctrdExited is closed when ctrd exits.
	ctrdExited chan struct{}
	// containerdBin is the containerd executable run: tools.bin's, or a copy under another
	// name (a suite that kills containerd by name).
	containerdBin string
	// criState is the CRI plugin's state directory: volumes are under image-volumes/.
	criState string
	// metrics is containerd's metrics address (/v1/metrics); imvMetrics the imv daemon's
	// (/metrics), in ttrpc mode.
	metrics, imvMetrics string
}

// freeAddress is a 127.0.0.1 port no one listens on now.
func freeAddress(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

const configTemplate = `version = 3
root = "@DIR@/root"
state = "@DIR@/state"
plugin_dir = "@DIR@/plugins"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "@DIR@/c.sock"

[ttrpc]
  address = "@DIR@/c.sock.ttrpc"

[debug]
  address = ""
  level = "debug"

[metrics]
  address = "@METRICS@"

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = "@DIR@/opt"
  [plugins.'io.containerd.shim.v1.manager']
    socket_dir = "@DIR@/s"
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "@PAUSE@"
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = "@DIR@/certs.d"
  [plugins.'io.containerd.nri.v1.nri']
    socket_path = "@DIR@/nri.sock"
    plugin_path = "@DIR@/nri/plugins"
    plugin_config_path = "@DIR@/nri/conf.d"
  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    restrict_oom_score_adj = true
    enable_cdi = false
    # The pods' network namespaces are mounted under the state directory, not /run/netns.
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "@RUNC@"
          Root = "@DIR@/runc"
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["@DIR@/cni/bin", "/usr/lib/cni"]
      conf_dir = "@DIR@/cni/net.d"
    [plugins.'io.containerd.cri.v1.runtime'.image_volumes]
      implementation = "@IMPLEMENTATION@"
      address = "@DIR@/imv.sock"
      log_level = "debug"
  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
`

// cniConflist is the pods' network when the cluster runs in a private namespace.
const cniConflist = `{
  "cniVersion": "1.0.0",
  "name": "imv-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "imve2e0",
      "isGateway": false,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.88.0.0/16"}]],
        "dataDir": "@DIR@/cni/ipam"
      }
    }
  ]
}
`

// startCluster starts containerd (and the imv daemon for ttrpc mode) under a new temporary
// directory and imports the test images (see buildImages). Everything is stopped and removed when the test
// ends, whatever happened.
func startCluster(t testing.TB, tl tools, mode, pause, busyboxArchive, volumesArchive string) *cluster {
	t.Helper()
	// Short: the shim socket directory must fit in 38 bytes, sockets in sun_path.
	dir, err := os.MkdirTemp("/tmp", "ie2e-")
	if err != nil {
		t.Fatal(err)
	}
	// Searchable by all, as /run and /var/lib are: the root of a pod in a user namespace
	// is a host ID other than 0, and runc works on the bundle under this directory as it.
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, tools: tl, mode: mode, dir: dir, sock: filepath.Join(dir, "c.sock"),
		criState: filepath.Join(dir, "state", "io.containerd.grpc.v1.cri"),
		metrics:  freeAddress(t), imvMetrics: freeAddress(t)}
	t.Cleanup(c.destroy)
	cfg := strings.NewReplacer("@DIR@", dir, "@PAUSE@", pause, "@RUNC@", tl.runc,
		"@IMPLEMENTATION@", implementation(mode), "@METRICS@", c.metrics).Replace(configTemplate)
	for _, d := range []string{"cni/bin", "cni/net.d", "logs", "state"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The suite's registry answers for its own name and for those the upstream suites'
	// images have (upstream_test.go), so they keep their names and nothing leaves the
	// machine.
	if tl.registry != nil {
		for _, name := range append([]string{registryName}, upstreamRegistries...) {
			hosts := filepath.Join(dir, "certs.d", name, "hosts.toml")
			if err := os.MkdirAll(filepath.Dir(hosts), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(hosts, []byte(tl.registry.hostsToml()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// containerd's state directory is on a tmpfs, as /run/containerd is on a node: where
	// the volumes are mounted and their directories made and removed (destroy unmounts it).
	if err := syscall.Mount("tmpfs", filepath.Join(dir, "state"), "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mounting a tmpfs for the state directory: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if tl.ns != nil {
		// The pods' network: a bridge with no gateway in the private network namespace,
		// addresses from host-local, kept in the cluster's directory.
		conflist := strings.ReplaceAll(cniConflist, "@DIR@", dir)
		if err := os.WriteFile(filepath.Join(dir, "cni/net.d/10-imv-e2e.conflist"), []byte(conflist), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if mode == modeTtrpc {
		c.startImvDaemon()
	}
	c.startContainerd()
	if out, err := c.ctr("images", "import", busyboxArchive); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	if out, err := c.ctr("images", "import", "--no-unpack", volumesArchive); err != nil {
		t.Fatalf("ctr images import --no-unpack: %v\n%s", err, out)
	}
	return c
}

func (c *cluster) startImvDaemon() {
	c.t.Helper()
	sock := filepath.Join(c.dir, "imv.sock")
	log, err := os.Create(filepath.Join(c.dir, "imv.log"))
	if err != nil {
		c.t.Fatal(err)
	}
	defer log.Close()
	// In containerd's namespaces, if it has its own: the volumes it mounts must show there
	// (the host's mounts do not propagate into them here, its root being private).
	cmd := c.tools.ns.command(c.tools.imv, "--backend", "containerd", "--address", c.sock,
		"--namespace", "k8s.io", "--root", filepath.Join(c.dir, "imv-root"),
		"--state", c.criState, "--log-level", imvLogLevel(), "--socket", sock, "serve",
		"--metrics-address", c.imvMetrics)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.imvCmd = cmd
	waitFor(c.t, 20*time.Second, "imv serve's socket", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	}, func() string { return c.logTail("imv.log") })
}

// imvLogLevel is imv serve's log level: info, or IMV_E2E_IMV_LOG (e.g. imv=trace to see
// every containerd call of a mutate with its duration, in <cluster dir>/imv.log).
func imvLogLevel() string {
	if l := os.Getenv("IMV_E2E_IMV_LOG"); l != "" {
		return l
	}
	return "info"
}

func (c *cluster) startContainerd() {
	c.t.Helper()
	if err := c.launchContainerd(); err != nil {
		c.t.Fatal(err)
	}
}

// launchContainerd starts containerd and waits for its CRI plugin (startContainerd, for
// callers that are not the test's goroutine).
func (c *cluster) launchContainerd() error {
	log, err := os.OpenFile(filepath.Join(c.dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	bin := c.containerdBin
	if bin == "" {
		bin = filepath.Join(c.tools.bin, "containerd")
	}
	cmd := c.tools.ns.command(bin, "--config", filepath.Join(c.dir, "config.toml"))
	// The mode is the config's (image_volumes): the environment variables that would
	// override it are not passed on.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONTAINERD_IMAGE_VOLUMES=") && !strings.HasPrefix(kv, "IMV_ADDRESS=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env,
		// The shim is found on PATH; use the one built with this containerd.
		"PATH="+c.tools.bin+":"+os.Getenv("PATH"),
	)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	c.mu.Lock()
	c.ctrd, c.ctrdExited = cmd, exited
	c.mu.Unlock()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case <-exited:
			return fmt.Errorf("containerd exited at start-up:\n%s", c.logTail("containerd.log"))
		default:
		}
		if out, err := c.crictl("info"); err == nil && strings.Contains(out, `"RuntimeReady"`) {
			return nil
		}
	}
	return fmt.Errorf("containerd's CRI plugin not ready after 60s:\n%s", c.logTail("containerd.log"))
}

// superviseContainerd starts containerd again whenever it exits, as a node's service
// manager does, until the returned stop is called (before the cluster is destroyed).
func (c *cluster) superviseContainerd() (stop func()) {
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		for {
			c.mu.Lock()
			exited := c.ctrdExited
			c.mu.Unlock()
			select {
			case <-done:
				return
			case <-exited:
			}
			select {
			case <-done:
				return
			default:
			}
			if err := c.launchContainerd(); err != nil {
				c.t.Logf("supervisor: restarting containerd: %v", err)
				return
			}
		}
	}()
	return func() { close(done); <-finished }
}

// stopContainerd stops containerd with SIGTERM (pods and their shims keep running, as in
// a containerd upgrade), then SIGKILL if it does not exit.
func (c *cluster) stopContainerd() {
	c.mu.Lock()
	cmd := c.ctrd
	c.ctrd = nil
	c.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	stopProcess(cmd, 20*time.Second)
}

func stopProcess(cmd *exec.Cmd, grace time.Duration) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	time.Sleep(100 * time.Millisecond)
}

// destroy removes every pod, stops the daemons and the shims, unmounts what is left under
// the directory (deepest first) and removes it.
func (c *cluster) destroy() {
	c.mu.Lock()
	running := c.ctrd != nil
	c.mu.Unlock()
	if running {
		if out, err := c.crictl("rmp", "--all", "--force"); err != nil {
			c.t.Logf("cleanup: crictl rmp --all --force: %v\n%s", err, out)
		}
		c.stopContainerd()
	}
	if c.imvCmd != nil {
		stopProcess(c.imvCmd, 10*time.Second)
		c.imvCmd = nil
	}
	killUnder(c.dir)
	unmountUnder(c.dir)
	c.keepLogs()
	if err := os.RemoveAll(c.dir); err != nil {
		c.t.Logf("cleanup: removing %s: %v", c.dir, err)
	}
}

// keepLogs copies the daemons' logs to IMV_E2E_LOGS/<mode>-<name>, if that is set, before
// the cluster's directory goes.
func (c *cluster) keepLogs() {
	dest := os.Getenv("IMV_E2E_LOGS")
	if dest == "" {
		return
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		c.t.Logf("keeping logs: %v", err)
		return
	}
	for _, name := range []string{"containerd.log", "imv.log", "critest.log", "containerd-integration.log", "kubelet.log"} {
		b, err := os.ReadFile(filepath.Join(c.dir, name))
		if err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dest, c.mode+"-"+name), b, 0o644); err != nil {
			c.t.Logf("keeping logs: %v", err)
		}
	}
}

// killUnder kills the processes whose command line names dir (shims, containers' runc).
func killUnder(dir string) {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(dir+"/")) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	time.Sleep(100 * time.Millisecond)
}

// unmountUnder unmounts every mount below dir, deepest first, lazily (a busy mount must
// not stop the cleanup). Nothing outside dir is touched.
func unmountUnder(dir string) {
	mounts := mountsUnder(dir)
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	point, fstype, opts, superOpts string
}

// mounts reads this process's /proc/self/mountinfo.
func mounts() []mountEntry { return mountsOf("self") }

// mountsOf reads /proc/<pid>/mountinfo, the mount table of pid's mount namespace.
func mountsOf(pid string) []mountEntry {
	b, err := os.ReadFile("/proc/" + pid + "/mountinfo")
	if err != nil {
		return nil
	}
	var out []mountEntry
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		e := mountEntry{point: unescapeMountinfo(f[4]), opts: f[5]}
		// Optional fields end at "-": then fstype, source, super options.
		for i := 6; i < len(f)-3; i++ {
			if f[i] == "-" {
				e.fstype, e.superOpts = f[i+1], f[i+3]
				break
			}
		}
		out = append(out, e)
	}
	return out
}

// mountsUnder lists the mountpoints strictly below dir, from /proc/self/mountinfo.
func mountsUnder(dir string) []string { return pointsUnder(mounts(), dir) }

// pointsUnder lists the mountpoints of ms strictly below dir.
func pointsUnder(ms []mountEntry, dir string) []string {
	var out []string
	for _, m := range ms {
		if strings.HasPrefix(m.point, dir+"/") {
			out = append(out, m.point)
		}
	}
	return out
}

// mountsUnder lists the mountpoints strictly below dir as containerd sees them: in its
// mount namespace, which is the test's own unless the cluster runs in private ones (what
// is mounted there does not show on the host).
func (c *cluster) mountsUnder(dir string) []string {
	if c.tools.ns == nil {
		return mountsUnder(dir)
	}
	return pointsUnder(mountsOf(strconv.Itoa(c.tools.ns.pid)), dir)
}

// seen is path as containerd sees it: through its mount namespace's root, if it has one of
// its own (mounts made on the host after that namespace was, like the state directory's
// tmpfs, do not show in it: the host's root mount here is private).
func (c *cluster) seen(path string) string {
	if c.tools.ns == nil {
		return path
	}
	return filepath.Join("/proc", strconv.Itoa(c.tools.ns.pid), "root", path)
}

// mountAt is the topmost mount at path, if any.
func mountAt(path string) (mountEntry, bool) {
	var found mountEntry
	ok := false
	for _, m := range mounts() {
		if m.point == path {
			found, ok = m, true
		}
	}
	return found, ok
}

func unescapeMountinfo(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// isMountpoint tells whether path is a mountpoint, by mountinfo.
func isMountpoint(path string) bool {
	_, ok := mountAt(path)
	return ok
}

// crictl runs crictl against this containerd.
func (c *cluster) crictl(args ...string) (string, error) {
	return c.crictlCtx(context.Background(), args...)
}

func (c *cluster) crictlCtx(ctx context.Context, args ...string) (string, error) {
	// An empty config of its own, so crictl neither reads the host's nor warns that
	// /etc/crictl.yaml is missing.
	conf := filepath.Join(c.dir, "crictl.yaml")
	if _, err := os.Stat(conf); err != nil {
		_ = os.WriteFile(conf, nil, 0o644)
	}
	full := append([]string{"--config", conf, "--runtime-endpoint", "unix://" + c.sock,
		"--image-endpoint", "unix://" + c.sock, "--timeout", "60s"}, args...)
	// In containerd's namespaces, if it has its own: streams (exec) connect over TCP to
	// its stream server there.
	cmd := c.tools.ns.commandContext(ctx, filepath.Join(c.tools.bin, "crictl"), full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), fmt.Errorf("crictl %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(stdout.String()), nil
}

// ctr runs ctr in the CRI namespace and returns what it printed: its standard output, and
// when it fails its standard error too (where it also warns, e.g. of cgroup v1, on success).
func (c *cluster) ctr(args ...string) (string, error) {
	full := append([]string{"--address", c.sock, "--namespace", "k8s.io"}, args...)
	cmd := exec.Command(filepath.Join(c.tools.bin, "ctr"), full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return strings.TrimSpace(stdout.String() + stderr.String()), err
	}
	return strings.TrimSpace(stdout.String()), nil
}

func (c *cluster) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, name))
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// volumesDir is where the CRI plugin's image volumes of sandbox pod are.
func (c *cluster) volumesDir(pod string) string {
	return filepath.Join(c.criState, "image-volumes", pod)
}

func waitFor(t testing.TB, limit time.Duration, what string, ok func() bool, diag func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready after %s:\n%s", what, limit, diag())
}

// writeJSON writes v as JSON into a new file of the cluster's directory.
func (c *cluster) writeJSON(name string, v any) string {
	c.t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		c.t.Fatal(err)
	}
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		c.t.Fatal(err)
	}
	return p
}
