// Target fuse_fake: fuse::Server::handle over FakeFs (no host access), one
// fresh server per input, the input a sequence of requests.
//
// Input: one configuration byte, then frames (fuse_driver.h: room byte,
// segment byte, request bytes).
//   bit 0  the harness sends an INIT first (bits 1 and 7 pick the guest)
//   bit 1  that INIT is a Linux 6.12 guest's (7.40), else a 6.1 guest's
//   bit 2  ServerOptions::readdirplus
//   bit 3  max_write of 4 KiB instead of 1 MiB
//   bit 4  no deferrer: SETLKW waits on the calling thread
//   bit 5  the filesystem requires POSIX_ACL | DONT_MASK | SETXATTR_EXT
//   bit 6  the filesystem wants no INIT flags at all
//   bit 7  with bit 0: a 7.37 guest with FUSE_SECURITY_CTX (context in the body)
#include <cstddef>
#include <cstdint>

#include "fake_fs.h"
#include "fuse/server.h"
#include "fuse_driver.h"
#include "fuzz_common.h"
#include "guest_init.h"

using namespace vfsd;
using namespace vfsd::fuzz;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static DeferredLedger ledger;
  Input input(data, size);
  const uint8_t config = input.u8();

  FakeFs::Options fs_options;
  fs_options.park_setlkw = (config & 16) == 0;
  fs_options.max_write = (config & 8) ? 4096 : 1u << 20;
  if (config & 32) fs_options.required_flags = FUSE_POSIX_ACL | FUSE_DONT_MASK | FUSE_SETXATTR_EXT;
  if (config & 64) fs_options.wanted_flags = 0;
  FakeFs fs(fs_options);

  fuse::ServerOptions options;
  options.readdirplus = (config & 4) != 0;
  options.max_write = fs_options.max_write;
  fuse::Server server(fs, options);
  FuseDriver driver(server, ledger, fs_options.park_setlkw);

  if (config & 1) {
    GuestKind kind = (config & 128) ? GuestKind::kLegacy
                     : (config & 2) ? GuestKind::kLinux612
                                    : GuestKind::kLinux61;
    Bytes init = guest_init(1, kind);
    driver.run(init, 4096, 0, 0, false);
  }
  std::span<const uint8_t> frame;
  while (input.frame(frame)) driver.run_frame(frame);

  fs.finish_parked();
  VFSD_FUZZ_CHECK(ledger.outstanding() == 0);
  return 0;
}
