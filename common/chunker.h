// Content-defined chunking with a Rabin rolling hash.
//
// Purpose: split a byte stream into chunks whose boundaries depend on the content, so that an
// insertion or deletion in a file only changes the chunks around the edit and the rest still
// deduplicate against earlier backups.
//
// Contract:
//  - The fingerprint of a position is the Rabin fingerprint (remainder of the polynomial over
//    GF(2) whose coefficients are the bits of the window, first byte most significant, modulo
//    `polynomial`) of the 64 bytes ending at that position. It depends on those 64 bytes only:
//    not on earlier bytes, not on where the chunk began.
//  - A chunk starting at offset 0 ends after byte i (length i + 1) at the smallest i with
//    i + 1 >= min_size and (fingerprint(i) & mask) == cut, where mask = avg_size - 1 and cut is
//    0, or mask itself with `cut_on_ones`; if there is none with i + 1 <= max_size the chunk is
//    max_size long; the end of the file ends the last chunk. Because min_size >= 64 the window
//    never reaches before the chunk start.
//  - Identical windows have identical fingerprints. In particular an all-zero window
//    fingerprints to 0: with cut 0 it always matches, so zero-filled regions cut into chunks of
//    exactly min_size; with `cut_on_ones` it never does, so they cut into max_size chunks (16x
//    fewer with the default sizes). Either way they dedup among themselves.
//  - Cut points are part of the repository format: for a fixed ChunkerParams they must never
//    change between versions, or new backups stop deduplicating against old ones.
//
// Depends on the C++ standard library only.
#ifndef WHORL_COMMON_CHUNKER_H_
#define WHORL_COMMON_CHUNKER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace whorl {

class Chunker;
namespace internal {
// The plain byte-at-a-time loop that Chunker::NextChunk must agree with exactly; exposed for
// tests and benchmarks only.
size_t NextChunkSlow(const Chunker& chunker, const uint8_t* data, size_t n, bool at_eof);
// The hash of the 64-byte window w[0, 64): by 64 Appends (the definition) when !fast, else the
// way FindCutFast starts a segment. For tests.
uint64_t WindowHashForTest(const Chunker& chunker, const uint8_t* w, bool fast);
// Whether FindCutFast starts segments with carry-less multiplications on this CPU.
bool ChunkerUsesClmul(const Chunker& chunker);
// Makes FindCutFast start segments with Appends, as on a CPU without PCLMUL. For tests.
void DisableClmulForTest(Chunker& chunker);
}  // namespace internal

struct ChunkerParams {
  // Degree-53 irreducible polynomial over GF(2), bit i = coefficient of x^i.
  uint64_t polynomial = 0;
  uint32_t min_size = 0;  // >= 64
  // Power of two; mask = avg_size - 1 (expected distance past min_size to a cut).
  uint32_t avg_size = 0;
  uint32_t max_size = 0;  // > min_size, <= 64 MiB
  // Cut where the fingerprint's low bits are all ones instead of all zeros, so that runs of
  // zeros (disk images, sparse databases) are not cut every min_size bytes. Repositories made
  // before 2026-11-30 cut on zeros (false).
  bool cut_on_ones = false;
};

// Empty string when params are usable, else a human-readable reason ("min_size 10 is below 64").
// Checks: polynomial has degree exactly 53 and is irreducible; 64 <= min_size < max_size <= 64 MiB;
// avg_size is a power of two with min_size <= avg_size <= max_size.
std::string ValidateChunkerParams(const ChunkerParams& params);

int PolyDegree(uint64_t p);          // -1 for 0
bool PolyIsIrreducible(uint64_t p);  // over GF(2), any degree 1..63; false for 0 and 1

// Draws uniformly random degree-53 polynomials from `random` (a source of random 64-bit words)
// until one is irreducible; returns it. The constant term is forced to 1 (every irreducible of
// degree > 1 has it), which keeps the result uniform over irreducibles. Returns 0 (which fails
// ValidateChunkerParams) if a broken source yields none in 10000 draws, instead of looping.
uint64_t DrawIrreduciblePolynomial(const std::function<uint64_t()>& random);

// Whether data[0, n) are all zero bytes. Stops at the first that is not (for most data, within
// the first word); scans a run of zeros 64 bytes at a time.
bool AllZero(const uint8_t* data, size_t n);

// Thread-safe after construction (all methods const). Construction builds the tables (< 1 ms).
class Chunker {
 public:
  // params must pass ValidateChunkerParams (else aborts).
  explicit Chunker(const ChunkerParams& params);
  // data[0, n) begins at the start of a chunk. Returns the length of that chunk: the first cut
  // point at or after min_size, else max_size if n >= max_size; if neither lies in the buffer,
  // returns n when at_eof (the file's last chunk; 0 only if n == 0), else 0 meaning "give me more
  // bytes" (callers keep at least max_size bytes buffered unless at eof).
  size_t NextChunk(const uint8_t* data, size_t n, bool at_eof) const;
  const ChunkerParams& params() const { return params_; }

 private:
  friend size_t internal::NextChunkSlow(const Chunker&, const uint8_t*, size_t, bool);
  friend uint64_t internal::WindowHashForTest(const Chunker&, const uint8_t*, bool);
  friend bool internal::ChunkerUsesClmul(const Chunker&);
  friend void internal::DisableClmulForTest(Chunker&);

  // h * x^8 + in mod P: appends a byte to a window hash.
  uint64_t Append(uint64_t h, uint8_t in) const;
  // Slides the window by one byte: appends `in` and removes `out`, the byte 64 positions earlier.
  uint64_t Roll(uint64_t h, uint8_t in, uint8_t out) const;
  // Shared min/max/eof rule around a search for the first cut candidate.
  template <typename FindFn>
  size_t Decide(size_t n, bool at_eof, FindFn find) const;
  // Smallest i in [first, end) whose window (data[i-63, i]) matches the mask, as i + 1; else 0.
  // Requires first >= 63. Slow: one window at a time (the reference). Fast: interleaved streams.
  size_t FindCutSlow(const uint8_t* data, size_t first, size_t end) const;
  // kOnes: cut_on_ones, for which the streams carry g = h ^ mask instead of h (so the test is
  // the same one instruction: a cut is where g's low bits are zero) and roll with
  // out_table_ones_. Comparing h's low bits with a cut value instead cost 10%.
  template <bool kOnes>
  size_t FindCutFast(const uint8_t* data, size_t first, size_t end) const;
  // The hash of the 64-byte window w[0, 64) from scratch: carry-less multiplications when the
  // CPU has them (a dozen instructions), else 64 Appends.
  uint64_t WindowHash(const uint8_t* w) const;
  uint64_t WindowHashClmul(const uint8_t* w) const;
  // h[k] = WindowHash(w + k * kSegment) for each of FindCutFast's streams.
  void StartStreamsClmul(const uint8_t* w, uint64_t* h) const;

  ChunkerParams params_;
  uint64_t mask_;
  uint64_t cut_;  // 0, or mask_ with cut_on_ones (FindCutSlow)
  // shift_table_[t] = t * x^53 + (t * x^53 mod P): XOR-ing it clears bits 53..60 of a value
  // shifted left by 8 and adds their remainder back in.
  alignas(64) std::array<uint64_t, 256> shift_table_;
  // out_table_[b] = b * x^512 mod P: the contribution, after the shift, of the byte leaving the
  // window. XOR-ed in after the shift, which keeps it off the hash's dependency chain.
  alignas(64) std::array<uint64_t, 256> out_table_;
  // out_table_[b] ^ (mask << 8) ^ mask: rolls g = h ^ mask to the next window's h ^ mask (Append
  // is linear, and Append(mask, 0) = mask << 8 since mask < 2^45).
  alignas(64) std::array<uint64_t, 256> out_table_ones_;
  // For WindowHashClmul: word_pow_[k] = x^(64 * (7 - k)) mod P, and Barrett's constant
  // barrett_ = floor(x^116 / P).
  bool has_clmul_ = false;
  std::array<uint64_t, 8> word_pow_{};
  uint64_t barrett_ = 0;
};

}  // namespace whorl

#endif  // WHORL_COMMON_CHUNKER_H_
