#include "app/migration_handler.h"

#include "migration/state.h"
#include "util/log.h"

namespace vfsd::app {

MigrationHandler::MigrationHandler(fuse::Server& server, passthrough::PassthroughFs& fs,
                                   const Config::Migration& options)
    : server_(server), fs_(fs) {
  options_.file_handles = options.mode == "file-handles";
  options_.verify_handles = options.verify_handles;
  options_.abort_on_error = options.on_error != "guest-error";
}

void MigrationHandler::migration_started() {
  // Paths are read at switch-over, when the guest is stopped: the kernel's
  // view of them is current then, whatever was renamed meanwhile.
  log::info("migration: started; the state is gathered at switch-over ({} mode)",
            options_.file_handles ? "file-handles" : "find-paths");
}

void MigrationHandler::migration_ended() {
  log::info("migration: dirty logging ended");
}

Result<std::vector<uint8_t>> MigrationHandler::save_state() {
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
