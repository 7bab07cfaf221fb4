package e2e

// Test images, written here with the standard library (archive/tar, compress/gzip): an
// OCI image layout made independently of imv's own image writer, imported into the test
// containerd with its own `ctr images import`, as a cluster would pull it.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// entry is one file of a layer: a regular file (Body), a directory (Dir) or a symlink
// (Link).
type entry struct {
	Name string
	Body string
	Dir  bool
	Link string
	Mode int64
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// layout is an OCI image layout being written: blobs by digest, and the images of its
// index.json.
type layout struct {
	blobs map[string][]byte
	index []descriptor
	// configs maps a manifest's digest to its config's: the image ID the kubelet uses.
	configs map[string]string
}

func newLayout() *layout { return &layout{blobs: map[string][]byte{}, configs: map[string]string{}} }

func (l *layout) blob(mediaType string, b []byte) descriptor {
	sum := sha256.Sum256(b)
	d := "sha256:" + hex.EncodeToString(sum[:])
	l.blobs[d] = b
	return descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

func (l *layout) json(mediaType string, v any) descriptor {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return l.blob(mediaType, b)
}

// tarOf writes entries as an uncompressed tar, in a fixed order with fixed times (the same
// entries give the same digest).
func tarOf(entries []entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	when := time.Unix(1700000000, 0)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, ModTime: when, Mode: e.Mode, Format: tar.FormatPAX}
		switch {
		case e.Dir:
			h.Typeflag = tar.TypeDir
			if h.Mode == 0 {
				h.Mode = 0o755
			}
		case e.Link != "":
			h.Typeflag = tar.TypeSymlink
			h.Linkname = e.Link
			h.Mode = 0o777
		default:
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.Body))
			if h.Mode == 0 {
				h.Mode = 0o644
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, e.Body); err != nil {
				panic(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// manifest adds an image of the given layers (gzip) and config to the layout and returns
// its manifest's descriptor.
func (l *layout) manifest(p platform, layers [][]entry, config map[string]any) descriptor {
	d, _ := l.manifestWithDiffIDs(p, layers, config)
	return d
}

// manifestWithDiffIDs is manifest, also returning the layers' diff IDs.
func (l *layout) manifestWithDiffIDs(p platform, layers [][]entry, config map[string]any) (descriptor, []string) {
	var layerDescs []descriptor
	var diffIDs []string
	for _, entries := range layers {
		raw := tarOf(entries)
		sum := sha256.Sum256(raw)
		diffIDs = append(diffIDs, "sha256:"+hex.EncodeToString(sum[:]))
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
		zw.ModTime = time.Unix(0, 0)
		if _, err := zw.Write(raw); err != nil {
			panic(err)
		}
		if err := zw.Close(); err != nil {
			panic(err)
		}
		layerDescs = append(layerDescs, l.blob("application/vnd.oci.image.layer.v1.tar+gzip", gz.Bytes()))
	}
	if config == nil {
		config = map[string]any{}
	}
	cfg := map[string]any{
		"architecture": p.Architecture,
		"os":           p.OS,
		"config":       config,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	cfgDesc := l.json("application/vnd.oci.image.config.v1+json", cfg)
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        cfgDesc,
		"layers":        layerDescs,
	}
	d := l.json("application/vnd.oci.image.manifest.v1+json", m)
	d.Platform = &p
	l.configs[d.Digest] = cfgDesc.Digest
	return d, diffIDs
}

// indexOf adds an image index of the given manifests.
func (l *layout) indexOf(manifests ...descriptor) descriptor {
	idx := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     manifests,
	}
	return l.json("application/vnd.oci.image.index.v1+json", idx)
}

// tag records target in index.json under name (containerd's import reads the
// io.containerd.image.name annotation; ref.name is the OCI one).
func (l *layout) tag(name string, target descriptor) {
	target.Platform = nil
	target.Annotations = map[string]string{
		"io.containerd.image.name":          name,
		"org.opencontainers.image.ref.name": name,
	}
	l.index = append(l.index, target)
}

// writeArchive writes the layout as an OCI archive (a tar of the layout) at path.
func (l *layout) writeArchive(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	add := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": l.index})
	if err := add("index.json", index); err != nil {
		return err
	}
	var digests []string
	for d := range l.blobs {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	for _, d := range digests {
		if err := add(filepath.Join("blobs", "sha256", d[len("sha256:"):]), l.blobs[d]); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// hostPlatform is the platform containerd picks on this machine.
func hostPlatform() platform { return platform{OS: "linux", Architecture: runtime.GOARCH} }

// otherPlatform is a platform that is not this machine's, for multi-platform indexes.
func otherPlatform() platform {
	if runtime.GOARCH == "arm64" {
		return platform{OS: "linux", Architecture: "amd64"}
	}
	return platform{OS: "linux", Architecture: "arm64"}
}

// testImages are the images of the suite, by role.
type testImages struct {
	// Busybox runs the pods' sandboxes and containers: Debian's static busybox and links.
	Busybox string
	// Data is a two-layer image with files to read, a sub directory, a file and a
	// symlink that leaves the image.
	Data string
	// DataManifest is Data's manifest digest (its target: it has no index).
	DataManifest string
	// Multi is a multi-platform image: an index with this machine's platform and another.
	Multi string
	// MultiIndex is Multi's index digest; MultiManifest its manifest for this machine.
	MultiIndex, MultiManifest string
	// DataChainID is the chain ID of Data's layers (the snapshot a view of it is made from).
	DataChainID string
	// Other is a second single-platform image, for several volumes in one container.
	Other string
	// Cold are images no other scenario uses, so they are cold (not unpacked yet) when
	// the scenario that owns one starts; Cold[i] has cold.txt saying "cold i".
	Cold []string
	// Bench are one-layer images for the benchmark's cold mounts, one per repetition, and
	// BenchIDs their image IDs.
	Bench, BenchIDs []string
	// DataID is Data's image ID (its config's digest): what the kubelet puts in a mount's
	// image (PullImageResponse.image_ref).
	DataID string
	// Artifacts are the OCI artifacts in the suite's registry (registry_test.go).
	Artifacts *artifacts
}

// chainID computes the chain ID of diff IDs (OCI image spec: ChainID(L0) = DiffID(L0),
// ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))).
func chainID(diffIDs []string) string {
	id := diffIDs[0]
	for _, d := range diffIDs[1:] {
		sum := sha256.Sum256([]byte(id + " " + d))
		id = "sha256:" + hex.EncodeToString(sum[:])
	}
	return id
}

// buildImages writes the suite's images as two OCI archives in dir: the busybox image
// the pods run (imported unpacked, as a pull leaves it) and the images the volumes are
// made of (imported without unpacking, so the first volume of each is cold: imv or
// containerd unpacks it).
// benchImages more small one-layer images, Bench[i], are added for the benchmark's cold
// mounts.
func buildImages(dir, busyboxPath string, benchImages int) (imgs *testImages, busyboxArchive, volumesArchive string, err error) {
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, "", "", fmt.Errorf("busybox (Debian's busybox-static): %w", err)
	}
	l := newLayout()
	imgs = &testImages{
		Busybox: "localhost/imv-e2e/busybox:1",
		Data:    "localhost/imv-e2e/data:1",
		Multi:   "localhost/imv-e2e/multi:1",
		Other:   "localhost/imv-e2e/other:1",
	}
	tools := []entry{{Name: "bin/", Dir: true}, {Name: "bin/busybox", Body: string(bb), Mode: 0o755}}
	for _, app := range []string{"sh", "sleep", "cat", "ls", "touch", "mkdir", "stat", "id", "test", "echo"} {
		tools = append(tools, entry{Name: "bin/" + app, Link: "busybox"})
	}
	tools = append(tools, entry{Name: "tmp/", Dir: true, Mode: 0o1777}, entry{Name: "etc/", Dir: true},
		entry{Name: "etc/passwd", Body: "root:x:0:0:root:/root:/bin/sh\n"},
		entry{Name: "etc/group", Body: "root:x:0:\n"})
	l.tag(imgs.Busybox, l.manifest(hostPlatform(), [][]entry{tools}, map[string]any{
		"Cmd": []string{"/bin/sleep", "2147483647"},
		"Env": []string{"PATH=/bin"},
	}))
	busyboxArchive = filepath.Join(dir, "busybox.tar")
	if err := l.writeArchive(busyboxArchive); err != nil {
		return nil, "", "", err
	}
	l = newLayout()

	data, dataDiffIDs := l.manifestWithDiffIDs(hostPlatform(), [][]entry{
		{
			{Name: "hello.txt", Body: "hello from the data image\n"},
			{Name: "sub/", Dir: true},
			{Name: "sub/inner.txt", Body: "inner\n"},
			{Name: "file.txt", Body: "a file, not a directory\n"},
			{Name: "escape", Link: "../../../../../../etc"},
			{Name: "abs-link", Link: "/bin/busybox"},
		},
		{
			{Name: "layer2.txt", Body: "second layer\n"},
		},
	}, nil)
	l.tag(imgs.Data, data)
	imgs.DataManifest, imgs.DataChainID = data.Digest, chainID(dataDiffIDs)
	imgs.DataID = l.configs[data.Digest]

	here := l.manifest(hostPlatform(), [][]entry{{{Name: "platform.txt", Body: "host\n"}}}, nil)
	there := l.manifest(otherPlatform(), [][]entry{{{Name: "platform.txt", Body: "other\n"}}}, nil)
	idx := l.indexOf(here, there)
	l.tag(imgs.Multi, idx)
	imgs.MultiIndex, imgs.MultiManifest = idx.Digest, here.Digest

	l.tag(imgs.Other, l.manifest(hostPlatform(), [][]entry{{{Name: "other.txt", Body: "the other image\n"}}}, nil))

	for i := 0; i < 2; i++ {
		name := fmt.Sprintf("localhost/imv-e2e/cold-%d:1", i)
		l.tag(name, l.manifest(hostPlatform(), [][]entry{
			{{Name: "cold.txt", Body: fmt.Sprintf("cold %d\n", i)}},
			{{Name: "second.txt", Body: "a second layer, so the volume is an overlay\n"}},
		}, nil))
		imgs.Cold = append(imgs.Cold, name)
	}

	for i := 0; i < benchImages; i++ {
		name := fmt.Sprintf("localhost/imv-e2e/bench-%d:1", i)
		l.tag(name, l.manifest(hostPlatform(), [][]entry{
			{{Name: "bench.txt", Body: fmt.Sprintf("bench image %d\n", i)}, {Name: "etc/", Dir: true},
				{Name: "etc/config", Body: strings.Repeat("x", 4096)}},
		}, nil))
		imgs.Bench = append(imgs.Bench, name)
		imgs.BenchIDs = append(imgs.BenchIDs, l.configs[l.index[len(l.index)-1].Digest])
	}

	volumesArchive = filepath.Join(dir, "volumes.tar")
	return imgs, busyboxArchive, volumesArchive, l.writeArchive(volumesArchive)
}
