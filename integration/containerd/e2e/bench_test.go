package e2e

// The benchmark of image volumes inside containerd: the same operations on one containerd
// per mode, interleaved (every repetition runs each mode in turn, so load from elsewhere
// falls on all of them alike), timed two ways: inside the function (the patch's
// "image volumes: call done" debug lines, duration_us) and as the kubelet sees it (the
// wall time of crictl create or stopp). Images are named by their IDs, as the kubelet
// names them. Run by bench/cri, which builds everything in release mode; skipped unless
// IMV_E2E_BENCH names the results file. With IMV_E2E_BENCH_LOAD=N, N busy loops run beside
// the daemons for the whole measurement (a busy node: every CPU taken, so each wake-up of
// a daemon waits for the scheduler), stopped when it ends.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchReps is how many times each warm operation is repeated per mode (IMV_E2E_BENCH_REPS).
func benchReps() int {
	if n, err := strconv.Atoi(os.Getenv("IMV_E2E_BENCH_REPS")); err == nil && n > 0 {
		return n
	}
	return 15
}

// startLoad starts n busy loops (busybox sh, at the daemons' priority) and returns what
// stops them; they are also stopped when the test ends.
func startLoad(t *testing.T, busybox string, n int) (stop func()) {
	t.Helper()
	var cmds []*exec.Cmd
	for i := 0; i < n; i++ {
		cmd := exec.Command(busybox, "sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting the load: %v", err)
		}
		cmds = append(cmds, cmd)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		for _, cmd := range cmds {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(stop)
	return stop
}

// sample is one timed operation: the duration the patch logged (0 if none) and the wall
// time of the crictl command.
type sample struct {
	inside, wall time.Duration
}

var callDone = regexp.MustCompile(`msg="image volumes: call done".* call=(\w+) .*duration_us=(\d+)`)

// logCalls returns the durations of the image-volume calls named call that containerd
// logged since offset, and the new end of the log.
func (c *cluster) logCalls(offset int64, call string) ([]time.Duration, int64) {
	f, err := os.Open(filepath.Join(c.dir, "containerd.log"))
	if err != nil {
		return nil, offset
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return nil, offset
	}
	var out []time.Duration
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := callDone.FindStringSubmatch(sc.Text())
		if m != nil && m[1] == call {
			us, _ := strconv.Atoi(m[2])
			out = append(out, time.Duration(us)*time.Microsecond)
		}
	}
	end, _ := f.Seek(0, 2)
	return out, end
}

func (c *cluster) logEnd() int64 {
	st, err := os.Stat(filepath.Join(c.dir, "containerd.log"))
	if err != nil {
		return 0
	}
	return st.Size()
}

// timed runs op and returns its wall time and the duration containerd logged for call.
func (c *cluster) timed(call string, op func() error) (sample, error) {
	// The debug line is written when the call returns; the log may lag a little behind
	// crictl's answer, so read it until the line is there.
	off := c.logEnd()
	start := time.Now()
	err := op()
	wall := time.Since(start)
	if err != nil {
		return sample{}, err
	}
	for i := 0; i < 50; i++ {
		calls, _ := c.logCalls(off, call)
		if len(calls) > 0 {
			var sum time.Duration
			for _, d := range calls {
				sum += d
			}
			return sample{inside: sum, wall: wall}, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return sample{wall: wall}, nil
}

type benchRow struct {
	name    string
	samples map[string][]sample
}

func TestBenchmark(t *testing.T) {
	out := os.Getenv("IMV_E2E_BENCH")
	if out == "" {
		t.Skip("a benchmark: set IMV_E2E_BENCH to the results file (bench/cri runs it)")
	}
	tl := toolsFromEnv(t)
	reps := benchReps()
	imgs, busyboxArchive, volumesArchive, err := buildImages(t.TempDir(), tl.busybox, reps)
	if err != nil {
		t.Fatal(err)
	}
	ms := modes()
	clusters := map[string]*cluster{}
	for _, m := range ms {
		clusters[m] = startCluster(t, tl, m, busyboxImage, busyboxArchive, volumesArchive)
		// The "warm, new pod" image is unpacked before the first repetition.
		s := &scene{c: clusters[m], imgs: imgs, mode: m}
		if err := s.unpack(imgs.DataID); err != nil {
			t.Fatal(err)
		}
	}
	rows := []*benchRow{
		{name: "cold: first volume of an image not yet unpacked (CreateContainer)"},
		{name: "warm, same pod: another container on a mounted volume (CreateContainer)"},
		{name: "warm, new pod: an unpacked image, a new pod (CreateContainer)"},
		{name: "cleanup of a pod with one volume (StopPodSandbox)"},
	}
	for _, r := range rows {
		r.samples = map[string][]sample{}
	}
	add := func(r *benchRow, mode string, s sample) { r.samples[mode] = append(r.samples[mode], s) }
	if n, err := strconv.Atoi(os.Getenv("IMV_E2E_BENCH_LOAD")); err == nil && n > 0 {
		defer startLoad(t, tl.busybox, n)()
	}
	n := 0
	for i := 0; i < reps; i++ {
		for _, m := range ms {
			c := clusters[m]
			n++
			p, err := c.runPod(fmt.Sprintf("bench-%d", n))
			if err != nil {
				t.Fatal(err)
			}
			// Cold: an image of its own for this repetition, imported but not unpacked.
			s, err := c.timed("mutateMounts", func() error {
				_, err := p.create("cold", volume{Image: imgs.BenchIDs[i], ContainerPath: "/data"})
				return err
			})
			if err != nil {
				t.Fatalf("%s: cold: %v", m, err)
			}
			add(rows[0], m, s)
			s, err = c.timed("mutateMounts", func() error {
				_, err := p.create("same-pod", volume{Image: imgs.BenchIDs[i], ContainerPath: "/data"})
				return err
			})
			if err != nil {
				t.Fatalf("%s: warm same pod: %v", m, err)
			}
			add(rows[1], m, s)

			q, err := c.runPod(fmt.Sprintf("bench-new-%d", n))
			if err != nil {
				t.Fatal(err)
			}
			s, err = c.timed("mutateMounts", func() error {
				_, err := q.create("new-pod", volume{Image: imgs.DataID, ContainerPath: "/data"})
				return err
			})
			if err != nil {
				t.Fatalf("%s: warm new pod: %v", m, err)
			}
			add(rows[2], m, s)
			s, err = c.timed("cleanupImageMounts", q.stop)
			if err != nil {
				t.Fatalf("%s: cleanup: %v", m, err)
			}
			add(rows[3], m, s)
			for _, pp := range []*pod{p, q} {
				if err := pp.remove(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	report := benchReport(rows, ms, reps)
	fmt.Print(report)
	if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
}

func median(ds []time.Duration) time.Duration { return quantile(ds, 0.5) }

// quantile is the q-quantile of ds (nearest rank), 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(q*float64(len(s)-1)+0.5)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func benchReport(rows []*benchRow, modes []string, reps int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Medians of %d repetitions per mode, in ms, modes interleaved; in brackets: imv's time / stock's; "+
		"after it, the middle half of the repetitions (25th to 75th percentile): where two modes' ranges overlap, "+
		"their difference is within this run's noise.\n\n", reps)
	for _, what := range []string{"inside the function (containerd's debug log)", "wall time of the crictl command"} {
		fmt.Fprintf(&b, "### %s\n\n| operation | %s |\n|---|%s\n", what, strings.Join(modes, " | "), strings.Repeat("---:|", len(modes)))
		for _, r := range rows {
			stock := time.Duration(0)
			if ss := r.samples[modeStock]; len(ss) > 0 {
				stock = median(pick(ss, what))
			}
			cells := make([]string, len(modes))
			for i, m := range modes {
				ds := pick(r.samples[m], what)
				med := median(ds)
				cells[i] = ms(med)
				if m != modeStock && stock > 0 {
					cells[i] += fmt.Sprintf(" (%.2f×)", float64(med)/float64(stock))
				}
				cells[i] += fmt.Sprintf(" [%s–%s]", ms(quantile(ds, 0.25)), ms(quantile(ds, 0.75)))
			}
			fmt.Fprintf(&b, "| %s | %s |\n", r.name, strings.Join(cells, " | "))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func pick(ss []sample, what string) []time.Duration {
	out := make([]time.Duration, len(ss))
	for i, s := range ss {
		if strings.HasPrefix(what, "inside") {
			out[i] = s.inside
		} else {
			out[i] = s.wall
		}
	}
	return out
}
