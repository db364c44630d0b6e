// Shared by the libFuzzer targets: the input framing, a quiet logger, fd
// counting and a check that aborts with a message (a finding).
//
// Input framing. Every target reads its input as a few fixed configuration
// bytes followed by frames, each a little-endian u16 length and that many
// bytes; a frame is one request (FUSE request, vhost-user message, command
// line, ...), so one input carries a sequence of them. A truncated last
// frame is cut to the bytes present. Missing configuration bytes read as 0.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

namespace vfsd::fuzz {

using Bytes = std::vector<uint8_t>;

/// Most frames one input may carry: bounds the time one input takes.
inline constexpr size_t kMaxFrames = 512;

class Input {
 public:
  Input(const uint8_t* data, size_t size, size_t max_frames = kMaxFrames)
      : data_(data), size_(size), max_frames_(max_frames) {}

  uint8_t u8() {
    if (pos_ >= size_) return 0;
    return data_[pos_++];
  }
  uint16_t u16() {
    uint16_t lo = u8();
    return static_cast<uint16_t>(lo | (uint16_t{u8()} << 8));
  }
  uint32_t u32() {
    uint32_t lo = u16();
    return lo | (uint32_t{u16()} << 16);
  }

  /// The next frame; false when the input is used up or max_frames were read.
  bool frame(std::span<const uint8_t>& out) {
    if (pos_ >= size_ || frames_ >= max_frames_) return false;
    ++frames_;
    size_t len = u16();
    len = std::min(len, size_ - pos_);
    out = std::span<const uint8_t>(data_ + pos_, len);
    pos_ += len;
    return true;
  }

  /// Everything not read yet.
  std::span<const uint8_t> rest() const { return {data_ + pos_, size_ - pos_}; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t max_frames_;
  size_t pos_ = 0;
  size_t frames_ = 0;
};

/// Builds inputs in the format above (the seed generator).
class InputWriter {
 public:
  InputWriter& u8(uint8_t v) {
    out_.push_back(v);
    return *this;
  }
  InputWriter& u16(uint16_t v) {
    return u8(static_cast<uint8_t>(v)).u8(static_cast<uint8_t>(v >> 8));
  }
  InputWriter& u32(uint32_t v) {
    return u16(static_cast<uint16_t>(v)).u16(static_cast<uint16_t>(v >> 16));
  }
  InputWriter& raw(std::span<const uint8_t> bytes) {
    out_.insert(out_.end(), bytes.begin(), bytes.end());
    return *this;
  }
  /// One frame: `prefix` (per-frame control bytes) then `body`. Bodies longer
  /// than a frame holds are cut.
  InputWriter& frame(std::span<const uint8_t> prefix, std::span<const uint8_t> body) {
    size_t len = std::min<size_t>(prefix.size() + body.size(), UINT16_MAX);
    u16(static_cast<uint16_t>(len));
    size_t from_prefix = std::min(prefix.size(), len);
    raw(prefix.first(from_prefix));
    raw(body.first(len - from_prefix));
    return *this;
  }
  const Bytes& bytes() const { return out_; }
  size_t size() const { return out_.size(); }

 private:
  Bytes out_;
};

/// A finding: print why and abort (libFuzzer saves the input).
[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "vfsd-fuzz: invariant violated: %s\n", what);
  std::abort();
}
#define VFSD_FUZZ_CHECK(cond)                                \
  do {                                                       \
    if (!(cond)) ::vfsd::fuzz::die(#cond " (" __FILE__ ")"); \
  } while (0)

/// Every log line goes through formatting (so guest-chosen values meet the
/// formatter) and then nowhere: a fuzzer must not flood its output.
inline void quiet_logging() {
  auto logger =
      std::make_shared<spdlog::logger>("fuzz", std::make_shared<spdlog::sinks::null_sink_mt>());
  logger->set_level(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::trace);
}

/// Open fds of the process (without the one used to count).
inline int count_fds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(dir);
  return n - 1;
}

/// Prints every open fd and what it is (for an fd-leak report).
inline void print_fds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    char target[512] = {};
    std::string link = std::string("/proc/self/fd/") + e->d_name;
    ssize_t n = ::readlink(link.c_str(), target, sizeof(target) - 1);
    std::fprintf(stderr, "  fd %s -> %s\n", e->d_name, n > 0 ? target : "?");
  }
  ::closedir(dir);
}

}  // namespace vfsd::fuzz
