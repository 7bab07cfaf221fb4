package e2e

// A registry of the suite's own, for what is pulled as the kubelet pulls it (PullImage,
// ImageStatus): Debian's docker-registry on 127.0.0.1, its config and storage in a
// temporary directory, artifacts pushed to it with oras. Each cluster's containerd reaches
// it through hosts.toml (registry.config_path) under the name registryName, as a node
// reaches a registry it is configured for; nothing leaves the machine.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// registryName is the registry's name in image references; hosts.toml maps it to the
// registry's address.
const registryName = "models.imv-e2e.test"

// registry is a running docker-registry.
type registry struct {
	addr string // 127.0.0.1:port
	cmd  *exec.Cmd
}

// startRegistry starts docker-registry on a free port of 127.0.0.1 with storage under dir,
// stopped when the test ends.
func startRegistry(t testing.TB, dir string) *registry { return startRegistryIn(t, dir, nil) }

// startRegistryIn is startRegistry in ns (nil: the host's namespaces), where only what runs
// in ns reaches it.
func startRegistryIn(t testing.TB, dir string, ns *privateNS) *registry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("no docker-registry (Debian's docker-registry package; scripts/setup installs it)")
	}
	addr := "127.0.0.1:5000" // the private namespace's own loopback: nothing else there
	if ns == nil {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = l.Addr().String()
		_ = l.Close()
	}
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
`, filepath.Join(dir, "storage"), addr)
	cfgPath := filepath.Join(dir, "registry.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &registry{addr: addr, cmd: cmd}
	t.Cleanup(func() { stopProcess(cmd, 5*time.Second); logFile.Close() })
	waitFor(t, 20*time.Second, "the registry", func() bool {
		if ns != nil {
			// Reached from inside the namespace only.
			return ns.command("busybox", "wget", "-q", "-O", "/dev/null", "http://"+addr+"/v2/").Run() == nil
		}
		resp, err := http.Get("http://" + addr + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
		return string(b)
	})
	return r
}

// hostsToml is containerd's hosts.toml for registryName: plain HTTP to the registry.
func (r *registry) hostsToml() string {
	return fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", r.addr, r.addr)
}

// orasBin is the oras command: ORAS, else Go's bin directory (scripts/setup installs it
// there: go install oras.land/oras/cmd/oras@v1.3.6).
func orasBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("ORAS"); p != "" {
		return p
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "oras")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("oras")
	if err != nil {
		t.Fatal("no oras (scripts/setup installs it with go install oras.land/oras/cmd/oras@v1.3.6; or set ORAS)")
	}
	return p
}

// artifacts are the OCI artifacts the suite pushes, by role.
type artifacts struct {
	// Model is a ModelPack model: model.safetensors (a raw weight), tokenizer.json (a raw
	// weight config) and docs.tar (a tar layer holding docs/README.md), its config
	// ModelPack's.
	Model string
	// ModelWeightsSHA256 is the hex SHA-256 of model.safetensors.
	ModelWeightsSHA256 string
	// Data is an artifact with the empty config and one file, hello.txt, as `oras push
	// FILE` makes one.
	Data string
}

const (
	modelReadme = "# an imv end-to-end model\n"
	dataHello   = "hello from an OCI artifact\n"
)

// pushArtifacts writes the suite's artifacts' files in dir and pushes them to r with oras.
func pushArtifacts(t testing.TB, r *registry, dir string) *artifacts {
	t.Helper()
	oras := orasBin(t)
	work := filepath.Join(dir, "artifacts")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	weights := make([]byte, 1<<20)
	for i := range weights {
		weights[i] = byte(i*7 + i/251)
	}
	sum := sha256.Sum256(weights)
	files := map[string][]byte{
		"model.safetensors": weights,
		"tokenizer.json":    []byte(`{"version":"1.0"}`),
		"docs.tar":          tarOf([]entry{{Name: "docs/", Dir: true}, {Name: "docs/README.md", Body: modelReadme}}),
		"config.json":       []byte(`{"descriptor":{"name":"imv-e2e"},"config":{"format":"safetensors"},"modelfs":{"type":"layers","diffIds":[]}}`),
		"hello.txt":         []byte(dataHello),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(work, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	push := func(ref string, args ...string) {
		cmd := exec.Command(oras, append([]string{"push", "--plain-http", r.addr + "/" + ref}, args...)...)
		cmd.Dir = work
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("oras push %s: %v\n%s", ref, err, out)
		}
	}
	push("imv-e2e/model:1",
		"--artifact-type", "application/vnd.cncf.model.manifest.v1+json",
		"--config", "config.json:application/vnd.cncf.model.config.v1+json",
		"model.safetensors:application/vnd.cncf.model.weight.v1.raw",
		"tokenizer.json:application/vnd.cncf.model.weight.config.v1.raw",
		"docs.tar:application/vnd.cncf.model.doc.v1.tar")
	push("imv-e2e/data:1", "--artifact-type", "application/vnd.imv.e2e.data", "hello.txt")
	return &artifacts{
		Model:              registryName + "/imv-e2e/model:1",
		ModelWeightsSHA256: hex.EncodeToString(sum[:]),
		Data:               registryName + "/imv-e2e/data:1",
	}
}
