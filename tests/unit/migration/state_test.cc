// The migration state's binary format: round trips, the exact bytes of
// docs/migration-state.md, the version-1 reader, and every refusal of a
// stream the front-end may have forged, cut short or corrupted.
#include "migration/state.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zlib.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

namespace vfsd::migration {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

using Stream = std::vector<uint8_t>;

// Streams written field by field, independently of encode(): what
// docs/migration-state.md says the bytes are.
class Bytes {
 public:
  Bytes& u8(uint8_t value) {
    data.push_back(value);
    return *this;
  }
  Bytes& u32(uint32_t value) { return little_endian(value, 4); }
  Bytes& i32(int32_t value) { return little_endian(static_cast<uint32_t>(value), 4); }
  Bytes& u64(uint64_t value) { return little_endian(value, 8); }
  Bytes& raw(const std::string& bytes) {
    data.insert(data.end(), bytes.begin(), bytes.end());
    return *this;
  }
  // A u32 length, then the bytes.
  Bytes& sized(const std::string& bytes) {
    return u32(static_cast<uint32_t>(bytes.size())).raw(bytes);
  }

  Stream data;

 private:
  Bytes& little_endian(uint64_t value, int size) {
    for (int i = 0; i < size; ++i) data.push_back(static_cast<uint8_t>(value >> (8 * i)));
    return *this;
  }
};

uint32_t crc_of(const uint8_t* data, size_t size) {
  return static_cast<uint32_t>(crc32(0, data, static_cast<uInt>(size)));
}

// Header + body + the checksum over both.
Stream seal(const Bytes& body, uint32_t version = kCurrentVersion, uint32_t flags = 0) {
  Bytes out;
  out.raw("VFSDMIG\n").u32(version).u32(flags).u64(body.data.size());
  out.data.insert(out.data.end(), body.data.begin(), body.data.end());
  out.u32(crc_of(out.data.data(), out.data.size()));
  return out.data;
}

Bytes closed_session() {
  return Bytes().u8(0).u32(0).u64(0).u32(0).u32(0);
}

// A version-2 body up to its handle count: a closed session, next ids 3 and
// 8, the root and inode 2 (the regular file "f").
Bytes body_through_inodes() {
  Bytes body = closed_session().u64(3).u64(8).u32(2);
  body.u64(1).u64(0).u32(S_IFDIR).u8(1).sized("").u8(0);
  body.u64(2).u64(1).u32(S_IFREG).u8(1).sized("f").u8(0);
  return body;
}

// The same body's record of inode 2 cut before its location byte.
Bytes body_through_inode_2_type() {
  Bytes body = closed_session().u64(3).u64(8).u32(2);
  body.u64(1).u64(0).u32(S_IFDIR).u8(1).sized("").u8(0);
  body.u64(2).u64(1).u32(S_IFREG);
  return body;
}

State minimal_state() {
  State state;
  state.inodes.push_back({.id = 1, .type = S_IFDIR});
  state.next_inode_id = 2;
  state.next_handle_id = 1;
  return state;
}

// The root, a directory and a file in it, one handle on the file.
State small_state() {
  State state = minimal_state();
  state.inodes.push_back({.id = 2, .lookups = 1, .type = S_IFDIR, .path = "dir"});
  state.inodes.push_back({.id = 3, .lookups = 1, .type = S_IFREG, .path = "dir/file"});
  state.handles.push_back({.id = 1, .inode = 3, .open_flags = O_RDWR});
  state.next_inode_id = 4;
  state.next_handle_id = 2;
  return state;
}

// Every kind of record and every field away from its default; the root is
// not the first record (order is kept, not imposed).
State rich_state() {
  State state;
  state.session = {.open = true,
                   .guest_minor = 38,
                   .agreed_flags = 0x0000'0003'8000'f3fbull,
                   .max_write = 1u << 20,
                   .max_pages = 256};
  state.inodes = {
      {.id = 5,
       .lookups = 1,
       .type = S_IFREG,
       .path = "docs/read me.md",
       .handle = FileHandleBytes{.type = 0x81, .bytes = {1, 2, 3, 4, 5, 6, 7, 8}}},
      {.id = 1, .lookups = 0, .type = S_IFDIR, .path = ""},
      {.id = 9, .lookups = 2, .type = S_IFDIR, .path = "docs"},
      {.id = 12,
       .lookups = 3,
       .type = S_IFREG,
       .location = InodeLocation::kFileHandle,
       .handle = FileHandleBytes{.type = -7, .bytes = std::vector<uint8_t>(20, 0xa5)}},
      {.id = 13,
       .lookups = 1,
       .type = S_IFLNK,
       .location = InodeLocation::kInvalid,
       .error = "renamed while the source ran: ENOENT"},
      {.id = 40, .lookups = 0xffff'ffff'ffull, .type = S_IFIFO, .path = "docs/a.fifo"},
  };
  state.handles = {
      {.id = 3, .inode = 5, .open_flags = O_RDWR | O_NOATIME, .append = true},
      {.id = 7, .inode = 9, .open_flags = O_RDONLY | O_DIRECTORY, .is_dir = true},
      {.id = 1, .inode = 12, .open_flags = O_WRONLY, .append = false},
  };
  state.next_inode_id = 41;
  state.next_handle_id = 8;
  return state;
}

std::string message_of(const Stream& stream) {
  auto decoded = decode(stream);
  if (decoded) return "(decoded without an error)";
  return decoded.error().message;
}

TEST(MigrationState, RichStateRoundTrips) {
  const State state = rich_state();
  auto decoded = decode(encode(state));
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(*decoded, state);
}

TEST(MigrationState, MinimalStateRoundTrips) {
  auto decoded = decode(encode(minimal_state()));
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(*decoded, minimal_state());
}

// The layout of docs/migration-state.md, every byte of it. The checksum is
// zlib's crc32 of the 210 bytes before it (computed outside this code).
TEST(MigrationState, TinyStateHasTheDocumentedBytes) {
  State state;
  state.session = {.open = true,
                   .guest_minor = 31,
                   .agreed_flags = 0x0102030405060708ull,
                   .max_write = 0x100000,
                   .max_pages = 256};
  state.inodes = {
      {.id = 1, .lookups = 0, .type = S_IFDIR, .path = ""},
      {.id = 2,
       .lookups = 1,
       .type = S_IFREG,
       .path = "a",
       .handle = FileHandleBytes{.type = 1, .bytes = {0xab, 0xcd}}},
      {.id = 3,
       .lookups = 2,
       .type = S_IFREG,
       .location = InodeLocation::kFileHandle,
       .handle = FileHandleBytes{.type = -1, .bytes = {0xef}}},
      {.id = 4, .lookups = 1, .type = S_IFLNK, .location = InodeLocation::kInvalid, .error = "e"},
  };
  state.handles = {{.id = 2, .inode = 2, .open_flags = O_RDWR, .is_dir = false, .append = true}};
  state.next_inode_id = 5;
  state.next_handle_id = 3;

  const Stream expected = {
      // header: magic, version 2, flags 0, body length 186
      'V', 'F', 'S', 'D', 'M', 'I', 'G', '\n', 2, 0, 0, 0, 0, 0, 0, 0,  //
      186, 0, 0, 0, 0, 0, 0, 0,                                         //
      // session: open, guest_minor 31, agreed_flags, max_write 1 MiB, max_pages 256
      1, 31, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0x10, 0, 0, 1, 0, 0,  //
      // next_inode_id 5, next_handle_id 3
      5, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,  //
      // inode count 4
      4, 0, 0, 0,  //
      // id 1, lookups 0, S_IFDIR, kPath, path "", has_handle 0
      1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x40, 0, 0, 1, 0, 0, 0, 0, 0,  //
      // id 2, lookups 1, S_IFREG, kPath, path "a", has_handle 1, type 1, 2 bytes
      2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x80, 0, 0, 1, 1, 0, 0, 0, 'a',  //
      1, 1, 0, 0, 0, 2, 0, 0, 0, 0xab, 0xcd,                                                 //
      // id 3, lookups 2, S_IFREG, kFileHandle, type -1, 1 byte
      3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x80, 0, 0, 2,  //
      0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0xef,                             //
      // id 4, lookups 1, S_IFLNK, kInvalid, error "e"
      4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x00, 0xa0, 0, 0, 3, 1, 0, 0, 0, 'e',  //
      // handle count 1; id 2, inode 2, O_RDWR, is_dir 0, append 1
      1, 0, 0, 0,                                                        //
      2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1,  //
      // CRC-32
      0x09, 0x86, 0x13, 0x38,  //
  };
  EXPECT_EQ(encode(state), expected);
  auto decoded = decode(expected);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(*decoded, state);
}

// Version 1: no next ids after the session, otherwise the same.
TEST(MigrationState, Version1TinyStateHasTheDocumentedBytes) {
  State state = minimal_state();
  state.handles = {{.id = 1, .inode = 1, .open_flags = O_RDONLY | O_DIRECTORY, .is_dir = true}};
  const Stream expected = {
      // header: magic, version 1, flags 0, body length 77
      'V', 'F', 'S', 'D', 'M', 'I', 'G', '\n', 1, 0, 0, 0, 0, 0, 0, 0,  //
      77, 0, 0, 0, 0, 0, 0, 0,                                          //
      // session: closed, all 0
      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  //
      // inode count 1; the root
      1, 0, 0, 0,                                                                          //
      1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x40, 0, 0, 1, 0, 0, 0, 0, 0,  //
      // handle count 1; id 1, inode 1, O_DIRECTORY, is_dir 1, append 0
      1, 0, 0, 0,                                                                 //
      1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x01, 0, 1, 0,  //
      // CRC-32
      0xba, 0x0e, 0x55, 0x97,  //
  };
  EXPECT_EQ(encode_version_1_for_tests(state), expected);
}

TEST(MigrationState, HandBuiltBodyDecodesAsDocumented) {
  Bytes body = body_through_inodes();
  body.u32(1).u64(7).u64(2).i32(O_RDONLY).u8(0).u8(1);
  auto decoded = decode(seal(body));
  ASSERT_TRUE(decoded) << decoded.error().message;
  State expected;
  expected.inodes = {{.id = 1, .type = S_IFDIR},
                     {.id = 2, .lookups = 1, .type = S_IFREG, .path = "f"}};
  expected.handles = {{.id = 7, .inode = 2, .open_flags = O_RDONLY, .append = true}};
  expected.next_inode_id = 3;
  expected.next_handle_id = 8;
  EXPECT_EQ(*decoded, expected);
}

TEST(MigrationState, Version1DecodesWithDerivedNextIds) {
  State state = rich_state();
  std::erase_if(state.inodes,
                [](const InodeRecord& inode) { return inode.location == InodeLocation::kInvalid; });
  // Whatever the state says, version 1 cannot carry it.
  state.next_inode_id = 1000;
  state.next_handle_id = 1000;
  auto decoded = decode(encode_version_1_for_tests(state));
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(decoded->next_inode_id, 41u);  // highest inode id 40, + 1
  EXPECT_EQ(decoded->next_handle_id, 8u);  // highest handle id 7, + 1
  State expected = state;
  expected.next_inode_id = 41;
  expected.next_handle_id = 8;
  EXPECT_EQ(*decoded, expected);
}

TEST(MigrationState, Version1WithOnlyTheRootDerivesTheFirstIdsAfterIt) {
  auto decoded = decode(encode_version_1_for_tests(minimal_state()));
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(decoded->next_inode_id, 2u);
  EXPECT_EQ(decoded->next_handle_id, 1u);
}

TEST(MigrationState, Version1HandleIdZeroDerivesOne) {
  State state = minimal_state();
  state.handles = {{.id = 0, .inode = 1, .open_flags = O_RDONLY | O_DIRECTORY, .is_dir = true}};
  auto decoded = decode(encode_version_1_for_tests(state));
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(decoded->next_handle_id, 1u);
}

TEST(MigrationState, Version3HeaderIsRefusedWithTheVersionMessage) {
  const std::string expected =
      "header: version 3 is newer than this virtiofsd-cpp understands (at most 2)";
  EXPECT_EQ(message_of(seal(body_through_inodes().u32(0), 3)), expected);
  // The header alone: nothing after it is read, whatever it is.
  Bytes header_only;
  header_only.raw("VFSDMIG\n").u32(3).u32(0xffff'ffff).u64(0xffff'ffff'ffff'ffffull);
  EXPECT_EQ(message_of(header_only.data), expected);
}

TEST(MigrationState, EveryTruncationIsRefused) {
  for (const Stream& whole : {encode(rich_state()), encode_version_1_for_tests(small_state())}) {
    for (size_t size = 0; size < whole.size(); ++size) {
      const Stream cut(whole.begin(), whole.begin() + static_cast<ptrdiff_t>(size));
      auto decoded = decode(cut);
      ASSERT_FALSE(decoded) << "a stream cut to " << size << " bytes decoded";
      EXPECT_THAT(decoded.error().message, HasSubstr("truncated")) << "cut to " << size;
    }
  }
}

// A flip in the magic, version or body length is refused as what it makes of
// those; anywhere else (flags, body, checksum) the checksum catches it.
TEST(MigrationState, EveryFlippedBitIsRefused) {
  const Stream whole = encode(rich_state());
  for (size_t offset = 0; offset < whole.size(); ++offset) {
    for (int bit = 0; bit < 8; ++bit) {
      Stream flipped = whole;
      flipped[offset] ^= static_cast<uint8_t>(1u << bit);
      auto decoded = decode(flipped);
      ASSERT_FALSE(decoded) << "bit " << bit << " of byte " << offset;
      const bool in_magic_version_or_length = offset < 12 || (offset >= 16 && offset < 24);
      if (!in_magic_version_or_length) {
        EXPECT_THAT(decoded.error().message, StartsWith("checksum: mismatch"))
            << "bit " << bit << " of byte " << offset;
      }
    }
  }
}

// A count the stream cannot hold is refused before anything is reserved for
// it: reserving 16M records would take seconds (and gigabytes) under ASan.
TEST(MigrationState, HugeCountsInATinyStreamFailFast) {
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < 100; ++round) {
    for (const uint32_t count : {kMaxInodes, std::numeric_limits<uint32_t>::max()}) {
      const Stream inodes = seal(closed_session().u64(2).u64(1).u32(count).u64(1));
      EXPECT_THAT(message_of(inodes), StartsWith("inodes: " + std::to_string(count) + " records"));
      const Stream handles = seal(body_through_inodes().u32(count).u64(1));
      EXPECT_THAT(message_of(handles),
                  StartsWith("handles: " + std::to_string(count) + " records"));
    }
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

TEST(MigrationState, LimitsAreInclusive) {
  State state = minimal_state();
  state.inodes.push_back({.id = 2,
                          .lookups = 1,
                          .type = S_IFREG,
                          .path = std::string(kMaxPathBytes, 'p'),
                          .handle = FileHandleBytes{.bytes = std::vector<uint8_t>(128, 1)}});
  state.inodes.push_back({.id = 3,
                          .lookups = 1,
                          .location = InodeLocation::kInvalid,
                          .error = std::string(kMaxErrorBytes, 'e')});
  state.next_inode_id = 4;
  auto decoded = decode(encode(state));
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(*decoded, state);
}

// Flags that reopen a file as it is: access modes, O_APPEND, O_DIRECTORY
// (part of O_TMPFILE's value, but not the bit that makes a new file), ...
TEST(MigrationState, OpenFlagsThatChangeNothingAreKept) {
  State state = small_state();
  const int32_t harmless = O_RDWR | O_APPEND | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_DIRECT |
                           O_SYNC | O_NOATIME | O_CLOEXEC | O_LARGEFILE;
  state.handles[0].open_flags = harmless;
  auto decoded = decode(encode(state));
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(decoded->handles[0].open_flags, harmless);
}

TEST(MigrationState, FieldsTheLocationDoesNotUseAreNotEncoded) {
  State state = small_state();
  state.inodes[1].error = "not written for a kPath record";
  state.inodes.push_back({.id = 4,
                          .lookups = 1,
                          .location = InodeLocation::kInvalid,
                          .path = "not written",
                          .handle = FileHandleBytes{.bytes = {1}},
                          .error = "why"});
  state.next_inode_id = 5;
  auto decoded = decode(encode(state));
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(decoded->inodes[1].error, "");
  EXPECT_EQ(
      decoded->inodes[3],
      (InodeRecord{.id = 4, .lookups = 1, .location = InodeLocation::kInvalid, .error = "why"}));
}

// Paths come from the stream: a message shows their control bytes escaped,
// and a long one cut short.
TEST(MigrationState, UntrustedBytesInMessagesAreEscapedAndCut) {
  State state = minimal_state();
  state.inodes.push_back({.id = 2, .lookups = 1, .path = "../\x1b[2J" + std::string(200, 'x')});
  state.next_inode_id = 3;
  const std::string message = message_of(encode(state));
  EXPECT_THAT(message, HasSubstr("\"../\\x1b[2Jxxx"));
  EXPECT_THAT(message, HasSubstr("... (207 bytes)"));
  EXPECT_THAT(message, Not(HasSubstr("\x1b")));
}

// One row per rule of docs/migration-state.md ("Refusals"): a stream that
// breaks that rule alone, and the start of the message it must get (the
// context, then what is wrong).
struct Refusal {
  std::string rule;
  std::function<Stream()> stream;
  std::string message;
};

// gtest names the failing row by its rule, not by its bytes.
void PrintTo(const Refusal& refusal, std::ostream* out) {
  *out << refusal.rule;
}

// The state with one change, encoded.
std::function<Stream()> encoded(std::function<void(State&)> change, State base = small_state()) {
  return [change = std::move(change), base = std::move(base)] {
    State state = base;
    change(state);
    return encode(state);
  };
}

std::function<Stream()> inode_2_with_path(std::string path) {
  return encoded([path = std::move(path)](State& s) { s.inodes[1].path = path; });
}

std::function<Stream()> handle_with_flags(int32_t flags) {
  return encoded([flags](State& s) { s.handles[0].open_flags = flags; });
}

std::function<Stream()> sealed(std::function<Bytes()> body) {
  return [body = std::move(body)] { return seal(body()); };
}

std::vector<Refusal> refusals() {
  const Stream valid = encode(small_state());
  const size_t body_length = valid.size() - 24 - 4;
  return {
      // The header and the framing.
      {"WrongMagic",
       [] {
         Stream s = encode(small_state());
         s[0] = 'X';
         return s;
       },
       "header: not a virtiofsd-cpp migration state (wrong magic)"},
      {"SomethingElseEntirely", [] { return Stream{'{', '"', 'a', '"', ':', '1', '}'}; },
       "header: not a virtiofsd-cpp migration state"},
      {"EmptyStream", [] { return Stream{}; },
       "header: truncated: the stream has 0 bytes, the header alone is 24"},
      {"ShortHeader", [] { return Stream{'V', 'F', 'S', 'D', 'M', 'I', 'G', '\n', 2, 0}; },
       "header: truncated: the stream has 10 bytes, the header alone is 24"},
      {"VersionZero", [] { return seal(body_through_inodes().u32(0), 0); },
       "header: version 0 does not exist (versions start at 1)"},
      {"VersionNewer", [] { return seal(body_through_inodes().u32(0), kCurrentVersion + 1); },
       "header: version 3 is newer than this virtiofsd-cpp understands (at most 2)"},
      {"NonzeroFlags", [] { return seal(body_through_inodes().u32(0), kCurrentVersion, 0x10); },
       "header: flags are 0x10, must be 0 (version 2 defines no flag)"},
      {"TruncatedBody", [valid] { return Stream(valid.begin(), valid.end() - 10); },
       "body: truncated: the header announces " + std::to_string(body_length) + " body bytes, " +
           std::to_string(body_length - 6) + " are there"},
      {"TruncatedChecksum", [valid] { return Stream(valid.begin(), valid.end() - 1); },
       "checksum: truncated: 3 of its 4 bytes are there"},
      {"TrailingBytes",
       [valid] {
         Stream s = valid;
         s.insert(s.end(), {0, 0, 0});
         return s;
       },
       "checksum: 3 trailing bytes after the checksum"},
      {"ChecksumMismatch",
       [valid] {
         Stream s = valid;
         s[40] ^= 0x20;
         return s;
       },
       "checksum: mismatch: the stream carries 0x"},
      {"BodyLongerThanItsRecords", sealed([] { return body_through_inodes().u32(0).u8(0).u8(0); }),
       "body: 2 bytes left over after the last handle record"},

      // The session.
      {"SessionOpenByteNotABool", sealed([] { return Bytes().u8(2).u32(0).u64(0).u32(0).u32(0); }),
       "session: open byte is 2, a bool byte must be 0 or 1"},
      {"ClosedSessionWithFields", encoded([](State& s) { s.session.max_write = 4096; }),
       "session: not open (no INIT yet), but its other fields are not all 0"},
      {"TruncatedSession", sealed([] { return Bytes().u8(1).u32(31).u32(0); }),
       "session: truncated: agreed_flags needs 8 bytes, 4 are left in the body"},

      // Counts.
      {"InodeCountOverTheCap",
       sealed([] { return closed_session().u64(2).u64(1).u32(kMaxInodes + 1); }),
       "inodes: 16777217 records, at most 16777216"},
      {"InodeCountBeyondTheBody",
       sealed([] { return closed_session().u64(2).u64(1).u32(1000).u64(1).u64(0); }),
       "inodes: 1000 records cannot fit in the 16 bytes left of the body (a record is at least "
       "25 bytes)"},
      {"HandleCountOverTheCap", sealed([] { return body_through_inodes().u32(kMaxHandles + 1); }),
       "handles: 16777217 records, at most 16777216"},
      {"HandleCountBeyondTheBody", sealed([] { return body_through_inodes().u32(2).u64(1); }),
       "handles: 2 records cannot fit in the 8 bytes left of the body (a record is at least 22 "
       "bytes)"},

      // Inode records.
      {"InodeIdZero", encoded([](State& s) { s.inodes[1].id = 0; }),
       "inode record 1 (id 0): id 0 is not a node id"},
      {"DuplicateInodeId", encoded([](State& s) { s.inodes[2].id = 2; }),
       "inode record 2 (id 2): duplicate inode id: inode record 1 has it too"},
      {"RootTwice", encoded([](State& s) { s.inodes[2] = s.inodes[0]; }),
       "inode record 2 (id 1): duplicate inode id: inode record 0 has it too"},
      {"NoRoot", encoded([](State& s) { s.inodes.erase(s.inodes.begin()); }),
       "inodes: no root record (id 1): the shared directory itself must be among them"},
      {"RootWithAPath", encoded([](State& s) { s.inodes[0].path = "dir"; }),
       "inode record 0 (id 1): the root's path is \"dir\", must be \"\" (the shared directory "
       "itself)"},
      {"RootInvalid", encoded([](State& s) {
         s.inodes[0].location = InodeLocation::kInvalid;
         s.inodes[0].error = "gone";
       }),
       "inode record 0 (id 1): the root is invalid (location byte 3)"},
      {"NonRootWithTheRootsPath", inode_2_with_path(""),
       "inode record 1 (id 2): path \"\" is the shared directory itself, which only the root (id "
       "1) is"},
      {"PathWithALeadingSlash", inode_2_with_path("/etc"),
       "inode record 1 (id 2): path \"/etc\" starts with '/'"},
      {"PathWithADotComponent", inode_2_with_path("dir/./file"),
       "inode record 1 (id 2): path \"dir/./file\" has a \".\" component"},
      {"PathThatIsADot", inode_2_with_path("."),
       "inode record 1 (id 2): path \".\" has a \".\" component"},
      {"PathWithADotDotComponent", inode_2_with_path("dir/../../etc"),
       "inode record 1 (id 2): path \"dir/../../etc\" has a \"..\" component (it could leave the "
       "shared directory)"},
      {"PathWithAnEmptyComponent", inode_2_with_path("dir//file"),
       "inode record 1 (id 2): path \"dir//file\" has an empty component"},
      {"PathWithATrailingSlash", inode_2_with_path("dir/"),
       "inode record 1 (id 2): path \"dir/\" has an empty component"},
      {"PathWithANul", inode_2_with_path(std::string("dir\0x", 5)),
       "inode record 1 (id 2): path contains a NUL byte"},
      {"PathTooLong", inode_2_with_path(std::string(kMaxPathBytes + 1, 'p')),
       "inode record 1 (id 2): path of 4097 bytes, at most 4096"},
      {"PathLongerThanTheBody",
       sealed([] { return body_through_inode_2_type().u8(1).u32(100).raw("abc"); }),
       "inode record 1 (id 2): truncated: the path needs 100 bytes, 3 are left in the body"},
      {"TypeWithBitsOutsideIfmt", encoded([](State& s) { s.inodes[1].type = S_IFDIR | 0755; }),
       "inode record 1 (id 2): type 0x41ed has bits outside S_IFMT"},
      {"UnknownLocationByte",
       encoded([](State& s) { s.inodes[1].location = static_cast<InodeLocation>(4); }),
       "inode record 1 (id 2): unknown location byte 4 (1 = path, 2 = file handle, 3 = invalid)"},
      {"LocationByteZero",
       sealed([] { return body_through_inode_2_type().u8(0).raw(std::string(8, '\0')); }),
       "inode record 1 (id 2): unknown location byte 0"},
      {"InvalidLocationInVersion1",
       [] {
         State s = small_state();
         s.inodes[1].location = InodeLocation::kInvalid;
         s.inodes[1].error = "gone";
         return encode_version_1_for_tests(s);
       },
       "inode record 1 (id 2): location byte 3 (invalid) came with version 2, this stream is "
       "version 1"},
      {"HasHandleByteNotABool",
       sealed([] { return body_through_inode_2_type().u8(1).sized("f").u8(7); }),
       "inode record 1 (id 2): has_handle byte is 7, a bool byte must be 0 or 1"},
      {"FileHandleTooLong",
       encoded([](State& s) { s.inodes[1].handle = FileHandleBytes{.bytes = Stream(129, 1)}; }),
       "inode record 1 (id 2): file handle of 129 bytes, at most 128 (MAX_HANDLE_SZ)"},
      {"FileHandleEmpty", encoded([](State& s) { s.inodes[1].handle = FileHandleBytes{}; }),
       "inode record 1 (id 2): file handle of 0 bytes"},
      {"FileHandleLocationWithoutAHandle",
       encoded([](State& s) { s.inodes[1].location = InodeLocation::kFileHandle; }),
       "inode record 1 (id 2): file handle of 0 bytes"},
      {"ErrorTooLong", encoded([](State& s) {
         s.inodes[1].location = InodeLocation::kInvalid;
         s.inodes[1].error = std::string(kMaxErrorBytes + 1, 'e');
       }),
       "inode record 1 (id 2): error of 1025 bytes, at most 1024"},

      // Handle records.
      {"DuplicateHandleId", encoded([](State& s) { s.handles.push_back(s.handles[0]); }),
       "handle record 1 (id 1): duplicate handle id: handle record 0 has it too"},
      {"HandleOnAnUnknownInode", encoded([](State& s) { s.handles[0].inode = 99; }),
       "handle record 0 (id 1): opened on inode 99, which is not among the inode records"},
      {"HandleOnInodeZero", encoded([](State& s) { s.handles[0].inode = 0; }),
       "handle record 0 (id 1): opened on inode 0, which is not among the inode records"},
      {"OpenFlagsWithCreat", handle_with_flags(O_RDWR | O_CREAT),
       "handle record 0 (id 1): open flags 0x42 include forbidden O_CREAT (reopening must never "
       "change the file)"},
      {"OpenFlagsWithExcl", handle_with_flags(O_RDWR | O_EXCL),
       "handle record 0 (id 1): open flags 0x82 include forbidden O_EXCL"},
      {"OpenFlagsWithTrunc", handle_with_flags(O_WRONLY | O_TRUNC),
       "handle record 0 (id 1): open flags 0x201 include forbidden O_TRUNC"},
      {"OpenFlagsWithTmpfile", handle_with_flags(O_RDWR | O_TMPFILE),
       "handle record 0 (id 1): open flags 0x410002 include forbidden O_TMPFILE"},
      {"OpenFlagsWithPath", handle_with_flags(O_PATH),
       "handle record 0 (id 1): open flags 0x200000 include forbidden O_PATH"},
      {"OpenFlagsWithSeveral", handle_with_flags(O_WRONLY | O_CREAT | O_TRUNC),
       "handle record 0 (id 1): open flags 0x241 include forbidden O_CREAT|O_TRUNC"},
      {"IsDirByteNotABool",
       sealed([] { return body_through_inodes().u32(1).u64(7).u64(2).i32(0).u8(2).u8(0); }),
       "handle record 0 (id 7): is_dir byte is 2, a bool byte must be 0 or 1"},
      {"AppendByteNotABool",
       sealed([] { return body_through_inodes().u32(1).u64(7).u64(2).i32(0).u8(0).u8(255); }),
       "handle record 0 (id 7): append byte is 255, a bool byte must be 0 or 1"},

      // Next ids.
      {"NextInodeIdNotAboveEveryInode", encoded([](State& s) { s.next_inode_id = 3; }),
       "next ids: next_inode_id 3 is not above inode record 2's id 3"},
      {"NextInodeIdZero", encoded([](State& s) { s.next_inode_id = 0; }),
       "next ids: next_inode_id 0 is not above inode record 2's id 3"},
      {"NextHandleIdNotAboveEveryHandle", encoded([](State& s) { s.next_handle_id = 1; }),
       "next ids: next_handle_id 1 is not above handle record 0's id 1"},
      {"NextHandleIdZeroWithoutHandles",
       encoded([](State& s) { s.next_handle_id = 0; }, minimal_state()),
       "next ids: next_handle_id 0 is below 1, where handle ids start"},
      {"Version1InodeIdLeavingNoNextId",
       [] {
         State s = small_state();
         s.inodes[2].id = std::numeric_limits<uint64_t>::max();
         s.handles[0].inode = s.inodes[2].id;
         return encode_version_1_for_tests(s);
       },
       "next ids: inode record 2's id 18446744073709551615 leaves no id to go on numbering "
       "from"},
  };
}

class MigrationStateRefuses : public ::testing::TestWithParam<Refusal> {};

TEST_P(MigrationStateRefuses, TheStreamThatBreaksTheRule) {
  const Refusal& row = GetParam();
  auto decoded = decode(row.stream());
  ASSERT_FALSE(decoded) << row.rule << ": decoded";
  EXPECT_THAT(decoded.error().message, StartsWith(row.message));
}

INSTANTIATE_TEST_SUITE_P(Rule, MigrationStateRefuses, ::testing::ValuesIn(refusals()),
                         [](const auto& info) { return info.param.rule; });

}  // namespace
}  // namespace vfsd::migration
