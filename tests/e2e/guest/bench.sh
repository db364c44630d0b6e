# Benchmark payload (sourced by the init, busybox sh). Prints "BENCH key value"
# lines; times are centiseconds of guest uptime (TCG follows host wall time).
# BENCH_MIB (from /guest/env.sh) is the size of the sequential file.
drop_caches() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
}
if ! vfsd_mount /mnt; then
  echo "BENCH error mount"
  return 0
fi
echo "BENCH mounted_cs $(uptime_cs)"
n=${BENCH_MIB:-256}

# sequential write; fsync so the time includes getting it to the daemon
t0=$(uptime_cs)
dd if=/dev/zero of=/mnt/seq.bin bs=1M count="$n" conv=fsync 2>/dev/null || echo "BENCH error write"
echo "BENCH write_cs $(($(uptime_cs) - t0))"
# sequential read with an empty page cache, so the daemon serves every byte
drop_caches
t0=$(uptime_cs)
dd if=/mnt/seq.bin of=/dev/null bs=1M 2>/dev/null || echo "BENCH error read"
echo "BENCH read_cs $(($(uptime_cs) - t0))"
# large-file copy inside the share (read + write)
drop_caches
t0=$(uptime_cs)
cp /mnt/seq.bin /mnt/seq-copy.bin && sync || echo "BENCH error copy"
echo "BENCH copy_cs $(($(uptime_cs) - t0))"
rm -f /mnt/seq.bin /mnt/seq-copy.bin

# small files: untar a tree of 2000 small files, find, du, remove
t0=$(uptime_cs)
mkdir /mnt/small && tar xf /guest/small.tar -C /mnt/small && sync || echo "BENCH error untar"
echo "BENCH untar_cs $(($(uptime_cs) - t0))"
drop_caches
t0=$(uptime_cs)
c=$(find /mnt/small -type f | wc -l)
echo "BENCH find_cs $(($(uptime_cs) - t0))"
echo "BENCH find_count $c"
drop_caches
t0=$(uptime_cs)
du -s /mnt/small >/dev/null || echo "BENCH error du"
echo "BENCH du_cs $(($(uptime_cs) - t0))"
t0=$(uptime_cs)
rm -rf /mnt/small || echo "BENCH error rm"
echo "BENCH rm_cs $(($(uptime_cs) - t0))"
umount /mnt
echo "BENCH done 1"
