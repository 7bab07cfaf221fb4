package e2e

// Pods and containers through crictl, as the kubelet would make them.

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
)

// pod is one pod sandbox of a cluster.
type pod struct {
	c      *cluster
	name   string
	id     string
	config string
}

// volume is one image mount of a container (a CRI Mount with image set).
type volume struct {
	Image         string
	ContainerPath string
	SubPath       string
	ReadWrite     bool
}

// runPod runs a pod sandbox with the host's network (no CNI on these machines).
func (c *cluster) runPod(name string) (*pod, error) {
	cfg := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "imv-e2e", "uid": name + "-uid", "attempt": 0},
		"log_directory": filepath.Join(c.dir, "logs", name),
		"linux": map[string]any{
			"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}},
		},
	}
	p := &pod{c: c, name: name, config: c.writeJSON("pod-"+name+".json", cfg)}
	out, err := c.crictl("runp", p.config)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	p.id = out
	return p, nil
}

// create creates a container of the busybox image, sleeping, with the given image volumes;
// it does not start it.
func (p *pod) create(name string, vols ...volume) (string, error) {
	var mounts []map[string]any
	for _, v := range vols {
		m := map[string]any{
			"container_path": v.ContainerPath,
			"image":          map[string]any{"image": v.Image},
			"readonly":       !v.ReadWrite,
		}
		if v.SubPath != "" {
			m["image_sub_path"] = v.SubPath
		}
		mounts = append(mounts, m)
	}
	cfg := map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": busyboxImage},
		"command":  []string{"/bin/sleep", "2147483647"},
		"log_path": name + ".log",
		"mounts":   mounts,
		"linux":    map[string]any{},
	}
	file := p.c.writeJSON("ctr-"+p.name+"-"+name+".json", cfg)
	out, err := p.c.crictl("create", p.id, file, p.config)
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, out)
	}
	return out, nil
}

// run creates and starts a container.
func (p *pod) run(name string, vols ...volume) (string, error) {
	id, err := p.create(name, vols...)
	if err != nil {
		return "", err
	}
	if out, err := p.c.crictl("start", id); err != nil {
		return "", fmt.Errorf("%w: %s", err, out)
	}
	return id, nil
}

// exec runs a command in a container and returns its output (stdout and stderr).
func (c *cluster) exec(container string, cmd ...string) (string, error) {
	args := append([]string{"exec", "--sync", container}, cmd...)
	return c.crictl(args...)
}

// hostPaths returns, by container path, the host paths of a container's mounts as the
// runtime reports them (crictl inspect).
func (c *cluster) hostPaths(container string) (map[string]string, error) {
	out, err := c.crictl("inspect", "--output", "json", container)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	var doc struct {
		Status struct {
			Mounts []struct {
				ContainerPath string `json:"containerPath"`
				HostPath      string `json:"hostPath"`
			} `json:"mounts"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("crictl inspect: %w", err)
	}
	paths := map[string]string{}
	for _, m := range doc.Status.Mounts {
		paths[m.ContainerPath] = m.HostPath
	}
	return paths, nil
}

func (p *pod) stop() error {
	if out, err := p.c.crictl("stopp", p.id); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

func (p *pod) remove() error {
	if out, err := p.c.crictl("rmp", "--force", p.id); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// leases lists the lease IDs of the CRI namespace.
func (c *cluster) leases() ([]string, error) {
	out, err := c.ctr("leases", "ls", "--quiet")
	if err != nil {
		return nil, fmt.Errorf("ctr leases ls: %v: %s", err, out)
	}
	return strings.Fields(out), nil
}

// snapshotKeys lists the snapshot keys of the overlayfs snapshotter in the CRI namespace.
func (c *cluster) snapshotKeys() ([]string, error) {
	out, err := c.ctr("snapshots", "--snapshotter", "overlayfs", "ls")
	if err != nil {
		return nil, fmt.Errorf("ctr snapshots ls: %v: %s", err, out)
	}
	var keys []string
	for i, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) == 0 {
			continue
		}
		keys = append(keys, f[0])
	}
	return keys, nil
}
