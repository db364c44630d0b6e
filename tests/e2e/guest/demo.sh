# The demo's guest side (sourced by the init, busybox sh): mount the share,
# list it, write a greeting the host will show, power off.
say() { echo "guest> $*"; }
say "Linux $(uname -r) booted in $(uptime_cs | sed 's/..$/.&/')s; mounting the virtio-fs tag '${vfsdtag:-share}' on /mnt"
if ! vfsd_mount /mnt; then
  echo "DEMO FAIL mount"
  return 0
fi
say "$(grep ' /mnt ' /proc/mounts)"
say "ls -la /mnt"
ls -la /mnt
say "cat /mnt/hello.txt"
cat /mnt/hello.txt
say "df -h /mnt"
df -h /mnt
say "writing /mnt/from-guest.txt"
{
  echo "Hello from the guest!"
  echo "guest kernel: $(uname -r)"
  echo "written after $(uptime_cs | sed 's/..$/.&/')s of guest uptime"
} >/mnt/from-guest.txt
sync
umount /mnt
echo "DEMO OK"
