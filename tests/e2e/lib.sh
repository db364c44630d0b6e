# shellcheck shell=bash disable=SC2034,SC2054
# (VFSD_* results are read by the scripts that source this; commas in the
# QEMU arguments belong to option values.)
# Host-side helpers shared by the e2e test, the demo and the benchmarks:
# start a virtio-fs daemon on a socket, build the guest's initramfs, boot the
# guest under QEMU (TCG) with its console captured. Source it from bash.
# The recipe itself is described in DEVELOPERS.md.

VFSD_ROOT=${VFSD_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
VFSD_C_DAEMON=${VFSD_C_DAEMON:-/usr/lib/qemu/virtiofsd}
VFSD_RUST_DIR=${VFSD_RUST_DIR:-$VFSD_ROOT/.cache/rust-virtiofsd}
VFSD_TAG=${VFSD_TAG:-share}
VFSD_DAEMON_PID=""

vfsd_die() {
  echo "error: $*" >&2
  exit 1
}

# True when CI is set (CI=true, as .ci/run exports; "0" and "false" count as unset).
vfsd_ci() {
  [[ -n ${CI:-} && ${CI:-} != 0 && ${CI:-} != false ]]
}

# vfsd_skip MESSAGE: a suite that cannot run here. Exits 77 (ctest's SKIP), or,
# under CI, 1: the CI machine has everything these suites need, and a skip
# would count as a pass in ctest's tally.
vfsd_skip() {
  if vfsd_ci; then
    echo "FAIL: $* (CI=$CI: this suite must run in CI, so a skip is a failure)"
    exit 1
  fi
  echo "SKIP: $*"
  exit 77
}

# ---- what the e2e scripts (tests/e2e/run_*.sh) share ----------------------------

# vfsd_e2e_args HELP_LINES VALUE_OPTIONS FLAG_OPTIONS ARG...: parses a
# script's command line into the caller's variables (set their defaults
# first). Every script takes --binary PATH (binary), --timeout S (limit),
# --sabotage, --keep (sabotage=1, keep=1), --verbose (VFSD_VERBOSE=1) and
# -h/--help (prints lines HELP_LINES, e.g. 2,24, of the script). Its own
# options: VALUE_OPTIONS are "NAME[:VAR]" words, options with a value (VAR
# defaults to NAME with "-" as "_"); FLAG_OPTIONS set VAR=1 the same way.
# Values are written --name=value or --name value. An unknown argument is a
# usage error (exit 2).
vfsd_e2e_args() {
  # Locals start with "_": they must not hide the caller's variables.
  local _help=$1 _values="binary timeout:limit $2" _flags="sabotage keep $3" _arg _spec _var
  shift 3
  while (($#)); do
    _arg=$1 _var=""
    case $_arg in
      --verbose) export VFSD_VERBOSE=1; shift; continue ;;
      -h | --help) sed -n "${_help}p" "$0"; exit 0 ;;
    esac
    for _spec in $_values; do
      [[ ${_arg%%=*} == "--${_spec%%:*}" ]] || continue
      _var=${_spec#*:} _var=${_var//-/_}
      if [[ $_arg == *=* ]]; then printf -v "$_var" '%s' "${_arg#*=}"; else printf -v "$_var" '%s' "${2:-}"; shift; fi
      break
    done
    if [[ -z $_var ]]; then
      for _spec in $_flags; do
        [[ $_arg == "--${_spec%%:*}" ]] || continue
        _var=${_spec#*:} _var=${_var//-/_}
        printf -v "$_var" 1
        break
      done
    fi
    [[ -n $_var ]] || { echo "unknown argument: $_arg" >&2; exit 2; }
    shift
  done
}

# vfsd_need_binary PATH: our daemon must be built (else exit 2).
vfsd_need_binary() {
  [[ -x $1 ]] || { echo "our daemon '$1' is not built" >&2; exit 2; }
}

# vfsd_need_guest: a guest kernel and QEMU must be installed (else exit 2).
vfsd_need_guest() {
  vfsd_kernel_image >/dev/null || { echo "no guest kernel: run scripts/install-deps.sh" >&2; exit 2; }
  command -v qemu-system-x86_64 >/dev/null ||
    { echo "qemu-system-x86_64 missing: run scripts/install-deps.sh" >&2; exit 2; }
}

# vfsd_work_dir NAME: makes the run's work folder, $work (vfsd-NAME.XXXXXX
# under TMPDIR), and cleans up at exit: first the script's own
# vfsd_e2e_cleanup when it defines one, then the daemon still running
# (VFSD_DAEMON_PID) is killed and the folder removed, unless keep=1 then
# (the script sets it to keep the evidence of a failure).
vfsd_work_dir() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/vfsd-$1.XXXXXX")
  trap vfsd_e2e_exit EXIT
}
vfsd_e2e_exit() {
  if declare -F vfsd_e2e_cleanup >/dev/null; then vfsd_e2e_cleanup; fi
  [[ -n $VFSD_DAEMON_PID ]] && kill "$VFSD_DAEMON_PID" 2>/dev/null
  if ((${keep:-0})); then echo "work folder kept: $work"; else rm -rf "$work"; fi
}

# Check results, for the scripts' reports: vfsd_record NAME PASS|FAIL DETAIL
# sets the caller's result[NAME] and detail[NAME] (declare -A result detail;
# order=()) and appends NAME to order the first time; a name seen twice
# keeps its first failure. vfsd_check NAME DETAIL-ON-FAILURE COMMAND...
# records whether COMMAND succeeds.
vfsd_record() {
  [[ -v "result[$1]" ]] || order+=("$1")
  if [[ ${result[$1]:-} != FAIL ]]; then result[$1]=$2 detail[$1]=${3:-}; fi
}
vfsd_check() {
  local n=$1 d=$2
  shift 2
  if "$@"; then vfsd_record "$n" PASS; else vfsd_record "$n" FAIL "$d"; fi
}

# vfsd_report_checks WIDTH: prints every recorded check (name padded to
# WIDTH, result, detail) in the order recorded, and sets the caller's
# failed=() to the names that did not pass.
vfsd_report_checks() {
  local n
  failed=()
  for n in "${order[@]}"; do
    printf "  %-${1}s %s %s\n" "$n" "${result[$n]}" "${detail[$n]}"
    [[ ${result[$n]} == PASS ]] || failed+=("$n")
  done
}

# vfsd_wait_for SECONDS COMMAND...: runs COMMAND every 0.1 s until it
# succeeds (returns 0) or SECONDS pass (returns 1).
vfsd_wait_for() {
  local s=$1 i
  shift
  for ((i = 0; i < s * 10; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

# What a kernel prints when something is wrong in it: WARN(), BUG(), oopses,
# panics, sanitizer and lockup reports. Matched against the guest console,
# which shows KERN_WARNING and above (loglevel=5 in vfsd_boot_guest), and
# against the guest's dmesg dump (VFSD-KMSG lines, guest/init).
VFSD_KERNEL_PROBLEM_RE='Kernel panic|Oops|BUG:|kernel BUG at|WARNING:|Call Trace:|general protection fault|UBSAN:|KASAN:|refcount_t:|list_(add|del) corruption|soft lockup|hard LOCKUP|blocked for more than|rcu_(sched|preempt) (self-)?detected stall'

# vfsd_console_tail LOG N DROP_RE: the last N lines of LOG that do not match
# the extended regex DROP_RE, each without its leading timestamp. Prints
# nothing (and succeeds) when LOG is missing or every line matches: under
# `set -o pipefail` a bare `grep -v | tail` would end the caller's failure
# report right there.
vfsd_console_tail() {
  local log=$1 n=$2 drop=$3
  { grep -vE "$drop" "$log" 2>/dev/null || true; } | tail -n "$n" | cut -d' ' -f2-
}

# vfsd_kernel_problems CONSOLE_LOG console|dmesg: prints the lines (timestamps
# stripped) that report a kernel problem, either on the live console (every
# line but the dmesg dump) or in the dmesg dump; returns 0 if there are any.
vfsd_kernel_problems() {
  local log=$1 where=$2
  if [[ $where == dmesg ]]; then
    sed -n 's/^[0-9.]* VFSD-KMSG \(.*\)$/\1/p' "$log" | grep -E "$VFSD_KERNEL_PROBLEM_RE"
  else
    sed 's/^[0-9.]* //' "$log" | grep -v '^VFSD-KMSG' | grep -E "$VFSD_KERNEL_PROBLEM_RE"
  fi
}

# vfsd_kernel_checks CONSOLE_LOG BOOTS: the verdicts of the two kernel checks
# as lines "NAME PASS|FAIL DETAIL" for the callers' reports:
#   kernel_console_clean  no kernel problem on the live console
#   kernel_log_clean      the guest dumped its dmesg BOOTS times (guest/init
#                         vfsd_kmsg_report) and no dump reports a problem
vfsd_kernel_checks() {
  local log=$1 boots=$2 lines n
  if lines=$(vfsd_kernel_problems "$log" console); then
    echo "kernel_console_clean FAIL $(wc -l <<<"$lines") line(s), first: $(head -n 1 <<<"$lines")"
  else
    echo "kernel_console_clean PASS"
  fi
  n=$(grep -c '^[0-9.]* VFSD-KMSG-CHECKED ' "$log" || true)
  if lines=$(vfsd_kernel_problems "$log" dmesg); then
    echo "kernel_log_clean FAIL $(wc -l <<<"$lines") dmesg line(s), first: $(head -n 1 <<<"$lines")"
  elif ((n != boots)); then
    echo "kernel_log_clean FAIL the guest dumped its dmesg $n times, expected $boots (VFSD-KMSG-CHECKED)"
  else
    echo "kernel_log_clean PASS"
  fi
}

# QEMU 10 (Debian trixie's, unpacked by scripts/fetch-qemu10.sh), run through
# its launcher: its own loader and glibc, and a mount namespace in which its
# modules and firmware hide QEMU 7.2's. The migration test needs it.
VFSD_QEMU10=${VFSD_QEMU10:-$VFSD_ROOT/scripts/qemu10}

# vfsd_qemu10_version: prints QEMU 10's version (e.g. 10.0.13) and returns 0
# when it is there and runs; returns 1 otherwise.
vfsd_qemu10_version() {
  "$VFSD_QEMU10" --version 2>/dev/null | sed -n '1s/^QEMU emulator version \(10\.[0-9.]*\).*/\1/p' | grep .
}

# vfsd_qmp SOCKET COMMAND [ARGUMENTS_JSON]: one QMP command on a QEMU's
# -qmp unix socket (tests/e2e/qmp.py); prints the "return" value as JSON,
# returns 1 with QEMU's error on stderr when the command fails.
vfsd_qmp() {
  python3 "$VFSD_ROOT/tests/e2e/qmp.py" "$@"
}

# Prints the guest kernel image of the cached Debian kernel package.
vfsd_kernel_image() {
  local kroot=${VFSD_KERNEL_ROOT:-$VFSD_ROOT/.cache/kernel-6.1/root} k
  for k in "$kroot"/boot/vmlinuz-*; do
    [[ -f $k ]] && { echo "$k"; return 0; }
  done
  return 1
}

# Prints the command line of the Rust virtiofsd unpacked by
# scripts/fetch-rust-virtiofsd.sh (its own glibc, run through its own loader).
vfsd_rust_command() {
  local d=$VFSD_RUST_DIR
  [[ -x $d/usr/libexec/virtiofsd && -e $d/lib64/ld-linux-x86-64.so.2 ]] || return 1
  echo "$d/lib64/ld-linux-x86-64.so.2 --library-path $d/lib/x86_64-linux-gnu:$d/usr/lib/x86_64-linux-gnu $d/usr/libexec/virtiofsd"
}

# What AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer print
# when they find something (a build with VFSD_SANITIZE=ON).
VFSD_SANITIZER_RE='ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer)'

# vfsd_sanitizer_reports LOG: prints a daemon log's sanitizer report lines;
# returns 0 if there are any.
vfsd_sanitizer_reports() {
  grep -E "$VFSD_SANITIZER_RE" "$1"
}

# Our daemon runs with these unless the caller set its own: any sanitizer
# report ends the process with a non-zero status (and is in its log).
# LeakSanitizer stays off for the daemon whatever the caller asked: its check
# at exit enumerates /proc/PID/task, which the namespace sandbox hides (only
# /proc/self/fd is left), and it fails fatally there. Leaks are what the unit
# and integration tests under LeakSanitizer look for.
vfsd_sanitizer_env() {
  export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:halt_on_error=1}:detect_leaks=0
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
}

# vfsd_start_daemon KIND SOCKET DIR LOG [BINARY]
# KIND is ours (BINARY = our virtiofsd), c (QEMU 7.2's C virtiofsd) or rust.
# Starts it in the background (VFSD_DAEMON_PID) and waits for its socket.
vfsd_start_daemon() {
  local kind=$1 sock=$2 dir=$3 log=$4 bin=${5:-}
  local -a cmd
  rm -f "$sock"
  case $kind in
    ours)
      [[ -x $bin ]] || vfsd_die "our daemon binary '$bin' is not executable"
      vfsd_sanitizer_env
      # VFSD_DAEMON_PREFIX: words run before it, which must exec it (e.g.
      # setpriv ... --: the daemon as another user).
      local -a prefix=()
      [[ -n ${VFSD_DAEMON_PREFIX:-} ]] && read -r -a prefix <<<"$VFSD_DAEMON_PREFIX"
      cmd=("${prefix[@]}" "$bin" "--socket-path=$sock" "--shared-dir=$dir")
      # VFSD_DAEMON_ARGS: more options for our daemon (e.g. --sandbox=chroot).
      # shellcheck disable=SC2206
      [[ -n ${VFSD_DAEMON_ARGS:-} ]] && cmd+=($VFSD_DAEMON_ARGS)
      ;;
    c)
      [[ -x $VFSD_C_DAEMON ]] || vfsd_die "$VFSD_C_DAEMON is missing (apt-get install qemu-system-common)"
      # chroot sandbox: the namespace one needs privileges containers often lack.
      cmd=("$VFSD_C_DAEMON" "--socket-path=$sock" -o "source=$dir" -o cache=auto -o sandbox=chroot)
      ;;
    rust)
      local rc
      rc=$(vfsd_rust_command) || vfsd_die "Rust virtiofsd not found in $VFSD_RUST_DIR (run scripts/fetch-rust-virtiofsd.sh)"
      # shellcheck disable=SC2206
      cmd=($rc "--socket-path=$sock" "--shared-dir=$dir" --cache=auto --sandbox=chroot)
      # VFSD_RUST_ARGS: more options for it (e.g. --inode-file-handles=MODE).
      # shellcheck disable=SC2206
      [[ -n ${VFSD_RUST_ARGS:-} ]] && cmd+=($VFSD_RUST_ARGS)
      ;;
    *) vfsd_die "unknown daemon kind '$kind' (ours|c|rust)" ;;
  esac
  echo "+ ${cmd[*]}" >"$log"
  "${cmd[@]}" >>"$log" 2>&1 &
  VFSD_DAEMON_PID=$!
  local i
  for ((i = 0; i < 300; i++)); do
    [[ -S $sock ]] && return 0
    kill -0 "$VFSD_DAEMON_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "daemon ($kind) did not create $sock; its log:" >&2
  sed 's/^/  | /' "$log" >&2
  return 1
}

# Waits up to $1 seconds for the daemon to exit by itself (it should when
# QEMU disconnects), then kills it. Returns 0 if it exited by itself.
vfsd_stop_daemon() {
  local wait_s=${1:-5} i
  [[ -n $VFSD_DAEMON_PID ]] || return 0
  for ((i = 0; i < wait_s * 10; i++)); do
    kill -0 "$VFSD_DAEMON_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$VFSD_DAEMON_PID" 2>/dev/null; then
    kill "$VFSD_DAEMON_PID" 2>/dev/null
    wait "$VFSD_DAEMON_PID" 2>/dev/null || true
    VFSD_DAEMON_PID=""
    return 1
  fi
  VFSD_DAEMON_EXIT=0
  wait "$VFSD_DAEMON_PID" 2>/dev/null || VFSD_DAEMON_EXIT=$?
  VFSD_DAEMON_PID=""
  return 0
}

# vfsd_build_initramfs OUT RUN_SCRIPT [SRC:DEST]...
vfsd_build_initramfs() {
  local out=$1 run=$2
  shift 2
  local -a extra=()
  local f
  for f in "$@"; do extra+=(--file "$f"); done
  "$VFSD_ROOT/scripts/build-initramfs.sh" --out "$out" --run "$run" "${extra[@]}"
}

# vfsd_boot_guest SOCKET INITRD CONSOLE_LOG TIMEOUT_S [reboot]
# Boots the guest; returns QEMU's exit status (124 = killed by the time limit).
# If the daemon (VFSD_DAEMON_PID, or any of VFSD_DAEMON_PIDS) dies first,
# QEMU is stopped 5 s later and CONSOLE_LOG.daemon-died is written.
# The console shows kernel messages up to KERN_WARNING (loglevel=5), so
# WARN()s, BUGs and oopses are visible to vfsd_kernel_problems.
# Each console line is logged as "<host epoch seconds> <line>" so callers can
# time events; with VFSD_VERBOSE=1 the console is also echoed to stderr.
vfsd_boot_guest() {
  local sock=$1 initrd=$2 log=$3 limit=$4 mode=${5:-}
  local kernel
  kernel=$(vfsd_kernel_image) || vfsd_die "no guest kernel (run scripts/install-deps.sh)"
  # VFSD_FS_DEVICES="tag=socket ..." attaches one device per daemon instead
  # of the single $sock (the conformance suite: one daemon per profile).
  # A socket written fd:N is a connected socket QEMU inherits as fd N (see
  # VFSD_QEMU_PREFIX), as Incus hands QEMU the connection it dialled.
  # VFSD_NUM_REQUEST_QUEUES=N: the device offers N request queues (a guest
  # from Linux 6.11 uses them, one per vCPU, see VFSD_GUEST_CPUS).
  local devopts=queue-size=1024
  [[ -n ${VFSD_NUM_REQUEST_QUEUES:-} ]] && devopts+=",num-request-queues=$VFSD_NUM_REQUEST_QUEUES"
  local -a devices=(-chardev "socket,id=vfs,path=$sock"
    -device "vhost-user-fs-pci,chardev=vfs,tag=$VFSD_TAG,$devopts")
  if [[ -n ${VFSD_FS_DEVICES:-} ]]; then
    devices=()
    local td n=0 where
    for td in $VFSD_FS_DEVICES; do
      where=${td#*=}
      if [[ $where == fd:* ]]; then where="fd=${where#fd:}"; else where="path=$where"; fi
      devices+=(-chardev "socket,id=vfs$n,$where"
        -device "vhost-user-fs-pci,chardev=vfs$n,tag=${td%%=*},$devopts")
      ((++n))
    done
  fi
  # VFSD_QEMU_PREFIX: words run before QEMU, which they must exec (e.g.
  # tests/e2e/launcher_fd.py connect SOCK N -- : QEMU gets fd N).
  local -a prefix=()
  [[ -n ${VFSD_QEMU_PREFIX:-} ]] && read -r -a prefix <<<"$VFSD_QEMU_PREFIX"
  # VFSD_GUEST_CPUS=N: N vCPUs (multi-threaded TCG, a host thread each).
  # VFSD_QEMU: the QEMU command (words), e.g. scripts/qemu10 (QEMU 10).
  local -a qemu_cmd=(qemu-system-x86_64)
  [[ -n ${VFSD_QEMU:-} ]] && read -r -a qemu_cmd <<<"$VFSD_QEMU"
  local -a qemu=("${qemu_cmd[@]}" -nodefaults -no-user-config -accel tcg -m 512M
    -smp "${VFSD_GUEST_CPUS:-1}"
    -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem
    "${devices[@]}"
    -kernel "$kernel" -initrd "$initrd"
    -append "console=ttyS0 loglevel=5 panic=-1 vfsdtag=$VFSD_TAG"
    -display none -serial stdio -monitor none)
  # The reboot check needs QEMU to reset the VM on a guest reboot; every other
  # run treats a reboot (e.g. after a panic) as the end.
  [[ $mode == reboot ]] || qemu+=(-no-reboot)
  # VFSD_QEMU_ARGS: more QEMU arguments (words), e.g. -qmp and -incoming of
  # the migration test.
  local -a qemu_extra=()
  [[ -n ${VFSD_QEMU_ARGS:-} ]] && read -r -a qemu_extra <<<"$VFSD_QEMU_ARGS"
  qemu+=("${qemu_extra[@]}")
  local pidfile=$log.qemu-pid
  qemu+=(-pidfile "$pidfile")
  rm -f "$pidfile" "$log.daemon-died"
  : >"$log"
  VFSD_BOOT_START=$EPOCHREALTIME
  # A daemon that dies leaves the guest waiting for replies forever: stop
  # QEMU a few seconds later instead of waiting for the time limit.
  # VFSD_DAEMON_PIDS lists several daemons (one per device); any one dying counts.
  local watcher="" watched=${VFSD_DAEMON_PIDS:-$VFSD_DAEMON_PID}
  if [[ -n $watched ]]; then
    (
      dead=""
      while [[ -z $dead ]]; do
        for p in $watched; do kill -0 "$p" 2>/dev/null || dead=$p; done
        [[ -n $dead ]] || sleep 1
      done
      sleep 5
      if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "daemon $dead exited while the guest was running" >"$log.daemon-died"
        kill "$(cat "$pidfile")" 2>/dev/null
      fi
    ) &
    watcher=$!
  fi
  local line errexit=0
  [[ $- == *e* ]] && errexit=1
  set +e
  timeout --kill-after=10 "$limit" "${prefix[@]}" "${qemu[@]}" </dev/null 2>&1 |
    while IFS= read -r line; do
      line=${line%$'\r'}
      printf '%s %s\n' "$EPOCHREALTIME" "$line" >>"$log"
      [[ ${VFSD_VERBOSE:-0} == 1 ]] && printf '  guest| %s\n' "$line" >&2
    done
  local rc=${PIPESTATUS[0]}
  if [[ -n $watcher ]]; then kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null; fi
  rm -f "$pidfile"
  ((errexit)) && set -e
  return "$rc"
}

# Prints the console lines (timestamps stripped) that start with $2.
vfsd_console_lines() {
  sed -n "s/^[0-9.]* \(${2}.*\)$/\1/p" "$1"
}
