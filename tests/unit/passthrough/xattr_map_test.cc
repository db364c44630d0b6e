// XattrMap: the --xattrmap grammar of the Rust virtiofsd and the mapping of
// names in both directions.
#include "passthrough/xattr_map.h"

#include <gtest/gtest.h>

#include <string>

namespace vfsd::passthrough {
namespace {

using Rule = XattrMap::Rule;
using Type = XattrMap::Type;

XattrMap parse_ok(const std::string& text) {
  std::string message;
  auto map = XattrMap::parse(text, &message);
  EXPECT_TRUE(map.has_value()) << text << ": " << message;
  return map ? *map : XattrMap();
}

std::string parse_error(const std::string& text) {
  std::string message;
  auto map = XattrMap::parse(text, &message);
  EXPECT_FALSE(map.has_value()) << text;
  if (!map) {
    EXPECT_EQ(map.error().value, EINVAL);
  }
  return message;
}

// Mapped names as strings, so that a failed expectation reads clearly.
std::string host_of(const XattrMap& map, std::string_view name) {
  auto r = map.to_host(name);
  return r ? *r : "<errno " + std::to_string(r.error().value) + ">";
}
std::string guest_of(const XattrMap& map, std::string_view name) {
  return map.to_guest(name).value_or("<hidden>");
}

TEST(XattrMapTest, ParsesEveryTypeAndScope) {
  auto map = parse_ok(
      ":prefix:client:trusted.:user.vm.: :ok:server:a:b: :bad:all:c:d: "
      ":unsupported:client:e:f: :ok:all:::");
  std::vector<Rule> want = {
      {Type::kPrefix, XattrMap::kClient, "trusted.", "user.vm."},
      {Type::kOk, XattrMap::kServer, "a", "b"},
      {Type::kBad, XattrMap::kAll, "c", "d"},
      {Type::kUnsupported, XattrMap::kClient, "e", "f"},
      {Type::kOk, XattrMap::kAll, "", ""},
  };
  EXPECT_EQ(map.rules(), want);
}

TEST(XattrMapTest, EachRuleChoosesItsSeparatorAndWhitespaceSeparatesRules) {
  auto map = parse_ok(
      "\n  /prefix/all/trusted./user.virtiofs./\n\t|bad|server||trusted.|"
      ":bad:client:user.virtiofs.::  xokxallxxx  ");
  std::vector<Rule> want = {
      {Type::kPrefix, XattrMap::kAll, "trusted.", "user.virtiofs."},
      {Type::kBad, XattrMap::kServer, "", "trusted."},
      {Type::kBad, XattrMap::kClient, "user.virtiofs.", ""},
      {Type::kOk, XattrMap::kAll, "", ""},
  };
  EXPECT_EQ(map.rules(), want);
  // A separator may be a character that also appears in other rules' fields.
  auto dots = parse_ok(".ok.all... :ok:all:::");
  EXPECT_EQ(dots.rules().size(), 2u);
}

TEST(XattrMapTest, MapShorthandWithKeyExpandsToAFullMapping) {
  auto map = parse_ok(":map:trusted.:user.virtiofs.:");
  std::vector<Rule> want = {
      {Type::kPrefix, XattrMap::kAll, "trusted.", "user.virtiofs."},
      {Type::kBad, XattrMap::kServer, "", "trusted."},
      {Type::kBad, XattrMap::kClient, "user.virtiofs.", ""},
      {Type::kOk, XattrMap::kAll, "", ""},
  };
  EXPECT_EQ(map.rules(), want);
  EXPECT_EQ(host_of(map, "trusted.overlay.x"), "user.virtiofs.trusted.overlay.x");
  EXPECT_EQ(host_of(map, "user.plain"), "user.plain");
  EXPECT_EQ(map.to_host("user.virtiofs.trusted.x").error().value, EPERM);
  EXPECT_EQ(guest_of(map, "user.virtiofs.trusted.overlay.x"), "trusted.overlay.x");
  EXPECT_EQ(map.to_guest("trusted.host_only"), std::nullopt);
  EXPECT_EQ(guest_of(map, "user.plain"), "user.plain");
}

TEST(XattrMapTest, MapShorthandWithoutKeyMovesEveryName) {
  auto map = parse_ok("/map//user.guest./");
  std::vector<Rule> want = {
      {Type::kPrefix, XattrMap::kAll, "", "user.guest."},
      {Type::kBad, XattrMap::kAll, "", ""},
  };
  EXPECT_EQ(map.rules(), want);
  EXPECT_EQ(host_of(map, "security.selinux"), "user.guest.security.selinux");
  EXPECT_EQ(guest_of(map, "user.guest.security.selinux"), "security.selinux");
  EXPECT_EQ(map.to_guest("user.other"), std::nullopt);
}

TEST(XattrMapTest, MapRuleMustBeLast) {
  std::string message = parse_error(":map:a.:b.: :ok:all:::");
  EXPECT_NE(message.find("rule 1"), std::string::npos) << message;
  EXPECT_NE(message.find(":map:a.:b.:"), std::string::npos) << message;
  EXPECT_NE(message.find("last"), std::string::npos) << message;
}

TEST(XattrMapTest, UnterminatedRuleIsNamed) {
  std::string message = parse_error(":ok:all::: :prefix:all:trusted.:user.vm.");
  EXPECT_NE(message.find("rule 2"), std::string::npos) << message;
  EXPECT_NE(message.find(":prefix:all:trusted.:user.vm."), std::string::npos) << message;
  EXPECT_NE(message.find("unterminated"), std::string::npos) << message;
  // Cut short in every field.
  for (const char* text : {":", ":ok", ":ok:", ":ok:all", ":ok:all:", ":ok:all::", ":map:k:"}) {
    EXPECT_NE(parse_error(text).find("unterminated"), std::string::npos) << text;
  }
}

TEST(XattrMapTest, UnknownTypeAndScopeAreNamed) {
  std::string type = parse_error(":ok:all::: :TOMATO:all:::");
  EXPECT_NE(type.find("rule 2"), std::string::npos) << type;
  EXPECT_NE(type.find("unknown type \"TOMATO\""), std::string::npos) << type;
  std::string scope = parse_error("/prefix/helloworld///");
  EXPECT_NE(scope.find("rule 1"), std::string::npos) << scope;
  EXPECT_NE(scope.find("unknown scope \"helloworld\""), std::string::npos) << scope;
}

TEST(XattrMapTest, EmptyMapIsRefused) {
  EXPECT_NE(parse_error("   \n ").find("no rules"), std::string::npos);
}

TEST(XattrMapTest, MapWithoutCatchAllIsRefused) {
  // Guest names outside "trusted." would meet no rule.
  EXPECT_NE(parse_error(":prefix:all:trusted.:user.vm.:").find("every guest name"),
            std::string::npos);
  // Host names outside "user.vm." would meet no rule.
  EXPECT_NE(parse_error(":prefix:all::user.vm.: :bad:client:::").find("every host name"),
            std::string::npos);
  parse_ok(":prefix:all::user.vm.: :bad:server::: :ok:client:::");
}

TEST(XattrMapTest, ClientSideTypes) {
  auto map = parse_ok(
      ":prefix:client:trusted.:user.t.: :bad:client:user.secret.:: "
      ":unsupported:client:security.selinux:: :ok:all:::");
  EXPECT_EQ(host_of(map, "trusted.a"), "user.t.trusted.a");
  EXPECT_EQ(map.to_host("user.secret.a").error().value, EPERM);
  EXPECT_EQ(map.to_host("security.selinux").error().value, ENOTSUP);
  EXPECT_EQ(host_of(map, "user.other"), "user.other");
  // Client rules do not act on host names.
  EXPECT_EQ(guest_of(map, "user.secret.a"), "user.secret.a");
  EXPECT_EQ(guest_of(map, "user.t.trusted.a"), "user.t.trusted.a");
}

TEST(XattrMapTest, ServerSideTypes) {
  auto map = parse_ok(
      ":prefix:server::user.t.: :bad:server::security.: :unsupported:server::system.: "
      ":ok:all:::");
  EXPECT_EQ(guest_of(map, "user.t.trusted.a"), "trusted.a");
  EXPECT_EQ(map.to_guest("security.capability"), std::nullopt);
  EXPECT_EQ(map.to_guest("system.posix_acl_access"), std::nullopt);
  EXPECT_EQ(guest_of(map, "user.x"), "user.x");
  EXPECT_EQ(map.to_guest("user.t."), std::nullopt);  // would be an empty name
  // Server rules do not act on guest names.
  EXPECT_EQ(host_of(map, "security.capability"), "security.capability");
}

TEST(XattrMapTest, FirstMatchWins) {
  auto map = parse_ok(":ok:all:user.keep.:user.keep.: :prefix:all:user.:user.vm.: :bad:all:::");
  EXPECT_EQ(host_of(map, "user.keep.a"), "user.keep.a");
  EXPECT_EQ(host_of(map, "user.b"), "user.vm.user.b");
  EXPECT_EQ(map.to_host("trusted.c").error().value, EPERM);
  EXPECT_EQ(guest_of(map, "user.keep.a"), "user.keep.a");
  EXPECT_EQ(guest_of(map, "user.vm.user.b"), "user.b");
  EXPECT_EQ(map.to_guest("user.other"), std::nullopt);
}

TEST(XattrMapTest, IdentityMapPassesEverything) {
  XattrMap map;
  EXPECT_TRUE(map.empty());
  EXPECT_EQ(host_of(map, "trusted.x"), "trusted.x");
  EXPECT_EQ(guest_of(map, "security.y"), "security.y");
}

TEST(XattrMapTest, NullMessagePointerIsAllowed) {
  auto map = XattrMap::parse(":bogus", nullptr);
  ASSERT_FALSE(map.has_value());
  EXPECT_EQ(map.error().value, EINVAL);
}

}  // namespace
}  // namespace vfsd::passthrough
