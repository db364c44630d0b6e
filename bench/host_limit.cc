// host_limit: the host's own rate for each bench/vhost_load workload, the
// ceiling no daemon can beat: the fewest syscalls a passthrough daemon needs
// for one operation, made directly on the same files, one thread, in a loop
// for --seconds. No FUSE, no rings, no thread hand-off, no sandbox.
//
//   host_limit --dir SHARED_DIR --workload W [--seconds S]
//
// prints one line in vhost_load's format:
//
//   workload 1 1 host ops_per_s mean_us mean_us cpu_us_per_op errors
//
// (no per-operation clock reads, which would cost as much as a getattr: both
// latency fields are the mean, 1 / rate; the CPU field is this process's
// own CPU time per operation).
//
// What one operation is, per workload (ROOT: an O_PATH fd of the shared
// directory, F: an O_PATH fd of ROOT/f, FD: ROOT/f opened O_RDWR):
//
//   getattr      statx(ROOT, "", AT_EMPTY_PATH)
//   lookup       openat(ROOT, "f", O_PATH|O_NOFOLLOW) + statx(fd, "",
//                AT_EMPTY_PATH) + close
//   lookup-miss  fstatat(ROOT, "missing-N", AT_SYMLINK_NOFOLLOW), N cycling
//                through vhost_load's kMissNames names (ENOENT)
//   open         openat(/proc/self/fd, "F", O_RDONLY) + close: the reopen
//                of an O_PATH fd through /proc, as passthrough OPEN does
//   create       openat(ROOT, "c-N", O_CREAT|O_EXCL|O_RDWR) + close +
//                unlinkat(ROOT, "c-N")
//   read-4k/1m   pread(FD, 4 KiB / 1 MiB, offset 0)
//   write-4k/1m  pwrite(FD, 4 KiB / 1 MiB, offset 0)
//                (into and from a page-aligned buffer, as guest pages are:
//                a misaligned destination makes the kernel's copy several
//                times slower on this machine)
//   readdirplus  openat(ROOT, "d", O_RDONLY|O_DIRECTORY) + getdents64 (32 KiB
//                buffer) until the end + fstatat(dirfd, name,
//                AT_SYMLINK_NOFOLLOW) for every entry but . and .. + close
//                (one operation = the whole 10 000-entry directory)
#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

int must(int fd, const char* what) {
  if (fd < 0) throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
  return fd;
}

// lookup-miss: as many missing names as bench/vhost_load cycles through.
constexpr uint64_t kMissNames = 4096;

// Writes `v` as exactly `width` decimal digits.
void put_digits(char* p, int width, uint64_t v) {
  for (int i = width - 1; i >= 0; --i) {
    p[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
}

double self_cpu_us() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

struct linux_dirent64_head {
  uint64_t d_ino;
  int64_t d_off;
  uint16_t d_reclen;
  uint8_t d_type;
};

}  // namespace

int main(int argc, char** argv) try {
  std::string dir, workload = "getattr";
  double seconds = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "usage: host_limit --dir DIR --workload W [--seconds S]\n");
      return 2;
    }
    if (a == "--dir") {
      dir = argv[++i];
    } else if (a == "--workload") {
      workload = argv[++i];
    } else if (a == "--seconds") {
      seconds = std::stod(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: host_limit --dir DIR --workload W [--seconds S]\n");
      return 2;
    }
  }
  if (dir.empty()) throw std::runtime_error("--dir is needed");
  const int root = must(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC), "open DIR");
  const int proc = must(::open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC), "/proc/self/fd");
  const int fpath = must(::openat(root, "f", O_PATH | O_NOFOLLOW | O_CLOEXEC), "open f O_PATH");
  const int frw = must(::openat(root, "f", O_RDWR | O_CLOEXEC), "open f");
  const std::string fpath_name = std::to_string(fpath);
  constexpr size_t kBufferBytes = 1 << 20;
  std::unique_ptr<char, decltype(&std::free)> buffer(
      static_cast<char*>(std::aligned_alloc(4096, kBufferBytes)), &std::free);
  if (!buffer) throw std::runtime_error("out of memory");
  std::memset(buffer.get(), 'x', kBufferBytes);
  std::span<char> buf(buffer.get(), kBufferBytes);
  std::vector<char> dents(32 << 10);
  char miss[] = "missing-0000000000000000";
  char created[] = "c-0000000000000000";
  struct statx stx {};
  struct stat st {};

  uint64_t ops = 0, errors = 0, serial = 0;
  // One operation; returns false on an unexpected result.
  auto op = [&]() -> bool {
    if (workload == "getattr") {
      return ::statx(root, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) == 0;
    }
    if (workload == "lookup") {
      const int fd = ::openat(root, "f", O_PATH | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) return false;
      const bool ok = ::statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) == 0;
      ::close(fd);
      return ok;
    }
    if (workload == "lookup-miss") {
      put_digits(miss + 8, 16, ++serial % kMissNames);
      return ::fstatat(root, miss, &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT;
    }
    if (workload == "open") {
      const int fd = ::openat(proc, fpath_name.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return false;
      ::close(fd);
      return true;
    }
    if (workload == "create") {
      put_digits(created + 2, 16, ++serial);
      const int fd = ::openat(root, created, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
      if (fd < 0) return false;
      ::close(fd);
      return ::unlinkat(root, created, 0) == 0;
    }
    if (workload == "read-4k" || workload == "read-1m") {
      const size_t n = workload == "read-4k" ? 4096 : 1 << 20;
      return ::pread(frw, buf.data(), n, 0) == static_cast<ssize_t>(n);
    }
    if (workload == "write-4k" || workload == "write-1m") {
      const size_t n = workload == "write-4k" ? 4096 : 1 << 20;
      return ::pwrite(frw, buf.data(), n, 0) == static_cast<ssize_t>(n);
    }
    if (workload == "readdirplus") {
      const int d = ::openat(root, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (d < 0) return false;
      bool ok = true;
      for (;;) {
        const long n = ::syscall(SYS_getdents64, d, dents.data(), dents.size());
        if (n <= 0) {
          ok = n == 0;
          break;
        }
        for (long pos = 0; pos < n;) {
          linux_dirent64_head h;
          std::memcpy(&h, dents.data() + pos, sizeof h);
          const char* name = dents.data() + pos + offsetof(struct dirent64, d_name);
          const bool dot = name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0));
          if (!dot && ::fstatat(d, name, &st, AT_SYMLINK_NOFOLLOW) != 0) ok = false;
          pos += h.d_reclen;
        }
      }
      ::close(d);
      return ok;
    }
    throw std::runtime_error("unknown workload " + workload);
  };

  // Clock reads every `batch` operations only (far cheaper than one getattr
  // in total); one per operation for the slow ones.
  const bool slow = workload == "read-1m" || workload == "write-1m" || workload == "readdirplus";
  const uint64_t batch = slow ? 1 : 256;
  const double cpu0 = self_cpu_us();
  const auto t0 = Clock::now();
  const auto end =
      t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  do {
    for (uint64_t i = 0; i < batch; ++i) {
      if (!op()) ++errors;
      ++ops;
    }
  } while (Clock::now() < end);
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  const double cpu = self_cpu_us() - cpu0;
  const double rate = static_cast<double>(ops) / elapsed;
  std::printf("%s 1 1 host %.0f %.3f %.3f %.2f %llu\n", workload.c_str(), rate, 1e6 / rate,
              1e6 / rate, cpu / static_cast<double>(ops), static_cast<unsigned long long>(errors));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "host_limit: %s\n", e.what());
  return 1;
}
