// Replies that finish later. A request that must wait (SETLKW) cannot hold
// the worker that carried it: the transport hands out a DeferredReply that
// keeps the request's reply buffer alive, and whoever finishes the wait
// writes the reply and hands it back, from any thread.
// Pinned by: server_ops_test.cc(SetlkwTest.*), deferred_test.cc(Deferred.*),
// session_test.cc(SessionTest.DeferredSetlkwDoesNotHoldTheReader)
#pragma once

#include <cstddef>
#include <memory>

#include "util/iovec_io.h"

namespace vfsd {

class DeferredReply {
 public:
  virtual ~DeferredReply() = default;
  /// The request's reply buffer; valid until finish().
  virtual IovecWriter& writer() = 0;
  /// Returns the request to the transport with `bytes` written into
  /// writer(). Called exactly once, from any thread. If the transport went
  /// away meanwhile (ring stopped, device reset) this does nothing.
  virtual void finish(size_t bytes) = 0;
};

/// Offered by the transport with each request.
class ReplyDeferrer {
 public:
  virtual ~ReplyDeferrer() = default;
  /// Takes the request out of the transport's synchronous path: its reply is
  /// no longer sent when the handler returns but when the returned object's
  /// finish() is called. At most once per request.
  virtual std::unique_ptr<DeferredReply> defer() = 0;
};

}  // namespace vfsd
