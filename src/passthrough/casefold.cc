#include "passthrough/casefold.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace vfsd::passthrough {
namespace {

char fold(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// A raw linux_dirent64 record as getdents64 writes it.
struct Dirent64Header {
  uint64_t d_ino;
  int64_t d_off;
  uint16_t d_reclen;
  uint8_t d_type;
};
constexpr size_t kNameOffset = offsetof(Dirent64Header, d_type) + 1;

}  // namespace

bool ascii_equal_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (fold(a[i]) != fold(b[i])) return false;
  }
  return true;
}

Result<std::string> find_ascii_casefold_match(int dir_fd, std::string_view name,
                                              bool (*hidden)(std::string_view),
                                              size_t max_entries) {
  if (::lseek(dir_fd, 0, SEEK_SET) < 0) return fail_errno();
  std::vector<char> buffer(16 * 1024);
  size_t seen = 0;
  for (;;) {
    long n = ::syscall(SYS_getdents64, dir_fd, buffer.data(), buffer.size());
    if (n < 0) return fail_errno();
    if (n == 0) return fail(ENOENT);
    for (size_t pos = 0; pos < static_cast<size_t>(n);) {
      Dirent64Header header;
      std::memcpy(&header, buffer.data() + pos, sizeof(header));
      if (header.d_reclen <= kNameOffset || pos + header.d_reclen > static_cast<size_t>(n)) {
        return fail(EIO);
      }
      const char* raw = buffer.data() + pos + kNameOffset;
      std::string_view entry(raw, ::strnlen(raw, header.d_reclen - kNameOffset));
      pos += header.d_reclen;
      if (++seen > max_entries) return fail(ENOENT);
      if (entry == "." || entry == "..") continue;
      if (hidden && hidden(entry)) continue;
      if (ascii_equal_ignoring_case(entry, name)) return std::string(entry);
    }
  }
}

}  // namespace vfsd::passthrough
