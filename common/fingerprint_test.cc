#include "common/fingerprint.h"

#include <gtest/gtest.h>

namespace whorl {
namespace {

// Known answers from NIST FIPS 180-2 examples (SHA-256).
TEST(Sha256Test, NistEmptyString) {
  EXPECT_EQ(Sha256("").ToHex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256Test, NistAbc) {
  EXPECT_EQ(Sha256("abc").ToHex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, NistTwoBlockMessage) {
  EXPECT_EQ(Sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").ToHex(),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256Test, NistMillionA) {
  EXPECT_EQ(Sha256(std::string(1000000, 'a')).ToHex(),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// Zeros come from a per-thread cache of the last length hashed: alternating lengths, zeros with
// one byte set, and other data must all give SHA-256 itself.
TEST(FingerprintTest, ChunkSha256IsSha256ForZerosAndEverythingElse) {
  for (size_t n : {131072, 131072, 8192, 131072, 1, 1, 65}) {
    const std::string zeros(n, '\0');
    EXPECT_EQ(ChunkSha256(zeros), Sha256(zeros)) << n;
    std::string almost = zeros;
    almost[n - 1] = '\x01';
    EXPECT_EQ(ChunkSha256(almost), Sha256(almost)) << n;
    EXPECT_NE(ChunkSha256(almost), ChunkSha256(zeros)) << n;
  }
  EXPECT_EQ(ChunkSha256(""), Sha256(""));
  EXPECT_EQ(ChunkSha256("abc"), Sha256("abc"));
}

TEST(FingerprintTest, HexRoundTrip) {
  const Fingerprint f = Sha256("abc");
  auto back = Fingerprint::FromHex(f.ToHex());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, f);
  EXPECT_EQ(f.Prefix64(), 0xba7816bf8f01cfeaULL);
}

TEST(FingerprintTest, FromBytesRefusesWrongLength) {
  EXPECT_EQ(Fingerprint::FromBytes("short").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Fingerprint::FromHex(std::string(63, 'a')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Fingerprint::FromHex(std::string(64, 'g')).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace whorl
