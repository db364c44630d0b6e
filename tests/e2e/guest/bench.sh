# Benchmark payload of bench/run_guest.sh (sourced by the init, busybox sh).
# /guest/env.sh sets BENCH_WORKLOAD (one workload per boot) and its
# parameters; the share already holds what the workload needs (the host
# prepared it before the boot: fio's file, the trees to list or remove), so the
# timed part starts on a fresh guest with cold caches.
# Prints "BENCH <key> <value>" lines: BENCH result <value> is the number the
# host tabulates (its unit depends on the workload), BENCH error <what> says
# the run is not worth counting, BENCH done 1 ends a run.
# Timings are guest uptime in centiseconds (TCG follows host wall time).
drop_caches() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
}
# bench_rate COUNT CENTISECONDS: COUNT per second, one decimal
bench_rate() {
  if [ "$2" -gt 0 ]; then
    echo "$(($1 * 1000 / $2))" | sed 's/\(.\)$/.\1/'
  else
    echo 0
  fi
}
bench_result() { echo "BENCH result $1"; }
bench_error() { echo "BENCH error $*"; }

# fio RW BS DEPTH JOBS: one time-based fio run on /mnt/fio.dat (O_DIRECT, so
# every request reaches the daemon); prints IOPS for 4 KiB, MiB/s for 1 MiB.
# Depth 1 uses psync (one pread/pwrite per request), deeper queues
# BENCH_FIO_ENGINE (libaio: FUSE serves O_DIRECT AIO asynchronously, so the
# depth reaches the daemon; io_uring hands FUSE files to a few blocking
# kernel workers instead).
bench_fio() {
  rw=$1 bs=$2 depth=$3 jobs=$4 engine=${BENCH_FIO_ENGINE:-libaio}
  [ "$depth" -gt 1 ] || engine=psync
  /guest/fio --name=bench --filename=/mnt/fio.dat --size="${BENCH_FIO_MIB}m" \
    --rw="$rw" --bs="$bs" --direct=1 --ioengine="$engine" --iodepth="$depth" \
    --numjobs="$jobs" --thread --group_reporting --time_based \
    --runtime="${BENCH_SECONDS}" --ramp_time=1 --randrepeat=0 --norandommap \
    --output-format=terse --terse-version=3 >/tmp/fio.out 2>/tmp/fio.err
  rc=$?
  if [ $rc -ne 0 ] || ! grep -q '^3;' /tmp/fio.out; then
    bench_error "fio exit $rc: $(tr '\n' ' ' </tmp/fio.err | cut -c1-300)"
    return
  fi
  # terse v3: field 7/8 read KiB/s and IOPS, 48/49 the same for writes
  case $rw in
    *read) f_bw=7 f_iops=8 ;;
    *) f_bw=48 f_iops=49 ;;
  esac
  line=$(grep '^3;' /tmp/fio.out | head -n 1)
  if [ "$bs" = 4k ]; then
    bench_result "$(echo "$line" | cut -d';' -f"$f_iops")"
  else
    kib=$(echo "$line" | cut -d';' -f"$f_bw")
    bench_result "$((kib / 1024))"
  fi
}

if ! vfsd_mount /mnt; then
  bench_error mount
  return 0
fi
echo "BENCH mounted_cs $(uptime_cs)"

case $BENCH_WORKLOAD in
  mount)
    # guest uptime at mount, in seconds (lower is better)
    bench_result "$(uptime_cs | sed 's/\(..\)$/.\1/')"
    ;;
  rand-read-4k-qd1) bench_fio randread 4k 1 1 ;;
  rand-read-4k-qd16) bench_fio randread 4k 16 1 ;;
  rand-read-4k-qd16-4j) bench_fio randread 4k 16 4 ;;
  rand-write-4k-qd1) bench_fio randwrite 4k 1 1 ;;
  rand-write-4k-qd16) bench_fio randwrite 4k 16 1 ;;
  rand-write-4k-qd16-4j) bench_fio randwrite 4k 16 4 ;;
  seq-read-1m) bench_fio read 1m 1 1 ;;
  seq-read-1m-4j) bench_fio read 1m 1 4 ;;
  seq-write-1m) bench_fio write 1m 1 1 ;;
  seq-write-1m-4j) bench_fio write 1m 1 4 ;;
  create-1000)
    # 1000 empty files (CREATE, FLUSH, RELEASE each): shell redirections, no
    # process per file
    mkdir /mnt/create || bench_error mkdir
    i=0 t0=$(uptime_cs)
    while [ $i -lt 1000 ]; do
      : >"/mnt/create/f$i" || { bench_error "create f$i"; break; }
      i=$((i + 1))
    done
    bench_result "$(bench_rate 1000 $(($(uptime_cs) - t0)))"
    ;;
  ls-l-1000)
    # ls -l of a folder of 1000 files the host made, page and dentry caches dropped
    drop_caches
    t0=$(uptime_cs)
    ls -l /mnt/ls >/tmp/ls.out || bench_error "ls -l"
    n=$(grep -c '^-' /tmp/ls.out)
    t=$(($(uptime_cs) - t0))
    [ "$n" = 1000 ] || bench_error "ls -l saw $n files"
    bench_result "$(bench_rate 1000 $t)"
    ;;
  neg-lookup-2000)
    # 2000 stat()s of distinct missing names (the shell's test builtin: no
    # process per name); each is a LOOKUP answered ENOENT
    i=0 t0=$(uptime_cs)
    while [ $i -lt 2000 ]; do
      [ -e "/mnt/missing-$i" ] && { bench_error "missing-$i exists"; break; }
      i=$((i + 1))
    done
    bench_result "$(bench_rate 2000 $(($(uptime_cs) - t0)))"
    ;;
  rm-rf-2000)
    # rm -rf of the host's tree of 2000 files in 40 folders
    t0=$(uptime_cs)
    rm -rf /mnt/tree || bench_error rm
    t=$(($(uptime_cs) - t0))
    [ -e /mnt/tree ] && bench_error "tree still there"
    bench_result "$(bench_rate 2000 $t)"
    ;;
  untar-2000)
    # untar 2000 small files (100 B..4 KiB, 40 folders) into the share, synced
    mkdir /mnt/untar || bench_error mkdir
    t0=$(uptime_cs)
    if ! tar xf /guest/small.tar -C /mnt/untar; then bench_error untar; fi
    sync
    bench_result "$(bench_rate 2000 $(($(uptime_cs) - t0)))"
    ;;
  find-2000)
    # find over the host's tree of 2000 files, caches dropped
    drop_caches
    t0=$(uptime_cs)
    n=$(find /mnt/tree -type f | wc -l)
    t=$(($(uptime_cs) - t0))
    [ "$n" = 2000 ] || bench_error "find saw $n files"
    bench_result "$(bench_rate 2000 $t)"
    ;;
  du-2000)
    drop_caches
    t0=$(uptime_cs)
    du -s /mnt/tree >/dev/null || bench_error du
    bench_result "$(bench_rate 2000 $(($(uptime_cs) - t0)))"
    ;;
  cp-file)
    # copy of the host-made fio file inside the share (read + write), synced
    drop_caches
    t0=$(uptime_cs)
    if ! cp /mnt/fio.dat /mnt/copy.dat; then bench_error copy; fi
    sync
    t=$(($(uptime_cs) - t0))
    rm -f /mnt/copy.dat
    bench_result "$(bench_rate "$BENCH_FIO_MIB" $t)"
    ;;
  memory)
    # for bench/run_guest.sh --memory: the host samples the daemon after each
    # marker while the guest sleeps
    echo "BENCH mem-mounted 1"
    sleep "$BENCH_MEM_WAIT"
    n=$(find /mnt/tree100k | wc -l)
    echo "BENCH mem-found $n"
    sleep "$BENCH_MEM_WAIT"
    bench_result "$n"
    ;;
  *) bench_error "unknown workload $BENCH_WORKLOAD" ;;
esac
umount /mnt
echo "BENCH done 1"
