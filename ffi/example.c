/*
 * example: mount an image volume from imv's embedded store, as a container runtime would.
 *
 *   example IMAGE [NAME]
 *
 * IMAGE is an OCI image layout directory, an OCI archive or a `docker save` tarball; NAME
 * (default example.com/sample:1) is what the image is imported as. The store and the state
 * live in fresh temporary directories, removed at the end. Run as root: it mounts.
 *
 * Build: cc example.c $(pkg-config --cflags --libs imv)
 */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "imv.h"

/* Print what failed and free the error. Every imv call that fails may hand back an
 * imv_error; the caller owns it. */
static void report(const char *what, imv_status status, imv_error *err) {
    fprintf(stderr, "example: %s: status %d: %s\n", what, (int)status, imv_error_message(err));
    imv_error_free(err);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 ? 0 : (perror(path), 0);
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

/* rm -rf, staying on one filesystem (FTW_MOUNT): were a volume still mounted, its
 * read-only content would be left alone rather than half deleted. */
static void remove_tree(const char *dir) {
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s IMAGE [NAME]\n", argv[0]);
        return 2;
    }
    const char *image_path = argv[1];
    const char *name = argc == 3 ? argv[2] : "example.com/sample:1";
    const char *sandbox = "example-sandbox";

    /* A library built for another ABI major would not even load (the soname differs); a
     * lower minor could lack something this program uses. */
    uint32_t abi = imv_abi_version();
    if (abi >> 16 != IMV_ABI_VERSION_MAJOR || (abi & 0xffff) < IMV_ABI_VERSION_MINOR) {
        fprintf(stderr, "example: libimv ABI %u.%u, built for %d.%d\n", abi >> 16, abi & 0xffff,
                IMV_ABI_VERSION_MAJOR, IMV_ABI_VERSION_MINOR);
        return 1;
    }
    printf("libimv %s (ABI %u.%u)\n", imv_version(), abi >> 16, abi & 0xffff);

    char root[] = "/tmp/imv-example-root.XXXXXX";
    char state[] = "/tmp/imv-example-state.XXXXXX";
    if (!mkdtemp(root) || !mkdtemp(state)) {
        perror("mkdtemp");
        return 1;
    }

    int rc = 1;
    imv_handle *h = NULL;
    imv_error *err = NULL;
    imv_status s;

    /* Zero-initialize, set struct_size: fields added in later versions then default. */
    imv_options options = {.struct_size = sizeof options, .backend = IMV_BACKEND_LOCAL,
                           .root = root, .state = state};
    if ((s = imv_open(&options, &h, &err)) != IMV_OK) {
        report("open", s, err);
        goto out;
    }
    if ((s = imv_import(h, image_path, name, &err)) != IMV_OK) {
        report("import", s, err);
        goto out;
    }

    /* The CRI mount the kubelet sends for `volumes: [{image: {reference: ...}}]`. */
    imv_image_spec spec = {.struct_size = sizeof spec, .image = name};
    imv_mount mount = {.struct_size = sizeof mount, .container_path = "/volume",
                       .image = &spec, .readonly = true};
    imv_mount *mounts[] = {&mount};
    if ((s = imv_mutate(h, sandbox, NULL, NULL, mounts, 1, &err)) != IMV_OK) {
        report("mutate", s, err);
        goto out;
    }
    /* host_path and image_ref (the image's ID, for the container's status) are ours now:
     * freed with imv_string_free below. */
    printf("%s (image ID %s) is mounted at %s\n", name, mount.image_ref, mount.host_path);

    DIR *dir = opendir(mount.host_path);
    if (dir) {
        int shown = 0;
        struct dirent *e;
        while ((e = readdir(dir)) != NULL && shown < 10) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                printf("  %s\n", e->d_name);
                shown++;
            }
        }
        closedir(dir);
    } else {
        perror(mount.host_path);
    }
    imv_string_free(mount.host_path);
    mount.host_path = NULL;
    imv_string_free(mount.image_ref);
    mount.image_ref = NULL;

    /* What the runtime does at StopPodSandbox (cleanup) and RemovePodSandbox (release). */
    if ((s = imv_cleanup(h, sandbox, NULL, &err)) != IMV_OK) {
        report("cleanup", s, err);
        goto out;
    }
    if ((s = imv_release(h, sandbox, &err)) != IMV_OK) {
        report("release", s, err);
        goto out;
    }
    printf("cleaned up sandbox %s\n", sandbox);
    rc = 0;

out:
    if (h && rc != 0) {
        /* Do not leave mounts behind when something failed half-way. */
        imv_cleanup(h, sandbox, NULL, NULL);
    }
    imv_close(h);
    remove_tree(state);
    unmount_layers(root);
    remove_tree(root);
    return rc;
}
