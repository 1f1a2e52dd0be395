#include "agent/ack_log.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "agent/repository.h"
#include "agent/test_util.h"
#include "agent/uploader.h"

namespace whorl::agent {
namespace {

namespace fs = std::filesystem;

using testing::ReadAll;

// The log's lines, each a whole line ("HEX\n").
std::vector<std::string> Lines(const fs::path& p) {
  std::vector<std::string> out;
  const std::string all = ReadAll(p);
  size_t at = 0;
  for (size_t nl; (nl = all.find('\n', at)) != std::string::npos; at = nl + 1) {
    out.push_back(all.substr(at, nl - at));
  }
  EXPECT_EQ(at, all.size()) << "a torn last line";
  return out;
}

class AckLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = testing::MakeTempDir("whorl-acklog");
    log_ = tmp_ / "acks.log";
  }
  void TearDown() override {
    ::unsetenv(kAckLogEnv);
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
  std::unique_ptr<Repository> NewRepository() {
    return testing::NewEmbeddedRepository(tmp_ / "repo", "zstd:3");
  }

  fs::path tmp_, log_;
};

TEST_F(AckLogTest, UnsetOrEmptyVariableMeansNoLog) {
  ::unsetenv(kAckLogEnv);
  EXPECT_EQ(AckLog::FromEnvironment(), nullptr);
  ::setenv(kAckLogEnv, "", 1);
  EXPECT_EQ(AckLog::FromEnvironment(), nullptr);
  ::setenv(kAckLogEnv, log_.c_str(), 1);
  EXPECT_NE(AckLog::FromEnvironment(), nullptr);
}

TEST_F(AckLogTest, AppendsOneHexLinePerFingerprintAfterWhatIsThere) {
  const AckLog log(log_.string());
  const Fingerprint a = Sha256("a"), b = Sha256("b"), c = Sha256("c");
  ASSERT_TRUE(log.Append({a, b}).ok());
  ASSERT_TRUE(log.Append({}).ok());
  ASSERT_TRUE(log.Append({c}).ok());
  EXPECT_EQ(ReadAll(log_), a.ToHex() + "\n" + b.ToHex() + "\n" + c.ToHex() + "\n");
}

TEST_F(AckLogTest, AnUnwritableLogIsAnErrorNamingIt) {
  const AckLog log((tmp_ / "no" / "such" / "dir").string());
  const absl::Status s = log.Append({Sha256("a")});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find((tmp_ / "no").string()), std::string::npos) << s;
}

// The uploader logs every chunk it stored, once, and nothing the repository already had.
TEST_F(AckLogTest, UploaderLogsTheChunksThePutAcknowledged) {
  std::unique_ptr<Repository> repo = NewRepository();
  ASSERT_NE(repo, nullptr);
  std::set<std::string> stored;
  {
    ChunkUploader first(repo.get());  // no log
    const std::string old = "already stored";
    ASSERT_TRUE(first.Add(Sha256(old), old).ok());
    ASSERT_TRUE(first.Flush().ok());
  }
  ASSERT_FALSE(fs::exists(log_));
  ::setenv(kAckLogEnv, log_.c_str(), 1);
  ChunkUploader uploader(repo.get());
  std::set<std::string> want;
  for (int i = 0; i < 5000; ++i) {  // more than one batch (kBatchChunks)
    const std::string bytes = "chunk " + std::to_string(i % 4500);
    ASSERT_TRUE(uploader.Add(Sha256(bytes), bytes).ok());
    want.insert(Sha256(bytes).ToHex());
  }
  const std::string old = "already stored";
  ASSERT_TRUE(uploader.Add(Sha256(old), old).ok());
  ASSERT_TRUE(uploader.Flush().ok());
  const std::vector<std::string> lines = Lines(log_);
  EXPECT_EQ(lines.size(), want.size()) << "a chunk logged twice, or the old one logged";
  EXPECT_EQ(std::set<std::string>(lines.begin(), lines.end()), want);
}

// A put that fails acknowledges nothing: nothing is logged.
class FailingPuts : public ForwardingRepository {
 public:
  using ForwardingRepository::ForwardingRepository;
  absl::Status PutChunks(std::vector<EncodedChunk>) override {
    return absl::UnavailableError("injected: put failed");
  }
};

TEST_F(AckLogTest, AFailedPutLogsNothing) {
  std::unique_ptr<Repository> repo = NewRepository();
  ASSERT_NE(repo, nullptr);
  FailingPuts failing(repo.get());
  ::setenv(kAckLogEnv, log_.c_str(), 1);
  ChunkUploader uploader(&failing);
  ASSERT_TRUE(uploader.Add(Sha256("x"), "x").ok());
  EXPECT_FALSE(uploader.Flush().ok());
  EXPECT_FALSE(fs::exists(log_));
}

}  // namespace
}  // namespace whorl::agent
