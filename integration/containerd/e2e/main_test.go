// Package e2e runs real pods (crictl, runc) on a containerd whose CRI plugin makes image
// volumes with imv (integration/containerd/build), in each of its modes, and prints how
// the modes compare side by side. See integration/containerd/README.md.
//
// Environment:
//
//	IMV_E2E_BIN     directory with containerd, containerd-shim-runc-v2, ctr and crictl
//	                (required; integration/containerd/build prints it)
//	IMV_BIN         the imv command, for `imv serve` in ttrpc mode (required for that mode)
//	IMV_E2E_MODES   comma-separated modes to run (default: imv,imv-ttrpc,stock)
//	IMV_E2E_LINK    a label for the report, e.g. "dynamic" or "static"
//	IMV_E2E_REPORT  a file the side-by-side report is appended to
//	KUBELET         a kubelet (integration/containerd/build-kubelet), for TestKubelet;
//	                CRITEST, CONTAINERD_INTEGRATION_TEST: the upstream suites' test binaries
//	IMV_E2E_PROFILE the build of imv and libimv in use, for the kubelet report (default debug)
//	RUNC            runc (default: IMV_E2E_BIN/runc, else runc on PATH); BUSYBOX: a static busybox (default
//	                /bin/busybox, from Debian's busybox-static)
//	ORAS            oras, which pushes the artifacts to the suite's registry (default: Go's bin
//	                directory, else the PATH); the registry is Debian's docker-registry
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// outcome is what one scenario did in one mode.
type outcome struct {
	err      error
	expected string // why stock was expected to fail, when it did
	notes    []string
}

var (
	resultsMu sync.Mutex
	results   = map[string]map[string]outcome{}
	ranModes  []string
)

func record(scenario, mode string, o outcome) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if results[scenario] == nil {
		results[scenario] = map[string]outcome{}
	}
	results[scenario][mode] = o
}

func TestMain(m *testing.M) {
	code := m.Run()
	if report := sideBySide(); report != "" {
		printReport(report)
	}
	os.Exit(code)
}

// printReport prints a part of the side-by-side report and appends it to IMV_E2E_REPORT, if
// that is set.
func printReport(text string) {
	fmt.Print(text)
	if path := os.Getenv("IMV_E2E_REPORT"); path != "" {
		if f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			_, _ = f.WriteString(text)
			_ = f.Close()
		}
	}
}

func toolsFromEnv(t *testing.T) tools {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the containerd end-to-end tests run pods and mount: run them as root")
	}
	tl := tools{
		bin:     os.Getenv("IMV_E2E_BIN"),
		imv:     os.Getenv("IMV_BIN"),
		runc:    os.Getenv("RUNC"),
		busybox: os.Getenv("BUSYBOX"),
	}
	if tl.bin == "" {
		t.Fatal("IMV_E2E_BIN is not set: build the patched containerd with integration/containerd/build " +
			"and set IMV_E2E_BIN to the directory it prints (scripts/test does both)")
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "crictl"} {
		if _, err := os.Stat(tl.bin + "/" + b); err != nil {
			t.Fatalf("IMV_E2E_BIN=%s has no %s: %v", tl.bin, b, err)
		}
	}
	// The runc integration/containerd/build makes (idmapped mounts need 1.2 or later),
	// else the one on PATH.
	if _, err := os.Stat(tl.bin + "/runc"); tl.runc == "" && err == nil {
		tl.runc = tl.bin + "/runc"
	}
	if tl.runc == "" {
		p, err := exec.LookPath("runc")
		if err != nil {
			t.Fatal("no runc in IMV_E2E_BIN or on PATH, and RUNC is not set")
		}
		tl.runc = p
	}
	if tl.busybox == "" {
		tl.busybox = "/bin/busybox"
	}
	return tl
}

func modes() []string {
	m := os.Getenv("IMV_E2E_MODES")
	if m == "" {
		return []string{modeCgo, modeTtrpc, modeStock}
	}
	return strings.Split(m, ",")
}

// TestImageVolumes runs every scenario in every mode, one private containerd per mode.
// imv must pass them all; stock containerd must pass those not marked as failing there
// (which checks that the suite asks what containerd's own behaviour answers).
func TestImageVolumes(t *testing.T) {
	guardHostPaths(t)
	tl := toolsFromEnv(t)
	imgs, busyboxArchive, volumesArchive, err := buildImages(t.TempDir(), tl.busybox, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Artifacts come from a registry, pulled as the kubelet pulls an image volume's image.
	regDir := t.TempDir()
	tl.registry = startRegistry(t, regDir)
	imgs.Artifacts = pushArtifacts(t, tl.registry, regDir)
	for _, mode := range modes() {
		if mode != modeCgo && mode != modeTtrpc && mode != modeStock {
			t.Fatalf("IMV_E2E_MODES: unknown mode %q", mode)
		}
		if mode == modeTtrpc && tl.imv == "" {
			t.Fatal("IMV_BIN is not set: the ttrpc mode runs `imv serve`")
		}
		ranModes = append(ranModes, mode)
		t.Run(mode, func(t *testing.T) {
			c := startCluster(t, tl, mode, busyboxImage, busyboxArchive, volumesArchive)
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					s := &scene{c: c, imgs: imgs, mode: mode}
					err := sc.run(s)
					o := outcome{err: err, notes: s.notes}
					if err != nil && mode == modeStock && sc.stockFails != "" {
						o.expected = sc.stockFails
						t.Logf("stock containerd fails here, as expected (%s): %v", sc.stockFails, err)
					} else if err != nil {
						t.Error(err)
					}
					record(sc.name, mode, o)
				})
			}
		})
	}
}

// sideBySide formats the outcomes of every scenario in every mode.
func sideBySide() string {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return ""
	}
	var b strings.Builder
	link := os.Getenv("IMV_E2E_LINK")
	if link == "" {
		link = "containerd"
	}
	fmt.Fprintf(&b, "\n=== image volumes inside containerd (%s): side by side ===\n", link)
	fmt.Fprintf(&b, "| scenario | %s |\n|---|%s\n", strings.Join(ranModes, " | "), strings.Repeat("---|", len(ranModes)))
	var notes []string
	for _, sc := range scenarios {
		row := results[sc.name]
		if row == nil {
			continue
		}
		cells := make([]string, len(ranModes))
		for i, mode := range ranModes {
			o, ok := row[mode]
			switch {
			case !ok:
				cells[i] = "not run"
			case o.err == nil:
				cells[i] = "ok"
			case o.expected != "":
				cells[i] = "fails (known)"
			default:
				cells[i] = "FAIL"
			}
			if ok && o.err != nil {
				notes = append(notes, fmt.Sprintf("- %s [%s]: %s", sc.name, mode, oneLine(o.err.Error())))
			}
			for _, n := range o.notes {
				notes = append(notes, fmt.Sprintf("- %s [%s]: %s", sc.name, mode, n))
			}
		}
		fmt.Fprintf(&b, "| %s | %s |\n", sc.name, strings.Join(cells, " | "))
	}
	if len(notes) > 0 {
		b.WriteString("\nWhat each mode did (errors and notes):\n")
		b.WriteString(strings.Join(notes, "\n"))
		b.WriteString("\n")
	}
	return b.String()
}

// oneLine shortens an error for the report: one line, and of a crictl error only what
// the runtime said (from "desc = " on), which is where the modes differ.
func oneLine(s string) string {
	if i := strings.Index(s, "desc = "); i >= 0 {
		s = s[i+len("desc = "):]
		if j := strings.Index(s, "\n"); j >= 0 {
			s = s[:j]
		}
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
