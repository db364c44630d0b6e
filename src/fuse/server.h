// The FUSE protocol server: decodes one request, dispatches it to a
// FileSystem, encodes the reply. It knows the wire format (<linux/fuse.h>)
// and nothing about the transport that carried the bytes.
//
// Everything in a request is hostile: lengths, counts, names and offsets are
// checked against the bytes actually present before use, and every struct is
// copied out of the request before it is looked at.
// Pinned by: server_test.cc(MalformedTest.*), fuse_fake_fuzzer.cc,
// guest_sized_allocation_test.cc(GuestSizedAllocationTest.*)
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string_view>

#include "fuse/filesystem.h"
#include "fuse/session_gate.h"
#include "migration/state.h"
#include "util/deferred_reply.h"
#include "util/iovec_io.h"
#include "util/metrics.h"

namespace vfsd::fuse {

namespace detail {
class Request;  // one request being decoded; defined in server.cc
struct Op;      // what the server knows about one opcode; defined in server.cc
}  // namespace detail

struct ServerOptions {
  uint32_t max_write = 1u << 20;  // bytes; FUSE_MAX_PAGES lets the guest use it
  uint32_t max_pages = 256;
  bool readdirplus = true;  // negotiate FUSE_DO_READDIRPLUS + FUSE_READDIRPLUS_AUTO
  // Where every request's latency and outcome are recorded, in the slot of
  // its opcode (op_names()); null: nothing is measured. Not owned; must
  // outlive the Server.
  metrics::RequestMetrics* metrics = nullptr;
};

/// The name of each metrics slot: the opcode's name without FUSE_ for the
/// opcodes the server knows ("UNKNOWN" for the others; every opcode it does
/// not know is counted in slot 0).
const std::array<std::string_view, metrics::kOpSlots>& op_names();

class Server {
 public:
  Server(FileSystem& fs, ServerOptions options);

  /// Handles one request read from `request` and writes the reply into `reply`.
  /// Returns the number of reply bytes written (0: no reply, e.g. FORGET, or no
  /// room for a header, or a reply deferred through `deferrer`).
  ///
  /// A request that must wait (SETLKW) calls `deferrer->defer()` and returns
  /// 0; its reply is written and finished later, possibly from another thread
  /// and possibly before handle() returns. Without a deferrer such a request
  /// blocks the calling thread until the wait ends (a fallback for
  /// transports with a thread per request).
  /// Thread-safe: called concurrently from several queue workers.
  /// Pinned by: server_ops_test.cc(SetlkwTest.*), server_test.cc(OpTest.ConcurrentRequests,
  ///   MalformedTest.ReplyTooSmallForHeaderGivesNoReply)
  size_t handle(IovecReader& request, IovecWriter& reply, ReplyDeferrer* deferrer = nullptr);

  /// Ends the open session as a DESTROY would (the filesystem drops every
  /// inode and handle of it), without a request: the transport lost its
  /// guest (a frontend disconnected) and the next one starts with INIT.
  /// Waits for requests in flight; a no-op without a session.
  /// Pinned by: reconnect_test.cc(ReconnectTest.SocketPathServesASecondFrontendWithAFreshSession)
  void end_session();

  /// The open session, for a migration's source (open = false without one).
  /// Call while no request runs (the rings are stopped).
  migration::SessionState session_state() const;
  /// A migration's destination: opens the session the source's guest
  /// agreed, without an INIT (the guest sends none: it goes on where it
  /// was). The filesystem's init() runs with the agreed flags as the guest's
  /// offer; EPROTO (logged) when this daemon's options would not agree to
  /// the same flags or sizes, EBUSY when a session is open already.
  /// Pinned by: migration_test.cc(MigrationTest.*)
  VoidResult restore_session(const migration::SessionState& state);

  /// Whether a session is open (INIT answered, no DESTROY since).
  bool initialized() const { return initialized_.load(std::memory_order_acquire); }

  /// The FUSE_* flags agreed at the last successful INIT (64-bit: flags2 in
  /// the upper half).
  uint64_t agreed_flags() const { return agreed_flags_.load(std::memory_order_acquire); }

  /// A session reset (INIT on an open session, DESTROY) is waiting for the
  /// requests in flight, or running. For tests and diagnostics.
  bool resetting() const { return gate_.closing(); }

  /// Requests inside the session now (decoded and not yet answered or
  /// deferred). For diagnostics.
  uint64_t requests_in_flight() const { return gate_.in_flight(); }

 private:
  // What handle() tells the metrics about one request.
  struct Outcome {
    size_t slot = 0;
    bool failed = false;
  };
  size_t serve(IovecReader& request, IovecWriter& reply, ReplyDeferrer* deferrer, Outcome& outcome);
  size_t dispatch(detail::Request& req, const detail::Op& op);
  size_t do_init(detail::Request& req);
  size_t do_destroy(detail::Request& req);
  // DESTROY's work: false if no session was open.
  bool close_session();

  FileSystem& fs_;
  const ServerOptions options_;
  const size_t max_request_len_;  // longer requests are refused (EINVAL)
  // Serialises INIT and DESTROY against each other.
  std::mutex session_mutex_;
  // Every other request holds a pass while it runs; INIT and DESTROY close
  // the gate around the filesystem's destroy()/init().
  SessionGate gate_;
  std::atomic<bool> initialized_{false};
  // Written by INIT before initialized_ is published; read by requests after
  // they saw initialized_ (acquire), so they see this session's values.
  std::atomic<uint64_t> agreed_flags_{0};
  std::atomic<uint32_t> guest_minor_{0};
};

}  // namespace vfsd::fuse
