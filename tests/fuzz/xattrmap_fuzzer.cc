// Target xattrmap: passthrough::XattrMap::parse (the --xattrmap grammar) and
// the translations of a parsed map.
//
// Input: frames, each one step. The frame's first byte says which:
//   0  parse the rest as a map (it replaces the current one on success;
//      a failure must come with a message)
//   1  translate the rest as a guest name (to_host)
//   2  translate the rest as a host name (to_guest)
// Every step runs against the identity map until a parse succeeds.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_common.h"
#include "passthrough/xattr_map.h"

using namespace vfsd;
using namespace vfsd::fuzz;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input input(data, size);
  passthrough::XattrMap map;
  std::span<const uint8_t> frame;
  while (input.frame(frame)) {
    if (frame.empty()) continue;
    std::string_view text(reinterpret_cast<const char*>(frame.data()) + 1, frame.size() - 1);
    switch (frame[0] % 3) {
      case 0: {
        std::string message;
        auto parsed = passthrough::XattrMap::parse(text, &message);
        if (parsed) {
          map = std::move(*parsed);
        } else {
          VFSD_FUZZ_CHECK(parsed.error().value == EINVAL && !message.empty());
          // The message is also optional.
          VFSD_FUZZ_CHECK(!passthrough::XattrMap::parse(text, nullptr));
        }
        break;
      }
      case 1: {
        auto host = map.to_host(text);
        if (map.empty()) VFSD_FUZZ_CHECK(host && *host == text);
        if (host && !text.empty()) VFSD_FUZZ_CHECK(!host->empty());
        break;
      }
      default: {
        auto guest = map.to_guest(text);
        if (map.empty()) VFSD_FUZZ_CHECK(guest && *guest == text);
        // A host name never becomes an empty guest name.
        if (guest && !text.empty()) VFSD_FUZZ_CHECK(!guest->empty());
        break;
      }
    }
  }
  return 0;
}
