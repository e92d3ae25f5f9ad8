#!/usr/bin/env bash
# Runs tlstap's privileged BPF tests under Debian's own kernels of Debian 11, 12 and 13, booted
# with qemu, and on the host's kernel:
#
#   scripts/kernel-matrix.sh [KERNEL...]   KERNEL: 5.10, 6.1, 6.12 or host (default: all four).
#                                          Builds the test binaries (scripts/kernel-tests.sh
#                                          --build) and runs scripts/kernel-tests.sh on each;
#                                          ends with "N passed, N failed" over all of them.
#                                          KMX_JOBS kernels at once (default 2: a guest
#                                          takes one host core).
#   scripts/kernel-matrix.sh --run VERSION [OPTIONS] -- CMD [ARGS...]
#   scripts/kernel-matrix.sh --prepare VERSION...
#
#   VERSION      5.10 (bullseye), 6.1 (bookworm) or 6.12 (trixie); the newest
#                linux-image-VERSION.*-amd64-unsigned of that release is used.
#   --timeout T  kill the guest after T (timeout(1) syntax, default 30m): exit 124
#   --env N[=V]  pass variable N (the caller's value, or V) into the guest; PATH, CI,
#                CARGO_TARGET_DIR, RUST_* and TLSTAP_* are passed without asking
#   --writable D make directory D writable in the guest (an overlay whose changes are
#                thrown away at the end); repeatable
#   --prepare    only fetch the kernels and build their initramfs (into the cache); prints
#                the cache directory of each
#
# The guest sees the host's whole root filesystem, read-only over virtio-9p, so every
# tool, Go fixture and test binary built on the host runs there unchanged. Inside it:
# fresh (empty) tmpfs on /tmp, /run, /var/tmp and TARGET/tmp (what
# env!("CARGO_TARGET_TMPDIR") names; TARGET is $CARGO_TARGET_DIR or the repo's target/),
# fresh proc/sys/dev/bpffs/tracefs/debugfs/cgroup2, `lo` up, hostname tlstap-VERSION,
# tun veth sch_ingress cls_bpf act_bpf loaded; other modules load on demand. The command
# runs as root with bash, HOME=/root, KERNEL_MATRIX=VERSION, in the caller's directory
# (so not one under /tmp), stdin /dev/null; its output and the kernel's errors go to
# this script's stdout as they come, and this script exits with its code. Nothing in the
# repository is written but an empty TARGET/tmp (the guest cannot create a mount point
# on a read-only share).
#
# Environment: KMX_MEM (4G), KMX_SMP (2), KMX_ACCEL (tcg,thread=single: see below),
# KMX_APPEND (more kernel parameters), KMX_TIMEOUT (as --timeout), TLSTAP_CACHE.
#
# Kernels, their module trees and initramfs are cached under
# ${TLSTAP_CACHE:-~/.cache/tlstap}/kernels/PACKAGE_VERSION; Debian's package lists are
# fetched with a private apt configuration (the host's apt setup is not touched) and
# refreshed once a day. Needs scripts/deps.sh --kernels (qemu, busybox-static, cpio...).
# Other scripts can source this file and call run_in_guest VERSION CMD... directly.
set -euo pipefail

KMX_SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
KMX_REPO=$(cd "$(dirname "$KMX_SELF")/.." && pwd)
KMX_CACHE=${TLSTAP_CACHE:-$HOME/.cache/tlstap}/kernels
KMX_TIMEOUT=${KMX_TIMEOUT:-30m}
KMX_MEM=${KMX_MEM:-4G}
KMX_SMP=${KMX_SMP:-2}
# One host thread runs all the guest's CPUs in turn. With a thread per CPU (tcg,thread=multi)
# qemu 7.2 lets a CPU run stale code after another CPU patched kernel text (static keys,
# toggled e.g. when a clsact qdisc or a tracepoint comes and goes): "Oops: int3" panics in
# 6.12's boot, and 6.1 hung for good in a loop adding and removing clsact.
KMX_ACCEL=${KMX_ACCEL:-tcg,thread=single}
# KMX_APPEND: more kernel parameters, e.g. loglevel=7 to see the whole boot.
KMX_ENV=()        # NAME or NAME=VALUE, added to by --env
KMX_WRITABLE=()   # directories overlaid writable in the guest, added to by --writable
# Loaded from the initramfs, before the host's root is there: what mounting it over
# virtio-9p needs (their dependencies, e.g. virtio_ring, netfs, come from modules.dep),
# a virtio RNG so that getrandom() does not wait for entropy on 5.10, overlay for --writable.
KMX_BOOT_MODULES=(virtio_pci virtio_rng 9pnet_virtio 9p overlay)
# Loaded up front once the host root is mounted, so tests see them as on a usual host
# (tun: /dev/net/tun exists only once it is loaded). Anything else loads on demand.
KMX_TEST_MODULES=(tun veth sch_ingress cls_bpf act_bpf)

kmx_say() { echo "kernel-matrix: $*" >&2; }
kmx_die() { kmx_say "$*"; exit 1; }

# The Debian release whose kernel VERSION is.
kmx_suite() {
  case $1 in
    5.10) echo bullseye ;;
    6.1) echo bookworm ;;
    6.12) echo trixie ;;
    *) kmx_die "unknown kernel version '$1' (5.10, 6.1 or 6.12)" ;;
  esac
}

# apt-get/apt-cache against one Debian release only, with lists and downloads in the cache:
# the host's sources, preferences and package cache are left alone.
kmx_apt() {
  local tool=$1 suite=$2; shift 2
  local d=$KMX_CACHE/apt/$suite
  "$tool" -q -oDir::Etc::SourceList="$d/sources.list" -oDir::Etc::SourceParts=/dev/null \
    -oDir::Etc::Preferences=/dev/null -oDir::Etc::PreferencesParts=/dev/null \
    -oDir::State::Lists="$d/lists" -oDir::Cache="$d/cache" -oAPT::Architecture=amd64 \
    -oAPT::Sandbox::User=root "$@"
}

# Whether the release's package lists were fetched in the last day.
kmx_lists_fresh() { [[ -n $(find "$KMX_CACHE/apt/$1/updated" -mmin -1440 2>/dev/null) ]]; }

# Fetches the release's package lists unless fresh.
kmx_lists() {
  local suite=$1 d=$KMX_CACHE/apt/$1
  kmx_lists_fresh "$suite" && return 0
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  echo "deb http://deb.debian.org/debian $suite main" >"$d/sources.list"
  kmx_apt apt-get "$suite" update -qq >/dev/null && touch "$d/updated"
}

# Prints the directory of VERSION's newest kernel, prepared: kver (its uname -r), tree/ (the
# package: boot/vmlinuz-KVER, lib/modules/KVER with modules.dep) and initramfs.gz. Without
# the network, the kernel prepared last is used.
kmx_prepare() {
  local version=$1 suite pkg pkgver dir lock
  suite=$(kmx_suite "$version")
  mkdir -p "$KMX_CACHE"
  # Two runs preparing at once (parallel CI jobs) must not build into the same directory.
  exec {lock}>"$KMX_CACHE/.lock-$suite"
  flock "$lock"
  dir=$(cat "$KMX_CACHE/current-$version" 2>/dev/null || true)
  # Picked since the lists were last fetched: the same kernel, without asking apt again.
  if ! { kmx_lists_fresh "$suite" && [[ -n $dir && -f $dir/kver && $dir -nt $KMX_CACHE/apt/$suite/updated ]]; }; then
    if kmx_lists "$suite"; then
      # Image packages are named for 5.10.0-32, 6.1.0-50, 6.12.117+deb13 (no ABI number).
      local re="^linux-image-${version//./\\.}\.[0-9]+(-[0-9]+|\+deb[0-9]+)-amd64-unsigned\$"
      pkg=$(kmx_apt apt-cache "$suite" pkgnames linux-image- | grep -E "$re" | sort -V | tail -n1)
      [[ -n $pkg ]] || kmx_die "no package matching $re in $suite"
      pkgver=$(kmx_apt apt-cache "$suite" show --no-all-versions "$pkg" | sed -n 's/^Version: //p')
      dir=$KMX_CACHE/${pkg}_$pkgver
      if [[ ! -f $dir/kver ]]; then
        kmx_say "fetching $pkg $pkgver from $suite"
        rm -rf "$dir" "$dir.tmp"
        mkdir -p "$dir.tmp/deb"
        (cd "$dir.tmp/deb" && kmx_apt apt-get "$suite" download -qq "$pkg" >/dev/null)
        kmx_unpack "$dir.tmp"
        mv "$dir.tmp" "$dir"
      fi
      echo "$dir" >"$KMX_CACHE/current-$version"
      touch "$dir"
    else
      [[ -n $dir && -f $dir/kver ]] || kmx_die "cannot fetch $suite's package lists"
      kmx_say "cannot fetch $suite's package lists; using the cached $(basename "$dir")"
    fi
  fi
  # The initramfs is rebuilt when this script's part of it changed.
  [[ $(cat "$dir/initramfs.key" 2>/dev/null) == "$(kmx_initramfs_key)" ]] || kmx_initramfs "$dir"
  exec {lock}>&-
  echo "$dir"
}

# In a directory with the downloaded package in deb/: tree/ with modules.dep, and kver.
kmx_unpack() {
  local dir=$1 kver tree=$1/tree
  dpkg -x "$dir"/deb/*.deb "$tree"
  rm -rf "$dir/deb"
  # trixie's package is merged-/usr; modprobe -d and depmod -b want DIR/lib/modules.
  [[ -e $tree/lib ]] || ln -s usr/lib "$tree/lib"
  kver=$(basename "$(echo "$tree"/lib/modules/*)")
  [[ -f $tree/boot/vmlinuz-$kver ]] || kmx_die "no vmlinuz-$kver in the package"
  local opt
  for opt in BPF_SYSCALL BPF_EVENTS UPROBES UPROBE_EVENTS DEBUG_INFO_BTF; do
    grep -qx "CONFIG_$opt=y" "$tree/boot/config-$kver" || kmx_die "$kver: CONFIG_$opt is not y"
  done
  depmod -b "$tree" "$kver"
  echo "$kver" >"$dir/kver"
}

# What the initramfs is made of, besides the kernel's modules and busybox.
kmx_initramfs_key() {
  { declare -f kmx_initramfs kmx_init; echo "${KMX_BOOT_MODULES[*]}"; } | sha256sum | cut -c1-16
}

# initramfs.gz for a directory made by kmx_unpack: busybox, the boot modules, /init.
kmx_initramfs() {
  local dir=$1 kver tree=$1/tree
  kver=$(cat "$dir/kver")
  local moddir=$tree/lib/modules/$kver init=$dir/initramfs
  rm -rf "$init"
  mkdir -p "$init"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,lib/modules}
  cp /bin/busybox "$init/bin/busybox"
  ln -s busybox "$init/bin/sh"
  mknod -m 600 "$init/dev/console" c 5 1
  # Boot modules with their dependencies, each after what it needs: modules.dep lists a
  # module's whole closure, innermost last, so loading it backwards then the module works.
  local m path deps seen=" " order=()
  for m in "${KMX_BOOT_MODULES[@]}"; do
    if grep -qE "/${m//_/[-_]}\.ko" "$moddir/modules.builtin"; then continue; fi
    path=$(sed -nE "s#^([^:]*/${m//_/[-_]}\.ko(\.[a-z]+)?):.*#\1#p" "$moddir/modules.dep")
    [[ -n $path ]] || kmx_die "$kver: module $m neither built in nor in modules.dep"
    read -ra deps <<<"$(sed -n "s#^$path: *##p" "$moddir/modules.dep")"
    local i
    for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
      [[ $seen == *" ${deps[i]} "* ]] || { order+=("${deps[i]}"); seen+="${deps[i]} "; }
    done
    [[ $seen == *" $path "* ]] || { order+=("$path"); seen+="$path "; }
  done
  # Decompressed here: busybox's insmod would not unpack .ko.xz (6.12) or .ko.zst.
  local name
  for path in "${order[@]}"; do
    name=$(basename "$path"); name=${name%.ko*}.ko
    case $path in
      *.xz) xz -dc "$moddir/$path" ;;
      *.zst) zstd -qdc "$moddir/$path" ;;
      *.gz) gzip -dc "$moddir/$path" ;;
      *) cat "$moddir/$path" ;;
    esac >"$init/lib/modules/$name"
    echo "$name" >>"$init/lib/modules/load.order"
  done
  kmx_init >"$init/init"
  chmod +x "$init/init"
  (cd "$init" && find . | cpio -o -H newc --quiet | gzip -1) >"$dir/initramfs.gz"
  kmx_say "$kver: initramfs with $(tr '\n' ' ' <"$init/lib/modules/load.order")"
  rm -rf "$init"
  kmx_initramfs_key >"$dir/initramfs.key"
}

# The guest's /init (busybox sh). Per-run settings come from the writable share: guest.env
# (KMX_TREE, KMX_HOSTNAME, KMX_TEST_MODULES), tmpfs.list and writable.list (one path a line),
# cmd.sh (the command); it leaves rc there. No rc file means the guest failed.
kmx_init() {
  cat <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s
say() { echo "kernel-matrix: $*"; }
off() { sync; poweroff -f; echo o >/proc/sysrq-trigger; sleep 10; }
fail() { say "$*"; off; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/lib/modules/$m" || fail "insmod $m failed"; done </lib/modules/load.order
mkdir -p /share /newroot /ovl
p9=trans=virtio,version=9p2000.L,msize=512000
# The share for results: no caching, so that rc reaches the host before the power goes.
mount -t 9p -o "$p9,cache=none" share /share || fail "cannot mount the results share"
# From here on, output (the command's too) goes to a file the host shows as it grows: the
# serial console manages some 250 KB/s under TCG, and keeps a guest CPU busy meanwhile.
exec >>/share/out 2>&1
# The host's root: cached (it does not change under the guest), so that binaries load fast;
# the page cache also gives mmap and uprobes what they need.
mount -t 9p -o "$p9,cache=loose,ro" hostroot /newroot || fail "cannot mount the host's root"
. /share/guest.env
R=/newroot
# --writable: an overlay per directory (/ too), its upper layer in a tmpfs of the initramfs;
# first, so that the mounts below go on top of them.
mount -t tmpfs tmpfs /ovl
n=0
while IFS= read -r d; do
  n=$((n + 1)); mkdir -p /ovl/$n/u /ovl/$n/w
  mount -t overlay overlay -o "lowerdir=$R$d,upperdir=/ovl/$n/u,workdir=/ovl/$n/w" "$R$d" ||
    fail "cannot make $d writable"
done </share/writable.list
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t bpf bpf $R/sys/fs/bpf
mount -t tracefs tracefs $R/sys/kernel/tracing
mount -t debugfs debugfs $R/sys/kernel/debug
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
mount -t tmpfs -o mode=755 tmpfs $R/run
mkdir -p $R/run/kernel-matrix $R/run/lock
mount --bind /share $R/run/kernel-matrix
while IFS= read -r d; do
  mkdir -p "$R$d" 2>/dev/null  # only where an earlier tmpfs hides it (a target under /tmp)
  mount -t tmpfs -o mode=1777 tmpfs "$R$d" || fail "cannot mount a tmpfs on $d"
done </share/tmpfs.list
hostname "$KMX_HOSTNAME"
ip link set lo up
# Kernel module requests (ip link add type veth, tc ... clsact) run the helper named in
# /proc/sys/kernel/modprobe in this initramfs' root, not in the chroot: send them to the
# host's modprobe, reading the guest kernel's modules from the cached package tree.
printf '#!/bin/sh\nexec chroot /newroot /sbin/modprobe -d "%s" "$@"\n' "$KMX_TREE" >/sbin/kmx-modprobe
chmod +x /sbin/kmx-modprobe
echo /sbin/kmx-modprobe >/proc/sys/kernel/modprobe
/sbin/kmx-modprobe -a $KMX_TEST_MODULES || fail "cannot load $KMX_TEST_MODULES"
read -r up _ </proc/uptime
say "$(uname -r) up after ${up}s; running the command"
chroot $R /usr/bin/env -i /bin/bash --noprofile --norc /run/kernel-matrix/cmd.sh </dev/null
rc=$?
read -r end _ </proc/uptime
echo $rc >/share/rc
say "exit code $rc after $(awk "BEGIN { print $end - $up }")s; powering off"
off
EOF
}

# Single-quotes a string for sh.
kmx_q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# run_in_guest VERSION CMD [ARGS...]: runs CMD in VERSION's kernel; returns its exit code
# (124 after KMX_TIMEOUT, 125 if the guest died before reporting one).
run_in_guest() {
  # Errors return 125 rather than exit: callers may have sourced this file.
  local version=$1; shift
  (($#)) || { kmx_say "run_in_guest: no command"; return 125; }
  command -v qemu-system-x86_64 >/dev/null || { kmx_say "no qemu: run scripts/deps.sh --kernels"; return 125; }
  local d
  for d in ${KMX_WRITABLE[@]+"${KMX_WRITABLE[@]}"}; do
    [[ -d $d ]] || { kmx_say "--writable $d: not a directory"; return 125; }
  done
  local dir run target
  # A process of its own: callers' `run_in_guest ... || ...` would turn off set -e here.
  dir=$("$KMX_SELF" --prepare "$version") || return 125
  # The mount point for the tests' temporary files must exist before the guest starts.
  target=${CARGO_TARGET_DIR:-$KMX_REPO/target}
  mkdir -p "$target/tmp" || return 125
  run=$(mktemp -d "${TMPDIR:-/tmp}/kernel-matrix.XXXXXX") || return 125

  {
    echo "KMX_TREE=$(kmx_q "$dir/tree")"
    echo "KMX_HOSTNAME=tlstap-${version//./-}"
    echo "KMX_TEST_MODULES='${KMX_TEST_MODULES[*]}'"
  } >"$run/guest.env"
  : >"$run/tmpfs.list"
  : >"$run/writable.list"
  # A fresh /tmp would hide a repository (a CI clone) under it: there, /tmp is the host's,
  # made writable by an overlay, instead.
  local repo scratch; repo=$(cd "$KMX_REPO" && pwd -P)
  for scratch in /tmp /var/tmp; do
    if [[ $repo == "$scratch"/* ]]; then echo "$scratch" >>"$run/writable.list"; else echo "$scratch" >>"$run/tmpfs.list"; fi
  done
  (cd "$target/tmp" && pwd -P) >>"$run/tmpfs.list"
  for d in ${KMX_WRITABLE[@]+"${KMX_WRITABLE[@]}"}; do (cd "$d" && pwd -P) >>"$run/writable.list"; done
  # The command, with the environment it gets: a clean one, plus what tests look at.
  {
    echo 'export HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 TERM=dumb SHELL=/bin/bash'
    local path=$PATH
    [[ :$path: == *":/root/.cargo/bin:"* ]] || path=/root/.cargo/bin:$path
    echo "export PATH=$(kmx_q "$path")"
    echo "export KERNEL_MATRIX=$(kmx_q "$version")"
    local name
    while IFS= read -r name; do
      echo "export $name=$(kmx_q "${!name}")"
    done < <(compgen -e | grep -E '^(CI|CARGO_TARGET_DIR|RUST_[A-Z_]+|TLSTAP_[A-Z0-9_]+)$' || true)
    local e
    for e in ${KMX_ENV[@]+"${KMX_ENV[@]}"}; do
      if [[ $e == *=* ]]; then echo "export ${e%%=*}=$(kmx_q "${e#*=}")"
      else echo "export $e=$(kmx_q "${!e-}")"; fi
    done
    echo "cd $(kmx_q "$PWD") || exit 125"
    printf '%q ' "$@"; echo
  } >"$run/cmd.sh"

  local start=$SECONDS status=0
  # shellcheck disable=SC2054 # qemu's options are comma-separated lists, not array mistakes
  local qemu=(qemu-system-x86_64 -nodefaults -no-user-config -machine q35 -accel "$KMX_ACCEL" -cpu max
    -m "$KMX_MEM" -smp "$KMX_SMP" -display none -no-reboot
    -kernel "$dir/tree/boot/vmlinuz-$(cat "$dir/kver")" -initrd "$dir/initramfs.gz"
    # quiet: the kernel's errors and warnings still show. mitigations=off: page-table
    # isolation and friends cost much under TCG and are not what is tested.
    -append "console=ttyS0 quiet panic=-1 mitigations=off random.trust_cpu=on ${KMX_APPEND:-}"
    -chardev "file,id=serial,path=$run/console" -serial chardev:serial
    -device virtio-rng-pci
    # multidevs=remap: / spans several host filesystems; keep their inode numbers apart.
    -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
    -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
    -fsdev "local,id=share,path=$run,security_model=none"
    -device virtio-9p-pci,fsdev=share,mount_tag=share)
  # Shown as they grow: the kernel's console (its errors, a panic) and the guest's output
  # (/init's and the command's). The serial console ends lines with CRLF.
  : >"$run/console"; : >"$run/out"
  # --foreground: qemu stays in the caller's process group, so that stopping the group
  # (a cancelled CI job) stops it too.
  timeout --foreground --kill-after=10 "$KMX_TIMEOUT" "${qemu[@]}" </dev/null >"$run/qemu.log" 2>&1 &
  local qpid=$!
  # Background jobs ignore SIGINT: an interrupted run must not leave qemu behind.
  trap 'kill "$qpid" 2>/dev/null' INT TERM
  tail -q -n +1 -s 0.2 -f --pid="$qpid" "$run/console" "$run/out" | tr -d '\r'
  wait "$qpid" || status=$?
  trap - INT TERM
  [[ -s $run/qemu.log ]] && sed 's/^/qemu: /' "$run/qemu.log" >&2
  if ((status == 124 || status == 137)); then
    kmx_say "$version: still running after $KMX_TIMEOUT; killed"; status=124
  elif [[ -f $run/rc ]]; then
    status=$(cat "$run/rc")
  else
    kmx_say "$version: the guest stopped without an exit code (qemu: $status)"; status=125
  fi
  kmx_say "$version: exit code $status, $((SECONDS - start))s in qemu"
  rm -rf "$run"
  return "$status"
}

kmx_main() {
  local mode=${1:-}
  case $mode in
    --prepare)
      shift; (($#)) || kmx_die "--prepare: which versions?"
      local v; for v in "$@"; do kmx_prepare "$v"; done ;;
    --run)
      shift; local version=${1:-}; shift || true
      [[ -n $version ]] || kmx_die "--run: which version?"
      while (($#)); do
        case $1 in
          --timeout) KMX_TIMEOUT=$2; shift 2 ;;
          --env) KMX_ENV+=("$2"); shift 2 ;;
          --writable) KMX_WRITABLE+=("$2"); shift 2 ;;
          --) shift; break ;;
          *) kmx_die "--run: unknown option $1 (put the command after --)" ;;
        esac
      done
      local status=0
      run_in_guest "$version" "$@" || status=$?
      exit "$status" ;;
    -h|--help|-*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    *) kmx_matrix "$@" ;;
  esac
}

# The test set on one kernel, its output into $2 and its exit code into $2.rc.
kmx_one_kernel() {
  local k=$1 log=$2 status=0
  if [[ $k == host ]]; then
    (cd "$KMX_REPO" && bash scripts/kernel-tests.sh) >"$log" 2>&1 || status=$?
  else
    (cd "$KMX_REPO" && run_in_guest "$k" bash scripts/kernel-tests.sh) >"$log" 2>&1 || status=$?
  fi
  echo "$status" >"$log.rc"
}

# The test set on each kernel named (all four by default), KMX_JOBS (default 2) at a time:
# a guest runs on one host thread, so two use this machine's two cores. Each kernel's output
# is printed whole when it is done. Fails if any kernel failed.
kmx_matrix() {
  local kernels=("$@") k failed=() summary=()
  ((${#kernels[@]})) || kernels=(5.10 6.1 6.12 host)
  for k in "${kernels[@]}"; do
    case $k in 5.10|6.1|6.12|host) ;; *) kmx_die "unknown kernel $k (5.10, 6.1, 6.12 or host)" ;; esac
  done
  (cd "$KMX_REPO" && bash scripts/kernel-tests.sh --build) || kmx_die "building the test binaries failed"
  # The tests ask scripts/fixture.sh for their Go fixtures, which takes a lock in the cache
  # even when the build is there: writable for them (the changes go with the guest).
  KMX_WRITABLE+=("${TLSTAP_CACHE:-$HOME/.cache/tlstap}")
  # Kernels' files are prepared one at a time (apt and the initramfs build share the cache).
  for k in "${kernels[@]}"; do [[ $k == host ]] || kmx_prepare "$k" >/dev/null; done
  local logs; logs=$(mktemp -d)
  local running=0
  for k in "${kernels[@]}"; do
    if ((running >= ${KMX_JOBS:-2})); then wait -n || true; running=$((running - 1)); fi
    kmx_say "$k: started"
    kmx_one_kernel "$k" "$logs/$k" &
    running=$((running + 1))
  done
  wait || true
  local passed=0 fails=0 line status
  for k in "${kernels[@]}"; do
    echo "==== kernel $k"
    cat "$logs/$k" 2>/dev/null
    status=$(cat "$logs/$k.rc" 2>/dev/null || echo 125)
    line="$k: $(grep -o '[0-9]* passed, [0-9]* failed' "$logs/$k" | tail -n1 || true) (exit $status)"
    summary+=("$line")
    ((status == 0)) || failed+=("$k")
    if [[ $line =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
      passed=$((passed + BASH_REMATCH[1])); fails=$((fails + BASH_REMATCH[2]))
    fi
  done
  rm -rf "$logs"
  for line in "${summary[@]}"; do kmx_say "$line"; done
  # A kernel that failed without a count (it did not boot) counts as one failure.
  ((${#failed[@]} == 0 || fails > 0)) || fails=${#failed[@]}
  echo "kernel-matrix: $passed passed, $fails failed"
  ((${#failed[@]} == 0))
}

# Sourced (to call run_in_guest), it only defines the functions.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then kmx_main "$@"; fi
