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
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// privateNS is the namespaces, held open by a process of their own.
type privateNS struct {
	holder *exec.Cmd
	pid    int
}

// startPrivateNS makes the namespaces with an overlay on each of overlaid (existing
// directories), their upper directories under dir; they go when the test ends (the holder
// is killed, and with the last process in them, they go).
func startPrivateNS(t testing.TB, dir string, overlaid ...string) *privateNS {
	t.Helper()
	script := "set -e\nip link set lo up\n"
	for _, path := range overlaid {
		name := strings.ReplaceAll(strings.Trim(path, "/"), "/", "-")
		upper, work := filepath.Join(dir, name, "upper"), filepath.Join(dir, name, "work")
		for _, d := range []string{upper, work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		script += fmt.Sprintf("mount -t overlay overlay -o lowerdir=%s,upperdir=%s,workdir=%s %s\n", path, upper, work, path)
	}
	script += "echo ready\nexec sleep 2147483647"
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
	return ns.commandContext(context.Background(), name, args...)
}

// commandContext is command, killed when ctx is done.
func (ns *privateNS) commandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	if ns == nil {
		return exec.CommandContext(ctx, name, args...)
	}
	full := append([]string{"--target", strconv.Itoa(ns.pid), "--mount", "--net", "--", name}, args...)
	return exec.CommandContext(ctx, "nsenter", full...)
}

// dialContext connects from inside the namespaces' network (nil: the host's), for an HTTP
// client of what listens there: the socket is made on a thread moved into the network
// namespace for that moment, and stays in it.
func (ns *privateNS) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	if ns == nil {
		return d.DialContext(ctx, network, addr)
	}
	type dialed struct {
		conn net.Conn
		err  error
	}
	done := make(chan dialed, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- dialed{err: err}
			return
		}
		defer own.Close()
		theirs, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", ns.pid))
		if err != nil {
			runtime.UnlockOSThread()
			done <- dialed{err: err}
			return
		}
		defer theirs.Close()
		if err := setns(theirs); err != nil {
			runtime.UnlockOSThread()
			done <- dialed{err: fmt.Errorf("setns into the private network: %w", err)}
			return
		}
		conn, err := d.DialContext(ctx, network, addr)
		// A thread that cannot go back stays locked, and Go ends it with this goroutine.
		if setns(own) == nil {
			runtime.UnlockOSThread()
		}
		done <- dialed{conn, err}
	}()
	r := <-done
	return r.conn, r.err
}

// setns moves the calling thread into the network namespace f names.
func setns(f *os.File) error {
	return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
}

// hostPathsKept are host paths a node's containerd, CNI or kubelet writes by default, which
// the suite's own must not: each one's config points elsewhere, or the path is overlaid.
var hostPathsKept = []string{"/var/lib/kubelet", "/var/lib/cni", "/var/log/containers", "/var/log/pods",
	"/usr/libexec/kubernetes", "/etc/kubernetes", "/run/netns", "/run/nri", "/run/containerd",
	"/var/lib/containerd", "/run/kubernetes"}

// guardHostPaths fails the test if one of hostPathsKept that did not exist when it started
// exists when it ends.
func guardHostPaths(t testing.TB) {
	t.Helper()
	var absent []string
	for _, p := range hostPathsKept {
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			absent = append(absent, p)
		}
	}
	t.Cleanup(func() {
		for _, p := range absent {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s was made on the host during the test", p)
			}
		}
	})
}
