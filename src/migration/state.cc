// encode() and decode() of the migration state; the layout they share is
// docs/migration-state.md. Fields are written byte by byte in little-endian
// order, never as memcpy'd structs, so the format does not depend on the
// host's endianness or struct padding.
#include "migration/state.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <limits>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "util/result.h"

namespace vfsd::migration {

namespace {

constexpr std::array<uint8_t, 8> kMagic = {'V', 'F', 'S', 'D', 'M', 'I', 'G', '\n'};
// magic, u32 version, u32 flags, u64 body length.
constexpr size_t kHeaderSize = 8 + 4 + 4 + 8;
constexpr size_t kBodyLengthOffset = 16;
constexpr size_t kChecksumSize = 4;
// The shortest records there can be (a kInvalid inode with an empty error;
// a handle record is fixed-size): a count the rest of the body cannot hold
// at this size is refused before anything is reserved for it.
constexpr size_t kMinInodeRecordSize = 8 + 8 + 4 + 1 + 4;
constexpr size_t kHandleRecordSize = 8 + 8 + 4 + 1 + 1;
// The longest stretch of an untrusted path quoted in a message.
constexpr size_t kMaxQuotedBytes = 80;

template <class T>
using Decoded = tl::expected<T, DecodeError>;

tl::unexpected<DecodeError> refuse(std::string message) {
  return tl::unexpected(DecodeError{std::move(message)});
}

std::string hex(uint64_t value) {
  std::array<char, 24> text{};
  std::snprintf(text.data(), text.size(), "0x%llx", static_cast<unsigned long long>(value));
  return text.data();
}

// Untrusted bytes made safe for a log line: quoted, with control characters,
// quotes, backslashes and non-ASCII bytes as \xNN, and cut after
// kMaxQuotedBytes.
std::string quoted(std::string_view bytes) {
  std::string out = "\"";
  for (const char c : bytes.substr(0, kMaxQuotedBytes)) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte >= 0x7f || c == '"' || c == '\\') {
      std::array<char, 5> escaped{};
      std::snprintf(escaped.data(), escaped.size(), "\\x%02x", byte);
      out += escaped.data();
    } else {
      out += c;
    }
  }
  out += '"';
  if (bytes.size() > kMaxQuotedBytes) out += "... (" + std::to_string(bytes.size()) + " bytes)";
  return out;
}

template <class T>
T load_little_endian(std::span<const uint8_t> bytes) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) value |= static_cast<T>(bytes[i]) << (8 * i);
  return value;
}

class Writer {
 public:
  void u8(uint8_t value) { out_.push_back(value); }
  void boolean(bool value) { u8(value ? 1 : 0); }
  void u32(uint32_t value) { little_endian(value); }
  void i32(int32_t value) { little_endian(static_cast<uint32_t>(value)); }
  void u64(uint64_t value) { little_endian(value); }
  void raw(std::span<const uint8_t> bytes) { out_.insert(out_.end(), bytes.begin(), bytes.end()); }
  // A u32 length, then the bytes.
  void sized(std::span<const uint8_t> bytes) {
    u32(static_cast<uint32_t>(bytes.size()));
    raw(bytes);
  }
  void sized(std::string_view text) {
    sized(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  }
  void patch_u64(size_t offset, uint64_t value) {
    for (size_t i = 0; i < 8; ++i) out_[offset + i] = static_cast<uint8_t>(value >> (8 * i));
  }
  const std::vector<uint8_t>& bytes() const { return out_; }
  std::vector<uint8_t> take() && { return std::move(out_); }

 private:
  template <class T>
  void little_endian(T value) {
    for (size_t i = 0; i < sizeof(T); ++i) out_.push_back(static_cast<uint8_t>(value >> (8 * i)));
  }

  std::vector<uint8_t> out_;
};

// The zlib CRC-32 (the polynomial of zlib, gzip and PNG).
uint32_t checksum(std::span<const uint8_t> bytes) {
  return static_cast<uint32_t>(crc32_z(0, bytes.data(), bytes.size()));
}

void write_file_handle(Writer& out, const FileHandleBytes& handle) {
  out.i32(handle.type);
  out.sized(handle.bytes);
}

std::vector<uint8_t> encode_as(const State& state, uint32_t version) {
  Writer out;
  out.raw(kMagic);
  out.u32(version);
  out.u32(0);  // flags
  out.u64(0);  // body length, patched below

  out.boolean(state.session.open);
  out.u32(state.session.guest_minor);
  out.u64(state.session.agreed_flags);
  out.u32(state.session.max_write);
  out.u32(state.session.max_pages);
  if (version >= 2) {
    out.u64(state.next_inode_id);
    out.u64(state.next_handle_id);
  }

  out.u32(static_cast<uint32_t>(state.inodes.size()));
  for (const InodeRecord& inode : state.inodes) {
    out.u64(inode.id);
    out.u64(inode.lookups);
    out.u32(inode.type);
    out.u8(static_cast<uint8_t>(inode.location));
    switch (inode.location) {
      case InodeLocation::kPath:
        out.sized(inode.path);
        out.boolean(inode.handle.has_value());
        if (inode.handle) write_file_handle(out, *inode.handle);
        break;
      case InodeLocation::kFileHandle:
        write_file_handle(out, inode.handle.value_or(FileHandleBytes{}));
        break;
      case InodeLocation::kInvalid:
        out.sized(inode.error);
        break;
      default:  // not a location: the byte alone, which decode() refuses
        break;
    }
  }

  out.u32(static_cast<uint32_t>(state.handles.size()));
  for (const HandleRecord& handle : state.handles) {
    out.u64(handle.id);
    out.u64(handle.inode);
    out.i32(handle.open_flags);
    out.boolean(handle.is_dir);
    out.boolean(handle.append);
  }

  out.patch_u64(kBodyLengthOffset, out.bytes().size() - kHeaderSize);
  out.u32(checksum(out.bytes()));
  return std::move(out).take();
}

// Reads the body front to back. Every message it makes starts with the
// context the caller set ("inode record 3 (id 17)"), so a refusal says where
// it happened.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> body) : rest_(body) {}

  void set_context(std::string context) { context_ = std::move(context); }
  size_t left() const { return rest_.size(); }

  tl::unexpected<DecodeError> refuse(std::string_view problem) const {
    return migration::refuse(context_ + ": " + std::string(problem));
  }

  // `size` is checked against what is left before anything is copied, so
  // a forged length allocates nothing.
  Decoded<std::span<const uint8_t>> take(size_t size, std::string_view field) {
    if (size > rest_.size()) {
      return refuse("truncated: " + std::string(field) + " needs " + std::to_string(size) +
                    " bytes, " + std::to_string(rest_.size()) + " are left in the body");
    }
    const auto taken = rest_.first(size);
    rest_ = rest_.subspan(size);
    return taken;
  }

  Decoded<uint8_t> u8(std::string_view field) {
    VFSD_ASSIGN_OR_RETURN(const auto bytes, take(1, field));
    return bytes[0];
  }
  Decoded<uint32_t> u32(std::string_view field) { return fixed<uint32_t>(field); }
  Decoded<uint64_t> u64(std::string_view field) { return fixed<uint64_t>(field); }
  Decoded<int32_t> i32(std::string_view field) {
    VFSD_ASSIGN_OR_RETURN(const uint32_t value, fixed<uint32_t>(field));
    return static_cast<int32_t>(value);
  }
  // A bool byte: 0 or 1, nothing else (another value is not ours).
  Decoded<bool> boolean(std::string_view field) {
    VFSD_ASSIGN_OR_RETURN(const uint8_t value, u8(field));
    if (value > 1) {
      return refuse(std::string(field) + " byte is " + std::to_string(value) +
                    ", a bool byte must be 0 or 1");
    }
    return value == 1;
  }

 private:
  template <class T>
  Decoded<T> fixed(std::string_view field) {
    VFSD_ASSIGN_OR_RETURN(const auto bytes, take(sizeof(T), field));
    return load_little_endian<T>(bytes);
  }

  std::span<const uint8_t> rest_;
  std::string context_;
};

struct Framing {
  uint32_t version = 0;
  std::span<const uint8_t> body;
};

// Header, body length, checksum: everything but the body's contents.
Decoded<Framing> read_framing(std::span<const uint8_t> bytes) {
  // A short stream that starts like ours is a truncated one; anything else
  // is not ours at all.
  const size_t magic_seen = std::min(bytes.size(), kMagic.size());
  if (!std::equal(bytes.begin(), bytes.begin() + magic_seen, kMagic.begin())) {
    return refuse("header: not a virtiofsd-cpp migration state (wrong magic)");
  }
  if (bytes.size() < kHeaderSize) {
    return refuse("header: truncated: the stream has " + std::to_string(bytes.size()) +
                  " bytes, the header alone is " + std::to_string(kHeaderSize));
  }
  const uint32_t version = load_little_endian<uint32_t>(bytes.subspan(8));
  const uint32_t flags = load_little_endian<uint32_t>(bytes.subspan(12));
  const uint64_t body_length = load_little_endian<uint64_t>(bytes.subspan(kBodyLengthOffset));

  // The version first: a later version may lay out everything after the
  // header differently.
  if (version == 0) return refuse("header: version 0 does not exist (versions start at 1)");
  if (version > kCurrentVersion) {
    return refuse("header: version " + std::to_string(version) +
                  " is newer than this virtiofsd-cpp understands (at most " +
                  std::to_string(kCurrentVersion) + ")");
  }
  const size_t after_header = bytes.size() - kHeaderSize;
  if (body_length > after_header) {
    return refuse("body: truncated: the header announces " + std::to_string(body_length) +
                  " body bytes, " + std::to_string(after_header) + " are there");
  }
  const size_t after_body = after_header - body_length;
  if (after_body < kChecksumSize) {
    return refuse("checksum: truncated: " + std::to_string(after_body) + " of its " +
                  std::to_string(kChecksumSize) + " bytes are there");
  }
  if (after_body > kChecksumSize) {
    return refuse("checksum: " + std::to_string(after_body - kChecksumSize) +
                  " trailing bytes after the checksum");
  }
  const size_t checked_size = kHeaderSize + body_length;
  const uint32_t carried = load_little_endian<uint32_t>(bytes.subspan(checked_size));
  const uint32_t computed = checksum(bytes.first(checked_size));
  if (carried != computed) {
    return refuse("checksum: mismatch: the stream carries " + hex(carried) +
                  ", its header and body give " + hex(computed) +
                  " (the bytes changed on the way)");
  }
  // After the checksum: a nonzero field that passes it was written so, by a
  // writer that knows a flag we do not.
  if (flags != 0) {
    return refuse("header: flags are " + hex(flags) + ", must be 0 (version " +
                  std::to_string(version) + " defines no flag)");
  }
  return Framing{version, bytes.subspan(kHeaderSize, body_length)};
}

Decoded<SessionState> read_session(Reader& in) {
  in.set_context("session");
  SessionState session;
  VFSD_ASSIGN_OR_RETURN(session.open, in.boolean("open"));
  VFSD_ASSIGN_OR_RETURN(session.guest_minor, in.u32("guest_minor"));
  VFSD_ASSIGN_OR_RETURN(session.agreed_flags, in.u64("agreed_flags"));
  VFSD_ASSIGN_OR_RETURN(session.max_write, in.u32("max_write"));
  VFSD_ASSIGN_OR_RETURN(session.max_pages, in.u32("max_pages"));
  if (!session.open && (session.guest_minor != 0 || session.agreed_flags != 0 ||
                        session.max_write != 0 || session.max_pages != 0)) {
    return in.refuse("not open (no INIT yet), but its other fields are not all 0");
  }
  return session;
}

// What is wrong with an inode's path, or "" when nothing is. The path
// becomes an openat() walk from the shared directory on the destination,
// so it must stay below it and name each component exactly once.
std::string path_problem(std::string_view path) {
  if (path.find('\0') != std::string_view::npos) return "path contains a NUL byte";
  if (path.starts_with('/')) {
    return "path " + quoted(path) + " starts with '/' (paths are relative to the shared directory)";
  }
  size_t start = 0;
  while (true) {
    const size_t end = std::min(path.find('/', start), path.size());
    const std::string_view component = path.substr(start, end - start);
    if (component.empty()) return "path " + quoted(path) + " has an empty component";
    if (component == ".") return "path " + quoted(path) + " has a \".\" component";
    if (component == "..") {
      return "path " + quoted(path) +
             " has a \"..\" component (it could leave the shared directory)";
    }
    if (end == path.size()) return "";
    start = end + 1;
  }
}

Decoded<FileHandleBytes> read_file_handle(Reader& in) {
  FileHandleBytes handle;
  VFSD_ASSIGN_OR_RETURN(handle.type, in.i32("file handle type"));
  VFSD_ASSIGN_OR_RETURN(const uint32_t length, in.u32("file handle length"));
  if (length > kMaxFileHandleBytes) {
    return in.refuse("file handle of " + std::to_string(length) + " bytes, at most " +
                     std::to_string(kMaxFileHandleBytes) + " (MAX_HANDLE_SZ)");
  }
  if (length == 0) return in.refuse("file handle of 0 bytes (open_by_handle_at needs at least 1)");
  VFSD_ASSIGN_OR_RETURN(const auto bytes, in.take(length, "the file handle"));
  handle.bytes.assign(bytes.begin(), bytes.end());
  return handle;
}

// A u32 length (at most `limit`), then that many bytes as text.
Decoded<std::string> read_text(Reader& in, std::string_view field, size_t limit) {
  VFSD_ASSIGN_OR_RETURN(const uint32_t length, in.u32(std::string(field) + " length"));
  if (length > limit) {
    return in.refuse(std::string(field) + " of " + std::to_string(length) + " bytes, at most " +
                     std::to_string(limit));
  }
  VFSD_ASSIGN_OR_RETURN(const auto bytes, in.take(length, "the " + std::string(field)));
  return std::string(bytes.begin(), bytes.end());
}

// One inode record after its id: everything the record says about itself
// (duplicates and the root's presence are the caller's).
Decoded<InodeRecord> read_inode_fields(Reader& in, uint64_t id, uint32_t version) {
  InodeRecord inode;
  inode.id = id;
  VFSD_ASSIGN_OR_RETURN(inode.lookups, in.u64("lookups"));
  VFSD_ASSIGN_OR_RETURN(inode.type, in.u32("type"));
  if ((inode.type & ~static_cast<uint32_t>(S_IFMT)) != 0) {
    return in.refuse("type " + hex(inode.type) + " has bits outside S_IFMT");
  }
  VFSD_ASSIGN_OR_RETURN(const uint8_t location, in.u8("location"));
  switch (location) {
    case static_cast<uint8_t>(InodeLocation::kPath): {
      inode.location = InodeLocation::kPath;
      VFSD_ASSIGN_OR_RETURN(inode.path, read_text(in, "path", kMaxPathBytes));
      if (id == kRootInodeId) {
        if (!inode.path.empty()) {
          return in.refuse("the root's path is " + quoted(inode.path) +
                           ", must be \"\" (the shared directory itself)");
        }
      } else if (inode.path.empty()) {
        return in.refuse("path \"\" is the shared directory itself, which only the root (id 1) is");
      } else if (std::string problem = path_problem(inode.path); !problem.empty()) {
        return in.refuse(problem);
      }
      VFSD_ASSIGN_OR_RETURN(const bool has_handle, in.boolean("has_handle"));
      if (has_handle) {
        VFSD_ASSIGN_OR_RETURN(inode.handle, read_file_handle(in));
      }
      break;
    }
    case static_cast<uint8_t>(InodeLocation::kFileHandle): {
      inode.location = InodeLocation::kFileHandle;
      VFSD_ASSIGN_OR_RETURN(inode.handle, read_file_handle(in));
      break;
    }
    case static_cast<uint8_t>(InodeLocation::kInvalid): {
      if (version < 2) {
        return in.refuse("location byte 3 (invalid) came with version 2, this stream is version " +
                         std::to_string(version));
      }
      if (id == kRootInodeId) {
        return in.refuse(
            "the root is invalid (location byte 3): without the shared directory nothing can be "
            "served");
      }
      inode.location = InodeLocation::kInvalid;
      VFSD_ASSIGN_OR_RETURN(inode.error, read_text(in, "error", kMaxErrorBytes));
      break;
    }
    default:
      return in.refuse("unknown location byte " + std::to_string(location) +
                       " (1 = path, 2 = file handle, 3 = invalid)");
  }
  return inode;
}

// The highest id among the records and the index of its record.
struct Highest {
  uint64_t id = 0;
  size_t record = 0;
};

// Where numbering of `kind` ids continues. Version 2 carries it (`carried`):
// it must be above the highest id and at least `floor`. Version 1 does not:
// it is the least value that is.
Decoded<uint64_t> settle_next_id(Reader& in, std::string_view field, std::string_view kind,
                                 std::optional<Highest> highest, uint64_t floor,
                                 std::optional<uint64_t> carried) {
  in.set_context("next ids");
  const auto highest_record = [&] {
    return std::string(kind) + " record " + std::to_string(highest->record) + "'s id " +
           std::to_string(highest->id);
  };
  if (carried) {
    if (highest && *carried <= highest->id) {
      return in.refuse(std::string(field) + " " + std::to_string(*carried) + " is not above " +
                       highest_record());
    }
    if (*carried < floor) {
      return in.refuse(std::string(field) + " " + std::to_string(*carried) + " is below " +
                       std::to_string(floor) + ", where " + std::string(kind) + " ids start");
    }
    return *carried;
  }
  if (!highest) return floor;
  if (highest->id == std::numeric_limits<uint64_t>::max()) {
    return in.refuse(highest_record() + " leaves no id to go on numbering from");
  }
  return std::max(highest->id + 1, floor);
}

// Names of the forbidden bits in `flags`, "O_CREAT|O_TRUNC".
std::string forbidden_flag_names(int32_t flags) {
  constexpr std::pair<int32_t, const char*> kNames[] = {
      {O_CREAT, "O_CREAT"}, {O_EXCL, "O_EXCL"},
      {O_TRUNC, "O_TRUNC"}, {O_TMPFILE & ~O_DIRECTORY, "O_TMPFILE"},
      {O_PATH, "O_PATH"},
  };
  std::string names;
  for (const auto& [bit, name] : kNames) {
    if ((flags & bit) == 0) continue;
    if (!names.empty()) names += '|';
    names += name;
  }
  return names;
}

// A record count: at most `cap`, and no more than the rest of the body can
// hold at `min_record_size` bytes each (so that reserving room for them is
// bounded by the stream's own size).
Decoded<uint32_t> read_count(Reader& in, const char* what, uint32_t cap, size_t min_record_size) {
  in.set_context(what);
  VFSD_ASSIGN_OR_RETURN(const uint32_t count, in.u32("count"));
  if (count > cap) {
    return in.refuse(std::to_string(count) + " records, at most " + std::to_string(cap));
  }
  if (static_cast<uint64_t>(count) * min_record_size > in.left()) {
    return in.refuse(std::to_string(count) + " records cannot fit in the " +
                     std::to_string(in.left()) + " bytes left of the body (a record is at least " +
                     std::to_string(min_record_size) + " bytes)");
  }
  return count;
}

}  // namespace

std::vector<uint8_t> encode(const State& state) {
  return encode_as(state, kCurrentVersion);
}

std::vector<uint8_t> encode_version_1_for_tests(const State& state) {
  return encode_as(state, 1);
}

tl::expected<State, DecodeError> decode(std::span<const uint8_t> bytes) {
  VFSD_ASSIGN_OR_RETURN(const Framing framing, read_framing(bytes));
  Reader in(framing.body);
  State state;
  VFSD_ASSIGN_OR_RETURN(state.session, read_session(in));

  std::optional<uint64_t> carried_next_inode_id;
  std::optional<uint64_t> carried_next_handle_id;
  if (framing.version >= 2) {
    in.set_context("next ids");
    VFSD_ASSIGN_OR_RETURN(carried_next_inode_id, in.u64("next_inode_id"));
    VFSD_ASSIGN_OR_RETURN(carried_next_handle_id, in.u64("next_handle_id"));
  }

  VFSD_ASSIGN_OR_RETURN(const uint32_t inode_count,
                        read_count(in, "inodes", kMaxInodes, kMinInodeRecordSize));
  state.inodes.reserve(inode_count);
  std::unordered_map<uint64_t, size_t> inode_record_of_id;
  inode_record_of_id.reserve(inode_count);
  std::optional<Highest> highest_inode;
  for (size_t index = 0; index < inode_count; ++index) {
    const std::string record = "inode record " + std::to_string(index);
    in.set_context(record);
    VFSD_ASSIGN_OR_RETURN(const uint64_t id, in.u64("id"));
    in.set_context(record + " (id " + std::to_string(id) + ")");
    if (id == 0) return in.refuse("id 0 is not a node id (FUSE uses 0 for \"no inode\")");
    if (const auto [it, inserted] = inode_record_of_id.emplace(id, index); !inserted) {
      return in.refuse("duplicate inode id: inode record " + std::to_string(it->second) +
                       " has it too");
    }
    VFSD_ASSIGN_OR_RETURN(InodeRecord inode, read_inode_fields(in, id, framing.version));
    if (!highest_inode || id > highest_inode->id) highest_inode = Highest{id, index};
    state.inodes.push_back(std::move(inode));
  }
  if (!inode_record_of_id.contains(kRootInodeId)) {
    in.set_context("inodes");
    return in.refuse("no root record (id 1): the shared directory itself must be among them");
  }

  VFSD_ASSIGN_OR_RETURN(const uint32_t handle_count,
                        read_count(in, "handles", kMaxHandles, kHandleRecordSize));
  state.handles.reserve(handle_count);
  std::unordered_map<uint64_t, size_t> handle_record_of_id;
  handle_record_of_id.reserve(handle_count);
  std::optional<Highest> highest_handle;
  for (size_t index = 0; index < handle_count; ++index) {
    const std::string record = "handle record " + std::to_string(index);
    in.set_context(record);
    HandleRecord handle;
    VFSD_ASSIGN_OR_RETURN(handle.id, in.u64("id"));
    in.set_context(record + " (id " + std::to_string(handle.id) + ")");
    if (const auto [it, inserted] = handle_record_of_id.emplace(handle.id, index); !inserted) {
      return in.refuse("duplicate handle id: handle record " + std::to_string(it->second) +
                       " has it too");
    }
    VFSD_ASSIGN_OR_RETURN(handle.inode, in.u64("inode"));
    if (!inode_record_of_id.contains(handle.inode)) {
      return in.refuse("opened on inode " + std::to_string(handle.inode) +
                       ", which is not among the inode records");
    }
    VFSD_ASSIGN_OR_RETURN(handle.open_flags, in.i32("open_flags"));
    if ((handle.open_flags & kForbiddenOpenFlags) != 0) {
      return in.refuse("open flags " + hex(static_cast<uint32_t>(handle.open_flags)) +
                       " include forbidden " + forbidden_flag_names(handle.open_flags) +
                       " (reopening must never change the file)");
    }
    VFSD_ASSIGN_OR_RETURN(handle.is_dir, in.boolean("is_dir"));
    VFSD_ASSIGN_OR_RETURN(handle.append, in.boolean("append"));
    if (!highest_handle || handle.id > highest_handle->id)
      highest_handle = Highest{handle.id, index};
    state.handles.push_back(handle);
  }

  if (in.left() != 0) {
    in.set_context("body");
    return in.refuse(std::to_string(in.left()) + " bytes left over after the last handle record");
  }

  VFSD_ASSIGN_OR_RETURN(state.next_inode_id,
                        settle_next_id(in, "next_inode_id", "inode", highest_inode,
                                       kRootInodeId + 1, carried_next_inode_id));
  VFSD_ASSIGN_OR_RETURN(
      state.next_handle_id,
      settle_next_id(in, "next_handle_id", "handle", highest_handle, 1, carried_next_handle_id));
  return state;
}

}  // namespace vfsd::migration
