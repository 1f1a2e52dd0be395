#include "common/bundle.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/base/internal/endian.h"

namespace whorl {
namespace {

std::string Bundle(const std::vector<std::string>& parts) {
  std::vector<BundleMember> members;
  for (const std::string& p : parts)
    members.push_back({Sha256(p), static_cast<uint32_t>(p.size())});
  std::string out = EncodeBundleTable(members);
  for (const std::string& p : parts) out += p;
  return out;
}

TEST(BundleTest, TableKnownAnswer) {
  const std::string table = EncodeBundleTable({{Sha256("abc"), 3}});
  ASSERT_EQ(table.size(), 40u);
  EXPECT_EQ(HexEncode(table),
            "01000000"
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            "03000000");
  EXPECT_EQ(BundleId({{Sha256("abc"), 3}}), Sha256(table));
}

TEST(BundleTest, ParseGivesEachMemberItsOffset) {
  const std::string plain = Bundle({"abc", "", "hello"});
  absl::StatusOr<std::vector<BundleSlice>> slices = ParseBundle(plain);
  ASSERT_TRUE(slices.ok()) << slices.status();
  ASSERT_EQ(slices->size(), 3u);
  const uint32_t table = static_cast<uint32_t>(BundleTableSize(3));
  EXPECT_EQ((*slices)[0].offset, table);
  EXPECT_EQ((*slices)[1].offset, table + 3);
  EXPECT_EQ((*slices)[2].offset, table + 3);
  EXPECT_EQ((*slices)[2].member.fingerprint, Sha256("hello"));
  EXPECT_EQ(plain.substr((*slices)[2].offset, (*slices)[2].member.size), "hello");
}

TEST(BundleTest, ParseRefusesHostileTables) {
  const std::string good = Bundle({"abc", "hello"});
  auto with_count = [&](uint32_t count) {
    std::string s = good;
    absl::little_endian::Store32(s.data(), count);
    return s;
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "has no table"},
      {with_count(0), "member count 0 not in 1..4096"},
      {with_count(4097), "member count 4097"},
      {with_count(0xffffffff), "member count 4294967295"},
      {with_count(3), "cut short"},  // the third entry would be read from the bytes
      {with_count(2) + std::string(36, 'z'), "do not make its"},
      {good.substr(0, 20), "cut short"},
      {good.substr(0, good.size() - 1), "do not make its"},
      {good + "x", "do not make its"},
      {Bundle({"same", "same"}), "twice"},
  };
  for (const auto& [plain, want] : cases) {
    absl::StatusOr<std::vector<BundleSlice>> s = ParseBundle(plain);
    ASSERT_FALSE(s.ok()) << want;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(s.status().message().find(want), std::string_view::npos) << s.status();
  }
  // A size that overflows past the end is refused without reading beyond the input.
  std::string huge = good;
  absl::little_endian::Store32(huge.data() + 4 + 32, 0xffffffff);
  EXPECT_EQ(ParseBundle(huge).status().code(), absl::StatusCode::kDataLoss);
}

TEST(BundleTest, SharesSumToTheWholeInProportion) {
  const std::vector<BundleMember> m = {{Sha256("a"), 100}, {Sha256("b"), 300}, {Sha256("c"), 1}};
  const std::vector<uint32_t> s = ApportionBytes(1000, m);
  EXPECT_EQ(s, (std::vector<uint32_t>{249, 748, 3}));
  const std::vector<uint32_t> empty = ApportionBytes(10, {{Sha256("a"), 0}, {Sha256("b"), 0}});
  EXPECT_EQ(empty, (std::vector<uint32_t>{5, 5}));
}

}  // namespace
}  // namespace whorl
