#include "agent/repo_config.h"

#include <openssl/rand.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "common/fingerprint.h"
#include "common/status_macros.h"

namespace whorl::agent {
namespace {

absl::StatusOr<uint64_t> RandomWord() {
  uint64_t v = 0;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof(v)) != 1) {
    return absl::InternalError("RAND_bytes failed");
  }
  return v;
}

std::string PolyHex(uint64_t p) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(p));
  return buf;
}

}  // namespace

std::string RepoConfig::ToJson() const {
  nlohmann::ordered_json j;
  j["version"] = version;
  j["id"] = id;
  j["chunker"] = {{"polynomial", PolyHex(chunker.polynomial)},
                  {"min_size", chunker.min_size},
                  {"avg_size", chunker.avg_size},
                  {"max_size", chunker.max_size}};
  if (chunker.cut_on_ones) j["chunker"]["cut_on_ones"] = true;
  j["compression"] = compression.ToString();
  j["compression_large"] = large_compression.ToString();
  return j.dump(2) + "\n";
}

absl::StatusOr<RepoConfig> RepoConfig::FromJson(std::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError("config is not a JSON object");
  if (!j.contains("version") || !j["version"].is_number_integer()) {
    return absl::DataLossError("config has no integer version");
  }
  RepoConfig c;
  // Compared as written: get<int>() would wrap 4294967297 to 1.
  if (!j["version"].is_number_unsigned() ||
      j["version"].get<uint64_t>() < static_cast<uint64_t>(kOldestRepoFormatVersion) ||
      j["version"].get<uint64_t>() > static_cast<uint64_t>(kRepoFormatVersion)) {
    return absl::FailedPreconditionError("unsupported repository version " + j["version"].dump() +
                                         " (this whorl reads " +
                                         std::to_string(kOldestRepoFormatVersion) + " to " +
                                         std::to_string(kRepoFormatVersion) + ")");
  }
  c.version = static_cast<int>(j["version"].get<uint64_t>());
  const auto& ch = j.value("chunker", nlohmann::json::object());
  if (!j.value("id", nlohmann::json()).is_string() || !ch.is_object() ||
      !ch.value("polynomial", nlohmann::json()).is_string() ||
      !ch.value("min_size", nlohmann::json()).is_number_unsigned() ||
      !ch.value("avg_size", nlohmann::json()).is_number_unsigned() ||
      !ch.value("max_size", nlohmann::json()).is_number_unsigned() ||
      !j.value("compression", nlohmann::json()).is_string()) {
    return absl::DataLossError("config lacks id, chunker or compression fields");
  }
  c.id = j["id"].get<std::string>();
  if (c.id.size() != 32 || !HexDecode(c.id).ok()) {
    return absl::DataLossError("config id must be 32 hex digits");
  }
  const std::string poly = ch["polynomial"].get<std::string>();
  char* end = nullptr;
  c.chunker.polynomial = std::strtoull(poly.c_str(), &end, 16);
  if (poly.empty() || *end != '\0') return absl::DataLossError("config polynomial is not hex");
  for (const char* key : {"min_size", "avg_size", "max_size"}) {
    if (ch[key].get<uint64_t>() > UINT32_MAX) {  // get<uint32_t>() would keep the low bits
      return absl::DataLossError(std::string("config chunker ") + key + " is over 2^32");
    }
  }
  c.chunker.min_size = ch["min_size"].get<uint32_t>();
  c.chunker.avg_size = ch["avg_size"].get<uint32_t>();
  c.chunker.max_size = ch["max_size"].get<uint32_t>();
  if (ch.contains("cut_on_ones")) {
    if (!ch["cut_on_ones"].is_boolean()) {
      return absl::DataLossError("config chunker cut_on_ones is not true or false");
    }
    c.chunker.cut_on_ones = ch["cut_on_ones"].get<bool>();
  }
  if (std::string why = ValidateChunkerParams(c.chunker); !why.empty()) {
    return absl::DataLossError("config chunker: " + why);
  }
  WHORL_ASSIGN_OR_RETURN(c.compression,
                         CompressionSpec::Parse(j["compression"].get<std::string>()));
  c.large_compression = c.compression;
  if (j.contains("compression_large")) {
    if (!j["compression_large"].is_string()) {
      return absl::DataLossError("config compression_large is not a string");
    }
    absl::StatusOr<CompressionSpec> large =
        CompressionSpec::Parse(j["compression_large"].get<std::string>());
    if (!large.ok()) {
      return absl::DataLossError("config compression_large: " +
                                 std::string(large.status().message()));
    }
    c.large_compression = *large;
  }
  if (c.version < kLz4RepoFormatVersion &&
      (c.compression.codec == Codec::kLz4 || c.large_compression.codec == Codec::kLz4)) {
    return absl::DataLossError("config names lz4 compression, which needs repository version " +
                               std::to_string(kLz4RepoFormatVersion) + ", but is version " +
                               std::to_string(c.version));
  }
  return c;
}

absl::StatusOr<RepoConfig> NewRepoConfig(uint32_t min, uint32_t avg, uint32_t max,
                                         const CompressionSpec& compression,
                                         const CompressionSpec& large_compression) {
  RepoConfig c;
  unsigned char id[16];
  if (RAND_bytes(id, sizeof(id)) != 1) return absl::InternalError("RAND_bytes failed");
  c.id = HexEncode(std::string_view(reinterpret_cast<char*>(id), sizeof(id)));
  c.chunker.min_size = min;
  c.chunker.avg_size = avg;
  c.chunker.max_size = max;
  c.chunker.cut_on_ones = true;  // zero runs in max_size chunks (README "Why these chunk sizes")
  absl::Status rand_error;
  c.chunker.polynomial = DrawIrreduciblePolynomial([&rand_error]() -> uint64_t {
    absl::StatusOr<uint64_t> w = RandomWord();
    if (!w.ok()) {
      rand_error = w.status();
      return 0;
    }
    return *w;
  });
  WHORL_RETURN_IF_ERROR(rand_error);
  if (std::string why = ValidateChunkerParams(c.chunker); !why.empty()) {
    return absl::InvalidArgumentError(why);
  }
  c.compression = compression;
  c.large_compression = large_compression;
  c.version = kRepoFormatVersion;
  return c;
}

}  // namespace whorl::agent
