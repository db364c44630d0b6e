#include "sandbox/capabilities.h"

#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "sandbox/rlimit.h"

namespace vfsd::sandbox {
namespace {

const std::set<std::string> kDefault = {"CHOWN",  "DAC_OVERRIDE", "FOWNER", "FSETID",
                                        "SETGID", "SETUID",       "MKNOD",  "SETFCAP"};

CapabilitySet set_of(std::string_view modcaps, bool handles = false) {
  std::string message;
  auto set = capability_set(modcaps, handles, message);
  EXPECT_TRUE(set) << message;
  return set ? *set : CapabilitySet{};
}

TEST(Modcaps, DefaultsAreTheRustVirtiofsdsAndFileHandlesAddDacReadSearch) {
  EXPECT_EQ(set_of("").keep, kDefault);
  auto with_handles = set_of("", true).keep;
  EXPECT_EQ(with_handles.count("DAC_READ_SEARCH"), 1u);
  with_handles.erase("DAC_READ_SEARCH");
  EXPECT_EQ(with_handles, kDefault);
}

TEST(Modcaps, PlusAddsMinusRemovesLastOneWinsAnyCase) {
  auto set = set_of("+sys_admin:-chown:-MKNOD:+cap_chown");
  EXPECT_EQ(set.keep.count("SYS_ADMIN"), 1u);
  EXPECT_EQ(set.keep.count("CHOWN"), 1u);  // removed, then added again
  EXPECT_EQ(set.keep.count("MKNOD"), 0u);
  EXPECT_EQ(set.removed, (std::set<std::string>{"MKNOD"}));
}

TEST(Modcaps, BadItemsAreUsageErrorsNamingTheProblem) {
  for (const char* bad : {":", "+chown:", "chown", "*chown", "+nosuchcap", "-", "+"}) {
    std::string message;
    auto set = capability_set(bad, false, message);
    EXPECT_FALSE(set) << bad;
    EXPECT_NE(message.find("--modcaps"), std::string::npos) << bad << ": " << message;
  }
  std::string message;
  EXPECT_FALSE(capability_set("-dac_read_search", true, message));
  EXPECT_NE(message.find("DAC_READ_SEARCH"), std::string::npos);
}

uint64_t status_field(const std::string& name) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + ":", 0) == 0)
      return std::stoull(line.substr(name.size() + 1), nullptr, 16);
  }
  return ~0ull;
}

// In a child: keep the default set; the effective, permitted and bounding
// sets are exactly it, for a thread started later too, and a capability not
// in it (CAP_SYS_ADMIN: mount) is gone.
TEST(DropCapabilities, KeepsExactlyTheSetForEveryLaterThread) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  pid_t child = ::fork();
  if (child == 0) {
    if (!drop_capabilities(set_of(""))) _exit(10);
    constexpr uint64_t kWant = (1ull << 0) | (1ull << 1) | (1ull << 3) | (1ull << 4) | (1ull << 6) |
                               (1ull << 7) | (1ull << 27) | (1ull << 31);
    if (status_field("CapEff") != kWant) _exit(11);
    if (status_field("CapPrm") != kWant) _exit(12);
    if (status_field("CapBnd") != kWant) _exit(13);
    uint64_t thread_eff = 0;
    std::thread([&] { thread_eff = status_field("CapEff"); }).join();
    if (thread_eff != kWant) _exit(14);
    if (::mount("none", "/mnt", "tmpfs", 0, nullptr) == 0 || errno != EPERM) _exit(15);
    _exit(0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(RlimitNofile, TheGuestBudgetIsTheLimitLessTheReserve) {
  const uint64_t reserve = kInternalFdReserve + kThreadFdReserve;
  EXPECT_EQ(guest_fd_budget(1'000'000), 1'000'000 - reserve);
  EXPECT_EQ(guest_fd_budget(reserve + 2), 2u);
  EXPECT_EQ(guest_fd_budget(reserve), 1u);
  EXPECT_EQ(guest_fd_budget(0), 1u);
}

TEST(RlimitNofile, SetsLeavesAndRefuses) {
  pid_t child = ::fork();
  if (child == 0) {
    std::string message;
    auto set = set_up_rlimit_nofile(uint64_t{4096}, message);
    if (!set || *set != 4096) _exit(10);
    auto left = set_up_rlimit_nofile(uint64_t{0}, message);
    if (!left || *left != 4096) _exit(11);
    // Above /proc/sys/fs/nr_open: refused, naming the option.
    auto huge = set_up_rlimit_nofile(uint64_t{1} << 40, message);
    if (huge || message.find("--rlimit-nofile") == std::string::npos) _exit(12);
    _exit(0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace vfsd::sandbox
