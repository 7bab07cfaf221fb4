package e2e

// A private network and mount namespace for suites whose pods have a pod network (the
// upstream suites): everything their containerd needs reaches it there, and nothing of it
// reaches the host. The network namespace holds the registry, containerd, the CNI bridge
// its pods are on (no gateway, nothing routed out) and the suites' TCP connections
// (streaming, port forwards); the mount namespace, a slave of the host's (mounts made on
// the host, such as the cluster's state tmpfs, show in it; none made in it show on the
// host), has an overlay on /var/lib whose upper directory is in the test's directory, so
// what libcni caches under /var/lib/cni stays there. Unix sockets are reached from the
// host through their paths, so crictl and ctr run on the host as for any cluster.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// privateNS is the namespaces, held open by a process of their own.
type privateNS struct {
	holder *exec.Cmd
	pid    int
}

// startPrivateNS makes the namespaces, their overlay's directories under dir; they go
// when the test ends (the holder is killed, and with the last process in them, they go).
func startPrivateNS(t testing.TB, dir string) *privateNS {
	t.Helper()
	upper, work := filepath.Join(dir, "var-lib", "upper"), filepath.Join(dir, "var-lib", "work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script := fmt.Sprintf(`set -e
ip link set lo up
mount -t overlay overlay -o lowerdir=/var/lib,upperdir=%s,workdir=%s /var/lib
echo ready
exec sleep 2147483647`, upper, work)
	cmd := exec.Command("unshare", "--mount", "--propagation", "slave", "--net", "--", "sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	ns := &privateNS{holder: cmd, pid: cmd.Process.Pid}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- strings.TrimSpace(line) == "ready"
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("the private namespaces' set-up failed: %s", stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the private namespaces' set-up did not finish: %s", stderr.String())
	}
	return ns
}

// command is name with args, run in the namespaces.
func (ns *privateNS) command(name string, args ...string) *exec.Cmd {
	if ns == nil {
		return exec.Command(name, args...)
	}
	full := append([]string{"--target", strconv.Itoa(ns.pid), "--mount", "--net", "--", name}, args...)
	return exec.Command("nsenter", full...)
}
