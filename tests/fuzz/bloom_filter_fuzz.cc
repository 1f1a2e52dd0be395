// BloomFilter::Parse on hostile bytes (Index.GetFilter answers and the agent's cached copies).
// Properties: never crashes; errors are DATA_LOSS; an accepted filter serializes back to the
// exact input bytes, answers "maybe" for every key added to it (no false negatives), and a
// filter with a key added still parses.
#include <cstring>

#include "common/bloom_filter.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = whorl::fuzz::AsView(data, size);
  uint64_t version = 0;
  absl::StatusOr<whorl::BloomFilter> f = whorl::BloomFilter::Parse(in, &version);
  if (!f.ok()) {
    FUZZ_CHECK(f.status().code() == absl::StatusCode::kDataLoss);
    return 0;
  }
  FUZZ_CHECK(f->Serialize(version) == in);
  FUZZ_CHECK(f->bits() > 0 && f->bits() % 64 == 0 && f->bits() <= whorl::BloomFilter::kMaxBits);
  FUZZ_CHECK(f->hashes() >= 1 && f->hashes() <= whorl::BloomFilter::kMaxHashes);
  whorl::Fingerprint fp;
  std::memcpy(fp.bytes.data(), data, std::min(size, fp.bytes.size()));
  f->MayContain(fp);
  f->Add(fp);
  FUZZ_CHECK(f->MayContain(fp));
  uint64_t v2 = 0;
  absl::StatusOr<whorl::BloomFilter> g = whorl::BloomFilter::Parse(f->Serialize(version + 1), &v2);
  FUZZ_CHECK(g.ok() && v2 == version + 1 && g->MayContain(fp) && g->added() == f->added());
  return 0;
}
