#include "common/bundle.h"

#include <cstring>

#include "absl/base/internal/endian.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace whorl {

std::string EncodeBundleTable(const std::vector<BundleMember>& members) {
  std::string out(BundleTableSize(members.size()), '\0');
  absl::little_endian::Store32(out.data(), static_cast<uint32_t>(members.size()));
  char* p = out.data() + 4;
  for (const BundleMember& m : members) {
    std::memcpy(p, m.fingerprint.bytes.data(), Fingerprint::kSize);
    absl::little_endian::Store32(p + Fingerprint::kSize, m.size);
    p += kBundleMemberEntrySize;
  }
  return out;
}

Fingerprint BundleId(const std::vector<BundleMember>& members) {
  return Sha256(EncodeBundleTable(members));
}

absl::StatusOr<std::vector<BundleSlice>> ParseBundle(std::string_view plain) {
  if (plain.size() < 4) {
    return absl::DataLossError(absl::StrCat("bundle of ", plain.size(), " bytes has no table"));
  }
  const uint32_t count = absl::little_endian::Load32(plain.data());
  if (count == 0 || count > kMaxBundleMembers) {
    return absl::DataLossError(
        absl::StrCat("bundle member count ", count, " not in 1..", kMaxBundleMembers));
  }
  const size_t table = BundleTableSize(count);
  if (plain.size() < table) {
    return absl::DataLossError(absl::StrCat("bundle table of ", count, " members is cut short (",
                                            plain.size(), " bytes)"));
  }
  std::vector<BundleSlice> out(count);
  absl::flat_hash_set<Fingerprint, FingerprintHash> seen;
  uint64_t offset = table;
  const char* p = plain.data() + 4;
  for (uint32_t i = 0; i < count; ++i, p += kBundleMemberEntrySize) {
    BundleSlice& s = out[i];
    std::memcpy(s.member.fingerprint.bytes.data(), p, Fingerprint::kSize);
    s.member.size = absl::little_endian::Load32(p + Fingerprint::kSize);
    if (!seen.insert(s.member.fingerprint).second) {
      return absl::DataLossError(
          absl::StrCat("bundle lists member ", s.member.fingerprint.ToHex(), " twice"));
    }
    s.offset = static_cast<uint32_t>(offset);
    offset += s.member.size;
    if (offset > plain.size()) break;  // reported below
  }
  if (offset != plain.size()) {
    return absl::DataLossError(absl::StrCat("bundle members of ", offset - table,
                                            " bytes and a table of ", table, " do not make its ",
                                            plain.size(), " bytes"));
  }
  return out;
}

std::vector<uint32_t> ApportionBytes(uint64_t total, const std::vector<BundleMember>& members) {
  std::vector<uint32_t> shares(members.size());
  if (members.empty()) return shares;
  uint64_t sum = 0;
  for (const BundleMember& m : members) sum += m.size;
  uint64_t given = 0;
  for (size_t i = 0; i + 1 < members.size(); ++i) {
    shares[i] =
        static_cast<uint32_t>(sum == 0 ? total / members.size() : total * members[i].size / sum);
    given += shares[i];
  }
  shares.back() = static_cast<uint32_t>(total - given);
  return shares;
}

}  // namespace whorl
