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
	userns *userns
}

// volume is one image mount of a container (a CRI Mount with image set).
type volume struct {
	Image         string
	ContainerPath string
	SubPath       string
	ReadWrite     bool
	// Userns: the pod's ID mappings, sent with the mount as the kubelet does for a pod
	// with hostUsers: false.
	Userns *userns
	// MountOptions: the mount's mount_options (KEP-5855).
	MountOptions []string
	// HostPath, instead of Image: a plain bind mount of a host directory.
	HostPath string
}

// userns is a pod's user namespace: container IDs 0.. map to host IDs HostID.. (Length).
type userns struct {
	HostID, Length int
}

func (u *userns) mappings() []map[string]any {
	return []map[string]any{{"container_id": 0, "host_id": u.HostID, "length": u.Length}}
}

// options is the namespace_options entry of a pod's or container's security context.
func (u *userns) options() map[string]any {
	o := map[string]any{"network": 2}
	if u != nil {
		// Mode POD (0): the pod's own user namespace with these mappings.
		o["userns_options"] = map[string]any{"mode": 0, "uids": u.mappings(), "gids": u.mappings()}
	}
	return o
}

// runPod runs a pod sandbox with the host's network (no CNI on these machines).
func (c *cluster) runPod(name string) (*pod, error) {
	return c.runPodIn(name, nil)
}

// runPodIn runs a pod sandbox in user namespace u (nil: the host's).
func (c *cluster) runPodIn(name string, u *userns) (*pod, error) {
	cfg := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "imv-e2e", "uid": name + "-uid", "attempt": 0},
		"log_directory": filepath.Join(c.dir, "logs", name),
		"linux": map[string]any{
			"security_context": map[string]any{"namespace_options": u.options()},
		},
	}
	p := &pod{c: c, name: name, config: c.writeJSON("pod-"+name+".json", cfg), userns: u}
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
			"readonly":       !v.ReadWrite,
		}
		if v.HostPath != "" {
			m["host_path"] = v.HostPath
		} else {
			m["image"] = map[string]any{"image": v.Image}
		}
		if len(v.MountOptions) > 0 {
			m["mount_options"] = v.MountOptions
		}
		if v.SubPath != "" {
			m["image_sub_path"] = v.SubPath
		}
		if v.Userns != nil {
			m["uidMappings"] = v.Userns.mappings()
			m["gidMappings"] = v.Userns.mappings()
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
	if p.userns != nil {
		cfg["linux"] = map[string]any{
			"security_context": map[string]any{"namespace_options": p.userns.options()},
		}
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

// statusMount is a mount as ContainerStatus reports it (crictl inspect, protobuf's JSON).
type statusMount struct {
	ContainerPath string `json:"containerPath"`
	HostPath      string `json:"hostPath"`
	Image         *struct {
		Image    string `json:"image"`
		ImageRef string `json:"imageRef"`
	} `json:"image"`
	MountOptions []string `json:"mountOptions"`
}

// imageRef is the image ID the status reports for an image mount (KEP-5365), "" if none.
func (m statusMount) imageRef() string {
	if m.Image == nil {
		return ""
	}
	return m.Image.ImageRef
}

// statusMounts returns, by container path, a container's mounts as the runtime reports
// them (crictl inspect).
func (c *cluster) statusMounts(container string) (map[string]statusMount, error) {
	out, err := c.crictl("inspect", "--output", "json", container)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	var doc struct {
		Status struct {
			Mounts []statusMount `json:"mounts"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("crictl inspect: %w", err)
	}
	mounts := map[string]statusMount{}
	for _, m := range doc.Status.Mounts {
		mounts[m.ContainerPath] = m
	}
	return mounts, nil
}

// hostPaths returns, by container path, the host paths of a container's mounts as the
// runtime reports them (crictl inspect).
func (c *cluster) hostPaths(container string) (map[string]string, error) {
	mounts, err := c.statusMounts(container)
	if err != nil {
		return nil, err
	}
	paths := map[string]string{}
	for p, m := range mounts {
		paths[p] = m.HostPath
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
