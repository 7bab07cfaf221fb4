package imv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The integration tests run one table of behaviours (cases_test.go) against every
// implementation of ImageVolumes over every backend:
//
//	cgo/local         Library over the embedded store
//	cgo/containerd    Library over a containerd the tests start
//	ttrpc/local       Client to `imv serve` over the embedded store
//	ttrpc/containerd  Client to `imv serve` over the same containerd
//	ttrpc-hosted/local  Client to the service hosted on ttrpc-rust's own server, as a
//	                    shim hosts it (cli/examples/hosted_service.rs), embedded store
//
// They mount, so they need root, and they need the Rust build: the binary, mkimage, and
// (for cgo) libimv.a linked in. scripts/test builds all of it and runs them. Paths can be
// overridden with IMV_BIN, IMV_MKIMAGE and IMV_CONTAINERD_TEST_DAEMON.

const (
	sampleImage  = "example.com/sample:1"
	unknownImage = "example.com/no-such-image:1"
	sampleHello  = "hello from imv\n" // data/hello.txt in mkimage's sample image
	// sampleModel is mkimage's sample model, an OCI artifact (ModelPack): model.safetensors
	// (64 KiB) and config.json as raw layers, docs/README.md in a tar layer.
	sampleModel = "example.com/imv/model:1"
)

// env is one implementation over one backend, ready for the cases.
type env struct {
	name string
	iv   ImageVolumes
	// state is the state directory: volumes are mounted under state/image-volumes.
	state string
	// leases lists the backend's lease IDs, for backends that have them to inspect
	// (containerd); nil otherwise.
	leases func(t *testing.T) []string
}

// envFactory makes an env for one test, and registers its teardown with t.Cleanup.
type envFactory struct {
	name  string
	setup func(t *testing.T) *env
}

// factories is filled by init functions: the ttrpc ones here, the cgo ones in
// library_integration_test.go (only built with cgo).
var factories []envFactory

func init() {
	factories = append(factories,
		envFactory{"ttrpc/local", setupTTRPCLocal},
		envFactory{"ttrpc/containerd", setupTTRPCContainerd},
		envFactory{"ttrpc-hosted/local", setupHostedLocal},
	)
}

func TestMain(m *testing.M) {
	code := m.Run()
	// One containerd for the whole binary, stopped whatever the tests did.
	if err := stopContainerd(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the test containerd:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// requireRoot fails (not skips) a test that mounts when not root: a skipped test would
// look like a passed one in CI.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts filesystems: run it as root (scripts/test does)")
	}
}

// repoPath is a path in the repository, for the defaults of the tools below.
func repoPath(rel string) string {
	abs, err := filepath.Abs(filepath.Join("..", rel))
	if err != nil {
		panic(err)
	}
	return abs
}

func tool(t *testing.T, envVar, rel string) string {
	t.Helper()
	p := os.Getenv(envVar)
	if p == "" {
		p = repoPath(rel)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v (build it first, or set %s; scripts/test does both)", rel, err, envVar)
	}
	return p
}

func imvBin(t *testing.T) string { return tool(t, "IMV_BIN", "target/debug/imv") }

func hostedBin(t *testing.T) string {
	return tool(t, "IMV_HOSTED_SERVICE", "target/debug/examples/hosted_service")
}

// run runs a command, failing the test with its output when it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// tempDir makes a short temporary directory (socket paths must fit in 108 bytes) and
// removes it at the end of the test. Anything still mounted under it by then is a leak:
// the test fails, and the mount is detached so the removal cannot descend into an image.
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "imv-go-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, m := range mountsUnder(t, dir) {
			// A store's EROFS layers stay mounted on purpose (docs/design.md, "Layers as
			// EROFS images"); anything else is a volume the test leaked.
			if !isLayerMount(m) {
				t.Errorf("still mounted at the end of the test: %s", m)
			}
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", m, err)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	return dir
}

// mountPoints returns every mount point of this process's mount namespace.
func mountPoints(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	points := map[string]bool{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 {
			points[unescapeMountinfo(fields[4])] = true
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return points
}

// unescapeMountinfo undoes the octal escapes (\040 for a space, ...) of mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// isLayerMount tells whether mount point m is an embedded store's layer:
// <root>/snapshots/<chain id hex>/fs.
func isLayerMount(m string) bool {
	return filepath.Base(m) == "fs" && filepath.Base(filepath.Dir(filepath.Dir(m))) == "snapshots"
}

func mountsUnder(t *testing.T, dir string) []string {
	var out []string
	for p := range mountPoints(t) {
		if strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	return out
}

// ---- the sample image, made once by mkimage ----

var (
	imagesOnce sync.Once
	imagesDir  string
	imagesErr  error
)

// sampleImages returns an OCI layout directory and an OCI archive of the sample image,
// named sampleImage.
func sampleImages(t *testing.T) (layout, archive string) {
	t.Helper()
	mkimage := tool(t, "IMV_MKIMAGE", "target/debug/examples/mkimage")
	imagesOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imv-go-images-")
		if err != nil {
			imagesErr = err
			return
		}
		imagesDir = dir
		for _, args := range [][]string{
			{"--out", filepath.Join(dir, "layout"), "--name", sampleImage},
			{"--out", filepath.Join(dir, "sample.tar"), "--format", "oci-archive", "--name", sampleImage},
			// Tagged "v1" only, as umoci and skopeo write a layout.
			{"--out", filepath.Join(dir, "tagged"), "--name", "example.com/sample:v1", "--tag-only"},
			{"--out", filepath.Join(dir, "model"), "--artifact", "model", "--name", sampleModel},
			{"--out", filepath.Join(dir, "model.tar"), "--format", "oci-archive", "--artifact", "model", "--name", sampleModel},
		} {
			if out, err := exec.Command(mkimage, args...).CombinedOutput(); err != nil {
				imagesErr = fmt.Errorf("mkimage %v: %v\n%s", args, err, out)
				return
			}
		}
	})
	if imagesErr != nil {
		t.Fatal(imagesErr)
	}
	return filepath.Join(imagesDir, "layout"), filepath.Join(imagesDir, "sample.tar")
}

// modelImages returns an OCI layout directory and an OCI archive of the sample model,
// named sampleModel.
func modelImages(t *testing.T) (layout, archive string) {
	t.Helper()
	sampleImages(t)
	return filepath.Join(imagesDir, "model"), filepath.Join(imagesDir, "model.tar")
}

// taggedLayout returns an OCI layout of the sample image tagged "v1" only (no repository).
func taggedLayout(t *testing.T) string {
	t.Helper()
	sampleImages(t)
	return filepath.Join(imagesDir, "tagged")
}

// ---- the test containerd: one per test binary, a namespace per env ----

var (
	ctdMu      sync.Mutex
	ctdDir     string
	ctdAddress string
	ctdErr     error
	ctdStarted bool
)

func containerdDaemon() string {
	return os.Getenv("IMV_CONTAINERD_TEST_DAEMON")
}

// startContainerd starts the test containerd the first time it is asked for, through
// scripts/containerd-test-daemon, and returns its socket.
func startContainerd(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	script := tool(t, "IMV_CONTAINERD_TEST_DAEMON", "scripts/containerd-test-daemon")
	ctdMu.Lock()
	defer ctdMu.Unlock()
	if !ctdStarted {
		ctdStarted = true
		out, err := exec.Command(script, "start").Output()
		if err != nil {
			var stderr []byte
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				stderr = ee.Stderr
			}
			ctdErr = fmt.Errorf("%s start: %v\n%s", script, err, stderr)
		} else {
			for _, line := range strings.Split(string(out), "\n") {
				k, v, _ := strings.Cut(line, "=")
				switch k {
				case "CONTAINERD_DIR":
					ctdDir = v
				case "CONTAINERD_ADDRESS":
					ctdAddress = v
				}
			}
			if ctdDir == "" || ctdAddress == "" {
				ctdErr = fmt.Errorf("%s start printed no directory or address:\n%s", script, out)
			}
		}
	}
	if ctdErr != nil {
		t.Fatal(ctdErr)
	}
	return ctdAddress
}

func stopContainerd() error {
	ctdMu.Lock()
	defer ctdMu.Unlock()
	if imagesDir != "" {
		os.RemoveAll(imagesDir)
	}
	if ctdDir == "" {
		return nil
	}
	script := containerdDaemon()
	if script == "" {
		script = repoPath("scripts/containerd-test-daemon")
	}
	out, err := exec.Command(script, "stop", ctdDir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	ctdDir = ""
	return nil
}

// containerdNamespace imports the sample image into a fresh namespace of the test
// containerd, unpacked by no one (imv unpacks it), and returns the address and a lease
// lister for that namespace.
func containerdNamespace(t *testing.T, ns string) (address string, leases func(t *testing.T) []string) {
	t.Helper()
	address = startContainerd(t)
	_, archive := sampleImages(t)
	run(t, "ctr", "-a", address, "-n", ns, "images", "import", "--no-unpack", archive)
	_, model := modelImages(t)
	run(t, "ctr", "-a", address, "-n", ns, "images", "import", "--no-unpack", model)
	// The namespace goes when the env is done, so a rerun in the same daemon starts clean.
	t.Cleanup(func() {
		for _, args := range [][]string{
			{"images", "rm", sampleImage, sampleModel},
		} {
			exec.Command("ctr", append([]string{"-a", address, "-n", ns}, args...)...).Run()
		}
	})
	leases = func(t *testing.T) []string {
		t.Helper()
		return strings.Fields(run(t, "ctr", "-a", address, "-n", ns, "leases", "ls", "-q"))
	}
	return address, leases
}

// ---- imv serve ----

// startDaemon starts `imv serve` with args on a socket in dir and stops it at the end of
// the test (SIGTERM, then SIGKILL). Its log is shown when the test fails. Args after a
// "serve" among them are serve's own (--allow-uid, ...).
func startDaemon(t *testing.T, dir string, args ...string) (socket string, stop func()) {
	t.Helper()
	socket = filepath.Join(dir, "imv.sock")
	var serveArgs []string
	if i := slices.Index(args, "serve"); i >= 0 {
		args, serveArgs = args[:i], args[i+1:]
	}
	args = append(append(append([]string{"--log-level", "info"}, args...), "--socket", socket, "serve"), serveArgs...)
	return socket, startServer(t, dir, "imv serve", imvBin(t), args, socket)
}

// startServer starts a server (bin with args, named what in messages) whose socket is
// socket, waits for the socket, and stops it with SIGTERM at the end of the test (or when
// the returned function is called). Its output goes to dir/<base of bin>.log, shown when
// the test fails.
func startServer(t *testing.T, dir, what, bin string, args []string, socket string) (stop func()) {
	t.Helper()
	logPath := filepath.Join(dir, filepath.Base(bin)+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Flags say everything; the caller's environment must not (IMV_ROOT and co.).
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logFile.Close() }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				t.Errorf("%s did not stop in 10s after SIGTERM; killing it", what)
				_ = cmd.Process.Kill()
				<-exited
			}
			if t.Failed() {
				if log, err := os.ReadFile(logPath); err == nil {
					t.Logf("%s log:\n%s", what, log)
				}
			}
		})
	}
	t.Cleanup(stop)

	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			return stop
		}
		select {
		case err := <-exited:
			exited <- err
			log, _ := os.ReadFile(logPath)
			t.Fatalf("%s exited: %v\n%s", what, err, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no socket at %s after 20s", what, socket)
		}
	}
}

func dial(t *testing.T, socket string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func setupTTRPCLocal(t *testing.T) *env {
	dir, socket := startSampleDaemon(t)
	return &env{name: "ttrpc/local", iv: dial(t, socket), state: filepath.Join(dir, "state")}
}

// startSampleHosted starts the hosted-service example on an embedded store holding the
// sample images, under a new temporary directory: that directory and its socket.
func startSampleHosted(t *testing.T) (dir, socket string) {
	requireRoot(t)
	dir = tempDir(t)
	root, state := filepath.Join(dir, "root"), filepath.Join(dir, "state")
	layout, _ := sampleImages(t)
	run(t, imvBin(t), "--root", root, "--state", state, "import", layout, "--name", sampleImage)
	model, _ := modelImages(t)
	run(t, imvBin(t), "--root", root, "--state", state, "import", model)
	socket = filepath.Join(dir, "hosted.sock")
	startServer(t, dir, "hosted_service", hostedBin(t), []string{socket, root, state}, socket)
	return dir, socket
}

func setupHostedLocal(t *testing.T) *env {
	dir, socket := startSampleHosted(t)
	return &env{name: "ttrpc-hosted/local", iv: dial(t, socket), state: filepath.Join(dir, "state")}
}

// startSampleDaemon starts `imv serve` (with serveArgs) on an embedded store, under a new
// temporary directory, holding the sample image: that directory and the daemon's socket.
func startSampleDaemon(t *testing.T, serveArgs ...string) (dir, socket string) {
	requireRoot(t)
	dir = tempDir(t)
	root, state := filepath.Join(dir, "root"), filepath.Join(dir, "state")
	layout, _ := sampleImages(t)
	run(t, imvBin(t), "--root", root, "--state", state, "import", layout, "--name", sampleImage)
	model, _ := modelImages(t)
	run(t, imvBin(t), "--root", root, "--state", state, "import", model)
	args := []string{"--root", root, "--state", state}
	if len(serveArgs) > 0 {
		args = append(append(args, "serve"), serveArgs...)
	}
	socket, _ = startDaemon(t, dir, args...)
	return dir, socket
}

func setupTTRPCContainerd(t *testing.T) *env {
	requireRoot(t)
	dir := tempDir(t)
	state := filepath.Join(dir, "state")
	const ns = "imv-go-ttrpc"
	address, leases := containerdNamespace(t, ns)
	socket, _ := startDaemon(t, dir, "--backend", "containerd", "--address", address, "--namespace", ns, "--state", state)
	return &env{name: "ttrpc/containerd", iv: dial(t, socket), state: state, leases: leases}
}
