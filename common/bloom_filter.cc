#include "common/bloom_filter.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/crc32c.h"

namespace whorl {
namespace {

constexpr char kMagic[4] = {'W', 'B', 'L', 'M'};
constexpr uint32_t kFormatVersion = 1;
// magic 4, format 4, k 4, reserved 4, m 8, version 8, added 8.
constexpr size_t kHeaderSize = 40;
constexpr size_t kCrcSize = 4;  // CRC32C of header and bits, at the end

uint64_t Word(const Fingerprint& fp, int i) {
  uint64_t v = 0;
  for (int b = 0; b < 8; ++b) v = (v << 8) | fp.bytes[8 * i + b];
  return v;
}

void PutLe(std::string* out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

uint64_t GetLe(std::string_view in, size_t at, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i)
    v |= static_cast<uint64_t>(static_cast<uint8_t>(in[at + i])) << (8 * i);
  return v;
}

}  // namespace

BloomFilter::BloomFilter(uint64_t expected, double fpp) {
  expected = std::max<uint64_t>(expected, 1);
  fpp = std::clamp(fpp, 1e-9, 0.5);
  const double ln2 = std::log(2.0);
  double m = -static_cast<double>(expected) * std::log(fpp) / (ln2 * ln2);
  m = std::clamp(m, 64.0, static_cast<double>(kMaxBits));
  const uint64_t words = (static_cast<uint64_t>(m) + 63) / 64;
  bits_ = words * 64;
  hashes_ = std::clamp(static_cast<int>(std::lround(static_cast<double>(bits_) /
                                                    static_cast<double>(expected) * ln2)),
                       1, kMaxHashes);
  words_.assign(words, 0);
}

void BloomFilter::Add(const Fingerprint& fp) {
  if (bits_ == 0) return;
  const uint64_t h1 = Word(fp, 1), h2 = Word(fp, 2) | 1;
  for (int i = 0; i < hashes_; ++i) {
    const uint64_t bit = (h1 + static_cast<uint64_t>(i) * h2) % bits_;
    words_[bit / 64] |= uint64_t{1} << (bit % 64);
  }
  ++added_;
}

bool BloomFilter::MayContain(const Fingerprint& fp) const {
  if (bits_ == 0) return true;
  const uint64_t h1 = Word(fp, 1), h2 = Word(fp, 2) | 1;
  for (int i = 0; i < hashes_; ++i) {
    const uint64_t bit = (h1 + static_cast<uint64_t>(i) * h2) % bits_;
    if ((words_[bit / 64] & (uint64_t{1} << (bit % 64))) == 0) return false;
  }
  return true;
}

double BloomFilter::expected_fpp() const {
  if (bits_ == 0) return 1.0;
  const double k = hashes_;
  return std::pow(1.0 - std::exp(-k * static_cast<double>(added_) / static_cast<double>(bits_)), k);
}

std::string BloomFilter::Serialize(uint64_t version) const {
  std::string out(kMagic, sizeof(kMagic));
  PutLe(&out, kFormatVersion, 4);
  PutLe(&out, static_cast<uint64_t>(hashes_), 4);
  PutLe(&out, 0, 4);
  PutLe(&out, bits_, 8);
  PutLe(&out, version, 8);
  PutLe(&out, added_, 8);
  out.reserve(out.size() + words_.size() * 8);
  for (uint64_t w : words_) PutLe(&out, w, 8);
  PutLe(&out, crc32c::Value(out), 4);  // over everything before it
  return out;
}

absl::StatusOr<BloomFilter> BloomFilter::Parse(std::string_view in, uint64_t* version) {
  auto bad = [](const std::string& why) { return absl::DataLossError("bloom filter: " + why); };
  if (in.size() < kHeaderSize) return bad(absl::StrCat("truncated header (", in.size(), " bytes)"));
  if (std::memcmp(in.data(), kMagic, sizeof(kMagic)) != 0) return bad("bad magic");
  const uint64_t format = GetLe(in, 4, 4);
  if (format != kFormatVersion) return bad(absl::StrCat("unknown format version ", format));
  const uint64_t k = GetLe(in, 8, 4);
  if (k < 1 || k > static_cast<uint64_t>(kMaxHashes))
    return bad(absl::StrCat("bad hash count ", k));
  if (GetLe(in, 12, 4) != 0) return bad("reserved field not zero");
  const uint64_t m = GetLe(in, 16, 8);
  if (m == 0 || m % 64 != 0 || m > kMaxBits) return bad(absl::StrCat("bad bit count ", m));
  if (in.size() != kHeaderSize + m / 8 + kCrcSize) {
    return bad(absl::StrCat(in.size(), " bytes, want ", kHeaderSize + m / 8 + kCrcSize, " for ", m,
                            " bits"));
  }
  const std::string_view body = in.substr(0, in.size() - kCrcSize);
  if (GetLe(in, body.size(), 4) != crc32c::Value(body)) return bad("checksum mismatch");
  BloomFilter f;
  f.bits_ = m;
  f.hashes_ = static_cast<int>(k);
  f.added_ = GetLe(in, 32, 8);
  if (version != nullptr) *version = GetLe(in, 24, 8);
  f.words_.resize(m / 64);
  for (size_t i = 0; i < f.words_.size(); ++i) f.words_[i] = GetLe(in, kHeaderSize + 8 * i, 8);
  return f;
}

}  // namespace whorl
