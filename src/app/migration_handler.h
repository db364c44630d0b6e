// The daemon's side of a live migration, as the vhost-user back-end asks for
// it (DeviceStateHandler): the FUSE session and the passthrough's inodes and
// handles, in the versioned format of migration/state.h, with the
// --migration-* options applied.
// Pinned by: migration_test.cc(MigrationTest.*)
#pragma once

#include <atomic>
#include <thread>

#include "app/config.h"
#include "fuse/server.h"
#include "passthrough/passthrough_fs.h"
#include "vhost_user/backend.h"

namespace vfsd::app {

class MigrationHandler final : public vhost_user::DeviceStateHandler {
 public:
  MigrationHandler(fuse::Server& server, passthrough::PassthroughFs& fs,
                   const Config::Migration& options);
  ~MigrationHandler() override;  // ends a preparation still running
  MigrationHandler(const MigrationHandler&) = delete;
  MigrationHandler& operator=(const MigrationHandler&) = delete;

  void migration_started() override;
  void migration_ended() override;
  Result<std::vector<uint8_t>> save_state() override;
  VoidResult load_state(std::span<const uint8_t> state) override;

 private:
  fuse::Server& server_;
  passthrough::PassthroughFs& fs_;
  // Ends the preparation thread, if one runs, and waits for it.
  void stop_preparation();

  passthrough::PassthroughFs::MigrationOptions options_;
  std::atomic<bool> cancel_preparation_{false};
  std::thread preparation_;  // from migration_started() until the switch-over or the end
};

}  // namespace vfsd::app
