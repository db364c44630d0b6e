// --translate-uid/--translate-gid rules: the parser (every form, every error,
// as 1.13.3's soft_idmap/cmdline.rs reads them) and IdMap's semantics.
#include "passthrough/id_map.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace vfsd::passthrough {
namespace {

using Kind = IdMapRule::Kind;

IdMapRule parsed(const std::string& text) {
  std::string message;
  auto rule = parse_id_map_rule(text, message);
  EXPECT_TRUE(rule) << text << ": " << message;
  return rule.value_or(IdMapRule{});
}

std::string parse_error(const std::string& text) {
  std::string message;
  auto rule = parse_id_map_rule(text, message);
  EXPECT_FALSE(rule) << text << " was accepted as " << (rule ? rule->text() : "");
  return message;
}

IdMap built(const std::vector<std::string>& texts) {
  std::vector<IdMapRule> rules;
  for (const auto& t : texts) rules.push_back(parsed(t));
  std::string message;
  auto map = IdMap::build(rules, message);
  EXPECT_TRUE(map) << message;
  return map.value_or(IdMap{});
}

std::string build_error(const std::vector<std::string>& texts) {
  std::vector<IdMapRule> rules;
  for (const auto& t : texts) rules.push_back(parsed(t));
  std::string message;
  auto map = IdMap::build(rules, message);
  EXPECT_FALSE(map) << "accepted";
  return message;
}

TEST(IdMapRuleParse, EverySixFormWithItsFieldOrder) {
  EXPECT_EQ(parsed("guest:1000:2000:10"), (IdMapRule{Kind::kGuest, 1000, 2000, 10}));
  EXPECT_EQ(parsed("host:2000:1000:10"), (IdMapRule{Kind::kHost, 2000, 1000, 10}));
  EXPECT_EQ(parsed("squash-guest:0:1000:65536"), (IdMapRule{Kind::kSquashGuest, 0, 1000, 65536}));
  EXPECT_EQ(parsed("squash-host:0:65534:1000"), (IdMapRule{Kind::kSquashHost, 0, 65534, 1000}));
  EXPECT_EQ(parsed("forbid-guest:5:3"), (IdMapRule{Kind::kForbidGuest, 5, 0, 3}));
  EXPECT_EQ(parsed("map:0:100000:65536"), (IdMapRule{Kind::kMap, 0, 100000, 65536}));
  // Canonical text round-trips.
  for (const char* text : {"guest:1:2:3", "host:1:2:3", "squash-guest:1:2:3", "squash-host:1:2:3",
                           "forbid-guest:1:3", "map:1:2:3"}) {
    EXPECT_EQ(parsed(text).text(), text);
  }
}

TEST(IdMapRuleParse, LikeRustAnySeparatorAnyCaseAPlusSignAndCountZero) {
  EXPECT_EQ(parsed("MAP/0/1000/1"), (IdMapRule{Kind::kMap, 0, 1000, 1}));
  EXPECT_EQ(parsed("Squash-Guest,0,7,+4"), (IdMapRule{Kind::kSquashGuest, 0, 7, 4}));
  // Incus: a zero-length forbid range, and the tail up to the last id.
  EXPECT_EQ(parsed("forbid-guest:65536:0"), (IdMapRule{Kind::kForbidGuest, 65536, 0, 0}));
  EXPECT_EQ(parsed("forbid-guest:65536:4294901759"),
            (IdMapRule{Kind::kForbidGuest, 65536, 0, 4294901759u}));
  EXPECT_EQ(parsed("guest:4294967295:0:0").source, 4294967295u);
}

TEST(IdMapRuleParse, ErrorsInRustsWords) {
  EXPECT_EQ(parse_error("squash:1:2:3"), "Invalid ID map prefix squash");
  EXPECT_EQ(parse_error(":1:2:3"), "Invalid ID map prefix ");
  EXPECT_EQ(parse_error("guest"), "Invalid ID map length (expected 1 elements, got 0 elements)");
  EXPECT_EQ(parse_error(""), "Invalid ID map length (expected 1 elements, got 0 elements)");
  EXPECT_EQ(parse_error("guest:1:2"),
            "Invalid ID map length (expected 3 elements, got 2 elements)");
  EXPECT_EQ(parse_error("map:1:2:3:4"),
            "Invalid ID map length (expected 3 elements, got 4 elements)");
  EXPECT_EQ(parse_error("forbid-guest:1:2:3"),
            "Invalid ID map length (expected 2 elements, got 3 elements)");
  EXPECT_EQ(parse_error("guest:1:2:3:"),
            "Invalid value  in ID map: cannot parse integer from empty string");
  EXPECT_EQ(parse_error("guest:1:-2:3"),
            "Invalid value -2 in ID map: invalid digit found in string");
  EXPECT_EQ(parse_error("guest:1:2/3:4"),
            "Invalid value 2/3 in ID map: invalid digit found in string");
  EXPECT_EQ(parse_error("guest: 1:2:3"),
            "Invalid value  1 in ID map: invalid digit found in string");
  EXPECT_EQ(parse_error("guest:+:2:3"), "Invalid value + in ID map: invalid digit found in string");
  EXPECT_EQ(parse_error("guest:4294967296:2:3"),
            "Invalid value 4294967296 in ID map: number too large to fit in target type");
  EXPECT_EQ(parse_error("guest:99999999999999999999999:2:3"),
            "Invalid value 99999999999999999999999 in ID map: number too large to fit in target "
            "type");
}

TEST(IdMap, EmptyIsTheIdentityBothWays) {
  IdMap map;
  EXPECT_TRUE(map.empty());
  for (uint32_t id : {0u, 1u, 1000u, 65534u, 4294967295u}) {
    EXPECT_EQ(map.guest_to_host(id), id);
    EXPECT_EQ(map.host_to_guest(id), id);
  }
}

TEST(IdMap, GuestRuleMapsOneDirectionOnlyAndLeavesTheRestAlone) {
  IdMap map = built({"guest:1000:5000:10"});
  EXPECT_FALSE(map.empty());
  EXPECT_EQ(map.guest_to_host(1000), 5000u);
  EXPECT_EQ(map.guest_to_host(1009), 5009u);
  EXPECT_EQ(map.guest_to_host(1010), 1010u);  // one past the range
  EXPECT_EQ(map.guest_to_host(999), 999u);
  // Host-to-guest is untouched: not the inverse.
  EXPECT_EQ(map.host_to_guest(5000), 5000u);
  EXPECT_EQ(map.host_to_guest(1000), 1000u);
}

TEST(IdMap, HostRuleMapsHostIdsForTheGuestOnly) {
  IdMap map = built({"host:107:0:1"});  // KubeVirt's workaround
  EXPECT_EQ(map.host_to_guest(107), 0u);
  EXPECT_EQ(map.host_to_guest(108), 108u);
  EXPECT_EQ(map.guest_to_host(0), 0u);
}

TEST(IdMap, SquashesMapARangeToOneId) {
  IdMap map = built({"squash-guest:0:1000:65536", "squash-host:0:65534:1000"});
  EXPECT_EQ(map.guest_to_host(0), 1000u);
  EXPECT_EQ(map.guest_to_host(65535), 1000u);
  EXPECT_EQ(map.guest_to_host(65536), 65536u);
  EXPECT_EQ(map.host_to_guest(0), 65534u);
  EXPECT_EQ(map.host_to_guest(999), 65534u);
  EXPECT_EQ(map.host_to_guest(1000), 1000u);
}

TEST(IdMap, MapIsBidirectional) {
  IdMap map = built({"map:0:100000:65536"});
  EXPECT_EQ(map.guest_to_host(0), 100000u);
  EXPECT_EQ(map.guest_to_host(65535), 165535u);
  EXPECT_EQ(map.guest_to_host(65536), 65536u);
  EXPECT_EQ(map.host_to_guest(100000), 0u);
  EXPECT_EQ(map.host_to_guest(165535), 65535u);
  EXPECT_EQ(map.host_to_guest(99999), 99999u);
}

TEST(IdMap, ForbidGuestIsEpermForThoseGuestIdsOnly) {
  IdMap map = built({"forbid-guest:500:10"});
  auto forbidden = map.guest_to_host(505);
  ASSERT_FALSE(forbidden);
  EXPECT_EQ(forbidden.error().value, EPERM);
  EXPECT_FALSE(map.guest_to_host(500));
  EXPECT_FALSE(map.guest_to_host(509));
  EXPECT_EQ(map.guest_to_host(510), 510u);
  EXPECT_EQ(map.guest_to_host(499), 499u);
  EXPECT_EQ(map.host_to_guest(505), 505u);
}

TEST(IdMap, IncusCommandLineWithZeroCountsBuilds) {
  // What Incus builds for an isolated container: map the range, forbid
  // the gaps (here of length 0) and everything up to the last id.
  IdMap map = built({"map:0:1000000:65536", "forbid-guest:0:0", "forbid-guest:65536:0",
                     "forbid-guest:65536:4294901759"});
  EXPECT_EQ(map.guest_to_host(0), 1000000u);
  EXPECT_EQ(map.guest_to_host(65535), 1065535u);
  EXPECT_FALSE(map.guest_to_host(65536));
  EXPECT_FALSE(map.guest_to_host(4294967294u));
  // -1 is no id: it stays -1 (and the request is refused as before).
  EXPECT_EQ(map.guest_to_host(4294967295u), 4294967295u);
  EXPECT_EQ(map.host_to_guest(1000000), 0u);
}

TEST(IdMap, ZeroCountRulesCoverNothingAndOverlapNothing) {
  IdMap map = built({"guest:5:50:0", "guest:5:60:1", "map:5:70:0"});
  EXPECT_EQ(map.guest_to_host(5), 60u);
  EXPECT_EQ(map.host_to_guest(70), 70u);
}

TEST(IdMap, OverlappingSourceRangesAreRefusedPerDirection) {
  EXPECT_EQ(build_error({"guest:0:1000:10", "guest:9:2000:1"}),
            "'guest:9:2000:1': its guest-to-host range overlaps an earlier rule's");
  EXPECT_EQ(build_error({"guest:10:1000:10", "squash-guest:0:2000:11"}),
            "'squash-guest:0:2000:11': its guest-to-host range overlaps an earlier rule's");
  EXPECT_EQ(build_error({"map:0:1000:10", "forbid-guest:5:1"}),
            "'forbid-guest:5:1': its guest-to-host range overlaps an earlier rule's");
  EXPECT_EQ(build_error({"host:1000:0:10", "map:50:1005:1"}),
            "'map:50:1005:1': its host-to-guest range overlaps an earlier rule's");
  EXPECT_EQ(build_error({"squash-host:0:1:100", "squash-host:99:1:1"}),
            "'squash-host:99:1:1': its host-to-guest range overlaps an earlier rule's");
  // Adjacent ranges, and the same range in the other direction, are fine.
  IdMap map = built({"guest:0:1000:10", "guest:10:2000:10", "host:0:5:10", "host:10:6:1"});
  EXPECT_EQ(map.guest_to_host(9), 1009u);
  EXPECT_EQ(map.guest_to_host(10), 2000u);
  EXPECT_EQ(map.host_to_guest(10), 6u);
}

TEST(IdMap, RangesPastTheLastIdAreRefused) {
  EXPECT_EQ(build_error({"guest:4294967295:0:1"}),
            "'guest:4294967295:0:1': range overflow (ids end at 4294967294)");
  EXPECT_EQ(build_error({"forbid-guest:1:4294967295"}),
            "'forbid-guest:1:4294967295': range overflow (ids end at 4294967294)");
  // On the target side too: the guest must never be able to name -1.
  EXPECT_EQ(build_error({"guest:0:4294967290:6"}),
            "'guest:0:4294967290:6': range overflow (ids end at 4294967294)");
  EXPECT_EQ(build_error({"squash-guest:0:4294967295:1"}),
            "'squash-guest:0:4294967295:1': range overflow (ids end at 4294967294)");
  EXPECT_EQ(build_error({"map:0:4294967295:1"}),
            "'map:0:4294967295:1': range overflow (ids end at 4294967294)");
  // Up to the last id is fine.
  IdMap map = built({"guest:4294967290:0:5", "squash-host:0:4294967294:1"});
  EXPECT_EQ(map.guest_to_host(4294967294u), 4u);
  EXPECT_EQ(map.host_to_guest(0), 4294967294u);
}

TEST(IdMap, ManyRulesLookUpTheRightOne) {
  std::vector<std::string> texts;
  for (uint32_t i = 0; i < 100; ++i) {
    texts.push_back("guest:" + std::to_string(i * 10) + ":" + std::to_string(100000 + i) + ":5");
  }
  IdMap map = built(texts);
  for (uint32_t i = 0; i < 100; ++i) {
    EXPECT_EQ(map.guest_to_host(i * 10 + 4), 100000 + i + 4);
    EXPECT_EQ(map.guest_to_host(i * 10 + 5), i * 10 + 5);
  }
}

}  // namespace
}  // namespace vfsd::passthrough
