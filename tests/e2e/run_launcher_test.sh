#!/usr/bin/env bash
# Each launcher's command line, as a test (issue 8): our daemon is started
# with exactly the argument list a real launcher builds (../shared/consumers.md,
# from the launchers' sources), the socket passed as that launcher passes it,
# the environment it sets, probed and awaited as it probes and waits, then a
# QEMU (TCG) guest mounts every variant's share and writes to it, the host
# checks the bytes, and the daemon is stopped as the launcher stops it.
#
#   run_launcher_test.sh --launcher=NAME [--variants=A,B] [--daemon=ours|rust]
#                        [--binary PATH]
#                        [--build-dir DIR] [--timeout S] [--sabotage] [--keep]
#                        [--verbose]
#   run_launcher_test.sh --list       # launchers, variants and argument lists
#
# --daemon=rust runs the Rust virtiofsd 1.13 (scripts/fetch-rust-virtiofsd.sh)
# instead, to check the harness against the reference (its descriptor is
# not installed here: the probe still reads ours, the Rust binary runs).
#
# One guest per launcher: each variant (the default configuration and the
# most common variant or two) is its own daemon and its own vhost-user-fs
# device, all in the same guest (tag = variant name).
#
# Stops: "disconnect" (the launcher relies on the daemon exiting by itself,
# status 0, when QEMU quits: Proxmox, Incus, LXD, podman, microvm.nix,
# KubeVirt, cloud-hypervisor's docs); "sigterm"/"sigkill" (libvirt, mkosi,
# virtme-ng / Kata, lima, cloud-hypervisor's tests): the guest unmounts and
# waits, the host sends the signal to the pid the launcher holds, and the
# daemon and every process it started must be gone (the namespace sandbox's
# serving child too), then the host ends QEMU.
#
# --sabotage: the host expects other bytes from the first writable variant's
# guest file and the guest expects another hello.txt from the second
# variant. The run must FAIL; it prints "LAUNCHER SABOTAGE DETECTED" when
# exactly those two checks failed.
#
# Exit status: 0 pass, 1 a check failed, 2 usage/setup error, 77 skipped
# (something the host lacks; with CI set, a skip is a failure, exit 1).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
FDTOOL=$HERE/launcher_fd.py

# ---- the launchers ------------------------------------------------------------
# variant LAUNCHER NAME key=value...  (NAME is also the guest's mount tag)
#   args=   the argument list, words split on blanks, with placeholders
#           @SHARE@ @SOCK@ (absolute) @SOCKNAME@ (relative, with cwd=rundir)
#           @TAG@ @NPROC@ @GROUP@ (the socket group) @POSIXACL@ (Incus:
#           from its --print-capabilities probe)
#   sock=   fd:N (an inherited listening socket as descriptor N) | path
#   via=    exec (default) | proxmox (fork; the parent keeps the listening
#           socket and shuts it down once QEMU is up) | shell-bg (virtme-ng:
#           os.system("... &"), the pid only from the daemon's P.pid) |
#           userns-root (mkosi --become-root: a user namespace mapping the
#           user to root, setgroups denied) | userns-map (LXD's SetUserns: a
#           namespace whose 0.. is the host's 1000000.., maps written by the
#           privileged parent)
#   user=   root (default) | UID (setpriv; share and rundir owned by UID)
#   caps=   all (default) | none (KubeVirt's sidecar drops every capability)
#   env=    VAR=VALUE added to the environment
#   cwd=    none (default) | share | rundir
#   ready=  none | launcher-pidfile | socket | socket-lima | stderr-waiting |
#           daemon-pidfile | startsecs
#   qemu=   path (default) | dial (Incus dials the socket and hands QEMU the
#           connected fd)
#   stop=   disconnect | sigterm | sigkill
#   ro=1    a --readonly share: the guest's write must be refused
#   owner=  the owner (uid:gid) the guest must see on the host's hello.txt
#   hostowner=  uid:gid the share is chowned to on the host
#   check=  extra host checks: socket-group | rust-log-quiet | pidfile-pid
#   needs=  options this argument list uses that are not merged yet
#           (reported when --help lacks them; never dropped)
# probe LAUNCHER WHAT...: descriptor (libvirt/lima's vhost-user JSON search in
#   a staged `cmake --install`; the binary it names is the one started),
#   caps-separate-options, caps-incus, version, help-readonly
declare -A V PROBES LAUNCHER_DOC
declare -a VORDER=()
variant() {
  local l=$1 n=$2 kv
  shift 2
  VORDER+=("$l/$n")
  V[$l/$n.user]=root V[$l/$n.caps]=all V[$l/$n.via]=exec V[$l/$n.cwd]=none
  V[$l/$n.qemu]=path V[$l/$n.ro]=0 V[$l/$n.env]="" V[$l/$n.owner]="" V[$l/$n.check]=""
  V[$l/$n.needs]="" V[$l/$n.hostowner]="" V[$l/$n.ready]=none
  for kv in "$@"; do V[$l/$n.${kv%%=*}]=${kv#*=}; done
}
probe() { local l=$1; shift; PROBES[$l]="$*"; }

# libvirt (qemu_virtiofs.c, separate-options form): pre-bound socket, --fd
# first; <binary xattr='on'><cache mode='none'/><sandbox mode='chroot'/>,
# <openfiles max=.../> and qemu.conf virtiofsd_debug=1 (as KubeVirt sets it).
LAUNCHER_DOC[libvirt]="virCommandPassFD + --fd=N; descriptor scan + --print-capabilities; pid file + kill(pid,0); SIGTERM"
probe libvirt descriptor caps-separate-options
variant libvirt default sock=fd:29 ready=launcher-pidfile stop=sigterm \
  args="--fd=29 --shared-dir @SHARE@"
variant libvirt xmlopts sock=fd:31 ready=launcher-pidfile stop=sigterm \
  args="--fd=31 --shared-dir @SHARE@ --cache never --sandbox chroot --xattr --rlimit-nofile=16384 --log-level debug"

# Kata Go runtime (virtiofsd.go): fd 3 = ExtraFiles[0]; default extra args
# --thread-pool-size=1 --announce-submounts; --xattr when the guest runs
# SELinux; SIGKILL at StopVM.
LAUNCHER_DOC[kata-go]="ExtraFiles[0] = --fd=3; no probe; SIGKILL"
variant kata-go default sock=fd:3 stop=sigkill needs=--thread-pool-size \
  args="--syslog --cache=auto --shared-dir=@SHARE@ --fd=3 --thread-pool-size=1 --announce-submounts"
variant kata-go selinux sock=fd:3 stop=sigkill needs=--thread-pool-size \
  args="--syslog --cache=never --shared-dir=@SHARE@ --fd=3 --thread-pool-size=1 --announce-submounts --xattr"

# Kata runtime-rs (share_virtio_fs_standalone.rs): waits for the stderr line;
# default extra args include the legacy "-o announce_submounts"; rootless:
# a relative socket name with the socket's folder as cwd, as a user.
LAUNCHER_DOC[kata-rs]="--socket-path (relative + cwd when rootless); readiness = stderr 'Waiting for vhost-user socket connection'; SIGKILL"
variant kata-rs default sock=path ready=stderr-waiting stop=sigkill needs=--thread-pool-size \
  args="--socket-path @SOCK@ --shared-dir @SHARE@ --cache auto --thread-pool-size=1 -o announce_submounts"
variant kata-rs rootless sock=path cwd=rundir user=65534 ready=stderr-waiting stop=sigkill \
  needs=--thread-pool-size \
  args="--socket-path @SOCKNAME@ --shared-dir @SHARE@ --cache auto --thread-pool-size=1 -o announce_submounts --xattr"

# Incus (device_utils_disk.go): listener as fd 3, incusd dials it and hands
# the connection to QEMU; --posix-acl(=auto) from --print-capabilities;
# with an idmap, --translate-uid/gid map + forbid-guest ranges (a count of 0
# included) instead.
LAUNCHER_DOC[incus]="StartWithFiles = --fd=3, incusd dials and QMP-getfd's the connection to QEMU; caps probe for posix-acl-negotiation-mode; relies on exit-on-disconnect"
probe incus caps-incus
variant incus default sock=fd:3 qemu=dial stop=disconnect \
  args="--fd=3 --cache=never --shared-dir=@SHARE@ @POSIXACL@"
variant incus idmap sock=fd:3 qemu=dial stop=disconnect hostowner=1000000:1000000 owner=0:0 \
  needs=--translate-uid,--translate-gid \
  args="--fd=3 --cache=never --shared-dir=@SHARE@ --translate-uid=map:0:1000000:1000000000 --translate-uid=forbid-guest:0:0 --translate-gid=map:0:1000000:1000000000 --translate-gid=forbid-guest:0:0 --translate-uid=forbid-guest:1000000000:3294967295 --translate-gid=forbid-guest:1000000000:3294967295"

# LXD (device_utils_disk.go): fd 3, QEMU connects by path; io.threads
# (default 0, two argv words); relies on exit-on-disconnect.
LAUNCHER_DOC[lxd]="--fd=3, QEMU connects by path; relies on exit-on-disconnect"
variant lxd default sock=fd:3 stop=disconnect needs=--thread-pool-size \
  args="--fd=3 --shared-dir @SHARE@ --cache auto --allow-direct-io --thread-pool-size 0 --xattr"
variant lxd iothreads sock=fd:3 stop=disconnect needs=--thread-pool-size \
  args="--fd=3 --shared-dir @SHARE@ --cache auto --allow-direct-io --thread-pool-size 4 --xattr"
# An idmapped instance: the same arguments, virtiofsd started as root of a
# user namespace mapping 0.. to the host's 1000000.. (proc.SetUserns).
variant lxd idmapped sock=fd:3 via=userns-map stop=disconnect needs=--thread-pool-size \
  hostowner=1000000:1000000 owner=0:0 \
  args="--fd=3 --shared-dir @SHARE@ --cache auto --allow-direct-io --thread-pool-size 0 --xattr"

# Proxmox VE (Virtiofs.pm): a Perl fileno, a forked launcher that keeps the
# listening socket and shutdown()s it after QEMU started; never killed.
LAUNCHER_DOC[proxmox]="--fd=<Perl fileno>; the parent shutdown(2)s the shared listening socket after QEMU started; relies on exit-on-disconnect"
variant proxmox default sock=fd:11 via=proxmox stop=disconnect \
  args="--fd=11 --shared-dir=@SHARE@ --announce-submounts --syslog"
variant proxmox xattracl sock=fd:12 via=proxmox stop=disconnect \
  args="--fd=12 --shared-dir=@SHARE@ --xattr --posix-acl --announce-submounts --allow-direct-io --cache=always --syslog"
variant proxmox windows sock=fd:13 via=proxmox stop=disconnect \
  args="--fd=13 --shared-dir=@SHARE@ --announce-submounts --cache=auto --inode-file-handles=prefer --syslog"

# podman machine (pkg/machine/qemu/virtiofsd.go): cwd = the source folder,
# RUST_LOG=ERROR, polls for the socket, never stops it (Process.Release).
LAUNCHER_DOC[podman]="--socket-path, cwd = source, RUST_LOG=ERROR; polls for the socket; relies on exit-on-disconnect"
variant podman rootless sock=path cwd=share user=65534 env=RUST_LOG=ERROR ready=socket \
  stop=disconnect check=rust-log-quiet \
  args="--sandbox none --socket-path @SOCK@ --shared-dir . --seccomp=none"
variant podman rootful sock=path cwd=share env=RUST_LOG=ERROR ready=socket stop=disconnect \
  check=rust-log-quiet \
  args="--sandbox none --socket-path @SOCK@ --shared-dir . --seccomp=none"

# lima (pkg/driver/qemu): descriptor + --version; unprivileged with the
# default namespace sandbox; one daemon per mount; SIGKILL.
LAUNCHER_DOC[lima]="descriptor + --version exit 0; --socket-path; polls for the socket (5 x 200 ms); SIGKILL"
probe lima descriptor version
variant lima mount0 sock=path user=65534 ready=socket-lima stop=sigkill \
  args="--socket-path @SOCK@ --shared-dir @SHARE@"
variant lima mount1 sock=path user=65534 ready=socket-lima stop=sigkill \
  args="--socket-path @SOCK@ --shared-dir @SHARE@"

# virtme-ng (virtme/commands/run.py): --version, --help must mention
# --readonly, started with os.system("... &"), readiness = <socket>.pid,
# SIGTERM to the pid read from it.
LAUNCHER_DOC[virtme-ng]="--version, --help contains --readonly; sh '&'; waits for <socket>.pid; SIGTERM to that pid"
probe virtme-ng version help-readonly
variant virtme-ng rw sock=path via=shell-bg user=65534 ready=daemon-pidfile stop=sigterm \
  check=pidfile-pid \
  args="--syslog --no-announce-submounts --socket-path @SOCK@ --shared-dir @SHARE@ --sandbox none --cache auto"
variant virtme-ng ro sock=path via=shell-bg user=65534 ready=daemon-pidfile stop=sigterm ro=1 \
  check=pidfile-pid \
  args="--syslog --no-announce-submounts --readonly --socket-path @SOCK@ --shared-dir @SHARE@ --sandbox none --cache always"

# microvm.nix (nixos-modules/microvm/virtiofsd): relative socket, cwd =
# /var/lib/microvms/<vm>, --socket-group, as root --rlimit-nofile 1048576
# (the unit's LimitNOFILE=1048576 makes that possible), --thread-pool-size
# `nproc`; the crosvm runner adds --tag (crosvm has no tag of its own).
LAUNCHER_DOC[microvm]="relative --socket-path=, cwd = VM dir, --socket-group; supervisord RUNNING after 1 s; relies on exit-on-disconnect"
variant microvm qemu sock=path cwd=rundir ready=startsecs stop=disconnect check=socket-group \
  needs=--thread-pool-size \
  args="--socket-path=@SOCKNAME@ --socket-group=@GROUP@ --shared-dir=@SHARE@ --rlimit-nofile 1048576 --thread-pool-size @NPROC@ --posix-acl --xattr --cache=auto --inode-file-handles=prefer"
variant microvm crosvm sock=path cwd=rundir ready=startsecs stop=disconnect check=socket-group \
  needs=--thread-pool-size \
  args="--socket-path=@SOCKNAME@ --socket-group=@GROUP@ --shared-dir=@SHARE@ --rlimit-nofile 1048576 --thread-pool-size @NPROC@ --posix-acl --xattr --cache=auto --inode-file-handles=prefer --tag=@TAG@"

# cloud-hypervisor: docs/fs.md, and its integration tests (--tag, SIGKILL).
LAUNCHER_DOC[cloud-hypervisor]="--socket-path; polls for the socket; docs: exit on disconnect; tests: SIGKILL"
variant cloud-hypervisor docs sock=path ready=socket stop=disconnect needs=--thread-pool-size \
  args="--log-level debug --socket-path=@SOCK@ --shared-dir=@SHARE@ --cache=never --thread-pool-size=@NPROC@"
variant cloud-hypervisor myfs sock=path ready=socket stop=sigkill \
  args="--shared-dir @SHARE@ --socket-path @SOCK@ --cache never --tag @TAG@"

# KubeVirt (virtiofs.go): a sidecar as uid 107 without capabilities; the
# container ends when the daemon does ("Completed").
LAUNCHER_DOC[kubevirt]="--socket-path=, uid 107, no capabilities; relies on exit-on-disconnect"
variant kubevirt default sock=path user=107 caps=none stop=disconnect ready=socket owner=107:107 \
  args="--socket-path=@SOCK@ --shared-dir=@SHARE@ --sandbox=none --cache=auto --migration-on-error=guest-error --migration-mode=find-paths"
variant kubevirt translate sock=path user=107 caps=none stop=disconnect ready=socket owner=0:107 \
  needs=--translate-uid \
  args="--socket-path=@SOCK@ --shared-dir=@SHARE@ --sandbox=none --cache=auto --migration-on-error=guest-error --migration-mode=find-paths --translate-uid=host:107:0:1"

# mkosi (mkosi/qemu.py): "--fd N" as two words (a Python fileno, pass_fds),
# chroot sandbox; as root --inode-file-handles=prefer, as the folder's owner
# (--become-root: a user namespace) =never; proc.terminate() at the end.
LAUNCHER_DOC[mkosi]="--fd N (two words); SIGTERM"
variant mkosi root sock=fd:6 stop=sigterm \
  args="--shared-dir @SHARE@ --xattr --no-announce-submounts --sandbox=chroot --inode-file-handles=prefer --log-level=error --modcaps=-mknod --fd 6"
variant mkosi becomeroot sock=fd:7 via=userns-root user=65534 stop=sigterm \
  args="--shared-dir @SHARE@ --xattr --no-announce-submounts --sandbox=chroot --inode-file-handles=never --log-level=error --modcaps=-mknod --fd 7"

LAUNCHERS="libvirt kata-go kata-rs incus lxd proxmox podman lima virtme-ng microvm cloud-hypervisor kubevirt mkosi"

# ---- arguments -------------------------------------------------------------------
launcher="" only="" daemon=ours binary="$VFSD_ROOT/build/virtiofsd" build_dir="" sabotage=0 limit=240 keep=0 list=0
vfsd_e2e_args 2,36 "launcher variants:only daemon build-dir" list "$@"
variants_of() { local v; for v in "${VORDER[@]}"; do [[ ${v%%/*} == "$1" ]] && echo "${v#*/}"; done; }
if ((list)); then
  for l in $LAUNCHERS; do
    echo "$l: ${LAUNCHER_DOC[$l]}${PROBES[$l]:+ [probes: ${PROBES[$l]}]}"
    for n in $(variants_of "$l"); do
      echo "  $n: virtiofsd ${V[$l/$n.args]}  (sock=${V[$l/$n.sock]} stop=${V[$l/$n.stop]}${V[$l/$n.needs]:+ needs=${V[$l/$n.needs]}})"
    done
  done
  exit 0
fi
[[ " $LAUNCHERS " == *" $launcher "* ]] || { echo "usage: $0 --launcher=NAME (one of: $LAUNCHERS) | --list" >&2; exit 2; }
vfsd_need_binary "$binary"
vfsd_need_guest
command -v jq >/dev/null || { echo "jq missing (scripts/install-deps.sh)" >&2; exit 2; }
python3 -c 'import socket' 2>/dev/null || vfsd_skip "python3 with the socket module is needed to pass descriptors"
[[ $(id -u) == 0 ]] || vfsd_skip "the launchers' command lines run as root (or as a user root switches to)"
mapfile -t names < <(variants_of "$launcher")
if [[ -n $only ]]; then
  # --variants: a subset (e.g. while a variant's option is not merged yet).
  for n in ${only//,/ }; do [[ " ${names[*]} " == *" $n "* ]] || { echo "no variant '$n' of $launcher" >&2; exit 2; }; done
  read -r -a names <<<"${only//,/ }"
fi

# What the host must offer for this launcher (skips are the host's, never
# the daemon's answer).
socket_group=""
for n in "${names[@]}"; do
  v=$launcher/$n
  if [[ ${V[$v.args]} == *@GROUP@* && -z $socket_group ]]; then
    # microvm.nix's default group is kvm; any other group shows the same.
    for g in kvm users disk; do getent group "$g" >/dev/null && { socket_group=$g; break; }; done
    [[ -n $socket_group ]] || vfsd_skip "no group (kvm, users, disk) for --socket-group"
  fi
  if [[ ${V[$v.args]} == *"--rlimit-nofile 1048576"* ]] &&
    ! prlimit --nofile=1048576:1048576 true 2>/dev/null; then
    # microvm.nix's unit sets LimitNOFILE=1048576; a host without
    # CAP_SYS_RESOURCE (this sandbox) cannot. Then the exact command line
    # must be refused as a usage error (below), and the guest boots with
    # the highest limit the host allows instead of 1048576.
    nofile_refused_on_host=1
  fi
done
nofile_host_max=$(ulimit -Hn)

vfsd_work_dir launch
chmod 0755 "$work" # users the launchers switch to must reach their folders
declare -A PID HELPER
# proc_tree PID: PID and every descendant.
proc_tree() {
  local p=$1 c
  echo "$p"
  for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do proc_tree "$c"; done
}
alive() { # PID: exists and is not a zombie
  local s
  s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $s && $s != Z ]]
}
vfsd_e2e_cleanup() {
  # Everything this run started (helpers, daemons, their children) and
  # that is still there.
  local k p tree=""
  for k in "${!PID[@]}" "${!HELPER[@]}"; do
    for p in ${PID[$k]:-} ${HELPER[$k]:-}; do tree+=" $(proc_tree "$p" | tr '\n' ' ')"; done
  done
  for p in $tree; do kill -KILL "$p" 2>/dev/null || true; done
}

nofile_refused_on_host=${nofile_refused_on_host:-0}
declare -A result detail
order=() sabotaged=()
elapsed=""

report() {
  local failed=() n
  for n in "${order[@]}"; do
    printf '  %-28s %s %s\n' "$n" "${result[$n]}" "${detail[$n]}"
    [[ ${result[$n]} == PASS ]] || failed+=("$n")
  done
  echo "   (${#order[@]} checks${elapsed:+, guest run ${elapsed}s})"
  if ((${#failed[@]} == 0)); then
    echo "LAUNCHER RESULT: PASS ($launcher)"
    ((sabotage)) && echo "LAUNCHER SABOTAGE NOT DETECTED: the harness passed a sabotaged run"
    exit 0
  fi
  echo "LAUNCHER RESULT: FAIL ($launcher: ${#failed[@]} failed: ${failed[*]})"
  for n in "${names[@]}"; do
    local want=${V[$launcher/$n.needs]} o missing=""
    for o in ${want//,/ }; do "$binary" --help 2>/dev/null | grep -q -- "$o" || missing+=" $o"; done
    [[ -n $missing ]] && echo "  note: variant $n uses$missing, which this build does not have yet"
  done
  if [[ -f $work/console.log ]]; then
    echo "--- last console lines ---"
    vfsd_console_tail "$work/console.log" 15 '^[0-9.]* (E2E|VFSD-KMSG)'
  fi
  for n in "${names[@]}"; do
    echo "--- daemon log of $n (last 12 lines) ---"
    tail -n 12 "$work/$n.log" 2>/dev/null || true
  done
  if ((sabotage)); then
    if [[ "$(printf '%s\n' "${failed[@]}" | sort | tr '\n' ' ')" == "$(printf '%s\n' "${sabotaged[@]}" | sort | tr '\n' ' ')" ]]; then
      echo "LAUNCHER SABOTAGE DETECTED: exactly the sabotaged checks failed (${sabotaged[*]})"
    else
      echo "LAUNCHER SABOTAGE: unexpected set of failures (expected ${sabotaged[*]})"
    fi
  else
    keep=1
  fi
  exit 1
}

# ---- probes, as the launcher probes -----------------------------------------------
exe=$binary
if [[ $daemon == rust ]]; then
  # The reference: the harness's expectations must hold for it too.
  exe=$(vfsd_rust_command) || vfsd_skip "Rust virtiofsd not fetched (scripts/install-deps.sh)"
fi
posixacl_arg=""
for p in ${PROBES[$launcher]:-}; do
  case $p in
    descriptor)
      # libvirt and lima search <prefix>/share/qemu/vhost-user/*.json in name
      # order, take the first "type": "fs" whose binary answers, and start it.
      [[ -n $build_dir ]] || { echo "--build-dir is needed for the descriptor probe" >&2; exit 2; }
      stage=$work/stage
      DESTDIR=$stage cmake --install "$build_dir" >/dev/null
      prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$build_dir/CMakeCache.txt")
      found=""
      for d in "$stage$prefix"/share/qemu/vhost-user/*.json; do
        [[ -s $d && $(jq -r .type "$d" 2>/dev/null) == fs ]] || continue
        b=$(jq -r .binary "$d")
        [[ -x $stage$b ]] && "$stage$b" --print-capabilities >/dev/null 2>&1 && { found=$stage$b; break; }
      done
      vfsd_check probe_descriptor "no vhost-user descriptor of type fs names a binary that answers" test -n "$found"
      [[ -n $found && $daemon == ours ]] && exe=$found
      ;;
    caps-separate-options)
      caps=$($exe --print-capabilities 2>/dev/null) || caps=""
      vfsd_check probe_capabilities "--print-capabilities: '$(tr -d '\n ' <<<"$caps")' lacks type fs or separate-options (libvirt would build the legacy -o form)" \
        test "$(jq -r '.type == "fs" and (.features | index("separate-options") != null)' <<<"$caps" 2>/dev/null)" = true
      ;;
    caps-incus)
      caps=$($exe --print-capabilities 2>/dev/null) || caps=""
      if [[ $(jq -r '.features | index("posix-acl-negotiation-mode") != null' <<<"$caps" 2>/dev/null) == true ]]; then
        posixacl_arg=--posix-acl=auto
      else
        posixacl_arg=--posix-acl
      fi
      vfsd_check probe_capabilities "--print-capabilities is not JSON with a features list: '$caps'" \
        test "$(jq -r '.features | type' <<<"$caps" 2>/dev/null)" = array
      ;;
    version)
      # shellcheck disable=SC2086 # $exe is a command line (--daemon=rust)
      vfsd_check probe_version "--version did not exit 0" $exe --version
      ;;
    help-readonly)
      out=$($exe --help 2>/dev/null) && rc=0 || rc=$?
      vfsd_check probe_help_readonly "--help exited $rc or its stdout lacks --readonly" \
        test "$rc" = 0 -a -n "$(grep -e --readonly <<<"$out")"
      ;;
  esac
done >/dev/null
for n in "${order[@]}"; do [[ ${result[$n]} == PASS ]] || report; done

# ---- shares and daemons -------------------------------------------------------------
run_token="run-$RANDOM$RANDOM"
wait_mode=0
i=0
for n in "${names[@]}"; do
  v=$launcher/$n
  share=$work/share-$n rundir=$work/run-$n
  mkdir -p "$share" "$rundir"
  echo "hello $n $run_token" >"$share/hello.txt"
  user=${V[$v.user]}
  if [[ $user != root ]]; then chown -R "$user:$user" "$share" "$rundir"; fi
  [[ -n ${V[$v.hostowner]} ]] && chown -R "${V[$v.hostowner]}" "$share"
  case ${V[$v.sock]} in
    path) sock=$rundir/$n.sock ;;
    fd:*) sock=$rundir/$n-listen.sock ;;
  esac
  [[ $launcher == microvm ]] && sock=$rundir/vfsd-guest-virtiofs-$n.sock
  [[ $launcher == virtme-ng ]] && sock=$rundir/virtme$RANDOM$RANDOM # mkstemp's name, removed first
  [[ $launcher == lima ]] && sock=$rundir/virtiofsd-$i.sock
  V[$v.socket]=$sock
  args=${V[$v.args]}
  args=${args//@SHARE@/$share}
  args=${args//@SOCK@/$sock}
  args=${args//@SOCKNAME@/$(basename "$sock")}
  args=${args//@TAG@/$n}
  args=${args//@NPROC@/$(nproc)}
  args=${args//@GROUP@/$socket_group}
  args=${args//@POSIXACL@/$posixacl_arg}
  if ((nofile_refused_on_host)) && [[ $args == *"--rlimit-nofile 1048576"* ]]; then
    # The launcher's exact words first: refused before anything exists,
    # with one line naming the option (as the Rust virtiofsd refuses too).
    probe_dir=$rundir/nofile-probe
    mkdir -p "$probe_dir"
    probe_sock=nofile-probe/s.sock
    # shellcheck disable=SC2086 # the words of the command line
    probe_err=$(cd "$rundir" && timeout 20 "$exe" ${args//$(basename "$sock")/$probe_sock} 2>&1 >/dev/null) && probe_rc=0 || probe_rc=$?
    vfsd_check "rlimit_refused_$n" "exit $probe_rc, stderr '$probe_err', probe folder: $(ls -A "$probe_dir")" \
      test "$probe_rc" -ne 0 -a "$(printf '%s\n' "$probe_err" | wc -l)" -eq 1 \
      -a -z "$(ls -A "$probe_dir")" -a "${probe_err/--rlimit-nofile/}" != "$probe_err"
    echo "host: LimitNOFILE=1048576 is not possible here; $n boots with --rlimit-nofile $nofile_host_max" >&2
    args=${args//--rlimit-nofile 1048576/--rlimit-nofile $nofile_host_max}
  fi
  read -r -a argv <<<"$args"
  V[$v.argv]="$exe ${argv[*]}"
  [[ ${V[$v.stop]} == disconnect ]] || wait_mode=1

  # How the launcher runs it: its user, capabilities, environment, folder.
  cmd=()
  if [[ $user != root ]]; then
    cmd+=(setpriv "--reuid=$user" "--regid=$user" --clear-groups)
    [[ ${V[$v.caps]} == none ]] && cmd+=(--inh-caps=-all --bounding-set=-all)
  fi
  [[ ${V[$v.via]} == userns-root ]] && cmd+=(unshare --map-root-user --)
  [[ ${V[$v.via]} == userns-map ]] && cmd+=(python3 "$FDTOOL" userns 0:1000000:1000000000 --)
  cmd+=(env)
  [[ -n ${V[$v.env]} ]] && cmd+=("${V[$v.env]}")
  read -r -a exe_words <<<"$exe"
  cmd+=("${exe_words[@]}" "${argv[@]}")
  case ${V[$v.sock]} in
    fd:*)
      fdn=${V[$v.sock]#fd:}
      if [[ ${V[$v.via]} == proxmox ]]; then
        cmd=(python3 "$FDTOOL" listen "$sock" "$fdn" --pidfile "$work/$n.pid" --hold-until "$work/qemu-up" -- "${cmd[@]}")
      else
        cmd=(python3 "$FDTOOL" listen "$sock" "$fdn" --pidfile "$work/$n.pid" -- "${cmd[@]}")
      fi
      ;;
  esac
  cwd=/
  case ${V[$v.cwd]} in share) cwd=$share ;; rundir) cwd=$rundir ;; esac
  echo "+ (cd $cwd; ${cmd[*]})" >"$work/$n.log"
  if [[ ${V[$v.via]} == shell-bg ]]; then
    # virtme-ng: os.system(f"{virtiofsd} ... 2>/dev/null &"); the log here
    # is kept for the report instead of /dev/null.
    (cd "$cwd" && sh -c "$(printf '%q ' "${cmd[@]}") >>'$work/$n.log' 2>&1 &")
    PID[$n]=""
  else
    (cd "$cwd" && exec "${cmd[@]}") >>"$work/$n.log" 2>&1 &
    HELPER[$n]=$!
    PID[$n]=$!
  fi

  # A launcher binds and listens before it spawns the daemon; here the
  # helper does it in the background: wait for that (not for the daemon).
  if [[ ${V[$v.sock]} == fd:* ]]; then
    for ((k = 0; k < 300; k++)); do
      [[ -S $sock ]] && break
      kill -0 "${HELPER[$n]}" 2>/dev/null || break
      sleep 0.1
    done
  fi
  # Readiness, as the launcher decides it (bounds far above need).
  ready=1 why=""
  case ${V[$v.ready]} in
    none) ;;
    launcher-pidfile)
      for ((k = 0; k < 300; k++)); do [[ -s $work/$n.pid ]] && break; sleep 0.1; done
      p=$(cat "$work/$n.pid" 2>/dev/null || true)
      if [[ -z $p ]] || ! kill -0 "$p" 2>/dev/null; then ready=0 why="virtiofsd died unexpectedly (pid file '$p', kill(pid,0) failed)"; fi
      ;;
    socket | socket-lima)
      # podman: 100 ms polls, unbounded; lima: 5 x 200 ms and a dead process
      # is an error. Both bounded here at 30 s; lima's budget is reported.
      step=0.1
      [[ ${V[$v.ready]} == socket-lima ]] && step=0.2
      for ((k = 0; k < 300; k++)); do
        [[ -S $sock ]] && break
        kill -0 "${PID[$n]}" 2>/dev/null || break
        sleep "$step"
      done
      [[ -S $sock ]] || { ready=0 why="no socket at $sock"; }
      if [[ ${V[$v.ready]} == socket-lima ]] && ((k > 5)); then why="socket after $k polls: lima would have given up after 5"; ready=0; fi
      ;;
    stderr-waiting)
      for ((k = 0; k < 300; k++)); do
        grep -q 'Waiting for vhost-user socket connection' "$work/$n.log" && break
        kill -0 "${PID[$n]}" 2>/dev/null || break
        sleep 0.1
      done
      grep -q 'Waiting for vhost-user socket connection' "$work/$n.log" ||
        { ready=0 why="stderr never said 'Waiting for vhost-user socket connection' (runtime-rs would hang)"; }
      ;;
    daemon-pidfile)
      # virtme-ng polls 0.1+0.2+0.4+0.8+1.6 s for <socket>.pid, then falls
      # back to 9p; bounded here at 30 s.
      for ((k = 0; k < 300; k++)); do [[ -s $sock.pid ]] && break; sleep 0.1; done
      PID[$n]=$(tr -dc 0-9 <"$sock.pid" 2>/dev/null || true)
      [[ -n ${PID[$n]} ]] || { ready=0 why="no pid in $sock.pid"; }
      ;;
    startsecs)
      # supervisord: RUNNING once the program lived 1 s; then QEMU starts and
      # connects by path (the socket must be there by then: polled, bounded).
      sleep 1
      kill -0 "${PID[$n]}" 2>/dev/null || { ready=0 why="exited within supervisord's startsecs"; }
      for ((k = 0; k < 300; k++)); do [[ -S $sock ]] && break; sleep 0.1; done
      [[ -S $sock ]] || { ready=0 why="no socket at $sock"; }
      ;;
  esac
  # The pid the launcher holds (and signals).
  if [[ ${V[$v.via]} == proxmox || (${V[$v.sock]} == fd:* && ${V[$v.ready]} == launcher-pidfile) ]]; then
    for ((k = 0; k < 300; k++)); do [[ -s $work/$n.pid ]] && break; sleep 0.1; done
    PID[$n]=$(cat "$work/$n.pid" 2>/dev/null || true)
  fi
  if ((ready)) && [[ -n ${PID[$n]} ]] && ! kill -0 "${PID[$n]}" 2>/dev/null; then ready=0 why="the daemon exited"; fi
  if ((ready)); then vfsd_record "ready_$n" PASS "${why}"; else vfsd_record "ready_$n" FAIL "$why"; fi

  for c in ${V[$v.check]}; do
    case $c in
      socket-group)
        got=$(stat -c '%G %a' "$sock" 2>&1 || true)
        vfsd_check "socket_group_$n" "socket is '$got', expected group $socket_group, mode 770" test "$got" = "$socket_group 770"
        ;;
      pidfile-pid)
        # The pid virtme-ng signals is the daemon's own (one process with
        # --sandbox none), alive, and running our binary.
        vfsd_check "pidfile_$n" "$sock.pid names '${PID[$n]}', not a live virtiofsd" \
          test -n "${PID[$n]}" -a "$(readlink "/proc/${PID[$n]}/exe" 2>/dev/null)" = "$(readlink -f "${exe%% *}")"
        ;;
    esac
  done

  host_token="hello $n $run_token" guest_token="from the guest to $n $run_token"
  V[$v.guest_token]=$guest_token
  {
    echo "E2E_HOST_$i='$host_token'"
    echo "E2E_GUEST_$i='$guest_token'"
    echo "E2E_RO_$i=${V[$v.ro]}"
    echo "E2E_OWNER_$i='${V[$v.owner]}'"
  } >>"$work/env.sh"
  i=$((i + 1))
done
for n in "${order[@]}"; do [[ ${result[$n]} == PASS ]] || report; done

# Sabotage: a wrong expectation on each side.
if ((sabotage)); then
  for n in "${names[@]}"; do
    [[ ${V[$launcher/$n.ro]} == 1 ]] && continue
    V[$launcher/$n.guest_token]="not what the guest wrote"
    sabotaged+=("host_write_$n")
    break
  done
  second=${names[1]:?--sabotage needs two variants}
  sed -i "s/^E2E_HOST_1='/E2E_HOST_1='sabotaged /" "$work/env.sh"
  sabotaged+=("read_$second")
fi
{
  echo "E2E_TAGS='${names[*]}'"
  echo "E2E_WAIT=$wait_mode"
} >>"$work/env.sh"
vfsd_build_initramfs "$work/initrd" "$HERE/guest/launcher_checks.sh" "$work/env.sh:/guest/env.sh"

# ---- the guest --------------------------------------------------------------------
devices="" dial=()
fdq=10
for n in "${names[@]}"; do
  v=$launcher/$n
  if [[ ${V[$v.qemu]} == dial ]]; then
    devices+=" $n=fd:$fdq"
    dial+=("${V[$v.socket]}" "$fdq")
    fdq=$((fdq + 1))
  else
    devices+=" $n=${V[$v.socket]}"
  fi
done
export VFSD_FS_DEVICES=${devices# }
VFSD_QEMU_PREFIX=""
((${#dial[@]})) && VFSD_QEMU_PREFIX="python3 $FDTOOL connect ${dial[*]} --"
export VFSD_QEMU_PREFIX
# lib.sh's own watcher stays off: this script watches its daemons itself
# (until the stop point, when it signals some of them on purpose).
# shellcheck disable=SC2034
VFSD_DAEMON_PID="" VFSD_DAEMON_PIDS=""

# The launcher's side while the guest runs: Proxmox closes its listening
# socket once QEMU is up (before the guest mounts anything); a daemon dying early ends QEMU; at the guest's stop
# point the signal-stopping launchers signal the daemon.
console=$work/console.log
: >"$console"
(
  stage=up
  for ((t = 0; t < limit * 10; t++)); do
    qpid=$(cat "$console.qemu-pid" 2>/dev/null || true)
    # QEMU is up once the guest prints: its vhost-user devices connected
    # while QEMU started (Proxmox then runs close_sockets).
    if [[ $stage == up ]] && [[ -s $console ]]; then
      : >"$work/qemu-up"
      stage=mounted
    fi
    if grep -q '^[0-9.]* E2E-STOP-POINT' "$console"; then
      for n in "${names[@]}"; do
        [[ -n ${PID[$n]} ]] && proc_tree "${PID[$n]}" | tr '\n' ' ' >"$work/$n.tree"
      done
      if ((wait_mode)); then
        for n in "${names[@]}"; do
          case ${V[$launcher/$n.stop]} in
            sigterm) kill -TERM "${PID[$n]}" 2>/dev/null || true ;;
            sigkill) kill -KILL "${PID[$n]}" 2>/dev/null || true ;;
          esac
        done
        for n in "${names[@]}"; do
          [[ ${V[$launcher/$n.stop]} == disconnect ]] && continue
          left=""
          for ((k = 0; k < 100; k++)); do
            left=""
            for p in $(cat "$work/$n.tree"); do alive "$p" && left+=" $p"; done
            [[ -z $left ]] && break
            sleep 0.1
          done
          echo "${left:-none}" >"$work/$n.left"
        done
        [[ -n $qpid ]] && kill -TERM "$qpid" 2>/dev/null
      fi
      exit 0
    fi
    for n in "${names[@]}"; do
      if [[ -n ${PID[$n]} ]] && ! alive "${PID[$n]}"; then
        echo "daemon $n (pid ${PID[$n]}) exited while the guest was running" >"$console.daemon-died"
        sleep 5
        [[ -n $qpid ]] && kill -TERM "$qpid" 2>/dev/null
        exit 0
      fi
    done
    sleep 0.1
  done
) &
launcher_side=$!

echo "== launcher: $launcher (${names[*]})$( ((sabotage)) && echo ' SABOTAGE run: must FAIL')"
for n in "${names[@]}"; do echo "   $n: ${V[$launcher/$n.argv]}"; done
t0=$EPOCHREALTIME
qemu_rc=0
vfsd_boot_guest unused "$work/initrd" "$console" "$limit" || qemu_rc=$?
elapsed=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
# With a stop point the launcher's side is finishing its stop (it ended
# QEMU); without one (QEMU failed early) it is only waiting: end it.
grep -q '^[0-9.]* E2E-STOP-POINT' "$console" || kill "$launcher_side" 2>/dev/null || true
wait "$launcher_side" 2>/dev/null || true

# ---- results ------------------------------------------------------------------------
while read -r _ name res rest; do
  vfsd_record "$name" "$res" "$rest"
done < <(vfsd_console_lines "$console" 'E2E [a-z_0-9-]* \(PASS\|FAIL\)')
for n in "${names[@]}"; do
  for c in mount read write umount; do
    [[ -v "result[${c}_$n]" ]] || vfsd_record "${c}_$n" FAIL "marker missing from the guest console"
  done
done
if [[ -f $console.daemon-died ]]; then
  vfsd_record guest_finished FAIL "$(cat "$console.daemon-died") (QEMU stopped, status $qemu_rc)"
elif ((qemu_rc == 124 || qemu_rc == 137)); then
  vfsd_record guest_finished FAIL "QEMU killed by the ${limit}s time limit (hung guest?)"
elif ((qemu_rc != 0)); then
  vfsd_record guest_finished FAIL "QEMU exited with status $qemu_rc"
elif ! grep -q '^[0-9.]* E2E-STOP-POINT' "$console"; then
  vfsd_record guest_finished FAIL "the guest never reached its stop point"
else
  vfsd_record guest_finished PASS
fi
while read -r name res rest; do vfsd_record "$name" "$res" "$rest"; done < <(vfsd_kernel_checks "$console" 1)

# The stop, as the launcher does it.
for n in "${names[@]}"; do
  v=$launcher/$n
  case ${V[$v.stop]} in
    disconnect)
      st="" h=${HELPER[$n]:-}
      for ((k = 0; k < 300; k++)); do alive "${PID[$n]}" || break; sleep 0.1; done
      if alive "${PID[$n]}"; then
        vfsd_record "stop_$n" FAIL "still running 30 s after QEMU quit (the launcher relies on exit-on-disconnect)"
      else
        [[ -n $h ]] && { wait "$h" 2>/dev/null && st=0 || st=$?; }
        HELPER[$n]="" PID[$n]=""
        left=""
        for p in $(cat "$work/$n.tree" 2>/dev/null); do alive "$p" && left+=" $p"; done
        if [[ -n $left ]]; then
          vfsd_record "stop_$n" FAIL "exited, but processes it started are left:$left"
        else
          vfsd_check "stop_$n" "exited by itself with status $st, not 0" test "$st" = 0
        fi
      fi
      ;;
    sigterm | sigkill)
      left=$(cat "$work/$n.left" 2>/dev/null || echo "not signalled")
      st="(unknown: not the launcher's child)"
      if [[ $left == none && -n ${HELPER[$n]:-} ]]; then wait "${HELPER[$n]}" 2>/dev/null && st=0 || st=$?; HELPER[$n]=""; fi
      [[ $left == none ]] && PID[$n]=""
      vfsd_check "stop_$n" "after ${V[$v.stop]^^} to the launcher's pid, still alive after 10 s: $left" \
        test "$left" = none
      [[ ${result[stop_$n]} == PASS ]] && detail[stop_$n]="${V[$v.stop]^^}: gone with every process it started, exit status $st"
      ;;
  esac
done

# Host side: the bytes the guest wrote, refused writes left nothing, RUST_LOG.
for n in "${names[@]}"; do
  v=$launcher/$n
  f=$work/share-$n/guest.txt
  if [[ ${V[$v.ro]} == 1 ]]; then
    vfsd_check "host_readonly_$n" "guest.txt exists on the host of a --readonly share" test ! -e "$f"
  else
    vfsd_check "host_write_$n" "guest.txt on the host: '$(cat "$f" 2>&1)'" test "$(cat "$f" 2>/dev/null)" = "${V[$v.guest_token]}"
    if [[ -n ${V[$v.hostowner]} ]]; then
      # Guest root's file belongs to the host ids guest 0 maps to (a user
      # namespace's map, or --translate-uid/gid map:0:1000000:...).
      got=$(stat -c %u:%g "$f" 2>&1 || true)
      vfsd_check "host_owner_$n" "guest.txt is owned by $got on the host, expected ${V[$v.hostowner]}" \
        test "$got" = "${V[$v.hostowner]}"
    fi
  fi
  for c in ${V[$v.check]}; do
    if [[ $c == rust-log-quiet ]]; then
      vfsd_check "rust_log_$n" "RUST_LOG=ERROR, yet the daemon logged below error: $(grep -m1 -E '\] ?(warn|info|debug)|INFO|WARN' "$work/$n.log")" \
        bash -c "! tail -n +2 '$work/$n.log' | grep -qiE '^\[[^]]* (warn|warning|info|debug|trace) '"
    fi
  done
  if [[ ${V[$v.via]} == proxmox ]]; then
    # The daemon served on after its launcher shut the shared listening
    # socket down (the mount and write above happened after that).
    vfsd_check "listener_shutdown_$n" "the launcher never shut its listening socket down" \
      grep -q 'shut down and closed its listening socket' "$work/$n.log"
  fi
  sanitizer=$(vfsd_sanitizer_reports "$work/$n.log" || true)
  vfsd_check "sanitizers_$n" "sanitizer report: $(head -n 1 <<<"$sanitizer")" test -z "$sanitizer"
done
report
