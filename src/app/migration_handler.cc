#include "app/migration_handler.h"

#include "migration/state.h"
#include "util/log.h"

#include <system_error>

namespace vfsd::app {

MigrationHandler::MigrationHandler(fuse::Server& server, passthrough::PassthroughFs& fs,
                                   const Config::Migration& options)
    : server_(server), fs_(fs) {
  options_.file_handles = options.mode == "file-handles";
  options_.verify_handles = options.verify_handles;
  options_.abort_on_error = options.on_error != "guest-error";
}

MigrationHandler::~MigrationHandler() {
  stop_preparation();
}

void MigrationHandler::stop_preparation() {
  cancel_preparation_.store(true, std::memory_order_relaxed);
  if (preparation_.joinable()) preparation_.join();
}

void MigrationHandler::migration_started() {
  stop_preparation();
  log::info("migration: started ({} mode); preparing",
            options_.file_handles ? "file-handles" : "find-paths");
  cancel_preparation_.store(false, std::memory_order_relaxed);
  try {
    preparation_ = std::thread([this] { fs_.prepare_migration(options_, cancel_preparation_); });
  } catch (const std::system_error&) {
    // No thread: the switch-over finds every path itself.
    log::warn("migration: no thread for the preparation; the switch-over does it all");
  }
}

void MigrationHandler::migration_ended() {
  stop_preparation();
  fs_.drop_migration_preparation();
  log::info("migration: ended (dirty logging off)");
}

Result<std::vector<uint8_t>> MigrationHandler::save_state() {
  // What preparation found so far is used; the rest is found now.
  stop_preparation();
  migration::State state;
  state.session = server_.session_state();
  if (state.session.open) VFSD_TRY(fs_.save_migration_state(options_, state));
  if (!state.session.open) {
    // The guest never mounted the share: only the root, with no references.
    state.inodes.push_back(migration::InodeRecord{.id = migration::kRootInodeId, .type = S_IFDIR});
    state.next_inode_id = 2;
    state.next_handle_id = 1;
  }
  return migration::encode(state);
}

VoidResult MigrationHandler::load_state(std::span<const uint8_t> bytes) {
  auto state = migration::decode(bytes);
  if (!state) {
    log::error("migration: the source's state is refused: {}", state.error().message);
    return fail(EINVAL);
  }
  VFSD_TRY(server_.restore_session(state->session));
  if (!state->session.open) return ok();
  if (auto loaded = fs_.load_migration_state(options_, *state); !loaded) {
    server_.end_session();
    return loaded;
  }
  return ok();
}

}  // namespace vfsd::app
