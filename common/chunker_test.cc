#include "common/chunker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace whorl {
namespace {

constexpr uint64_t kPublishedPoly = 0x3DA3358B4DC173;  // published as irreducible, degree 53
const ChunkerParams kDefaults{kPublishedPoly, 16384, 65536, 262144};

// splitmix64: a tiny seeded generator so test data is reproducible everywhere.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t operator()() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }
  uint64_t Below(uint64_t n) { return (*this)() % n; }

 private:
  uint64_t state_;
};

std::string RandomBytes(uint64_t seed, size_t n) {
  SplitMix64 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t w = rng();
    std::memcpy(out.data() + i, &w, std::min<size_t>(8, n - i));
  }
  return out;
}

// Random bytes, or data of low entropy (few distinct bytes, zero runs, a repeated pattern),
// which exercises long runs of matching or never-matching windows.
std::string VariedBytes(SplitMix64& rng, size_t n) {
  std::string out = RandomBytes(rng(), n);
  switch (rng.Below(4)) {
    case 0:
      break;
    case 1:
      for (char& c : out) c &= 1;
      break;
    case 2:
      for (size_t i = rng.Below(n + 1); i < n; i += 1 + rng.Below(50000)) {
        const size_t run = std::min<size_t>(n - i, rng.Below(40000));
        std::memset(out.data() + i, 0, run);
        i += run;
      }
      break;
    default: {
      const size_t period = 1 + rng.Below(200);
      for (size_t i = period; i < n; ++i) out[i] = out[i - period];
    }
  }
  return out;
}

const uint8_t* Bytes(std::string_view s) { return reinterpret_cast<const uint8_t*>(s.data()); }

using NextChunkFn = std::function<size_t(const uint8_t*, size_t, bool)>;

// Chunk lengths of `data` handed over whole.
std::vector<size_t> ChunkWhole(std::string_view data, const NextChunkFn& next) {
  std::vector<size_t> lengths;
  for (size_t off = 0; off < data.size();) {
    const size_t len = next(Bytes(data) + off, data.size() - off, true);
    if (len == 0 || len > data.size() - off) {
      ADD_FAILURE() << "bad chunk length " << len << " at " << off;
      break;
    }
    lengths.push_back(len);
    off += len;
  }
  return lengths;
}

std::vector<size_t> ChunkWhole(std::string_view data, const Chunker& chunker) {
  return ChunkWhole(
      data, [&](const uint8_t* p, size_t n, bool eof) { return chunker.NextChunk(p, n, eof); });
}

// The reference loop, in the shape ChunkWhole takes.
NextChunkFn Slow(const Chunker& chunker) {
  return [&chunker](const uint8_t* p, size_t n, bool eof) {
    return internal::NextChunkSlow(chunker, p, n, eof);
  };
}

uint64_t ClMul(uint64_t a, uint64_t b) {  // product over GF(2); the caller keeps it in 64 bits
  uint64_t r = 0;
  for (int i = 0; i < 64; ++i) {
    if ((b >> i) & 1) r ^= a << i;
  }
  return r;
}

// The definition, one bit at a time: the window's bits as polynomial coefficients, first byte
// most significant, reduced modulo `poly` (degree 53).
uint64_t BitSerialWindowHash(uint64_t poly, const uint8_t* window) {
  uint64_t h = 0;
  for (int i = 0; i < 64; ++i) {
    for (int bit = 7; bit >= 0; --bit) {
      h = (h << 1) | ((window[i] >> bit) & 1);
      if (h >> 53) h ^= poly;
    }
  }
  return h;
}

// NextChunk written straight from the contract in chunker.h.
size_t ContractNextChunk(const ChunkerParams& p, const uint8_t* data, size_t n, bool at_eof) {
  for (size_t len = p.min_size; len <= std::min<size_t>(n, p.max_size); ++len) {
    if ((BitSerialWindowHash(p.polynomial, data + len - 64) & (p.avg_size - 1)) == 0) return len;
  }
  if (n >= p.max_size) return p.max_size;
  return at_eof ? n : 0;
}

ChunkerParams RandomParams(SplitMix64& rng) {
  ChunkerParams p;
  p.polynomial = DrawIrreduciblePolynomial([&] { return rng(); });
  p.min_size = static_cast<uint32_t>(64 + rng.Below(4096));
  p.avg_size = std::bit_ceil(p.min_size) << rng.Below(5);
  p.max_size =
      std::max(p.avg_size, p.min_size + 1) + static_cast<uint32_t>(rng.Below(4 * p.avg_size));
  p.cut_on_ones = rng.Below(2) == 1;
  return p;
}

TEST(PolyTest, DegreeKnownAnswers) {
  EXPECT_EQ(PolyDegree(0), -1);
  EXPECT_EQ(PolyDegree(1), 0);
  EXPECT_EQ(PolyDegree(2), 1);
  EXPECT_EQ(PolyDegree(kPublishedPoly), 53);
  EXPECT_EQ(PolyDegree(uint64_t{1} << 63), 63);
}

TEST(PolyTest, IrreducibilityKnownAnswers) {
  EXPECT_TRUE(PolyIsIrreducible(0b111));     // x^2+x+1
  EXPECT_TRUE(PolyIsIrreducible(0b10011));   // x^4+x+1
  EXPECT_FALSE(PolyIsIrreducible(0b10101));  // x^4+x^2+1 = (x^2+x+1)^2
  EXPECT_FALSE(PolyIsIrreducible(0b101));    // x^2+1 = (x+1)^2
  EXPECT_TRUE(PolyIsIrreducible(kPublishedPoly));
  EXPECT_TRUE(PolyIsIrreducible(0b10));  // x
  EXPECT_TRUE(PolyIsIrreducible(0b11));  // x+1
  EXPECT_FALSE(PolyIsIrreducible(0));
  EXPECT_FALSE(PolyIsIrreducible(1));
  // Products of known irreducibles: x^31+x^3+1, x^7+x+1 and x^4+x+1 (primitive trinomials).
  EXPECT_FALSE(PolyIsIrreducible(ClMul(0x80000009, 0x83)));
  EXPECT_FALSE(PolyIsIrreducible(ClMul(0x80000009, 0x80000009)));
  EXPECT_FALSE(PolyIsIrreducible(ClMul(kPublishedPoly, 0b10011)));  // degree 57
  EXPECT_FALSE(PolyIsIrreducible(ClMul(kPublishedPoly, 0b10)));     // x * p
  EXPECT_TRUE(PolyIsIrreducible((uint64_t{1} << 63) | 0b11));       // x^63+x+1
}

// The number of irreducible polynomials of degree d over GF(2) is (1/d) sum_{e|d} mu(e) 2^(d/e).
TEST(PolyTest, IrreducibleCountsMatchGaussFormula) {
  const int expected[] = {0, 2, 1, 2, 3, 6, 9, 18, 30, 56, 99, 186, 335, 630, 1161};
  for (int d = 1; d <= 14; ++d) {
    int count = 0;
    for (uint64_t p = uint64_t{1} << d; p < uint64_t{2} << d; ++p) count += PolyIsIrreducible(p);
    EXPECT_EQ(count, expected[d]) << "degree " << d;
  }
}

TEST(DrawIrreduciblePolynomialTest, GivesDegree53Irreducible) {
  std::set<uint64_t> seen;
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    SplitMix64 rng(seed);
    const uint64_t p = DrawIrreduciblePolynomial([&] { return rng(); });
    EXPECT_EQ(PolyDegree(p), 53);
    EXPECT_TRUE(PolyIsIrreducible(p));
    ChunkerParams params = kDefaults;
    params.polynomial = p;
    EXPECT_EQ(ValidateChunkerParams(params), "");
    seen.insert(p);
  }
  EXPECT_EQ(seen.size(), 8u);
}

TEST(DrawIrreduciblePolynomialTest, BrokenSourceGivesZeroInsteadOfLooping) {
  EXPECT_EQ(DrawIrreduciblePolynomial([] { return uint64_t{0}; }), 0u);
}

TEST(ValidateChunkerParamsTest, AcceptsDefaults) {
  EXPECT_EQ(ValidateChunkerParams(kDefaults), "");
}

TEST(ValidateChunkerParamsTest, RefusesEachBadField) {
  struct Case {
    ChunkerParams params;
    std::string want;  // a word the message must contain
  };
  const auto with = [](auto change) {
    ChunkerParams p = kDefaults;
    change(p);
    return p;
  };
  const Case cases[] = {
      {with([](ChunkerParams& p) { p.polynomial = 0; }), "degree"},
      {with([](ChunkerParams& p) { p.polynomial = 0b10011; }), "degree"},
      {with([](ChunkerParams& p) { p.polynomial = kPublishedPoly << 1; }), "degree"},
      {with([](ChunkerParams& p) { p.polynomial = (uint64_t{1} << 53) | 1; }), "reducible"},
      {with([](ChunkerParams& p) { p.polynomial = ClMul(0x80000009, 0x400005); }), "reducible"},
      {with([](ChunkerParams& p) { p.min_size = 10; }), "min_size 10 is below 64"},
      {with([](ChunkerParams& p) { p.max_size = p.min_size; }), "max_size"},
      {with([](ChunkerParams& p) { p.max_size = (64 << 20) + 1; }), "64 MiB"},
      {with([](ChunkerParams& p) { p.avg_size = 65535; }), "power of two"},
      {with([](ChunkerParams& p) { p.avg_size = 0; }), "power of two"},
      {with([](ChunkerParams& p) { p.avg_size = 8192; }), "avg_size"},
      {with([](ChunkerParams& p) { p.avg_size = 1 << 19; }), "avg_size"},
  };
  for (const Case& c : cases) {
    const std::string why = ValidateChunkerParams(c.params);
    EXPECT_NE(why.find(c.want), std::string::npos) << "got \"" << why << "\", want " << c.want;
  }
  ChunkerParams big = kDefaults;
  big.max_size = 64 << 20;
  big.avg_size = 64 << 20;
  EXPECT_EQ(ValidateChunkerParams(big), "");
}

TEST(ChunkerTest, NextChunkEdgeCases) {
  const Chunker chunker(kDefaults);
  const std::string zeros(kDefaults.max_size + 10, '\0');
  EXPECT_EQ(chunker.NextChunk(Bytes(zeros), 0, true), 0u);
  EXPECT_EQ(chunker.NextChunk(Bytes(zeros), 0, false), 0u);
  EXPECT_EQ(chunker.NextChunk(Bytes(zeros), 100, true), 100u);  // short last chunk
  EXPECT_EQ(chunker.NextChunk(Bytes(zeros), kDefaults.min_size - 1, false), 0u);
  EXPECT_EQ(chunker.NextChunk(Bytes(zeros), kDefaults.min_size, false), kDefaults.min_size);
  // No match in the buffer and below max_size: more bytes needed, unless at eof.
  const std::string random = RandomBytes(7, kDefaults.max_size);
  const size_t first = chunker.NextChunk(Bytes(random), random.size(), true);
  ASSERT_GT(first, kDefaults.min_size + 1);
  EXPECT_EQ(chunker.NextChunk(Bytes(random), first - 1, false), 0u);
  EXPECT_EQ(chunker.NextChunk(Bytes(random), first - 1, true), first - 1);
  EXPECT_EQ(chunker.NextChunk(Bytes(random), first, false), first);
}

// The cut points are a function of the content alone, however the bytes arrive.
TEST(ChunkerTest, BoundariesDeterministicAcrossBufferSizes) {
  const std::string data = RandomBytes(1, 8 << 20);
  const Chunker chunker(kDefaults);
  const std::vector<size_t> whole = ChunkWhole(data, chunker);
  ASSERT_GT(whole.size(), 50u);
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    // A streaming caller: hands over what it has; when told "need more", reads one piece of a
    // random size (tiny to larger than max_size) onto the end of its buffer.
    SplitMix64 rng(seed);
    const size_t max_piece = seed % 2 ? 300 << 10 : 5000;
    std::string buffer;
    size_t read = 0;
    std::vector<size_t> lengths;
    while (true) {
      const bool eof = read == data.size();
      const size_t len = chunker.NextChunk(Bytes(buffer), buffer.size(), eof);
      if (len > 0) {
        lengths.push_back(len);
        buffer.erase(0, len);
        continue;
      }
      if (eof) break;
      const size_t piece = std::min<size_t>(data.size() - read, 1 + rng.Below(max_piece));
      buffer.append(data, read, piece);
      read += piece;
    }
    EXPECT_EQ(lengths, whole) << "seed " << seed;
  }
}

TEST(ChunkerTest, MinMaxRespected) {
  SplitMix64 rng(3);
  for (int round = 0; round < 40; ++round) {
    const ChunkerParams p = RandomParams(rng);
    const Chunker chunker(p);
    const std::string data = VariedBytes(rng, 1 + rng.Below(1 << 20));
    const std::vector<size_t> lengths = ChunkWhole(data, chunker);
    ASSERT_FALSE(lengths.empty());
    for (size_t i = 0; i + 1 < lengths.size(); ++i) {
      ASSERT_GE(lengths[i], p.min_size) << "round " << round << " chunk " << i;
      ASSERT_LE(lengths[i], p.max_size) << "round " << round << " chunk " << i;
    }
    EXPECT_GE(lengths.back(), 1u);
    EXPECT_LE(lengths.back(), p.max_size);
  }
}

// An all-zero window hashes to 0, which matches any mask: zeros cut at exactly min_size.
TEST(ChunkerTest, ZerosCutAtMinSize) {
  const Chunker chunker(kDefaults);
  const std::string zeros(1 << 20, '\0');
  const std::vector<size_t> lengths = ChunkWhole(zeros, chunker);
  ASSERT_EQ(lengths.size(), zeros.size() / kDefaults.min_size);
  for (size_t len : lengths) EXPECT_EQ(len, kDefaults.min_size);
}

// With cut_on_ones the all-zero window never matches: zeros cut at exactly max_size, and the
// chunks of data around a run of zeros are those of cut 0's rule shifted to the other value.
TEST(ChunkerTest, ZerosCutAtMaxSizeWhenCuttingOnOnes) {
  ChunkerParams p = kDefaults;
  p.cut_on_ones = true;
  const Chunker chunker(p);
  const std::string zeros(1 << 20, '\0');
  const std::vector<size_t> lengths = ChunkWhole(zeros, chunker);
  ASSERT_EQ(lengths.size(), zeros.size() / p.max_size);
  for (size_t len : lengths) EXPECT_EQ(len, p.max_size);
  // Random data: cuts exist, between min and max, and differ from those of cut 0.
  SplitMix64 rng(21);
  const std::string data = RandomBytes(rng(), 4 << 20);
  const std::vector<size_t> ones = ChunkWhole(data, chunker);
  const std::vector<size_t> zero_rule = ChunkWhole(data, Chunker(kDefaults));
  EXPECT_NE(ones, zero_rule);
  EXPECT_GT(ones.size(), data.size() / p.max_size);
  for (size_t i = 0; i + 1 < ones.size(); ++i) {
    EXPECT_GE(ones[i], p.min_size);
    EXPECT_LE(ones[i], p.max_size);
  }
}

// Constant data has one window, so every position matches (cut at min_size) or none does (cut
// at max_size); with a 16-bit mask nearly every byte value is of the second kind.
TEST(ChunkerTest, ConstantBytesCutAtMinOrMax) {
  const Chunker chunker(kDefaults);
  int max_cut_values = 0;
  for (int b = 1; b < 256; ++b) {
    const std::string data(5 * kDefaults.max_size / 2, static_cast<char>(b));
    const std::vector<size_t> lengths = ChunkWhole(data, chunker);
    const size_t len = lengths[0];
    ASSERT_TRUE(len == kDefaults.min_size || len == kDefaults.max_size) << "byte " << b;
    max_cut_values += len == kDefaults.max_size;
    for (size_t i = 0; i + 1 < lengths.size(); ++i) EXPECT_EQ(lengths[i], len) << "byte " << b;
    EXPECT_EQ(lengths.back(), data.size() - (lengths.size() - 1) * len);
  }
  EXPECT_GE(max_cut_values, 250);
}

// Inserting bytes near the start only changes the chunk holding the edit: the following cut
// points are found again at the same content.
TEST(ChunkerTest, InsertionLocality) {
  const std::string original = RandomBytes(5, 4 << 20);
  std::string edited = original;
  edited.insert(1000, "0123456789");
  const Chunker chunker(kDefaults);
  const auto fingerprints = [&](const std::string& data) {
    std::vector<size_t> out;
    size_t off = 0;
    for (size_t len : ChunkWhole(data, chunker)) {
      out.push_back(std::hash<std::string_view>()(std::string_view(data).substr(off, len)));
      off += len;
    }
    return out;
  };
  const std::vector<size_t> before = fingerprints(original), after = fingerprints(edited);
  ASSERT_GT(before.size(), 20u);
  const std::set<size_t> before_set(before.begin(), before.end());
  const std::set<size_t> after_set(after.begin(), after.end());
  for (size_t i = 2; i < after.size(); ++i) EXPECT_TRUE(before_set.count(after[i])) << i;
  for (size_t i = 2; i < before.size(); ++i) EXPECT_TRUE(after_set.count(before[i])) << i;
  EXPECT_NE(before[0], after[0]);
}

// These lengths are part of the repository format: if they move, chunks of new backups stop
// matching the chunks of old ones and cross-version dedup breaks. Never update them to make
// the test pass; a change here needs a new chunker version in the repository config.
TEST(ChunkerTest, GoldenCutPoints) {
  const std::string data = RandomBytes(42, 2 << 20);
  const Chunker chunker(kDefaults);
  const std::vector<size_t> want = {21011, 115891, 28910,  77081, 243728, 16549, 29307, 40902,
                                    34067, 173009, 53045,  27254, 91571,  36884, 86767, 30765,
                                    26759, 34874,  47501,  43170, 22554,  36111, 25876, 52821,
                                    58557, 139828, 204205, 62916, 64708,  96679, 46110, 27742};
  EXPECT_EQ(ChunkWhole(data, chunker), want);
  EXPECT_EQ(ChunkWhole(data, Slow(chunker)), want);
}

// The table-driven reference loop against the definition, bit by bit, with masks loose enough
// to cut often.
TEST(ChunkerTest, ReferenceMatchesBitSerialDefinition) {
  SplitMix64 rng(11);
  for (int round = 0; round < 30; ++round) {
    ChunkerParams p;
    p.polynomial = DrawIrreduciblePolynomial([&] { return rng(); });
    p.min_size = static_cast<uint32_t>(64 + rng.Below(200));
    p.avg_size = std::bit_ceil(p.min_size);
    p.max_size = p.avg_size + 1 + static_cast<uint32_t>(rng.Below(2000));
    const Chunker chunker(p);
    const std::string data = VariedBytes(rng, 1 + rng.Below(20000));
    const auto contract = ChunkWhole(data, [&](const uint8_t* d, size_t n, bool eof) {
      return ContractNextChunk(p, d, n, eof);
    });
    const auto slow = ChunkWhole(data, Slow(chunker));
    ASSERT_EQ(slow, contract) << "round " << round;
    ASSERT_EQ(ChunkWhole(data, chunker), contract) << "round " << round;
  }
}

TEST(ChunkerTest, FastPathMatchesReference) {
  SplitMix64 rng(12);
  for (int round = 0; round < 300; ++round) {
    const ChunkerParams p = RandomParams(rng);
    Chunker chunker(p);
    // Every other round starts segments with Appends, as a CPU without PCLMUL does.
    if (round % 2 == 1) internal::DisableClmulForTest(chunker);
    const std::string data = VariedBytes(rng, 1 + rng.Below(p.max_size * 3));
    // Whole-file chunking, then single calls on arbitrary slices, with and without eof.
    ASSERT_EQ(ChunkWhole(data, chunker), ChunkWhole(data, Slow(chunker))) << "round " << round;
    for (int i = 0; i < 10; ++i) {
      const size_t start = rng.Below(data.size());
      const size_t n = rng.Below(data.size() - start + 1);
      const bool eof = rng.Below(2);
      ASSERT_EQ(chunker.NextChunk(Bytes(data) + start, n, eof),
                internal::NextChunkSlow(chunker, Bytes(data) + start, n, eof))
          << "round " << round << " start " << start << " n " << n;
    }
  }
}

// Cutting on ones, the fast path passes over blocks whose windows are all zeros. A few random
// bytes dropped at every kind of offset into zeros (inside a block, in the 63 bytes before one,
// across a boundary) must give the reference's cuts: small average sizes make the burst's windows
// match often.
TEST(ChunkerTest, ZeroBlocksPassedOverCutAsTheReference) {
  SplitMix64 rng(31);
  for (int round = 0; round < 400; ++round) {
    ChunkerParams p;
    p.polynomial = DrawIrreduciblePolynomial([&] { return rng(); });
    p.min_size = static_cast<uint32_t>(64 + rng.Below(512));
    p.avg_size = std::bit_ceil(p.min_size) << rng.Below(2);
    p.max_size = p.avg_size * 64;
    p.cut_on_ones = true;
    const Chunker chunker(p);
    std::string data(20000 + rng.Below(20000), '\0');
    for (int burst = 0; burst < 3; ++burst) {
      const size_t at = rng.Below(data.size());
      const size_t len = std::min<size_t>(data.size() - at, 1 + rng.Below(80));
      const std::string bytes = RandomBytes(rng(), len);
      data.replace(at, len, bytes);
    }
    ASSERT_EQ(ChunkWhole(data, chunker), ChunkWhole(data, Slow(chunker))) << "round " << round;
  }
  // Zeros alone: max-size chunks, the same either way.
  ChunkerParams p = kDefaults;
  p.cut_on_ones = true;
  const Chunker chunker(p);
  const std::string zeros(3 * p.max_size + 5, '\0');
  EXPECT_EQ(ChunkWhole(zeros, chunker), ChunkWhole(zeros, Slow(chunker)));
}

TEST(ChunkerTest, AllZeroStopsAtTheFirstNonZeroByte) {
  std::string data(1000, '\0');
  EXPECT_TRUE(AllZero(Bytes(data), data.size()));
  EXPECT_TRUE(AllZero(Bytes(data), 0));
  for (size_t at : {0, 1, 63, 64, 65, 127, 640, 998, 999}) {
    std::string d = data;
    d[at] = '\x01';
    EXPECT_FALSE(AllZero(Bytes(d), d.size())) << at;
    EXPECT_TRUE(AllZero(Bytes(d), at)) << at;
  }
}

// A segment's first window is hashed from scratch (carry-less multiplication on x86-64 with
// PCLMUL): it must equal 64 Appends for any polynomial and any bytes, including all-ones windows
// (the largest products) and windows of zeros.
TEST(ChunkerTest, WindowHashFromScratchMatchesAppends) {
  SplitMix64 rng(13);
  for (int round = 0; round < 200; ++round) {
    ChunkerParams p = RandomParams(rng);
    const Chunker chunker(p);
    for (int i = 0; i < 50; ++i) {
      std::string w = VariedBytes(rng, 64);
      if (i == 0) w.assign(64, '\xff');
      if (i == 1) w.assign(64, '\0');
      ASSERT_EQ(internal::WindowHashForTest(chunker, Bytes(w), true),
                internal::WindowHashForTest(chunker, Bytes(w), false))
          << "round " << round << " window " << i;
    }
  }
#if defined(__x86_64__)
  if (__builtin_cpu_supports("pclmul")) {
    SplitMix64 r(1);
    ChunkerParams p = RandomParams(r);
    EXPECT_TRUE(internal::ChunkerUsesClmul(Chunker(p)));
  }
#endif
}

}  // namespace
}  // namespace whorl
