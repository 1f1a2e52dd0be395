// RepoConfig::FromJson on hostile text (REPO/config, or a shard's GetRepositoryConfig answer).
// Properties: it never crashes or throws; errors are DATA_LOSS, FAILED_PRECONDITION (version)
// or INVALID_ARGUMENT (compression); an accepted config holds exactly the numbers the document
// says (nothing truncated into range), has valid chunker parameters, and
// FromJson(ToJson(c)) == c with the same JSON again.
#include <nlohmann/json.hpp>

#include "agent/repo_config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using whorl::agent::RepoConfig;
  absl::StatusOr<RepoConfig> c = RepoConfig::FromJson(whorl::fuzz::AsView(data, size));
  if (!c.ok()) {
    const absl::StatusCode code = c.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kDataLoss ||
               code == absl::StatusCode::kFailedPrecondition ||
               code == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(whorl::ValidateChunkerParams(c->chunker).empty());
  FUZZ_CHECK(c->id.size() == 32);
  // The numbers as the document has them (it parsed, so this parses too).
  const nlohmann::json j = nlohmann::json::parse(whorl::fuzz::AsView(data, size));
  const nlohmann::json& ch = j["chunker"];
  FUZZ_CHECK(j["version"].is_number_unsigned() &&
             j["version"].get<uint64_t>() == static_cast<uint64_t>(c->version) &&
             c->version >= whorl::agent::kOldestRepoFormatVersion &&
             c->version <= whorl::agent::kRepoFormatVersion);
  // LZ4 only where a build that reads it is required (repo_config.h).
  if (c->compression.codec == whorl::Codec::kLz4 ||
      c->large_compression.codec == whorl::Codec::kLz4) {
    FUZZ_CHECK(c->version >= whorl::agent::kLz4RepoFormatVersion);
  }
  FUZZ_CHECK(ch["min_size"].get<uint64_t>() == c->chunker.min_size);
  FUZZ_CHECK(ch["avg_size"].get<uint64_t>() == c->chunker.avg_size);
  FUZZ_CHECK(ch["max_size"].get<uint64_t>() == c->chunker.max_size);
  const std::string json = c->ToJson();
  absl::StatusOr<RepoConfig> again = RepoConfig::FromJson(json);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->version == c->version && again->id == c->id);
  FUZZ_CHECK(again->chunker.polynomial == c->chunker.polynomial);
  FUZZ_CHECK(again->chunker.min_size == c->chunker.min_size);
  FUZZ_CHECK(again->chunker.avg_size == c->chunker.avg_size);
  FUZZ_CHECK(again->chunker.max_size == c->chunker.max_size);
  FUZZ_CHECK(again->chunker.cut_on_ones == c->chunker.cut_on_ones);
  FUZZ_CHECK(c->chunker.cut_on_ones ==
             (ch.contains("cut_on_ones") && ch["cut_on_ones"].get<bool>()));
  FUZZ_CHECK(again->compression.ToString() == c->compression.ToString());
  FUZZ_CHECK(again->large_compression.ToString() == c->large_compression.ToString());
  // A config from before the field: large files as `compression` says.
  if (!j.contains("compression_large")) {
    FUZZ_CHECK(c->large_compression.ToString() == c->compression.ToString());
  }
  FUZZ_CHECK(again->ToJson() == json);
  return 0;
}
