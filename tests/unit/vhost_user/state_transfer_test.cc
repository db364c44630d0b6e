#include "vhost_user/state_transfer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>

#include <chrono>
#include <thread>
#include <vector>

namespace vfsd::vhost_user {
namespace {

struct Pipe {
  Pipe() {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    read_end.reset(p[0]);
    write_end.reset(p[1]);
  }
  UniqueFd read_end, write_end;
};

std::vector<uint8_t> pattern(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + 3);
  return v;
}

TEST(StateTransfer, SaveWritesEverythingAndClosesItsEnd) {
  Pipe pipe;
  const auto state = pattern(1 << 20);  // more than a pipe holds: the thread waits for us
  auto transfer = StateTransfer::save(std::move(pipe.write_end), state);
  ASSERT_TRUE(transfer.has_value());
  std::vector<uint8_t> got;
  uint8_t buf[65536];
  for (ssize_t n; (n = ::read(pipe.read_end.get(), buf, sizeof buf)) > 0;)
    got.insert(got.end(), buf, buf + n);
  EXPECT_EQ(got, state) << "all bytes, then EOF";
  EXPECT_TRUE((*transfer)->finish().has_value());
}

TEST(StateTransfer, SaveToAReaderThatQuitFailsWithEpipe) {
  ::signal(SIGPIPE, SIG_IGN);  // as the daemon does (main.cc)
  Pipe pipe;
  pipe.read_end.reset();
  auto transfer = StateTransfer::save(std::move(pipe.write_end), pattern(100));
  ASSERT_TRUE(transfer.has_value());
  auto done = (*transfer)->finish();
  ASSERT_FALSE(done.has_value());
  EXPECT_EQ(done.error().value, EPIPE);
}

TEST(StateTransfer, LoadReadsToEof) {
  Pipe pipe;
  auto transfer = StateTransfer::load(std::move(pipe.read_end));
  ASSERT_TRUE(transfer.has_value());
  const auto state = pattern(300000);
  std::thread writer([&] {
    size_t done = 0;
    while (done < state.size()) {
      ssize_t n = ::write(pipe.write_end.get(), state.data() + done, state.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    pipe.write_end.reset();
  });
  auto got = (*transfer)->finish();
  writer.join();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, state);
}

TEST(StateTransfer, LoadPastTheLimitFails) {
  Pipe pipe;
  auto transfer = StateTransfer::load(std::move(pipe.read_end), 1000);
  ASSERT_TRUE(transfer.has_value());
  const auto state = pattern(1001);
  ASSERT_EQ(::write(pipe.write_end.get(), state.data(), state.size()), 1001);
  pipe.write_end.reset();
  auto got = (*transfer)->finish();
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().value, EFBIG);
}

TEST(StateTransfer, AFrontEndThatNeverWritesCannotHangTheDaemon) {
  Pipe pipe;  // the write end stays open and silent
  auto transfer = StateTransfer::load(std::move(pipe.read_end));
  ASSERT_TRUE(transfer.has_value());
  const auto start = std::chrono::steady_clock::now();
  (*transfer)->cancel();
  auto got = (*transfer)->finish();
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().value, ECANCELED);
  // And the destructor of a transfer nobody finished does not block either.
  Pipe other;
  {
    auto abandoned = StateTransfer::save(std::move(other.write_end), pattern(1 << 20));
    ASSERT_TRUE(abandoned.has_value());
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

}  // namespace
}  // namespace vfsd::vhost_user
