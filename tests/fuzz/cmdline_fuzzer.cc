// Target cmdline: app::parse_command_line, the daemon's whole command line
// (CLI11 options, the legacy -o form, --xattrmap validation).
//
// Input: frames (at most 8), each one command line: its arguments separated
// by NUL bytes (at most 64; argv[0] is "virtiofsd"). Whatever the parser prints
// (help, version, usage errors) goes to /dev/null; sanitizer reports still
// reach the real stderr. The parser must return, never exit.
#include <fcntl.h>
#include <sanitizer/common_interface_defs.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "app/config.h"
#include "fuzz_common.h"

using namespace vfsd;
using namespace vfsd::fuzz;

namespace {
int g_null = -1;
int g_stdout = -1;
int g_stderr = -1;

// Points fds 1 and 2 at /dev/null for the parser, and back.
void silence(bool on) {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(stdout);
  std::fflush(stderr);
  ::dup2(on ? g_null : g_stdout, 1);
  ::dup2(on ? g_null : g_stderr, 2);
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_logging();
  g_null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  g_stdout = ::fcntl(1, F_DUPFD_CLOEXEC, 3);
  g_stderr = ::fcntl(2, F_DUPFD_CLOEXEC, 3);
  __sanitizer_set_report_fd(reinterpret_cast<void*>(static_cast<intptr_t>(g_stderr)));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A parse costs about a millisecond (CLI11 builds its whole parser): a
  // few command lines per input keep the target fast.
  Input input(data, size, 8);
  std::span<const uint8_t> frame;
  while (input.frame(frame)) {
    std::vector<std::string> args{"virtiofsd"};
    std::string current;
    for (uint8_t c : frame) {
      if (c == 0) {
        args.push_back(std::move(current));
        current.clear();
        if (args.size() >= 64) break;
      } else {
        current.push_back(static_cast<char>(c));
      }
    }
    if (!current.empty() && args.size() < 64) args.push_back(std::move(current));
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    argv.push_back(nullptr);

    silence(true);
    auto outcome = app::parse_command_line(static_cast<int>(args.size()), argv.data());
    silence(false);
    if (outcome.config) VFSD_FUZZ_CHECK(outcome.exit_code == 0);
  }
  return 0;
}
