#include "common/chunker.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>
#define WHORL_CHUNKER_CLMUL 1
#endif

namespace whorl {
namespace {

constexpr int kDegree = 53;     // of the polynomial; hashes fit in 53 bits
constexpr size_t kWindow = 64;  // bytes hashed per position
constexpr uint64_t kMaxSizeLimit = 64 << 20;
constexpr int kMaxDraws = 10000;  // a good source fails this often with probability ~e^-377
constexpr size_t kStreams = 8;    // independent hash chains interleaved in FindCutFast
// Bytes per stream per block in FindCutFast. A block (kStreams * kSegment) is hashed whole even
// if the cut is at its start, so small blocks waste less; each segment starts with a window
// hashed from scratch, which is cheap with carry-less multiplication (WindowHashClmul) and 64
// Appends without it.
constexpr size_t kSegment = 256;

// r = a mod p (p != 0).
uint64_t PolyMod(uint64_t a, uint64_t p) {
  const int d = PolyDegree(p);
  for (int da = PolyDegree(a); da >= d; da = PolyDegree(a)) a ^= p << (da - d);
  return a;
}

// a * b mod p, for a and b already reduced mod p. Shift-and-add from the top bit of b, reducing
// after every shift, so nothing exceeds degree 63 even when p has degree 63.
uint64_t PolyMulMod(uint64_t a, uint64_t b, uint64_t p) {
  const uint64_t top = uint64_t{1} << PolyDegree(p);
  uint64_t r = 0;
  for (int i = PolyDegree(b); i >= 0; --i) {
    r <<= 1;
    if (r & top) r ^= p;
    if ((b >> i) & 1) r ^= a;
  }
  return r;
}

uint64_t PolyGcd(uint64_t a, uint64_t b) {
  while (b != 0) {
    a = PolyMod(a, b);
    std::swap(a, b);
  }
  return a;
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

int PolyDegree(uint64_t p) { return p == 0 ? -1 : 63 - std::countl_zero(p); }

// Ben-Or's test: p of degree d is irreducible iff gcd(x^(2^i) - x, p) = 1 for i = 1..d/2, since
// x^(2^i) - x is the product of all irreducibles whose degree divides i, and a reducible p has a
// factor of degree <= d/2.
bool PolyIsIrreducible(uint64_t p) {
  const int d = PolyDegree(p);
  if (d < 1) return false;
  uint64_t u = 2;  // x; only used when d >= 2, where it is already reduced
  for (int i = 1; i <= d / 2; ++i) {
    u = PolyMulMod(u, u, p);  // x^(2^i) mod p
    if (PolyGcd(u ^ 2, p) != 1) return false;
  }
  return true;
}

uint64_t DrawIrreduciblePolynomial(const std::function<uint64_t()>& random) {
  for (int i = 0; i < kMaxDraws; ++i) {
    // Random coefficients below x^53, x^53 set for the degree, constant term set because x
    // divides any polynomial without it (about half the draws would be wasted).
    const uint64_t p = (random() & ((uint64_t{1} << kDegree) - 1)) | (uint64_t{1} << kDegree) | 1;
    if (PolyIsIrreducible(p)) return p;
  }
  return 0;
}

std::string ValidateChunkerParams(const ChunkerParams& params) {
  const ChunkerParams& c = params;
  if (PolyDegree(c.polynomial) != kDegree) {
    return "polynomial " + Hex(c.polynomial) + " has degree " +
           std::to_string(PolyDegree(c.polynomial)) + ", want 53";
  }
  if (!PolyIsIrreducible(c.polynomial)) {
    return "polynomial " + Hex(c.polynomial) + " is reducible";
  }
  if (c.min_size < kWindow) {
    return "min_size " + std::to_string(c.min_size) + " is below 64";
  }
  if (c.max_size <= c.min_size) {
    return "max_size " + std::to_string(c.max_size) + " is not above min_size " +
           std::to_string(c.min_size);
  }
  if (c.max_size > kMaxSizeLimit) {
    return "max_size " + std::to_string(c.max_size) + " is above 64 MiB";
  }
  if (!std::has_single_bit(c.avg_size)) {
    return "avg_size " + std::to_string(c.avg_size) + " is not a power of two";
  }
  // avg_size below min_size would work mechanically, but a mask that loose makes nearly every
  // chunk min_size long, which is rarely what the caller meant.
  if (c.avg_size < c.min_size || c.avg_size > c.max_size) {
    return "avg_size " + std::to_string(c.avg_size) + " is outside [min_size " +
           std::to_string(c.min_size) + ", max_size " + std::to_string(c.max_size) + "]";
  }
  return "";
}

Chunker::Chunker(const ChunkerParams& params) : params_(params) {
  // Bad params would silently produce a different chunking, i.e. a different repository
  // format; that is a programming error, so fail loudly.
  if (std::string why = ValidateChunkerParams(params); !why.empty()) {
    std::fprintf(stderr, "whorl::Chunker: bad params: %s\n", why.c_str());
    std::abort();
  }
  const uint64_t p = params.polynomial;
  mask_ = params.avg_size - 1;
  cut_ = params.cut_on_ones ? mask_ : 0;
  uint64_t x512 = 1;  // x^512 mod p, built as (x^8)^64
  for (size_t i = 0; i < kWindow; ++i) x512 = PolyMulMod(x512, 256, p);
  for (uint64_t t = 0; t < 256; ++t) {
    shift_table_[t] = (t << kDegree) ^ PolyMod(t << kDegree, p);
    out_table_[t] = PolyMulMod(t, x512, p);
    out_table_ones_[t] = out_table_[t] ^ (mask_ << 8) ^ mask_;
  }
  // word_pow_[7 - k] = x^(64k) mod P.
  uint64_t x64 = 1;  // x^64 mod p
  for (int i = 0; i < 8; ++i) x64 = PolyMulMod(x64, 256, p);
  uint64_t pow = 1;
  for (int k = 7; k >= 0; --k) {
    word_pow_[k] = pow;
    pow = PolyMulMod(pow, x64, p);
  }
  // floor(x^116 / P) by long division: quotient bit i stands for x^(53 + i), i <= 63.
  unsigned __int128 rem = static_cast<unsigned __int128>(1) << 116;
  barrett_ = 0;
  for (int i = 63; i >= 0; --i) {
    if ((rem >> (kDegree + i)) & 1) {
      barrett_ |= uint64_t{1} << i;
      rem ^= static_cast<unsigned __int128>(p) << i;
    }
  }
#if WHORL_CHUNKER_CLMUL
  has_clmul_ = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#endif
}

#if WHORL_CHUNKER_CLMUL
// The window as a polynomial of degree < 512 is sum_k q_k * x^(64 * (7 - k)), q_k its k-th 8
// bytes read big-endian (first byte most significant). Each q_k times word_pow_[k] is one
// carry-less multiplication (degree <= 115); their XOR V is reduced mod P by Barrett: with
// A = V div x^53 (degree <= 62) and mu = x^116 div P (degree 63), Q = (A * mu) div x^63 is
// exactly V div P because deg A <= 63, so V + Q * P is the remainder.
__attribute__((target("pclmul,sse4.1"))) inline uint64_t Chunker::WindowHashClmul(
    const uint8_t* w) const {
  __m128i v = _mm_setzero_si128();
  for (int k = 0; k < 8; ++k) {
    uint64_t q;
    std::memcpy(&q, w + 8 * k, 8);
    q = __builtin_bswap64(q);
    const __m128i prod =
        _mm_clmulepi64_si128(_mm_cvtsi64_si128(static_cast<int64_t>(q)),
                             _mm_cvtsi64_si128(static_cast<int64_t>(word_pow_[k])), 0x00);
    v = _mm_xor_si128(v, prod);
  }
  const uint64_t lo = static_cast<uint64_t>(_mm_cvtsi128_si64(v));
  const uint64_t hi = static_cast<uint64_t>(_mm_extract_epi64(v, 1));
  const uint64_t a = (lo >> kDegree) | (hi << (64 - kDegree));
  const __m128i am = _mm_clmulepi64_si128(_mm_cvtsi64_si128(static_cast<int64_t>(a)),
                                          _mm_cvtsi64_si128(static_cast<int64_t>(barrett_)), 0x00);
  const uint64_t q = (static_cast<uint64_t>(_mm_cvtsi128_si64(am)) >> 63) |
                     (static_cast<uint64_t>(_mm_extract_epi64(am, 1)) << 1);
  const __m128i qp =
      _mm_clmulepi64_si128(_mm_cvtsi64_si128(static_cast<int64_t>(q)),
                           _mm_cvtsi64_si128(static_cast<int64_t>(params_.polynomial)), 0x00);
  return (lo ^ static_cast<uint64_t>(_mm_cvtsi128_si64(qp))) & ((uint64_t{1} << kDegree) - 1);
}

// Kept in one function so the compiler interleaves the streams' independent multiplications.
__attribute__((target("pclmul,sse4.1"))) void Chunker::StartStreamsClmul(const uint8_t* w,
                                                                         uint64_t* h) const {
  for (size_t k = 0; k < kStreams; ++k) h[k] = WindowHashClmul(w + k * kSegment);
}
#else
uint64_t Chunker::WindowHashClmul(const uint8_t* w) const { return WindowHash(w); }
void Chunker::StartStreamsClmul(const uint8_t* w, uint64_t* h) const {
  for (size_t k = 0; k < kStreams; ++k) h[k] = WindowHash(w + k * kSegment);
}
#endif

uint64_t Chunker::WindowHash(const uint8_t* w) const {
  if (has_clmul_) return WindowHashClmul(w);
  uint64_t h = 0;
  for (size_t i = 0; i < kWindow; ++i) h = Append(h, w[i]);
  return h;
}

// h < 2^53, so the shift stays below 2^61 and its top 8 bits are exactly h >> 45.
inline uint64_t Chunker::Append(uint64_t h, uint8_t in) const {
  return ((h << 8) | in) ^ shift_table_[h >> (kDegree - 8)];
}

inline uint64_t Chunker::Roll(uint64_t h, uint8_t in, uint8_t out) const {
  return Append(h, in) ^ out_table_[out];
}

size_t Chunker::FindCutSlow(const uint8_t* data, size_t first, size_t end) const {
  if (first >= end) return 0;
  uint64_t h = 0;  // the hash of a window of zeros
  for (size_t i = first + 1 - kWindow; i <= first; ++i) h = Append(h, data[i]);
  for (size_t i = first;;) {
    if ((h & mask_) == cut_) return i + 1;
    if (++i == end) return 0;
    h = Roll(h, data[i], data[i - kWindow]);
  }
}

// A single hash chain is latency bound (each byte waits for the previous table lookup), so hash
// kStreams separate segments of a block side by side; each segment's first window is hashed
// from scratch, which gives the same values as one long chain because a window hash depends
// only on the window. Matches go to a fixed array (a conditional store the compiler keeps as a
// rarely taken branch, unlike a flag it would turn into per-byte cmovs); blocks go in order, so
// the smallest match of the first block with any is the cut.
bool AllZero(const uint8_t* data, size_t n) {
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    uint64_t w[8];
    std::memcpy(w, data + i, sizeof(w));
    if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return false;
  }
  for (; i < n; ++i) {
    if (data[i] != 0) return false;
  }
  return true;
}

template <bool kOnes>
size_t Chunker::FindCutFast(const uint8_t* data, size_t first, size_t end) const {
  const uint64_t mask = mask_;
  const std::array<uint64_t, 256>& out_table = kOnes ? out_table_ones_ : out_table_;
  auto is_cut = [mask](uint64_t h) { return (h & mask) == 0; };
  constexpr size_t kBlock = kStreams * kSegment;
  constexpr size_t kMaxMatches = 64;
  for (; end - first >= kBlock; first += kBlock) {
    // Cutting on ones, a window of zeros (hash 0) never matches: a block whose windows are all
    // zeros (a disk image's empty space) is passed over at the speed of a memory scan.
    if (kOnes && AllZero(data + first + 1 - kWindow, kBlock + kWindow - 1)) continue;
    // Stream k hashes the windows ending at data[first + k * kSegment + j], j < kSegment;
    // w[k * kSegment + j] is the first byte of that window.
    const uint8_t* w = data + first + 1 - kWindow;
    uint64_t h[kStreams] = {};
    uint32_t matches[kMaxMatches];  // block offsets of matching windows
    size_t n = 0;
    if (has_clmul_) {
      StartStreamsClmul(w, h);
    } else {
      for (size_t j = 0; j < kWindow; ++j) {
#pragma GCC unroll 8
        for (size_t k = 0; k < kStreams; ++k) h[k] = Append(h[k], w[k * kSegment + j]);
      }
    }
#pragma GCC unroll 8
    for (size_t k = 0; k < kStreams; ++k) {  // each stream's first window
      if (kOnes) h[k] ^= mask;
      if (is_cut(h[k])) matches[n++ % kMaxMatches] = static_cast<uint32_t>(k * kSegment);
    }
    for (size_t j = 1; j < kSegment; ++j) {
#pragma GCC unroll 8
      for (size_t k = 0; k < kStreams; ++k) {
        const size_t o = k * kSegment + j;
        h[k] = Append(h[k], w[o + kWindow - 1]) ^ out_table[w[o - 1]];  // Roll
        if (is_cut(h[k])) [[unlikely]] {
          matches[n++ % kMaxMatches] = static_cast<uint32_t>(o);
        }
      }
    }
    // Overflow (low-entropy data such as zeros with cut 0) dropped some: find the first one the
    // slow way.
    if (n > kMaxMatches) return FindCutSlow(data, first, first + kBlock);
    if (n > 0) return first + *std::min_element(matches, matches + n) + 1;
  }
  return FindCutSlow(data, first, end);
}

template <typename FindFn>
size_t Chunker::Decide(size_t n, bool at_eof, FindFn find) const {
  const size_t min = params_.min_size, max = params_.max_size;
  // Candidate lengths are [min, min(n, max)], i.e. windows ending at bytes [min - 1, limit).
  const size_t limit = std::min(n, max);
  if (limit >= min) {
    if (const size_t cut = find(min - 1, limit); cut != 0) return cut;
  }
  if (n >= max) return max;
  return at_eof ? n : 0;
}

size_t Chunker::NextChunk(const uint8_t* data, size_t n, bool at_eof) const {
  if (params_.cut_on_ones) {
    return Decide(n, at_eof,
                  [&](size_t first, size_t end) { return FindCutFast<true>(data, first, end); });
  }
  return Decide(n, at_eof,
                [&](size_t first, size_t end) { return FindCutFast<false>(data, first, end); });
}

namespace internal {

uint64_t WindowHashForTest(const Chunker& chunker, const uint8_t* w, bool fast) {
  if (fast) return chunker.WindowHash(w);
  uint64_t h = 0;
  for (size_t i = 0; i < kWindow; ++i) h = chunker.Append(h, w[i]);
  return h;
}

bool ChunkerUsesClmul(const Chunker& chunker) { return chunker.has_clmul_; }

void DisableClmulForTest(Chunker& chunker) { chunker.has_clmul_ = false; }

size_t NextChunkSlow(const Chunker& chunker, const uint8_t* data, size_t n, bool at_eof) {
  return chunker.Decide(
      n, at_eof, [&](size_t first, size_t end) { return chunker.FindCutSlow(data, first, end); });
}

}  // namespace internal
}  // namespace whorl
