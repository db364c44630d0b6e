// Joins the transport-independent FUSE server to the virtqueues: each chain
// a queue worker pops is one FUSE request, its writable part the reply.
#pragma once

#include "fuse/server.h"
#include "virtio/queue.h"

namespace vfsd::app {

class FuseRequestHandler final : public virtio::RequestHandler {
 public:
  explicit FuseRequestHandler(fuse::Server& server) : server_(server) {}
  uint32_t handle(uint32_t /*queue_index*/, IovecReader& request, IovecWriter& reply,
                  ReplyDeferrer* deferrer) override {
    // The reply never exceeds the chain's writable part, which the queue
    // bounded to 32 bits, so the narrowing is lossless.
    return static_cast<uint32_t>(server_.handle(request, reply, deferrer));
  }

 private:
  fuse::Server& server_;
};

}  // namespace vfsd::app
