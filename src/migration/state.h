// The daemon's migration state and its binary format: what a destination
// virtiofsd-cpp needs to go on serving the guest's FUSE session where the
// source stopped (the INIT it agreed, every inode the guest holds and how to
// find it again, every open handle, and where numbering continues).
//
// Plain data, no I/O: the passthrough fills a State on the source and reads
// one on the destination; this file only turns it into bytes and back. The
// bytes reach the destination through the front-end (QEMU), which is not
// trusted with the host, so decode() checks every length, count, id and
// cross-reference before it believes or allocates anything, and says in one
// sentence what is wrong and where. docs/migration-state.md is the format
// byte by byte, its versions and every refusal.
// Pinned by: state_test.cc(MigrationState.*, MigrationStateRefuses.*)
#pragma once

#include <fcntl.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <tl/expected.hpp>

namespace vfsd::migration {

/// The version encode() writes. 1: the first layout. 2: adds next_inode_id /
/// next_handle_id and InodeLocation::kInvalid. decode() reads every version
/// from 1 up to this one.
inline constexpr uint32_t kCurrentVersion = 2;

/// The shared directory's FUSE node id (fuse::kRootInode).
inline constexpr uint64_t kRootInodeId = 1;

// Limits decode() enforces. Each bounds what a hostile stream can make the
// destination allocate or hand to the kernel.
/// Inode and handle records in one state.
inline constexpr uint32_t kMaxInodes = 16u * 1024 * 1024;
inline constexpr uint32_t kMaxHandles = 16u * 1024 * 1024;
/// An InodeRecord's path (PATH_MAX).
inline constexpr size_t kMaxPathBytes = 4096;
/// A file handle's f_handle (MAX_HANDLE_SZ of linux/exportfs.h).
inline constexpr size_t kMaxFileHandleBytes = 128;
/// An InodeRecord's error text.
inline constexpr size_t kMaxErrorBytes = 1024;

/// Open flags a HandleRecord may not carry: reopening a file on the
/// destination must never create, truncate or replace it, nor give an
/// O_PATH fd where I/O is expected. O_TMPFILE counts by its own bit only
/// (O_TMPFILE includes O_DIRECTORY, which a directory handle may carry).
inline constexpr int32_t kForbiddenOpenFlags =
    O_CREAT | O_EXCL | O_TRUNC | (O_TMPFILE & ~O_DIRECTORY) | O_PATH;

/// The FUSE session the guest opened with INIT.
struct SessionState {
  bool open = false;          // false: no INIT yet (then every other field is 0)
  uint32_t guest_minor = 0;   // the FUSE minor version the guest spoke (major is always 7)
  uint64_t agreed_flags = 0;  // FUSE_* init flags agreed (flags2 in the upper 32 bits)
  uint32_t max_write = 0;     // what our INIT reply announced
  uint32_t max_pages = 0;
  friend bool operator==(const SessionState&, const SessionState&) = default;
};

/// How the destination finds an inode again. The values are the format's
/// location byte.
enum class InodeLocation : uint8_t {
  kPath = 1,        // by its path below the shared directory
  kFileHandle = 2,  // by a host file handle (--inode-file-handles)
  kInvalid = 3,     // the source could not describe it (version 2 on)
};

/// struct file_handle: handle_type and the f_handle bytes (1 to
/// kMaxFileHandleBytes of them; open_by_handle_at refuses an empty one).
struct FileHandleBytes {
  int32_t type = 0;
  std::vector<uint8_t> bytes;
  friend bool operator==(const FileHandleBytes&, const FileHandleBytes&) = default;
};

/// One inode the guest knows. Only the fields of its location are encoded:
/// `path` and `handle` of a kInvalid record, `path` of a kFileHandle record
/// and `error` of the others are not written and decode empty.
struct InodeRecord {
  uint64_t id = 0;       // FUSE node id; kRootInodeId is the shared directory itself
  uint64_t lookups = 0;  // lookup references the guest holds (the root may have 0)
  uint32_t type = 0;     // S_IFMT bits of the inode (S_IFREG, S_IFDIR, ...), no others
  InodeLocation location = InodeLocation::kPath;
  /// kPath: relative to the shared directory, "" for the root itself (and
  /// only for it); no leading '/', no ".", ".." or empty components, no NUL,
  /// at most kMaxPathBytes bytes.
  std::string path;
  /// kFileHandle: how to open it (required). kPath: an optional identity
  /// check (--migration-verify-handles).
  std::optional<FileHandleBytes> handle;
  /// kInvalid: why the source could not describe it, for the destination's
  /// log (at most kMaxErrorBytes; untrusted bytes, escape them when logging).
  std::string error;
  friend bool operator==(const InodeRecord&, const InodeRecord&) = default;
};

/// One file or directory the guest holds open.
struct HandleRecord {
  uint64_t id = 0;         // FUSE file handle
  uint64_t inode = 0;      // the node id it was opened on (one of State::inodes)
  int32_t open_flags = 0;  // O_* flags to reopen with; none of kForbiddenOpenFlags
  bool is_dir = false;
  bool append = false;  // the guest opened it with O_APPEND
  friend bool operator==(const HandleRecord&, const HandleRecord&) = default;
};

/// Everything that migrates. Records keep their order through encode/decode.
struct State {
  SessionState session;
  std::vector<InodeRecord> inodes;    // the root exactly once, ids unique and nonzero
  std::vector<HandleRecord> handles;  // ids unique
  /// The destination continues numbering from here: above every id in
  /// `inodes` (so at least 2) and every id in `handles` (and at least 1).
  uint64_t next_inode_id = 0;
  uint64_t next_handle_id = 0;
  friend bool operator==(const State&, const State&) = default;
};

/// The state in the current format (kCurrentVersion). Writes what it is
/// given without checking it (decode() is where the rules are); a
/// kFileHandle record without a handle is written with an empty one, which
/// decode() refuses.
/// Pinned by: state_test.cc(MigrationState.RichStateRoundTrips,
/// MigrationState.TinyStateHasTheDocumentedBytes)
std::vector<uint8_t> encode(const State& state);

/// Why a stream was refused: one sentence for the log, starting with where
/// ("header: ...", "inode record 3 (id 17): ...").
struct DecodeError {
  std::string message;
};

/// Reads a stream of any version from 1 to kCurrentVersion. Version 1 has no
/// next ids: they are derived (highest id + 1, at least 2 for inodes and 1
/// for handles). Refuses anything that breaks a rule of
/// docs/migration-state.md; nothing of a refused stream is kept.
/// Pinned by: state_test.cc(MigrationStateRefuses.*,
/// MigrationState.EveryTruncationIsRefused, MigrationState.EveryFlippedBitIsRefused,
/// MigrationState.HugeCountsInATinyStreamFailFast)
tl::expected<State, DecodeError> decode(std::span<const uint8_t> bytes);

/// The state in version 1's layout, only so that tests can feed decode()'s
/// version-1 reader real bytes; no daemon writes version 1 any more. The
/// next ids are left out (version 1 has none); a kInvalid record is written
/// as version 2 would, which a version-1 reader must refuse.
/// Pinned by: state_test.cc(MigrationState.Version1DecodesWithDerivedNextIds)
std::vector<uint8_t> encode_version_1_for_tests(const State& state);

}  // namespace vfsd::migration
