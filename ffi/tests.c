/*
 * tests: the C API as a C caller sees it. Built with -Wall -Wextra -Werror and run under
 * AddressSanitizer (static library) and valgrind (shared library) by `make -C ffi test`.
 *
 *   tests IMAGE TAGGED-IMAGE MODEL
 *
 * IMAGE is an OCI image layout of mkimage's sample image, TAGGED-IMAGE the same tagged
 * only, MODEL one of mkimage's sample model, an OCI artifact (see the Makefile). Every test
 * works in fresh temporary directories, and the teardown cleans up every sandbox the tests
 * used and removes the directories whatever happened. Run as root: it mounts.
 *
 * Tests that mount are skipped when this process cannot use the system calls the library
 * mounts with (openat2, fsopen): valgrind 3.19 (Debian 12's) does not know them and fails
 * them with ENOSYS. So valgrind checks the boundary (arguments, errors, lists, struct sizes)
 * and AddressSanitizer, which runs natively, checks everything (IMV_TEST_REQUIRE_MOUNTS=1
 * makes a skip a failure there).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "imv.h"

#define IMAGE "example.com/sample:1"

static int failures;
static const char *image_path;
/* The sample again, as umoci and skopeo tag it: ref.name "v1" only (see the Makefile). */
static const char *tagged_path;
/* An OCI artifact: mkimage's sample model (see the Makefile). */
static const char *model_path;
static int can_mount; /* whether this process has the system calls the library mounts with */

/* openat2 (unpacking, sub paths) and fsopen (mounting) as the library will see them. */
static int probe_syscalls(void) {
#if defined(SYS_openat2) && defined(SYS_fsopen)
    struct {
        uint64_t flags, mode, resolve;
    } how = {.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC};
    long fd = syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof how);
    if (fd < 0)
        return 0;
    close((int)fd);
    fd = syscall(SYS_fsopen, "tmpfs", 0);
    if (fd < 0)
        return 0;
    close((int)fd);
    return 1;
#else
    return 0;
#endif
}

/* A check that records a failure and goes on, so one run shows every broken case. */
#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            failures++;                                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

/* Check that a call returned `want`; when it failed, that the error says `needle`. The
 * error is freed either way. */
static void expect(const char *what, imv_status got, imv_status want, imv_error *err,
                   const char *needle, int line) {
    const char *msg = imv_error_message(err);
    if (got != want) {
        failures++;
        fprintf(stderr, "FAIL line %d: %s: status %d, want %d (%s)\n", line, what, (int)got,
                (int)want, msg);
    } else if (want != IMV_OK && err && imv_error_code(err) != want) {
        failures++;
        fprintf(stderr, "FAIL line %d: %s: error code %d, want %d\n", line, what,
                (int)imv_error_code(err), (int)want);
    } else if (needle && !strstr(msg, needle)) {
        failures++;
        fprintf(stderr, "FAIL line %d: %s: message %s lacks %s\n", line, what, msg, needle);
    }
    if (want == IMV_OK && err) {
        failures++;
        fprintf(stderr, "FAIL line %d: %s: err set on success\n", line, what);
    }
    imv_error_free(err);
}
#define EXPECT(call, want, needle)                                                         \
    do {                                                                                   \
        imv_error *err_ = NULL;                                                            \
        imv_error **errp = &err_;                                                          \
        imv_status s_ = (call);                                                            \
        expect(#call, s_, (want), err_, (needle), __LINE__);                               \
    } while (0)

/* ---- fixture: a store and a state directory of its own, with the image imported ---- */

struct fixture {
    char root[64];
    char state[64];
    imv_handle *h;
};

/* Sandboxes to clean up in teardown, whatever the tests did. */
static const char *const known_sandboxes[] = {"sb",   "sb2",   "shared", "old",   "sub",
                                               "fail", "model", "model2", "logged"};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "remove %s: %s\n", path, strerror(errno));
    return 0;
}

/* The store keeps each layer's EROFS image mounted on <root>/snapshots/<chain id>/fs
 * (see docs/design.md, "Layers as EROFS images"), beyond imv_close: a temporary store's
 * layers are unmounted before the directory goes. */
static void unmount_layers(const char *root) {
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f)
        return;
    char line[8192], point[4096], prefix[4096];
    snprintf(prefix, sizeof prefix, "%s/snapshots/", root);
    while (fgets(line, sizeof line, f)) {
        /* Fields: id, parent id, major:minor, root, mount point, ... */
        if (sscanf(line, "%*s %*s %*s %*s %4095s", point) != 1)
            continue;
        size_t n = strlen(point);
        if (strncmp(point, prefix, strlen(prefix)) == 0 && n > 3 &&
            strcmp(point + n - 3, "/fs") == 0 && umount2(point, MNT_DETACH) != 0)
            fprintf(stderr, "umount %s: %s\n", point, strerror(errno));
    }
    fclose(f);
}

/* rm -rf that does not cross into mounted filesystems (FTW_MOUNT): a volume left mounted
 * by a failed test is reported by the failure, not half deleted. */
static void remove_tree(const char *dir) {
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static int setup(struct fixture *f) {
    memset(f, 0, sizeof *f);
    snprintf(f->root, sizeof f->root, "/tmp/imv-ctest-root.XXXXXX");
    snprintf(f->state, sizeof f->state, "/tmp/imv-ctest-state.XXXXXX");
    if (!mkdtemp(f->root) || !mkdtemp(f->state)) {
        perror("mkdtemp");
        exit(1);
    }
    imv_options o = {.struct_size = sizeof o, .root = f->root, .state = f->state};
    imv_error *e = NULL;
    imv_status s = imv_open(&o, &f->h, &e);
    if (s != IMV_OK) {
        fprintf(stderr, "FAIL setup: open: %d %s\n", (int)s, imv_error_message(e));
        imv_error_free(e);
        failures++;
        return -1;
    }
    s = imv_import(f->h, image_path, IMAGE, &e);
    if (s != IMV_OK) {
        fprintf(stderr, "FAIL setup: import: %d %s\n", (int)s, imv_error_message(e));
        imv_error_free(e);
        failures++;
        return -1;
    }
    return 0;
}

static void teardown(struct fixture *f) {
    if (f->h) {
        for (size_t i = 0; i < sizeof known_sandboxes / sizeof *known_sandboxes; i++) {
            imv_error *e = NULL;
            if (imv_release(f->h, known_sandboxes[i], &e) != IMV_OK) {
                fprintf(stderr, "FAIL teardown: release %s: %s\n", known_sandboxes[i],
                        imv_error_message(e));
                failures++;
            }
            imv_error_free(e);
        }
        for (int i = 0; i < 16; i++) {
            char id[32];
            snprintf(id, sizeof id, "sb-%d", i);
            imv_release(f->h, id, NULL);
        }
        imv_close(f->h);
        f->h = NULL;
    }
    remove_tree(f->state);
    unmount_layers(f->root);
    remove_tree(f->root);
}

static imv_image_spec spec_of(const char *image) {
    imv_image_spec s = {.struct_size = sizeof s, .image = image};
    return s;
}

static imv_mount image_mount(const imv_image_spec *spec) {
    imv_mount m = {.struct_size = sizeof m, .container_path = "/v", .image = spec,
                   .readonly = true};
    return m;
}

/* Free what a successful imv_mutate wrote into an image mount, so it can be passed again. */
static void free_answers(imv_mount *m) {
    imv_string_free(m->host_path);
    m->host_path = NULL;
    imv_string_free(m->image_ref);
    m->image_ref = NULL;
}

/* Whether `s` is a sha256 digest in full: what an image ID is. */
static int is_digest(const char *s) {
    if (!s || strncmp(s, "sha256:", 7) != 0 || strlen(s) != 7 + 64)
        return 0;
    return strspn(s + 7, "0123456789abcdef") == 64;
}

static size_t volume_count(imv_handle *h) {
    imv_volume_list *list = NULL;
    imv_error *e = NULL;
    if (imv_volumes(h, &list, &e) != IMV_OK) {
        fprintf(stderr, "FAIL volumes: %s\n", imv_error_message(e));
        failures++;
        imv_error_free(e);
        return (size_t)-1;
    }
    size_t n = imv_volume_list_len(list);
    imv_volume_list_free(list);
    return n;
}

static int is_file(const char *dir, const char *rel) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- tests ---- */

static void test_versions(void) {
    uint32_t abi = imv_abi_version();
    CHECK(abi >> 16 == IMV_ABI_VERSION_MAJOR, "abi major %u", abi >> 16);
    CHECK((abi & 0xffff) == IMV_ABI_VERSION_MINOR, "abi minor %u", abi & 0xffff);
    CHECK(imv_version() && strlen(imv_version()) > 0, "empty version");
}

/* Every pointer argument NULL in turn: a status, never a crash. */
static void test_null_arguments(struct fixture *f) {
    imv_options o = {.struct_size = sizeof o, .root = f->root, .state = f->state};
    imv_handle *h = NULL;
    imv_volume_list *list = NULL;
    imv_image_spec spec = spec_of(IMAGE);
    imv_mount m = image_mount(&spec);
    imv_mount *mounts[] = {&m};
    imv_mount *null_mounts[] = {NULL};

    EXPECT(imv_open(NULL, &h, errp), IMV_NULL_ARGUMENT, "options");
    EXPECT(imv_open(&o, NULL, errp), IMV_NULL_ARGUMENT, "out");
    CHECK(h == NULL, "out written on failure");
    CHECK(imv_open(NULL, &h, NULL) == IMV_NULL_ARGUMENT, "err NULL is allowed");

    EXPECT(imv_import(NULL, image_path, NULL, errp), IMV_NULL_ARGUMENT, "handle");
    EXPECT(imv_import(f->h, NULL, NULL, errp), IMV_NULL_ARGUMENT, "path");

    EXPECT(imv_mutate(NULL, "sb", NULL, NULL, mounts, 1, errp), IMV_NULL_ARGUMENT, "handle");
    EXPECT(imv_mutate(f->h, NULL, NULL, NULL, mounts, 1, errp), IMV_NULL_ARGUMENT,
           "sandbox_id");
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, NULL, 1, errp), IMV_NULL_ARGUMENT, "mounts");
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, null_mounts, 1, errp), IMV_NULL_ARGUMENT,
           "mounts[0]");
    /* No mounts at all is a valid, empty request. */
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, NULL, 0, errp), IMV_OK, NULL);
    CHECK(m.host_path == NULL, "host_path written on failure");

    EXPECT(imv_cleanup(NULL, "sb", NULL, errp), IMV_NULL_ARGUMENT, "handle");
    EXPECT(imv_cleanup(f->h, NULL, NULL, errp), IMV_NULL_ARGUMENT, "sandbox_id");
    EXPECT(imv_release(NULL, "sb", errp), IMV_NULL_ARGUMENT, "handle");
    EXPECT(imv_release(f->h, NULL, errp), IMV_NULL_ARGUMENT, "sandbox_id");
    EXPECT(imv_volumes(NULL, &list, errp), IMV_NULL_ARGUMENT, "handle");
    EXPECT(imv_volumes(f->h, NULL, errp), IMV_NULL_ARGUMENT, "out");

    /* A NULL array with a length inside a mount or a spec. */
    imv_key_value *no_annotations = NULL;
    imv_image_spec bad_spec = spec_of(IMAGE);
    bad_spec.annotations = no_annotations;
    bad_spec.annotations_len = 2;
    imv_mount bad = image_mount(&bad_spec);
    imv_mount *bads[] = {&bad};
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, bads, 1, errp), IMV_NULL_ARGUMENT,
           "mounts[0].image.annotations");
    imv_mount bad2 = image_mount(&spec);
    bad2.uid_mappings_len = 1;
    bads[0] = &bad2;
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, bads, 1, errp), IMV_NULL_ARGUMENT,
           "mounts[0].uid_mappings");

    /* Accessors and free functions take NULL. */
    CHECK(imv_error_code(NULL) == IMV_NULL_ARGUMENT, "error_code(NULL)");
    CHECK(imv_error_message(NULL) && imv_error_message(NULL)[0] == '\0', "error_message(NULL)");
    CHECK(imv_volume_list_len(NULL) == 0, "list_len(NULL)");
    CHECK(imv_volume_list_sandbox_id(NULL, 0) == NULL, "sandbox_id(NULL)");
    CHECK(imv_volume_list_target(NULL, 0) == NULL, "target(NULL)");
    CHECK(imv_volume_list_image_digest(NULL, 0) == NULL, "image_digest(NULL)");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    CHECK(imv_volume_list_manifest(NULL, 0) == NULL, "manifest(NULL)");
#pragma GCC diagnostic pop
    CHECK(imv_volume_list_image(NULL, 0) == NULL, "image(NULL)");
    CHECK(!imv_volume_list_mounted(NULL, 0), "mounted(NULL)");
    imv_error_free(NULL);
    imv_string_free(NULL);
    imv_volume_list_free(NULL);
    imv_close(NULL);
}

static void test_invalid_utf8(struct fixture *f) {
    const char *bad = "caf\xc3(";
    imv_image_spec spec = spec_of(IMAGE);
    imv_mount m = image_mount(&spec);
    imv_mount *mounts[] = {&m};

    EXPECT(imv_mutate(f->h, bad, NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "sandbox_id is not valid UTF-8");
    EXPECT(imv_mutate(f->h, "sb", bad, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "snapshotter");
    EXPECT(imv_mutate(f->h, "sb", NULL, bad, mounts, 1, errp), IMV_INVALID_ARGUMENT, "platform");
    EXPECT(imv_cleanup(f->h, bad, NULL, errp), IMV_INVALID_ARGUMENT, "sandbox_id");
    EXPECT(imv_release(f->h, bad, errp), IMV_INVALID_ARGUMENT, "sandbox_id");
    EXPECT(imv_import(f->h, bad, NULL, errp), IMV_INVALID_ARGUMENT, "path");

    imv_image_spec bad_spec = spec_of(bad);
    imv_mount bm = image_mount(&bad_spec);
    mounts[0] = &bm;
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "mounts[0].image.image");
    imv_key_value kv[] = {{.key = "ok", .value = "fine"}, {.key = "k", .value = bad}};
    imv_image_spec ann_spec = spec_of(IMAGE);
    ann_spec.annotations = kv;
    ann_spec.annotations_len = 2;
    imv_mount am = image_mount(&ann_spec);
    mounts[0] = &am;
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "mounts[0].image.annotations[1].value");
    const char *opts[] = {"ro", bad};
    imv_mount om = image_mount(&spec);
    om.mount_options = opts;
    om.mount_options_len = 2;
    mounts[0] = &om;
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "mounts[0].mount_options[1]");

    imv_options o = {.struct_size = sizeof o, .root = bad, .state = f->state};
    imv_handle *h = NULL;
    EXPECT(imv_open(&o, &h, errp), IMV_INVALID_ARGUMENT, "options.root");
    CHECK(h == NULL, "handle made from bad options");
}

static void test_bad_sandbox_ids(struct fixture *f) {
    char long_id[100];
    memset(long_id, 'a', 77);
    long_id[77] = '\0';
    const char *ids[] = {"", "..", "../etc", "a/b", "-x", "x-", "a..b", "a b", long_id};
    imv_image_spec spec = spec_of(IMAGE);
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        imv_mount m = image_mount(&spec);
        imv_mount *mounts[] = {&m};
        EXPECT(imv_mutate(f->h, ids[i], NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
               "sandbox ID");
        CHECK(m.host_path == NULL, "host_path set for bad sandbox id %s", ids[i]);
        EXPECT(imv_cleanup(f->h, ids[i], NULL, errp), IMV_INVALID_ARGUMENT, "sandbox ID");
        EXPECT(imv_release(f->h, ids[i], errp), IMV_INVALID_ARGUMENT, "sandbox ID");
    }
    CHECK(volume_count(f->h) == 0, "volumes made");
}

static void test_rejected_mounts(struct fixture *f) {
    imv_image_spec spec = spec_of(IMAGE);
    imv_image_spec unknown = spec_of("example.com/nope:1");
    imv_mount *mounts[1];

    imv_mount m = image_mount(&unknown);
    mounts[0] = &m;
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, mounts, 1, errp), IMV_NOT_FOUND, "nope");

    imv_mount rw = image_mount(&spec);
    rw.readonly = false;
    mounts[0] = &rw;
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "read-only");
    CHECK(rw.host_path == NULL, "host_path set on a read-write mount");

    char preset[] = "/somewhere";
    imv_mount hp = image_mount(&spec);
    hp.host_path = preset;
    mounts[0] = &hp;
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "host_path");
    CHECK(hp.host_path == preset, "preset host_path overwritten");

    /* image_ref is an output: a string there would be overwritten and leak. */
    imv_mount ir = image_mount(&spec);
    ir.image_ref = preset;
    mounts[0] = &ir;
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "mounts[0].image_ref \"/somewhere\"");
    CHECK(ir.image_ref == preset && ir.host_path == NULL, "refused mount written");

    imv_mount prop = image_mount(&spec);
    prop.propagation = 7;
    mounts[0] = &prop;
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "propagation");

    imv_image_spec empty = spec_of(NULL);
    imv_mount em = image_mount(&empty);
    mounts[0] = &em;
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT, "empty");

    imv_mount sub = image_mount(&spec);
    sub.image_sub_path = "../etc";
    mounts[0] = &sub;
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT, NULL);

    imv_mount plat = image_mount(&spec);
    mounts[0] = &plat;
    EXPECT(imv_mutate(f->h, "sb", NULL, "linux/s390x", mounts, 1, errp), IMV_NOT_FOUND, NULL);
    EXPECT(imv_mutate(f->h, "sb", NULL, "not a/platform", mounts, 1, errp),
           IMV_INVALID_ARGUMENT, "platform");

    imv_mount nopath = image_mount(&spec);
    nopath.container_path = NULL;
    mounts[0] = &nopath;
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "container path is empty");
    imv_mount relative = image_mount(&spec);
    relative.container_path = "data";
    mounts[0] = &relative;
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "not absolute");

    /* More mounts than one call may carry: refused before any is read. */
    size_t many_len = 4097;
    imv_mount **many = calloc(many_len, sizeof *many);
    CHECK(many != NULL, "calloc");
    imv_mount one = image_mount(&spec);
    for (size_t i = 0; i < many_len; i++) many[i] = &one;
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, many, many_len, errp), IMV_INVALID_ARGUMENT,
           "at most 4096");
    free(many);

    EXPECT(imv_import(f->h, "/nonexistent/image", NULL, errp), IMV_NOT_FOUND, NULL);
    CHECK(volume_count(f->h) == 0, "a rejected mount left a volume");
}

/* A bool field whose byte is neither 0 nor 1 (memset to 0xff, or written by another
 * language) reads as true; it must never crash the library. */
static void test_bool_bytes(struct fixture *f) {
    imv_image_spec spec = spec_of(IMAGE);
    imv_mount m = image_mount(&spec);
    const unsigned char ff = 0xff;
    memcpy(&m.readonly, &ff, 1);
    memcpy(&m.recursive_read_only, &ff, 1);
    imv_mount *mounts[] = {&m};
    EXPECT(imv_mutate(f->h, "sb-bool", NULL, NULL, mounts, 1, errp), IMV_OK, NULL);
    CHECK(m.host_path != NULL, "no host_path for a mount with readonly byte 0xff");
    free_answers(&m);
    EXPECT(imv_release(f->h, "sb-bool", errp), IMV_OK, NULL);
    CHECK(volume_count(f->h) == 0, "release left a volume");
}

static void test_open_options(struct fixture *f) {
    imv_handle *h = NULL;
    imv_options o = {.struct_size = sizeof o, .backend = 42, .root = f->root, .state = f->state};
    EXPECT(imv_open(&o, &h, errp), IMV_INVALID_ARGUMENT, "backend");
    /* containerd is contacted lazily: opening works, the first call that needs the
       daemon says it is unavailable and names the socket. */
    o.backend = IMV_BACKEND_CONTAINERD;
    o.containerd_address = "/nonexistent/containerd.sock";
    o.containerd_namespace = "k8s.io";
    EXPECT(imv_open(&o, &h, errp), IMV_OK, NULL);
    CHECK(h != NULL, "no handle for the containerd backend");
    imv_image_spec spec = spec_of(IMAGE);
    imv_mount m = image_mount(&spec);
    imv_mount *mounts[] = {&m};
    EXPECT(imv_mutate(h, "sb", NULL, NULL, mounts, 1, errp), IMV_UNAVAILABLE,
           "/nonexistent/containerd.sock");
    CHECK(m.host_path == NULL, "host_path set on failure");
    imv_close(h);
    h = NULL;
    o.containerd_address = NULL;
    o.containerd_namespace = NULL;
    o.backend = IMV_BACKEND_LOCAL;
    o.struct_size = 4;
    EXPECT(imv_open(&o, &h, errp), IMV_INVALID_ARGUMENT, "struct_size");
    o.struct_size = 1u << 30;
    EXPECT(imv_open(&o, &h, errp), IMV_INVALID_ARGUMENT, "struct_size");
    CHECK(h == NULL, "handle made from bad options");
}

/* The main path: mount, reuse, list, sub path, clean up, all-or-nothing on failure. */
static void test_mutate_and_cleanup(struct fixture *f) {
    imv_image_spec spec = spec_of(IMAGE);
    imv_key_value kv[] = {{.key = "a", .value = "b"}};
    spec.annotations = kv;
    spec.annotations_len = 1;
    spec.user_specified_image = "sample:1";
    /* A pod in a user namespace: container 0 is host 100000, 65536 IDs. */
    imv_id_mapping ids[] = {{.host_id = 100000, .container_id = 0, .length = 65536}};
    const char *opts[] = {"ro"};
    imv_mount plain = {.struct_size = sizeof plain, .container_path = "/etc/hosts",
                       .host_path = (char *)"/etc/hosts"};
    imv_mount m = image_mount(&spec);
    m.uid_mappings = ids;
    m.uid_mappings_len = 1;
    m.gid_mappings = ids;
    m.gid_mappings_len = 1;
    m.mount_options = opts;
    m.mount_options_len = 1;
    m.propagation = IMV_PROPAGATION_HOST_TO_CONTAINER;
    imv_mount *mounts[] = {&plain, &m};

    EXPECT(imv_mutate(f->h, "sb", "", "", mounts, 2, errp), IMV_OK, NULL);
    CHECK(m.host_path != NULL, "no host_path");
    CHECK(strcmp(plain.host_path, "/etc/hosts") == 0, "non-image mount changed");
    if (!m.host_path)
        return;
    CHECK(strncmp(m.host_path, f->state, strlen(f->state)) == 0, "host_path %s not under %s",
          m.host_path, f->state);
    CHECK(is_file(m.host_path, "data/hello.txt"), "no data/hello.txt in %s", m.host_path);
    CHECK(!is_file(m.host_path, "data/remove-me.txt"), "whiteout not applied");
    /* The mappings are applied (the image's root-owned files show the pod's host IDs) and
     * taken off the mount, so the runtime does not map them again. */
    CHECK(m.uid_mappings == NULL && m.uid_mappings_len == 0, "uid mappings left on the mount");
    CHECK(m.gid_mappings == NULL && m.gid_mappings_len == 0, "gid mappings left on the mount");
    char hello[4096];
    struct stat st;
    snprintf(hello, sizeof hello, "%s/data/hello.txt", m.host_path);
    CHECK(stat(hello, &st) == 0 && st.st_uid == 100000 && st.st_gid == 100000,
          "owner of %s: %u:%u", hello, (unsigned)st.st_uid, (unsigned)st.st_gid);

    /* The same image again for the same sandbox (the pod's mappings again): the same
     * volume, reused. */
    imv_mount again = image_mount(&spec);
    again.uid_mappings = again.gid_mappings = ids;
    again.uid_mappings_len = again.gid_mappings_len = 1;
    imv_mount *again_mounts[] = {&again};
    EXPECT(imv_mutate(f->h, "sb", NULL, NULL, again_mounts, 1, errp), IMV_OK, NULL);
    CHECK(again.host_path && strcmp(again.host_path, m.host_path) == 0, "not reused: %s",
          again.host_path);
    free_answers(&again);

    /* The image's ID on the mount (KEP-5365): its config's digest, which names neither the
     * volume (the manifest's digest does) nor anything else the caller passed. */
    CHECK(is_digest(m.image_ref), "image_ref %s", m.image_ref ? m.image_ref : "(null)");
    const char *dir = strrchr(m.host_path, '/');
    CHECK(m.image_ref && dir && strcmp(m.image_ref + 7, dir + 1) != 0,
          "image_ref %s is the volume's digest", m.image_ref);
    /* The image named by that ID (what the kubelet sends), twice: the same volume and
     * image_ref, whether resolved or remembered. */
    if (m.image_ref) {
        char id[80];
        snprintf(id, sizeof id, "%s", m.image_ref);
        imv_image_spec by_id = spec_of(id);
        for (int round = 0; round < 2; round++) {
            imv_mount i = image_mount(&by_id);
            i.uid_mappings = i.gid_mappings = ids;
            i.uid_mappings_len = i.gid_mappings_len = 1;
            imv_mount *by_id_mounts[] = {&i};
            EXPECT(imv_mutate(f->h, "sb", NULL, NULL, by_id_mounts, 1, errp), IMV_OK, NULL);
            CHECK(i.host_path && strcmp(i.host_path, m.host_path) == 0, "by ID: %s",
                  i.host_path);
            CHECK(i.image_ref && strcmp(i.image_ref, id) == 0, "by ID, round %d: image_ref %s",
                  round, i.image_ref);
            free_answers(&i);
        }
    }

    /* The listing. */
    imv_volume_list *list = NULL;
    EXPECT(imv_volumes(f->h, &list, errp), IMV_OK, NULL);
    CHECK(imv_volume_list_len(list) == 1, "%zu volumes", imv_volume_list_len(list));
    if (imv_volume_list_len(list) == 1) {
        CHECK(strcmp(imv_volume_list_sandbox_id(list, 0), "sb") == 0, "sandbox");
        CHECK(strcmp(imv_volume_list_target(list, 0), m.host_path) == 0, "target");
        /* The image's digest names the volume's directory. */
        const char *digest = imv_volume_list_image_digest(list, 0);
        const char *base = strrchr(m.host_path, '/');
        CHECK(strncmp(digest, "sha256:", 7) == 0 && base && strcmp(base + 1, digest + 7) == 0,
              "image digest %s, target %s", digest, m.host_path);
        /* The deprecated name returns the same string (and is marked deprecated). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        CHECK(imv_volume_list_manifest(list, 0) == digest, "manifest");
#pragma GCC diagnostic pop
        CHECK(imv_volume_list_image(list, 0) && strcmp(imv_volume_list_image(list, 0), IMAGE) == 0,
              "image");
        CHECK(imv_volume_list_mounted(list, 0), "not mounted");
        CHECK(imv_volume_list_target(list, 1) == NULL, "index out of range");
        CHECK(!imv_volume_list_mounted(list, 1), "index out of range");
    }
    imv_volume_list_free(list);

    /* A sub path inside the image. */
    imv_mount sub = image_mount(&spec);
    sub.image_sub_path = "data";
    imv_mount *sub_mounts[] = {&sub};
    EXPECT(imv_mutate(f->h, "sub", NULL, NULL, sub_mounts, 1, errp), IMV_OK, NULL);
    CHECK(sub.host_path && is_file(sub.host_path, "hello.txt"), "sub path %s", sub.host_path);
    free_answers(&sub);
    sub.image_sub_path = "no/such/dir";
    EXPECT(imv_mutate(f->h, "sub", NULL, NULL, sub_mounts, 1, errp), IMV_NOT_FOUND, NULL);
    CHECK(sub.host_path == NULL, "host_path set on failure");

    /* All or nothing: a good mount and a bad one; neither gets a host path, and the good
     * one's volume, new in this call, is undone. */
    imv_image_spec unknown = spec_of("example.com/nope:1");
    imv_mount good = image_mount(&spec);
    imv_mount bad = image_mount(&unknown);
    imv_mount *mixed[] = {&good, &bad};
    EXPECT(imv_mutate(f->h, "fail", NULL, NULL, mixed, 2, errp), IMV_NOT_FOUND, "mount 1");
    CHECK(good.host_path == NULL && bad.host_path == NULL, "host_path written on failure");
    CHECK(good.image_ref == NULL && bad.image_ref == NULL, "image_ref written on failure");

    /* Cleanup: volumes go, twice is fine, release too. */
    EXPECT(imv_cleanup(f->h, "sb", NULL, errp), IMV_OK, NULL);
    CHECK(!is_file(m.host_path, "data/hello.txt"), "still mounted after cleanup");
    EXPECT(imv_cleanup(f->h, "sb", NULL, errp), IMV_OK, NULL);
    EXPECT(imv_release(f->h, "sb", errp), IMV_OK, NULL);
    EXPECT(imv_release(f->h, "sb", errp), IMV_OK, NULL);
    EXPECT(imv_cleanup(f->h, "never-seen", NULL, errp), IMV_OK, NULL);
    EXPECT(imv_release(f->h, "sub", errp), IMV_OK, NULL);
    CHECK(volume_count(f->h) == 0, "volumes left");
    free_answers(&m);
}

/* An OCI artifact (a ModelPack model) mounts as an image does: its raw layers are files
 * that are the stored blobs themselves, its tar layer is extracted; reuse, a second
 * sandbox and release as for images. */
static void test_artifact(struct fixture *f) {
    const char *name = "example.com/imv/model:1";
    EXPECT(imv_import(f->h, model_path, name, errp), IMV_OK, NULL);
    imv_image_spec spec = spec_of(name);
    imv_mount m = image_mount(&spec);
    imv_mount *mounts[] = {&m};
    EXPECT(imv_mutate(f->h, "model", NULL, NULL, mounts, 1, errp), IMV_OK, NULL);
    CHECK(m.host_path != NULL, "no host_path");
    if (!m.host_path)
        return;
    CHECK(is_file(m.host_path, "config.json"), "no config.json in %s", m.host_path);
    CHECK(is_file(m.host_path, "docs/README.md"), "the tar layer is not extracted");
    char weights[4096];
    struct stat st;
    snprintf(weights, sizeof weights, "%s/model.safetensors", m.host_path);
    CHECK(stat(weights, &st) == 0 && st.st_size == 65536 && (st.st_mode & 07777) == 0444 &&
              st.st_nlink >= 2,
          "%s: size %lld, mode %o, %lu links", weights, (long long)st.st_size,
          (unsigned)st.st_mode, (unsigned long)st.st_nlink);
    int fd = open(weights, O_WRONLY);
    CHECK(fd < 0 && (errno == EROFS || errno == EACCES), "%s opened for writing", weights);
    if (fd >= 0)
        close(fd);

    imv_mount again = image_mount(&spec);
    imv_mount *again_mounts[] = {&again};
    EXPECT(imv_mutate(f->h, "model", NULL, NULL, again_mounts, 1, errp), IMV_OK, NULL);
    CHECK(again.host_path && strcmp(again.host_path, m.host_path) == 0, "not reused");
    free_answers(&again);
    imv_mount other = image_mount(&spec);
    imv_mount *other_mounts[] = {&other};
    EXPECT(imv_mutate(f->h, "model2", NULL, NULL, other_mounts, 1, errp), IMV_OK, NULL);
    CHECK(other.host_path && is_file(other.host_path, "model.safetensors"), "second sandbox");
    /* An artifact's ID is its manifest's digest, which also names its volume: artifacts
     * share one empty config. */
    const char *dir = strrchr(m.host_path, '/');
    CHECK(is_digest(m.image_ref) && dir && strcmp(m.image_ref + 7, dir + 1) == 0,
          "artifact image_ref %s, volume %s", m.image_ref, m.host_path);
    CHECK(other.image_ref && m.image_ref && strcmp(other.image_ref, m.image_ref) == 0,
          "second sandbox's image_ref %s", other.image_ref);
    free_answers(&other);

    EXPECT(imv_release(f->h, "model", errp), IMV_OK, NULL);
    EXPECT(imv_release(f->h, "model2", errp), IMV_OK, NULL);
    CHECK(!is_file(m.host_path, "config.json"), "still mounted after release");
    CHECK(volume_count(f->h) == 0, "volumes left");
    free_answers(&m);
}

/* imv_import_with: an image tagged with a bare tag is named by a base name or picked by its
 * tag; without either the error says which to use. The volumes prove the names. */
static void test_import_with(struct fixture *f) {
    imv_import_options o = {.struct_size = sizeof o};
    EXPECT(imv_import_with(f->h, tagged_path, &o, errp), IMV_INVALID_ARGUMENT, "base-name");
    EXPECT(imv_import_with(f->h, tagged_path, NULL, errp), IMV_INVALID_ARGUMENT, "v1");
    o.tag = "v2";
    o.name = "example.com/picked:2";
    EXPECT(imv_import_with(f->h, tagged_path, &o, errp), IMV_NOT_FOUND, "v1");
    imv_import_options small = {.struct_size = 1};
    EXPECT(imv_import_with(f->h, tagged_path, &small, errp), IMV_INVALID_ARGUMENT,
           "imv_import_options.struct_size 1");
    EXPECT(imv_import_with(NULL, tagged_path, &o, errp), IMV_NULL_ARGUMENT, "handle");
    EXPECT(imv_import_with(f->h, NULL, &o, errp), IMV_NULL_ARGUMENT, "path");

    o.tag = "v1";
    EXPECT(imv_import_with(f->h, tagged_path, &o, errp), IMV_OK, NULL);
    imv_import_options base = {.struct_size = sizeof base, .base_name = "example.com/base"};
    EXPECT(imv_import_with(f->h, tagged_path, &base, errp), IMV_OK, NULL);
    const char *names[] = {"example.com/picked:2", "example.com/base:v1"};
    for (size_t i = 0; i < 2; i++) {
        imv_image_spec spec = spec_of(names[i]);
        imv_mount m = image_mount(&spec);
        imv_mount *mounts[] = {&m};
        EXPECT(imv_mutate(f->h, "imp", NULL, NULL, mounts, 1, errp), IMV_OK, NULL);
        CHECK(m.host_path && is_file(m.host_path, "data/hello.txt"), "%s: %s", names[i],
              m.host_path);
        free_answers(&m);
    }
    EXPECT(imv_release(f->h, "imp", errp), IMV_OK, NULL);
    CHECK(volume_count(f->h) == 0, "volumes left");
}

/* imv_mutate_with: an SELinux mount label. These machines have no SELinux, so the label is
 * refused (naming it), or ignored when asked; a bad label or options struct is refused
 * first. NULL options is imv_mutate. */
static void test_mutate_with_label(struct fixture *f) {
    imv_image_spec spec = spec_of(IMAGE);
    imv_mount m = image_mount(&spec);
    imv_mount *mounts[] = {&m};
    const char *label = "system_u:object_r:container_file_t:s0:c1,c2";
    imv_mutate_options o = {.struct_size = sizeof o, .mount_label = label};
    EXPECT(imv_mutate_with(f->h, "lbl", NULL, NULL, &o, mounts, 1, errp),
           IMV_FAILED_PRECONDITION, "SELinux is not enabled");
    CHECK(m.host_path == NULL, "host_path set on failure");
    CHECK(volume_count(f->h) == 0, "volume left by a refused label");
    o.mount_label = "not a label";
    o.ignore_label_without_selinux = true;
    EXPECT(imv_mutate_with(f->h, "lbl", NULL, NULL, &o, mounts, 1, errp),
           IMV_INVALID_ARGUMENT, "not a label");
    imv_mutate_options small = {.struct_size = 1};
    EXPECT(imv_mutate_with(f->h, "lbl", NULL, NULL, &small, mounts, 1, errp),
           IMV_INVALID_ARGUMENT, "imv_mutate_options.struct_size 1");
    o.mount_label = label;
    EXPECT(imv_mutate_with(f->h, "lbl", NULL, NULL, &o, mounts, 1, errp), IMV_OK, NULL);
    CHECK(m.host_path && is_file(m.host_path, "data/hello.txt"), "ignored label: %s",
          m.host_path);
    imv_mount again = image_mount(&spec);
    imv_mount *again_mounts[] = {&again};
    EXPECT(imv_mutate_with(f->h, "lbl", NULL, NULL, NULL, again_mounts, 1, errp), IMV_OK, NULL);
    CHECK(again.host_path && m.host_path && strcmp(again.host_path, m.host_path) == 0,
          "not reused: %s", again.host_path);
    free_answers(&again);
    free_answers(&m);
    EXPECT(imv_cleanup(f->h, "lbl", NULL, errp), IMV_OK, NULL);
    EXPECT(imv_release(f->h, "lbl", errp), IMV_OK, NULL);
    CHECK(volume_count(f->h) == 0, "volumes left");
}

/* struct_size: an older caller's smaller struct works, a newer caller's bigger one works
 * when its extra fields are zero, and sizes that cannot be a struct are refused. */
static void test_struct_sizes_accepted(struct fixture *f) {
    imv_image_spec spec = spec_of(IMAGE);

    /* An "old" mount that ends before image_sub_path, in a heap block of exactly that size:
     * AddressSanitizer and valgrind catch any read past it. */
    size_t old_size = offsetof(imv_mount, image_sub_path);
    imv_mount full = image_mount(&spec);
    full.struct_size = old_size;
    imv_mount *old = malloc(old_size);
    memcpy(old, &full, old_size);
    imv_mount *mounts[] = {old};
    EXPECT(imv_mutate(f->h, "old", NULL, NULL, mounts, 1, errp), IMV_OK, NULL);
    CHECK(old->host_path && is_file(old->host_path, "etc/hostname"), "old-size mount: %s",
          old->host_path);
    imv_string_free(old->host_path);
    free(old);

    /* A 0.6 caller's mount, which ends before image_ref, in a block of exactly its size:
     * it gets its host path, and nothing is written past it. */
    size_t v06_size = offsetof(imv_mount, image_ref);
    full = image_mount(&spec);
    full.struct_size = v06_size;
    imv_mount *v06 = malloc(v06_size);
    memcpy(v06, &full, v06_size);
    mounts[0] = v06;
    EXPECT(imv_mutate(f->h, "old", NULL, NULL, mounts, 1, errp), IMV_OK, NULL);
    CHECK(v06->host_path != NULL, "0.6-size mount: no host path");
    imv_string_free(v06->host_path);
    free(v06);

    /* An old image spec too: just struct_size and image. */
    size_t old_spec_size = offsetof(imv_image_spec, annotations);
    imv_image_spec *old_spec = malloc(old_spec_size);
    memcpy(old_spec, &spec, old_spec_size);
    old_spec->struct_size = old_spec_size;
    imv_mount m = image_mount(old_spec);
    mounts[0] = &m;
    EXPECT(imv_mutate(f->h, "old", NULL, NULL, mounts, 1, errp), IMV_OK, NULL);
    free_answers(&m);
    free(old_spec);

    /* A newer caller's bigger struct, its extra fields zero. */
    struct newer_mount {
        imv_mount base;
        const char *new_field;
        size_t new_len;
    } newer;
    memset(&newer, 0, sizeof newer);
    newer.base = image_mount(&spec);
    newer.base.struct_size = sizeof newer;
    mounts[0] = &newer.base;
    EXPECT(imv_mutate(f->h, "old", NULL, NULL, mounts, 1, errp), IMV_OK, NULL);
    free_answers(&newer.base);

    EXPECT(imv_cleanup(f->h, "old", NULL, errp), IMV_OK, NULL);
}

static void test_struct_sizes_rejected(struct fixture *f) {
    imv_image_spec spec = spec_of(IMAGE);
    imv_mount *mounts[1];

    /* Too small, and not a multiple of the alignment. */
    imv_mount small = image_mount(&spec);
    small.struct_size = offsetof(imv_mount, image);
    mounts[0] = &small;
    EXPECT(imv_mutate(f->h, "old", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "mounts[0]: imv_mount.struct_size");
    small.struct_size = sizeof(imv_mount) - 1;
    EXPECT(imv_mutate(f->h, "old", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "alignment");

    /* A newer caller's bigger struct with a field this library does not know set. */
    struct newer_mount {
        imv_mount base;
        const char *new_field;
        size_t new_len;
    } newer;
    memset(&newer, 0, sizeof newer);
    newer.base = image_mount(&spec);
    newer.base.struct_size = sizeof newer;
    newer.new_field = "set";
    mounts[0] = &newer.base;
    EXPECT(imv_mutate(f->h, "old", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "does not have");
    CHECK(newer.base.host_path == NULL, "host_path set on failure");

    /* The same rules for imv_image_spec. */
    imv_image_spec small_spec = spec_of(IMAGE);
    small_spec.struct_size = sizeof(size_t);
    imv_mount sm = image_mount(&small_spec);
    mounts[0] = &sm;
    EXPECT(imv_mutate(f->h, "old", NULL, NULL, mounts, 1, errp), IMV_INVALID_ARGUMENT,
           "mounts[0].image: imv_image_spec.struct_size");
    CHECK(volume_count(f->h) == 0, "volumes made");
}

/* 16 threads on one handle: each mutates a sandbox of its own and a shared one, and
 * cleans its own up, over and over, while some also clean the shared one. */
#define THREADS 16
#define ROUNDS 4

struct worker {
    struct fixture *f;
    int index;
    int failures;
    char shared_path[4096];
};

static void *work(void *arg) {
    struct worker *w = arg;
    char own[32];
    snprintf(own, sizeof own, "sb-%d", w->index);
    imv_image_spec spec = spec_of(IMAGE);
    for (int round = 0; round < ROUNDS; round++) {
        imv_mount a = image_mount(&spec), b = image_mount(&spec);
        imv_mount *ma[] = {&a}, *mb[] = {&b};
        imv_error *e = NULL;
        imv_status s = imv_mutate(w->f->h, own, NULL, NULL, ma, 1, &e);
        if (s != IMV_OK || !is_file(a.host_path, "data/hello.txt")) {
            fprintf(stderr, "FAIL thread %d: mutate %s: %d %s\n", w->index, own, (int)s,
                    imv_error_message(e));
            w->failures++;
        }
        imv_error_free(e);
        e = NULL;
        s = imv_mutate(w->f->h, "shared", NULL, NULL, mb, 1, &e);
        if (s != IMV_OK) {
            fprintf(stderr, "FAIL thread %d: mutate shared: %d %s\n", w->index, (int)s,
                    imv_error_message(e));
            w->failures++;
        } else if (round == 0) {
            snprintf(w->shared_path, sizeof w->shared_path, "%s", b.host_path);
        }
        imv_error_free(e);
        e = NULL;
        free_answers(&a);
        free_answers(&b);
        s = imv_cleanup(w->f->h, own, NULL, &e);
        if (s != IMV_OK) {
            fprintf(stderr, "FAIL thread %d: cleanup %s: %d %s\n", w->index, own, (int)s,
                    imv_error_message(e));
            w->failures++;
        }
        imv_error_free(e);
        e = NULL;
        if (w->index % 4 == 0) {
            s = imv_cleanup(w->f->h, "shared", NULL, &e);
            if (s != IMV_OK) {
                fprintf(stderr, "FAIL thread %d: cleanup shared: %d %s\n", w->index, (int)s,
                        imv_error_message(e));
                w->failures++;
            }
            imv_error_free(e);
        }
    }
    return NULL;
}

/* What the log callback saw: events by level, and whether a mount's info line came. */
static struct {
    pthread_mutex_t mu;
    int events[6];
    int mounted_lines;
    int bad_strings;
} log_seen = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void count_log(void *user, int32_t level, const char *target, const char *message) {
    pthread_mutex_lock(&log_seen.mu);
    if (user != &log_seen || level < 1 || level > 5 || !target || !message ||
        strncmp(target, "imv", 3) != 0)
        log_seen.bad_strings++;
    else
        log_seen.events[level]++;
    if (message && strstr(message, "mounted image volume") && strstr(message, "sandbox=logged"))
        log_seen.mounted_lines++;
    pthread_mutex_unlock(&log_seen.mu);
}

static int log_events(void) {
    pthread_mutex_lock(&log_seen.mu);
    int n = 0;
    for (int i = 0; i < 6; i++)
        n += log_seen.events[i];
    pthread_mutex_unlock(&log_seen.mu);
    return n;
}

/* imv_set_log: the library's events reach the callback at the level asked and above, with
 * the caller's pointer and imv's targets; IMV_LOG_OFF stops them; a bad level is refused. */
static void test_log(struct fixture *f) {
    EXPECT(imv_set_log(6, count_log, &log_seen, errp), IMV_INVALID_ARGUMENT, "log level 6");
    EXPECT(imv_set_log(-1, count_log, &log_seen, errp), IMV_INVALID_ARGUMENT, "log level -1");
    EXPECT(imv_set_log(IMV_LOG_INFO, count_log, &log_seen, errp), IMV_OK, NULL);
    imv_image_spec spec = spec_of(IMAGE);
    imv_mount m = image_mount(&spec);
    imv_mount *mounts[] = {&m};
    EXPECT(imv_mutate(f->h, "logged", NULL, NULL, mounts, 1, errp), IMV_OK, NULL);
    free_answers(&m);
    CHECK(log_seen.mounted_lines == 1, "%d \"mounted image volume\" lines for sandbox logged",
          log_seen.mounted_lines);
    CHECK(log_seen.bad_strings == 0, "%d events with a bad level, target or user pointer",
          log_seen.bad_strings);
    CHECK(log_seen.events[IMV_LOG_DEBUG] == 0 && log_seen.events[IMV_LOG_TRACE] == 0,
          "debug or trace events at level info");

    /* Off: nothing more, whatever the library does. */
    EXPECT(imv_set_log(IMV_LOG_OFF, count_log, &log_seen, errp), IMV_OK, NULL);
    int before = log_events();
    EXPECT(imv_cleanup(f->h, "logged", NULL, errp), IMV_OK, NULL);
    EXPECT(imv_release(f->h, "logged", errp), IMV_OK, NULL);
    m = image_mount(&spec);
    EXPECT(imv_mutate(f->h, "logged", NULL, NULL, mounts, 1, errp), IMV_OK, NULL);
    free_answers(&m);
    CHECK(log_events() == before, "%d events after IMV_LOG_OFF", log_events() - before);

    /* Trace: the volume reused is a debug event; then a NULL callback: also off. */
    EXPECT(imv_set_log(IMV_LOG_TRACE, count_log, &log_seen, errp), IMV_OK, NULL);
    m = image_mount(&spec);
    EXPECT(imv_mutate(f->h, "logged", NULL, NULL, mounts, 1, errp), IMV_OK, NULL);
    free_answers(&m);
    CHECK(log_seen.events[IMV_LOG_DEBUG] > 0, "no debug events at trace level");
    EXPECT(imv_cleanup(f->h, "logged", NULL, errp), IMV_OK, NULL);
    EXPECT(imv_set_log(IMV_LOG_TRACE, NULL, NULL, errp), IMV_OK, NULL);
    before = log_events();
    EXPECT(imv_release(f->h, "logged", errp), IMV_OK, NULL);
    CHECK(log_events() == before, "events after a NULL callback");
}

static void test_threads(struct fixture *f) {
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (struct worker){.f = f, .index = i};
        if (pthread_create(&threads[i], NULL, work, &workers[i]) != 0) {
            perror("pthread_create");
            exit(1);
        }
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        failures += workers[i].failures;
        /* One image, one sandbox: every thread saw the same host path. */
        CHECK(strcmp(workers[i].shared_path, workers[0].shared_path) == 0,
              "thread %d shared path %s vs %s", i, workers[i].shared_path,
              workers[0].shared_path);
    }
    EXPECT(imv_cleanup(f->h, "shared", NULL, errp), IMV_OK, NULL);
    CHECK(volume_count(f->h) == 0, "volumes left after the threads");
}

typedef void (*test_fn)(struct fixture *);

enum { MOUNTS = 1 };

static void run(const char *name, test_fn fn, int needs) {
    struct fixture f;
    int before = failures;
    if ((needs & MOUNTS) && !can_mount) {
        printf("skip %s (no openat2/fsopen here: valgrind?)\n", name);
        return;
    }
    if (setup(&f) == 0)
        fn(&f);
    teardown(&f);
    printf("%s %s\n", failures == before ? "ok  " : "FAIL", name);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s IMAGE TAGGED-IMAGE MODEL\n", argv[0]);
        return 2;
    }
    image_path = argv[1];
    tagged_path = argv[2];
    model_path = argv[3];
    can_mount = probe_syscalls();
    /* The native run must not skip: a kernel without these calls is a failure there. */
    const char *require = getenv("IMV_TEST_REQUIRE_MOUNTS");
    if (!can_mount && require && strcmp(require, "1") == 0) {
        fprintf(stderr, "FAIL: IMV_TEST_REQUIRE_MOUNTS=1 but openat2/fsopen are unavailable\n");
        return 1;
    }
    /* Line-buffered so the order of output survives valgrind and sanitizers. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    test_versions();
    printf("%s versions\n", failures ? "FAIL" : "ok  ");
    run("null arguments", test_null_arguments, 0);
    run("invalid UTF-8", test_invalid_utf8, 0);
    run("bad sandbox IDs", test_bad_sandbox_ids, 0);
    run("rejected mounts", test_rejected_mounts, 0);
    run("open options", test_open_options, 0);
    run("struct sizes rejected", test_struct_sizes_rejected, 0);
    run("struct sizes accepted", test_struct_sizes_accepted, MOUNTS);
    run("mutate and cleanup", test_mutate_and_cleanup, MOUNTS);
    run("mutate with a label", test_mutate_with_label, MOUNTS);
    run("import with options", test_import_with, MOUNTS);
    run("an artifact", test_artifact, MOUNTS);
    run("bool bytes", test_bool_bytes, MOUNTS);
    run("16 threads", test_threads, MOUNTS);
    run("the log", test_log, MOUNTS);

    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("all C tests passed\n");
    return 0;
}
