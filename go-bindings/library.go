//go:build cgo

package imv

// pkg-config says where imv.h and libimv are: PKG_CONFIG_PATH=<dir of imv.pc> is all a
// build sets (`make -C ffi pc` writes one for the build tree, `make -C ffi install` one for
// a prefix; see the README). `--static` asks for imv.pc's Libs.private too, after `-limv`:
// what Rust's std needs when the link takes libimv.a (-extldflags -static, as containerd's
// release builds link, or a directory holding libimv.a alone); harmless when `-limv` finds
// the shared library. The unwinder std calls (_Unwind_*) is the C compiler driver's to add
// (libgcc_s to a dynamic link, libgcc_eh to a static one): imv.pc does not name libgcc_s,
// which would break static links. CGO_CFLAGS and CGO_LDFLAGS still come first, e.g. to
// name libimv.a by its path.

/*
#cgo pkg-config: --static imv
#include <stdlib.h>
#include <imv.h>
*/
import "C"

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"unsafe"

	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/codes"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Backend selects the image store a [Library] works on.
type Backend int

const (
	// BackendLocal is imv's embedded store under Options.Root (images are imported with
	// [Library.Import] or `imv import`).
	BackendLocal Backend = C.IMV_BACKEND_LOCAL
	// BackendContainerd is a running containerd: its images, snapshotters and leases, over
	// its gRPC socket. It is first contacted by the first call that needs it.
	BackendContainerd Backend = C.IMV_BACKEND_CONTAINERD
)

// Options configures [Open]. Empty strings take imv's defaults.
type Options struct {
	// Backend is the image store; the zero value is BackendLocal.
	Backend Backend
	// Root is the embedded store's directory (BackendLocal); default /var/lib/imv.
	Root string
	// State is where volumes are mounted, under <State>/image-volumes; default /run/imv.
	State string
	// ContainerdAddress is containerd's socket (BackendContainerd); default
	// /run/containerd/containerd.sock.
	ContainerdAddress string
	// ContainerdNamespace is the containerd namespace (BackendContainerd); default k8s.io,
	// the CRI plugin's.
	ContainerdNamespace string
}

// Library is imv running in this process, through cgo and the C ABI of libimv. It is safe
// for concurrent use; Close waits for the calls in progress.
//
// A cgo call cannot be interrupted: each method checks its context before calling into the
// library, and once the call has started it runs to its end (as the daemon does with work
// it has started). A mutate that completes after its caller gave up has still mounted the
// volume; the retry reuses it, and CleanupImageMounts removes it.
type Library struct {
	// mu guards handle: calls hold it shared, Close exclusively, because imv_close must not
	// race with other calls on the handle.
	mu     sync.RWMutex
	handle *C.imv_handle
}

var _ ImageVolumes = (*Library)(nil)

// Open opens imv in this process over the store opts names. The state directory is made
// if missing.
func Open(opts Options) (*Library, error) {
	if err := checkABI(); err != nil {
		return nil, err
	}
	var a cAlloc
	defer a.free()
	o := (*C.imv_options)(a.calloc(C.sizeof_imv_options))
	o.struct_size = C.sizeof_imv_options
	o.backend = C.int32_t(opts.Backend)
	var err error
	if o.root, err = a.optStr("root", opts.Root); err != nil {
		return nil, err
	}
	if o.state, err = a.optStr("state", opts.State); err != nil {
		return nil, err
	}
	if o.containerd_address, err = a.optStr("containerd address", opts.ContainerdAddress); err != nil {
		return nil, err
	}
	if o.containerd_namespace, err = a.optStr("containerd namespace", opts.ContainerdNamespace); err != nil {
		return nil, err
	}
	// The out-parameters live in C memory too, so no Go pointer is handed to C at all.
	out := (**C.imv_handle)(a.calloc(C.size_t(unsafe.Sizeof(uintptr(0)))))
	errp := a.errPtr()
	if st := C.imv_open(o, out, errp); st != C.IMV_OK {
		return nil, takeError(st, errp)
	}
	return &Library{handle: *out}, nil
}

// Version returns the version of the linked libimv (the crate's semver).
func Version() string { return C.GoString(C.imv_version()) }

// ABIVersion returns the major and minor ABI version of the linked libimv.
func ABIVersion() (major, minor uint16) {
	v := uint32(C.imv_abi_version())
	return uint16(v >> 16), uint16(v)
}

// checkABI refuses a library whose ABI this package was not compiled for. It only matters
// when libimv is linked dynamically; a static link has the header's own library.
func checkABI() error {
	major, minor := ABIVersion()
	if major != C.IMV_ABI_VERSION_MAJOR || minor < C.IMV_ABI_VERSION_MINOR {
		return newError(codes.FailedPrecondition, fmt.Sprintf("libimv ABI %d.%d does not match imv.h's %d.%d", major, minor, C.IMV_ABI_VERSION_MAJOR, C.IMV_ABI_VERSION_MINOR))
	}
	return nil
}

// enter checks ctx and takes the handle for one call; the caller runs leave when done.
func (l *Library) enter(ctx context.Context) (*C.imv_handle, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.RLock()
	if l.handle == nil {
		l.mu.RUnlock()
		return nil, newError(codes.FailedPrecondition, "imv: the library handle is closed")
	}
	return l.handle, nil
}

func (l *Library) leave() { l.mu.RUnlock() }

// Import imports the image(s) at path (an OCI image layout directory, an OCI archive, or a
// `docker save` tarball) into the embedded store, naming it name when the source holds one
// image ("" for the names it carries). FailedPrecondition with BackendContainerd.
func (l *Library) Import(ctx context.Context, path, name string) error {
	return l.ImportWith(ctx, path, ImportOptions{Name: name})
}

// ImportWith is [Library.Import] with opts: images picked by tag and named by a base
// name (a layout of several images tagged "one", "two" imports with a BaseName).
func (l *Library) ImportWith(ctx context.Context, path string, opts ImportOptions) error {
	var a cAlloc
	defer a.free()
	cpath, err := a.str("path", path)
	if err != nil {
		return err
	}
	copts := (*C.imv_import_options)(a.calloc(C.size_t(unsafe.Sizeof(C.imv_import_options{}))))
	copts.struct_size = C.size_t(unsafe.Sizeof(C.imv_import_options{}))
	for _, f := range []struct {
		field string
		value string
		out   **C.char
	}{
		{"Name", opts.Name, &copts.name},
		{"BaseName", opts.BaseName, &copts.base_name},
		{"Tag", opts.Tag, &copts.tag},
	} {
		if *f.out, err = a.optStr(f.field, f.value); err != nil {
			return err
		}
	}
	h, err := l.enter(ctx)
	if err != nil {
		return err
	}
	defer l.leave()
	errp := a.errPtr()
	if st := C.imv_import_with(h, cpath, copts, errp); st != C.IMV_OK {
		return takeError(st, errp)
	}
	return nil
}

// MutateMounts implements [ImageVolumes.MutateMounts].
func (l *Library) MutateMounts(ctx context.Context, mounts []*runtime.Mount, snapshotter, sandboxID string, platform imagespec.Platform) error {
	return l.MutateMountsWith(ctx, mounts, snapshotter, sandboxID, platform, MutateOptions{})
}

// MutateMountsWith implements [ImageVolumes.MutateMountsWith] (imv_mutate_with, ABI 0.5).
func (l *Library) MutateMountsWith(ctx context.Context, mounts []*runtime.Mount, snapshotter, sandboxID string, platform imagespec.Platform, opts MutateOptions) error {
	idx := imageMounts(mounts)
	if len(idx) == 0 {
		// Nothing to do, and nothing to validate: containerd's mutateMounts does not look
		// at the sandbox either when no mount has an image.
		return ctx.Err()
	}
	spec, err := formatPlatform(platform)
	if err != nil {
		return err
	}
	var a cAlloc
	defer a.free()
	csandbox, err := a.str("sandbox ID", sandboxID)
	if err != nil {
		return err
	}
	csnap, err := a.optStr("snapshotter", snapshotter)
	if err != nil {
		return err
	}
	cplatform, err := a.optStr("platform", spec)
	if err != nil {
		return err
	}
	var copts *C.imv_mutate_options
	if opts != (MutateOptions{}) {
		copts = (*C.imv_mutate_options)(a.calloc(C.size_t(unsafe.Sizeof(C.imv_mutate_options{}))))
		copts.struct_size = C.size_t(unsafe.Sizeof(C.imv_mutate_options{}))
		if copts.mount_label, err = a.optStr("mount label", opts.MountLabel); err != nil {
			return err
		}
		copts.ignore_label_without_selinux = C.bool(opts.IgnoreLabelWithoutSELinux)
	}
	// An array of pointers to mounts, all in C memory.
	arr := unsafe.Slice((**C.imv_mount)(a.calloc(C.size_t(len(idx))*C.size_t(unsafe.Sizeof(uintptr(0))))), len(idx))
	// preset holds the host_path each C mount had going in (NULL unless the caller set one).
	preset := make([]*C.char, len(idx))
	for j, i := range idx {
		if arr[j], err = a.mount(fmt.Sprintf("mounts[%d]", i), mounts[i]); err != nil {
			return err
		}
		preset[j] = arr[j].host_path
	}

	h, err := l.enter(ctx)
	if err != nil {
		return err
	}
	defer l.leave()
	errp := a.errPtr()
	st := C.imv_mutate_with(h, csandbox, csnap, cplatform, copts, &arr[0], C.size_t(len(idx)), errp)
	// Take every host_path the library allocated, whatever the status (it writes none on
	// failure, but taking what is there costs nothing and can never leak).
	paths := make([]string, len(idx))
	refs := make([]string, len(idx))
	for j, m := range arr {
		if m.host_path != nil && m.host_path != preset[j] {
			paths[j] = C.GoString(m.host_path)
			C.imv_string_free(m.host_path)
			m.host_path = nil
		}
		// image_ref goes in NULL (calloc), so anything there is the library's (ABI 0.7).
		if m.image_ref != nil {
			refs[j] = C.GoString(m.image_ref)
			C.imv_string_free(m.image_ref)
			m.image_ref = nil
		}
	}
	if st != C.IMV_OK {
		return takeError(st, errp)
	}
	for j, i := range idx {
		if paths[j] == "" {
			return newError(codes.Internal, fmt.Sprintf("imv: libimv set no host_path on mounts[%d]", i))
		}
	}
	for j, i := range idx {
		mounts[i].HostPath = paths[j]
		mounts[i].Image.ImageRef = refs[j]
		// The volume shows the owners mapped already: libimv took the mappings off the
		// mount so the runtime does not map them again (ABI 0.4).
		if arr[j].uid_mappings_len == 0 && arr[j].gid_mappings_len == 0 {
			mounts[i].UidMappings, mounts[i].GidMappings = nil, nil
		}
	}
	return nil
}

// CleanupImageMounts implements [ImageVolumes.CleanupImageMounts].
func (l *Library) CleanupImageMounts(ctx context.Context, sandboxID, snapshotter string) error {
	var a cAlloc
	defer a.free()
	csandbox, err := a.str("sandbox ID", sandboxID)
	if err != nil {
		return err
	}
	csnap, err := a.optStr("snapshotter", snapshotter)
	if err != nil {
		return err
	}
	h, err := l.enter(ctx)
	if err != nil {
		return err
	}
	defer l.leave()
	errp := a.errPtr()
	if st := C.imv_cleanup(h, csandbox, csnap, errp); st != C.IMV_OK {
		return takeError(st, errp)
	}
	return nil
}

// Release implements [ImageVolumes.Release].
func (l *Library) Release(ctx context.Context, sandboxID string) error {
	var a cAlloc
	defer a.free()
	csandbox, err := a.str("sandbox ID", sandboxID)
	if err != nil {
		return err
	}
	h, err := l.enter(ctx)
	if err != nil {
		return err
	}
	defer l.leave()
	errp := a.errPtr()
	if st := C.imv_release(h, csandbox, errp); st != C.IMV_OK {
		return takeError(st, errp)
	}
	return nil
}

// Volumes implements [ImageVolumes.Volumes].
func (l *Library) Volumes(ctx context.Context) ([]Volume, error) {
	var a cAlloc
	defer a.free()
	h, err := l.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer l.leave()
	out := (**C.imv_volume_list)(a.calloc(C.size_t(unsafe.Sizeof(uintptr(0)))))
	errp := a.errPtr()
	if st := C.imv_volumes(h, out, errp); st != C.IMV_OK {
		return nil, takeError(st, errp)
	}
	list := *out
	defer C.imv_volume_list_free(list)
	n := int(C.imv_volume_list_len(list))
	vols := make([]Volume, n)
	for i := range vols {
		ci := C.size_t(i)
		vols[i] = Volume{
			SandboxID:   goString(C.imv_volume_list_sandbox_id(list, ci)),
			Target:      goString(C.imv_volume_list_target(list, ci)),
			ImageDigest: goString(C.imv_volume_list_image_digest(list, ci)),
			Image:       goString(C.imv_volume_list_image(list, ci)),
			Mounted:     bool(C.imv_volume_list_mounted(list, ci)),
		}
	}
	return vols, nil
}

// Close implements [ImageVolumes.Close]: it waits for the calls in progress, then closes
// the handle. Closing twice is fine.
func (l *Library) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.handle != nil {
		C.imv_close(l.handle)
		l.handle = nil
	}
	return nil
}

// goString copies a string the library lends (NULL reads as "").
func goString(s *C.char) string {
	if s == nil {
		return ""
	}
	return C.GoString(s)
}

// takeError turns a failed call's status and error object into an *Error and frees the
// object. IMV_NULL_ARGUMENT and IMV_PANIC are the library's own codes outside gRPC's range:
// the first would be a bug of this binding, the second one of the library, so both are
// Internal, with a word on which it was.
func takeError(st C.imv_status, errp **C.imv_error) error {
	e := *errp
	*errp = nil
	msg := C.GoString(C.imv_error_message(e))
	C.imv_error_free(e)
	code := codes.Code(st)
	switch st {
	case C.IMV_NULL_ARGUMENT:
		code, msg = codes.Internal, "imv: NULL argument (a bug in the Go binding): "+msg
	case C.IMV_PANIC:
		code, msg = codes.Internal, "imv: panic in libimv: "+msg
	}
	if msg == "" {
		msg = fmt.Sprintf("imv: %s", code)
	}
	return newError(code, msg)
}

// cAlloc allocates C memory for one call and frees all of it at once. Everything handed to
// the library lives here, so C never sees a Go pointer and the cgo pointer rules hold
// trivially, also for the array of mount pointers.
type cAlloc struct{ ptrs []unsafe.Pointer }

// calloc returns n zeroed bytes (at least one, so the pointer is never NULL).
func (a *cAlloc) calloc(n C.size_t) unsafe.Pointer {
	if n == 0 {
		n = 1
	}
	p := C.calloc(1, n)
	if p == nil {
		panic("imv: out of C memory")
	}
	a.ptrs = append(a.ptrs, p)
	return p
}

// str copies s into C memory. A string with a NUL byte cannot be passed to C (it would be
// cut short, and a cut sandbox ID could name another sandbox): InvalidArgument.
func (a *cAlloc) str(what, s string) (*C.char, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, newError(codes.InvalidArgument, fmt.Sprintf("%s %q contains a NUL byte", what, s))
	}
	p := C.CString(s)
	a.ptrs = append(a.ptrs, unsafe.Pointer(p))
	return p, nil
}

// optStr is str, with NULL for "" (the library's "use the default").
func (a *cAlloc) optStr(what, s string) (*C.char, error) {
	if s == "" {
		return nil, nil
	}
	return a.str(what, s)
}

// errPtr returns a C-allocated imv_error * slot holding NULL, for a call's err argument.
func (a *cAlloc) errPtr() **C.imv_error {
	return (**C.imv_error)(a.calloc(C.size_t(unsafe.Sizeof(uintptr(0)))))
}

func (a *cAlloc) free() {
	for _, p := range a.ptrs {
		C.free(p)
	}
	a.ptrs = nil
}

// mount copies a CRI mount, every field of it, into a C imv_mount.
func (a *cAlloc) mount(what string, m *runtime.Mount) (*C.imv_mount, error) {
	cm := (*C.imv_mount)(a.calloc(C.sizeof_imv_mount))
	cm.struct_size = C.sizeof_imv_mount
	var err error
	if cm.container_path, err = a.str(what+".container_path", m.ContainerPath); err != nil {
		return nil, err
	}
	// A preset host_path goes to the library, which refuses it with its own message (the
	// same one the daemon gives). The copy is the arena's: MutateMounts tells it apart from
	// a string the library allocated by its address, and frees only the latter.
	if m.HostPath != "" {
		if cm.host_path, err = a.str(what+".host_path", m.HostPath); err != nil {
			return nil, err
		}
	}
	cm.propagation = C.int32_t(m.Propagation)
	cm.readonly = C.bool(m.Readonly)
	cm.selinux_relabel = C.bool(m.SelinuxRelabel)
	cm.recursive_read_only = C.bool(m.RecursiveReadOnly)
	if cm.image_sub_path, err = a.optStr(what+".image_sub_path", m.ImageSubPath); err != nil {
		return nil, err
	}
	if cm.image, err = a.imageSpec(what+".image", m.Image); err != nil {
		return nil, err
	}
	cm.uid_mappings, cm.uid_mappings_len = a.idMappings(m.UidMappings)
	cm.gid_mappings, cm.gid_mappings_len = a.idMappings(m.GidMappings)
	if n := len(m.MountOptions); n > 0 {
		opts := unsafe.Slice((**C.char)(a.calloc(C.size_t(n)*C.size_t(unsafe.Sizeof(uintptr(0))))), n)
		for i, o := range m.MountOptions {
			if opts[i], err = a.str(fmt.Sprintf("%s.mount_options[%d]", what, i), o); err != nil {
				return nil, err
			}
		}
		cm.mount_options, cm.mount_options_len = &opts[0], C.size_t(n)
	}
	return cm, nil
}

func (a *cAlloc) imageSpec(what string, s *runtime.ImageSpec) (*C.imv_image_spec, error) {
	cs := (*C.imv_image_spec)(a.calloc(C.sizeof_imv_image_spec))
	cs.struct_size = C.sizeof_imv_image_spec
	var err error
	if cs.image, err = a.str(what+".image", s.Image); err != nil {
		return nil, err
	}
	if cs.user_specified_image, err = a.optStr(what+".user_specified_image", s.UserSpecifiedImage); err != nil {
		return nil, err
	}
	if cs.runtime_handler, err = a.optStr(what+".runtime_handler", s.RuntimeHandler); err != nil {
		return nil, err
	}
	if cs.image_ref, err = a.optStr(what+".image_ref", s.ImageRef); err != nil {
		return nil, err
	}
	if n := len(s.Annotations); n > 0 {
		// Sorted, so the same spec always makes the same call.
		keys := make([]string, 0, n)
		for k := range s.Annotations {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		kvs := unsafe.Slice((*C.imv_key_value)(a.calloc(C.size_t(n)*C.sizeof_imv_key_value)), n)
		for i, k := range keys {
			if kvs[i].key, err = a.str(fmt.Sprintf("%s.annotations key", what), k); err != nil {
				return nil, err
			}
			if kvs[i].value, err = a.str(fmt.Sprintf("%s.annotations[%q]", what, k), s.Annotations[k]); err != nil {
				return nil, err
			}
		}
		cs.annotations, cs.annotations_len = &kvs[0], C.size_t(n)
	}
	return cs, nil
}

func (a *cAlloc) idMappings(ms []*runtime.IDMapping) (*C.imv_id_mapping, C.size_t) {
	if len(ms) == 0 {
		return nil, 0
	}
	out := unsafe.Slice((*C.imv_id_mapping)(a.calloc(C.size_t(len(ms))*C.sizeof_imv_id_mapping)), len(ms))
	for i, m := range ms {
		out[i] = C.imv_id_mapping{
			host_id:      C.uint32_t(m.GetHostId()),
			container_id: C.uint32_t(m.GetContainerId()),
			length:       C.uint32_t(m.GetLength()),
		}
	}
	return &out[0], C.size_t(len(ms))
}
