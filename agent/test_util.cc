#include "agent/test_util.h"

#include <gtest/gtest.h>

namespace whorl::agent::testing {

std::unique_ptr<Repository> NewEmbeddedRepository(const std::filesystem::path& dir,
                                                  const std::string& compression) {
  absl::StatusOr<CompressionSpec> comp = CompressionSpec::Parse(compression);
  EXPECT_TRUE(comp.ok()) << comp.status();
  if (!comp.ok()) return nullptr;
  // Every chunk with `compression`, large files too.
  auto config = NewRepoConfig(kDefaultChunkMin, kDefaultChunkAvg, kDefaultChunkMax, *comp, *comp);
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return nullptr;
  const absl::Status init = InitEmbeddedRepository(dir.string(), *config);
  EXPECT_TRUE(init.ok()) << init;
  auto repo = OpenEmbeddedRepository(dir.string());
  EXPECT_TRUE(repo.ok()) << repo.status();
  return repo.ok() ? *std::move(repo) : nullptr;
}

}  // namespace whorl::agent::testing
