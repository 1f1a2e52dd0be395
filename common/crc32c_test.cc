#include "common/crc32c.h"

#include <gtest/gtest.h>

#include <string>

namespace whorl {
namespace {

// Known answers from RFC 3720 section B.4.
TEST(Crc32cTest, Rfc3720Zeros) { EXPECT_EQ(crc32c::Value(std::string(32, '\0')), 0x8a9136aaU); }

TEST(Crc32cTest, Rfc3720Ones) { EXPECT_EQ(crc32c::Value(std::string(32, '\xff')), 0x62a8ab43U); }

TEST(Crc32cTest, Rfc3720Incrementing) {
  std::string data;
  for (int i = 0; i < 32; ++i) data.push_back(static_cast<char>(i));
  EXPECT_EQ(crc32c::Value(data), 0x46dd794eU);
}

TEST(Crc32cTest, ExtendEqualsWhole) {
  const std::string a = "hello ", b = "world";
  EXPECT_EQ(crc32c::Extend(crc32c::Value(a), b), crc32c::Value(a + b));
  EXPECT_EQ(crc32c::Value(""), 0U);
}

}  // namespace
}  // namespace whorl
