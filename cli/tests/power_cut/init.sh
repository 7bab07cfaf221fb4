#!/bin/busybox sh
# The guest's /init (cli/tests/power_cut/main.rs builds the initramfs). Each boot checks the
# store on the virtual disk /dev/vda, then, with power_cut.work=1 on the kernel command
# line, works on it until the host cuts the power (kills QEMU); without, it powers off.
# power_cut.store=imv|containerd says which store. Everything it reports goes to the
# serial console as lines starting with "PC " that the host parses.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup /sys/fs/cgroup 2>/dev/null
for m in $(cat /modules.order); do
    insmod "/modules/$m.ko" || echo "PC ERROR insmod $m"
done

arg() { sed -n "s/.*power_cut\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
store=$(arg store)
work=$(arg work)
images=$(ls /images)

say() { echo "PC $*"; }
fail() { say "ERROR $*"; }

# Wait for the disk, then mount it (data=ordered, the default: as on a node).
for _ in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mkdir -p /disk
mount -t ext4 /dev/vda /disk || { fail "mount /dev/vda"; poweroff -f; }
say BOOT "$store" "$(cat /disk/boots 2>/dev/null || echo 0)"

# Every regular file under $2, as "PC $1 <path> <size> <sha256>", in a stable order; one
# stat and one sha256sum for them all (a process per file is slow under emulation).
hash_tree() {
    (cd "$2" && find . -type f | sort >/tmp/list &&
        xargs -r stat -c '%s %n' </tmp/list >/tmp/sizes &&
        xargs -r sha256sum </tmp/list >/tmp/sums &&
        awk -v label="$1" 'NR == FNR { size[$2] = $1; next }
            { p = $2; sub(/^\.\//, "", p); print "PC " label " " p " " size[$2] " " $1 }' \
            /tmp/sizes /tmp/sums)
}

check_blobs() {
    ls "$1" 2>/dev/null | grep -q . || return 0
    (cd "$1" && sha256sum -- * | awk '{ if ($1 == $2) print "PC BLOB-OK " $1;
        else print "PC BLOB-BAD " $2 " " $1 }')
}

imv() { /bin/imv --root /disk/imv --state /run/imv "$@"; }

check_imv() {
    # Opening the store removes what no row names (half-unpacked layers); what is left
    # under snapshots/ is what the store holds.
    imv images >/tmp/images 2>/tmp/err || fail "imv images: $(cat /tmp/err)"
    while read -r name _; do
        [ "$name" = NAME ] || say IMAGE "$name"
    done </tmp/images
    check_blobs /disk/imv/content/blobs/sha256
    for d in /disk/imv/snapshots/*/; do
        id=${d%/}; id=${id##*/}
        [ "$id" = empty ] && continue
        say LAYER "$id"
        hash_tree "FILE $id" "$d/fs"
    done
    # Every image the store reports mounts as its layers say.
    while read -r name _; do
        [ "$name" = NAME ] && continue
        if imv mutate --sandbox check --mount "image=$name,container-path=/c" >/dev/null 2>/tmp/err; then
            say MOUNTED "$name"
            hash_tree "VOLUME $name" "$(echo /run/imv/image-volumes/check/*)"
        else
            fail "imv mutate $name: $(cat /tmp/err)"
        fi
        imv cleanup --sandbox check --release >/dev/null 2>&1 || fail "imv release check"
    done </tmp/images
    imv gc >/dev/null 2>/tmp/err || fail "imv gc: $(cat /tmp/err)"
}

work_imv() {
    i=0
    while :; do
        for img in $images; do
            name=example.com/power-cut/${img%.tar}:1
            imv import "/images/$img" >/dev/null 2>/tmp/err || fail "imv import: $(cat /tmp/err)"
            imv mutate --sandbox "s$i" --mount "image=$name,container-path=/d" >/dev/null 2>/tmp/err ||
                fail "imv mutate: $(cat /tmp/err)"
            say STEP "$i" "$img"
            i=$((i + 1))
        done
        for s in $(ls /run/imv/image-volumes); do imv release --sandbox "$s" >/dev/null 2>&1; done
        # Two images go, so the next round unpacks their layers again.
        for img in $(echo "$images" | head -n 2); do
            imv rmi "example.com/power-cut/${img%.tar}:1" >/dev/null 2>&1
        done
        imv gc >/dev/null 2>&1
    done
}

ctr() { /bin/ctr --address /run/ctrd/ctrd.sock --namespace power-cut "$@"; }

start_containerd() {
    mkdir -p /disk/containerd /run/ctrd /etc/containerd
    /bin/containerd --config /etc/containerd/config.toml >/run/ctrd/log 2>&1 &
    for _ in $(seq 100); do ctr version >/dev/null 2>&1 && return; sleep 0.1; done
    fail "containerd did not start: $(tail -n 5 /run/ctrd/log)"
}

check_containerd() {
    ctr images ls -q >/tmp/images 2>/tmp/err || fail "ctr images ls: $(cat /tmp/err)"
    while read -r name; do say IMAGE "$name"; done </tmp/images
    check_blobs /disk/containerd/io.containerd.content.v1.content/blobs/sha256
    # Each committed snapshot's own directory is the first lower directory of a view of it.
    ctr snapshots ls | awk '$3 == "Committed" {print $1}' >/tmp/layers
    while read -r key; do
        say LAYER "${key#sha256:}"
        ctr snapshots view --mounts "check-$key" "$key" >/tmp/view 2>/tmp/err || fail "view $key: $(cat /tmp/err)"
        dir=$(grep -o '/[^ :,]*/snapshots/[0-9]*/fs' /tmp/view | head -n 1)
        [ -n "$dir" ] && hash_tree "FILE ${key#sha256:}" "$dir"
        ctr snapshots rm "check-$key" >/dev/null 2>&1
    done </tmp/layers
}

work_containerd() {
    i=0
    while :; do
        for img in $images; do
            ctr images import "/images/$img" >/dev/null 2>/tmp/err || fail "ctr import: $(cat /tmp/err)"
            say STEP "$i" "$img"
            i=$((i + 1))
        done
        for img in $(echo "$images" | head -n 2); do
            ctr images rm "example.com/power-cut/${img%.tar}:1" >/dev/null 2>&1
        done
    done
}

say CHECK-BEGIN
case $store in
imv) check_imv ;;
containerd) start_containerd && check_containerd ;;
esac
say CHECK-END

if [ "$work" = 1 ]; then
    echo $(($(cat /disk/boots 2>/dev/null || echo 0) + 1)) >/disk/boots
    sync
    say WORK-BEGIN
    "work_$store"
fi
killall containerd 2>/dev/null && sleep 1
umount /disk
poweroff -f
