// io_uring weighed against the daemon's data path: what one 4 KiB (or
// 1 MiB) read or write from the page cache costs as a preadv/pwritev, and as
// an io_uring READV/WRITEV when a batch of N requests is submitted with one
// io_uring_enter and reaped together, the best case for a daemon that has N
// requests in flight. The file sits on VFSD_URING_BENCH_DIR (default
// /dev/shm; give an ext4 folder to see a disk filesystem's page cache) and is
// written in full before timing, so it sits in the page cache and no request
// waits for a disk: that is what the protocol benchmark's read rows measure
// too.
//
//   build/bench/io_uring_bench [--benchmark_filter=...]
//
// Each benchmark reports per-operation time (items_per_second is ops/s).
// "fixed" rows register the fd with the ring (IOSQE_FIXED_FILE), which saves
// the per-request fd lookup and reference.
#include <fcntl.h>
#include <liburing.h>
#include <sys/uio.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

// One file of 64 MiB and N page-aligned buffers, as guest pages are.
class Fixture {
 public:
  Fixture(size_t io_size, int batch) : io_size_(io_size) {
    const char* dir = std::getenv("VFSD_URING_BENCH_DIR");
    path_ = std::string(dir != nullptr ? dir : "/dev/shm") + "/vfsd-uring-bench-XXXXXX";
    fd_ = mkstemp(path_.data());
    if (fd_ < 0 || ftruncate(fd_, kFileSize) != 0) {
      std::perror("io_uring_bench: file");
      std::exit(1);
    }
    std::vector<char> fill(1 << 20, 'x');
    for (off_t at = 0; at < kFileSize; at += static_cast<off_t>(fill.size())) {
      if (pwrite(fd_, fill.data(), fill.size(), at) != static_cast<ssize_t>(fill.size())) {
        std::perror("io_uring_bench: fill");
        std::exit(1);
      }
    }
    for (int i = 0; i < batch; ++i) {
      void* page = nullptr;
      if (posix_memalign(&page, 4096, io_size) != 0) std::exit(1);
      std::memset(page, 'y', io_size);
      buffers_.push_back({page, io_size});
    }
  }
  ~Fixture() {
    for (auto& b : buffers_) std::free(b.iov_base);
    close(fd_);
    unlink(path_.c_str());
  }
  Fixture(const Fixture&) = delete;
  Fixture& operator=(const Fixture&) = delete;

  int fd() const { return fd_; }
  iovec* buffer(int i) { return &buffers_[static_cast<size_t>(i)]; }
  // Request i of a batch reads its own slice of the file, as N guest
  // requests in flight touch N places.
  off_t offset(int i) const {
    return static_cast<off_t>((static_cast<size_t>(i) * io_size_) % kFileSize);
  }

 private:
  static constexpr off_t kFileSize = 64 << 20;
  size_t io_size_;
  std::string path_;
  int fd_ = -1;
  std::vector<iovec> buffers_;
};

enum class Op { kRead, kWrite };

void run_vectored(benchmark::State& state, Op op) {
  const auto size = static_cast<size_t>(state.range(0));
  const int batch = static_cast<int>(state.range(1));
  Fixture f(size, batch);
  for (auto _ : state) {
    for (int i = 0; i < batch; ++i) {
      const ssize_t n = op == Op::kRead ? preadv(f.fd(), f.buffer(i), 1, f.offset(i))
                                        : pwritev(f.fd(), f.buffer(i), 1, f.offset(i));
      if (n != static_cast<ssize_t>(size)) state.SkipWithError("short transfer");
    }
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

void run_uring(benchmark::State& state, Op op, bool fixed_file) {
  const auto size = static_cast<size_t>(state.range(0));
  const int batch = static_cast<int>(state.range(1));
  Fixture f(size, batch);
  io_uring ring{};
  if (int rc = io_uring_queue_init(static_cast<unsigned>(batch), &ring, 0); rc < 0) {
    state.SkipWithError(("io_uring_queue_init: " + std::string(std::strerror(-rc))).c_str());
    return;
  }
  int target = f.fd();
  if (fixed_file) {
    if (int rc = io_uring_register_files(&ring, &target, 1); rc < 0) {
      state.SkipWithError("io_uring_register_files failed");
      io_uring_queue_exit(&ring);
      return;
    }
    target = 0;
  }
  for (auto _ : state) {
    for (int i = 0; i < batch; ++i) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      if (op == Op::kRead) {
        io_uring_prep_readv(sqe, target, f.buffer(i), 1, static_cast<uint64_t>(f.offset(i)));
      } else {
        io_uring_prep_writev(sqe, target, f.buffer(i), 1, static_cast<uint64_t>(f.offset(i)));
      }
      if (fixed_file) sqe->flags |= IOSQE_FIXED_FILE;
    }
    if (io_uring_submit_and_wait(&ring, static_cast<unsigned>(batch)) != batch) {
      state.SkipWithError("io_uring_submit_and_wait");
      break;
    }
    unsigned head = 0;
    unsigned seen = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(&ring, head, cqe) {
      if (cqe->res != static_cast<int>(size)) state.SkipWithError("short transfer");
      ++seen;
    }
    io_uring_cq_advance(&ring, seen);
  }
  state.SetItemsProcessed(state.iterations() * batch);
  io_uring_queue_exit(&ring);
}

void BM_Preadv(benchmark::State& s) {
  run_vectored(s, Op::kRead);
}
void BM_Pwritev(benchmark::State& s) {
  run_vectored(s, Op::kWrite);
}
void BM_UringReadv(benchmark::State& s) {
  run_uring(s, Op::kRead, false);
}
void BM_UringWritev(benchmark::State& s) {
  run_uring(s, Op::kWrite, false);
}
void BM_UringReadvFixed(benchmark::State& s) {
  run_uring(s, Op::kRead, true);
}
void BM_UringWritevFixed(benchmark::State& s) {
  run_uring(s, Op::kWrite, true);
}

// {size, batch}: the depths the protocol benchmark runs (1, 16, 64).
void Shapes(benchmark::internal::Benchmark* b) {
  for (int64_t size : {4096, 1 << 20}) {
    for (int64_t batch : {1, 16, 64}) b->Args({size, batch});
  }
  b->ArgNames({"size", "batch"});
  // Wall time, not this thread's CPU: io_uring may hand a request to its
  // io-wq kernel threads, whose CPU the calling thread does not see.
  b->UseRealTime();
}

BENCHMARK(BM_Preadv)->Apply(Shapes);
BENCHMARK(BM_UringReadv)->Apply(Shapes);
BENCHMARK(BM_UringReadvFixed)->Apply(Shapes);
BENCHMARK(BM_Pwritev)->Apply(Shapes);
BENCHMARK(BM_UringWritev)->Apply(Shapes);
BENCHMARK(BM_UringWritevFixed)->Apply(Shapes);

}  // namespace

BENCHMARK_MAIN();
