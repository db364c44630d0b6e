// The daemon's side of a live migration, as the vhost-user back-end asks for
// it (DeviceStateHandler): the FUSE session and the passthrough's inodes and
// handles, in the versioned format of migration/state.h, with the
// --migration-* options applied.
// Pinned by: migration_test.cc(MigrationTest.*)
#pragma once

#include "app/config.h"
#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "vhost_user/backend.h"

namespace vfsd::app {

class MigrationHandler final : public vhost_user::DeviceStateHandler {
 public:
  MigrationHandler(fuse::Server& server, passthrough::PassthroughFs& fs,
                   const Config::Migration& options);

  void migration_started() override;
  void migration_ended() override;
  Result<std::vector<uint8_t>> save_state() override;
  VoidResult load_state(std::span<const uint8_t> state) override;

 private:
  fuse::Server& server_;
  passthrough::PassthroughFs& fs_;
  passthrough::PassthroughFs::MigrationOptions options_;
};

}  // namespace vfsd::app
