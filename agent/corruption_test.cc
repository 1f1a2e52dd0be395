// Corruption of an embedded repository's packs, byte by byte: `check --read-data` (RunCheck)
// must name every damaged chunk and every file (or directory) in the snapshot that uses it, and
// restore must bring back every unaffected file exactly while refusing the affected ones.
// Transient read faults must not be reported as damage.
//
// The sample: WHORL_CORRUPTION_FLIPS random byte offsets over all pack bytes (default 1000),
// plus pack-header bytes. Each flip is proven detected on its own: flips are applied in
// batches whose records are disjoint, and check must name exactly the batch's chunks.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <set>

#include "agent/backup.h"
#include "agent/check.h"
#include "agent/repository.h"
#include "agent/restore.h"

namespace whorl::agent {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

uint32_t Fixed32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(s[at + i]);
  return v;
}

// Reads or overwrites one byte of a file in place (pread/pwrite: the open store sees it).
uint8_t ByteAt(const fs::path& p, uint64_t off) {
  const int fd = ::open(p.c_str(), O_RDONLY);
  uint8_t b = 0;
  EXPECT_EQ(::pread(fd, &b, 1, static_cast<off_t>(off)), 1);
  ::close(fd);
  return b;
}
void SetByte(const fs::path& p, uint64_t off, uint8_t b) {
  const int fd = ::open(p.c_str(), O_WRONLY);
  EXPECT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(off)), 1);
  ::close(fd);
}

// One stretch of a pack: its 16-byte header, or one record (header + data) of chunk `fp`.
struct Region {
  fs::path pack;
  uint64_t begin = 0, end = 0;
  bool pack_header = false;
  Fingerprint fp;
};

// Parses packs per chunk-store/pack_format.md (independently of the store's own reader).
std::vector<Region> ParsePacks(const fs::path& dir) {
  std::vector<Region> out;
  std::vector<fs::path> packs;
  for (const auto& e : fs::directory_iterator(dir)) packs.push_back(e.path());
  std::sort(packs.begin(), packs.end());
  for (const fs::path& p : packs) {
    const std::string bytes = ReadAll(p);
    EXPECT_EQ(bytes.substr(0, 8), "WHORLPAK");
    out.push_back(Region{p, 0, 16, true, {}});
    for (uint64_t off = 16; off < bytes.size();) {
      const uint64_t end = off + 52 + Fixed32(bytes, off + 12);
      Region r{p, off, end, false, {}};
      std::copy(bytes.begin() + off + 16, bytes.begin() + off + 48, r.fp.bytes.begin());
      out.push_back(r);
      off = end;
    }
  }
  return out;
}

class CorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/whorl-corrupt-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
    src_ = tmp_ / "src";
    std::mt19937_64 rng(42);
    // 4 directories of 10 files, 1 byte to 80 KiB of random bytes (1-3 chunks each), and two
    // files with the same bytes (one chunk, two users).
    for (int d = 0; d < 4; ++d) {
      fs::create_directories(src_ / ("d" + std::to_string(d)));
      for (int f = 0; f < 10; ++f) {
        std::string data(1 + rng() % (80 << 10), '\0');
        for (char& c : data) c = static_cast<char>(rng());
        std::ofstream(src_ / ("d" + std::to_string(d)) / ("f" + std::to_string(f)),
                      std::ios::binary)
            << data;
      }
    }
    std::ofstream(src_ / "same1", std::ios::binary) << std::string(5000, 's');
    std::ofstream(src_ / "same2", std::ios::binary) << std::string(5000, 's');
    auto comp = CompressionSpec::Parse("zstd:3");
    ASSERT_TRUE(comp.ok());
    auto config = NewRepoConfig(kDefaultChunkMin, kDefaultChunkAvg, kDefaultChunkMax, *comp);
    ASSERT_TRUE(config.ok());
    repo_dir_ = tmp_ / "repo";
    ASSERT_TRUE(InitEmbeddedRepository(repo_dir_.string(), *config).ok());
    Open();
    BackupOptions opts;
    opts.paths = {src_.string()};
    opts.host = "h";
    auto b = RunBackup(repo_.get(), opts);
    ASSERT_TRUE(b.ok()) << b.status();
    snap_ = b->snapshot;
    snap_id_ = b->id.ToHex().substr(0, 8);
    // Who uses each chunk, as check reports it: files by path, trees by their directory.
    users_[*Fingerprint::FromBytes(snap_.root())].insert("/");
    WalkTree(
        repo_.get(), snap_.root(),
        [&](const std::string& path, const v1::Node& node) {
          if (node.type() == v1::Node::DIR) {
            users_[*Fingerprint::FromBytes(node.subtree())].insert(path);
            dir_tree_[path] = *Fingerprint::FromBytes(node.subtree());
          }
          for (const std::string& c : node.chunks()) {
            users_[*Fingerprint::FromBytes(c)].insert(path);
            file_chunks_[path].insert(*Fingerprint::FromBytes(c));
          }
          if (node.type() == v1::Node::FILE) file_chunks_[path];  // empty files too
          return true;
        },
        [](const std::string& path, const absl::Status& s) { FAIL() << path << ": " << s; });
    regions_ = ParsePacks(repo_dir_ / "chunks" / "packs");
  }
  void TearDown() override {
    repo_.reset();
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
  void Open() {
    auto repo = OpenEmbeddedRepository(repo_dir_.string());
    ASSERT_TRUE(repo.ok()) << repo.status();
    repo_ = std::move(*repo);
  }

  // Damaged chunk hex -> its report, from check's problem lines.
  std::map<std::string, std::string> DamageReported(const std::vector<std::string>& problems) {
    std::map<std::string, std::string> out;
    for (const std::string& p : problems) {
      // A damaged tree also fails the structure walk: "snapshot ID: tree of PATH: ...".
      if (p.rfind("snapshot " + snap_id_ + ": tree of ", 0) == 0) continue;
      EXPECT_EQ(p.rfind("chunk ", 0), 0u) << p;
      const size_t is = p.find(" is damaged: ");
      EXPECT_NE(is, std::string::npos) << p;
      if (is != std::string::npos) out[p.substr(6, is - 6)] = p;
    }
    return out;
  }

  // Restores the snapshot into a fresh directory; every file not using a damaged chunk (and not
  // below a damaged tree) must come back exact, every other one must be absent and named.
  void ExpectRestoreOfTheRest(const std::set<Fingerprint>& damaged) {
    const fs::path target = tmp_ / "target";
    fs::remove_all(target);
    RestoreOptions opts;
    opts.target = target.string();
    auto r = RunRestore(repo_.get(), snap_, opts, nullptr);
    if (damaged.contains(*Fingerprint::FromBytes(snap_.root()))) {
      ASSERT_FALSE(r.ok());
      EXPECT_NE(std::string(r.status().message()).find("snapshot root"), std::string::npos);
      return;
    }
    ASSERT_TRUE(r.ok()) << r.status();
    const std::string errors = [&] {
      std::string all;
      for (const auto& e : r->errors) all += e + "\n";
      return all;
    }();
    size_t expected_errors = 0;
    for (const auto& [dir, fp] : dir_tree_) {
      if (damaged.contains(fp)) {
        ++expected_errors;
        EXPECT_NE(errors.find(dir + ": "), std::string::npos) << "no error for " << dir;
      }
    }
    for (const auto& [path, chunks] : file_chunks_) {
      bool under_damaged_tree = false;
      for (const auto& [dir, fp] : dir_tree_) {
        if (damaged.contains(fp) && path.rfind(dir + "/", 0) == 0) under_damaged_tree = true;
      }
      const fs::path restored = target / path.substr(1);
      bool bad_chunk = false;
      for (const Fingerprint& c : chunks) bad_chunk |= damaged.contains(c);
      if (under_damaged_tree) {
        EXPECT_FALSE(fs::exists(restored)) << path;
      } else if (bad_chunk) {
        ++expected_errors;
        EXPECT_FALSE(fs::exists(restored)) << path;
        EXPECT_NE(errors.find(path + ": chunk "), std::string::npos) << "no error for " << path;
      } else {
        EXPECT_EQ(ReadAll(restored), ReadAll(path)) << path << " not restored exactly";
      }
    }
    EXPECT_EQ(r->errors.size(), expected_errors) << errors;
  }

  fs::path tmp_, src_, repo_dir_;
  std::unique_ptr<Repository> repo_;
  v1::Snapshot snap_;
  std::string snap_id_;
  std::map<Fingerprint, std::set<std::string>> users_;
  std::map<std::string, Fingerprint> dir_tree_;
  std::map<std::string, std::set<Fingerprint>> file_chunks_;
  std::vector<Region> regions_;
};

TEST_F(CorruptionTest, EveryFlippedPackByteIsDetectedAndNamesItsChunkAndFiles) {
  const char* env = std::getenv("WHORL_CORRUPTION_FLIPS");
  const int flips = env != nullptr ? std::atoi(env) : 1000;
  uint64_t total = 0;
  for (const Region& r : regions_) total += r.end - r.begin;
  std::mt19937_64 rng(7);
  // The sample: uniform over all pack bytes.
  std::vector<std::pair<size_t, uint64_t>> sample;  // (region index, offset)
  for (int i = 0; i < flips; ++i) {
    uint64_t at = rng() % total;
    for (size_t k = 0; k < regions_.size(); ++k) {
      const uint64_t len = regions_[k].end - regions_[k].begin;
      if (at < len) {
        sample.push_back({k, regions_[k].begin + at});
        break;
      }
      at -= len;
    }
  }
  // Batches of up to 16 flips in distinct records. A flip in a tree gets a batch of its own:
  // check cannot name the files below a tree it cannot read.
  std::set<Fingerprint> trees = {*Fingerprint::FromBytes(snap_.root())};
  for (const auto& [dir, fp] : dir_tree_) trees.insert(fp);
  std::vector<std::vector<std::pair<size_t, uint64_t>>> batches;
  std::vector<std::pair<size_t, uint64_t>> pack_headers;
  for (const auto& s : sample) {
    if (regions_[s.first].pack_header) {
      pack_headers.push_back(s);
      continue;
    }
    bool placed = false;
    for (auto& b : batches) {
      if (trees.contains(regions_[s.first].fp) || trees.contains(regions_[b[0].first].fp)) {
        continue;
      }
      if (b.size() < 16 &&
          std::none_of(b.begin(), b.end(), [&](const auto& o) { return o.first == s.first; })) {
        b.push_back(s);
        placed = true;
        break;
      }
    }
    if (!placed) batches.push_back({s});
  }
  const auto start = std::chrono::steady_clock::now();
  int detected = 0, restores = 0;
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    const auto& batch = batches[bi];
    std::vector<uint8_t> saved;
    std::set<Fingerprint> damaged;
    for (const auto& [k, off] : batch) {
      saved.push_back(ByteAt(regions_[k].pack, off));
      SetByte(regions_[k].pack, off, saved.back() ^ static_cast<uint8_t>(1 + rng() % 255));
      damaged.insert(regions_[k].fp);
    }
    auto problems = RunCheck(repo_.get(), CheckOptions{true});
    ASSERT_TRUE(problems.ok()) << problems.status();
    const auto reported = DamageReported(*problems);
    for (const auto& [k, off] : batch) {
      const Region& r = regions_[k];
      auto it = reported.find(r.fp.ToHex());
      if (it == reported.end()) {
        ADD_FAILURE() << "flip at " << r.pack << ":" << off << " (record at " << r.begin
                      << ", chunk " << r.fp.ToHex() << ") not detected";
        continue;
      }
      ++detected;
      ASSERT_TRUE(users_.contains(r.fp)) << "a pack record no snapshot uses";
      for (const std::string& u : users_[r.fp]) {
        EXPECT_NE(it->second.find("\n  used by snapshot " + snap_id_ + " file " + u),
                  std::string::npos)
            << it->second << "\nlacks the user " << u;
      }
    }
    EXPECT_EQ(reported.size(), damaged.size()) << "check named chunks that were not damaged";
    // Restore of the rest after every 4th batch (each damaged chunk costs restore 3 reads and
    // 24 ms of pauses), every 16th in a long run.
    if (bi % (flips <= 1000 ? 4 : 16) == 0) {
      ExpectRestoreOfTheRest(damaged);
      ++restores;
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      SetByte(regions_[batch[i].first].pack, batch[i].second, saved[i]);
    }
    if (::testing::Test::HasFailure()) break;
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "flipped " << sample.size() - pack_headers.size() << " record bytes in "
            << batches.size() << " batches over " << regions_.size() - 1 << " records (" << total
            << " pack bytes): " << detected << " detected, " << restores << " restores checked, "
            << secs << " s\n";
  EXPECT_EQ(detected, static_cast<int>(sample.size() - pack_headers.size()));
  // Clean again once every byte is back.
  auto problems = RunCheck(repo_.get(), CheckOptions{true});
  ASSERT_TRUE(problems.ok());
  EXPECT_TRUE(problems->empty()) << (*problems)[0];
}

// The 16-byte pack header is read when the store opens, not per chunk. A flipped header byte
// does not lock the repository: it opens, nothing is served from the pack (each of its chunks
// reads as DATA_LOSS naming it), and `check` names the pack and every chunk in it, even without
// --read-data.
TEST_F(CorruptionTest, AFlippedPackHeaderByteIsReportedByPlainCheckAndNothingIsServed) {
  const Region& header = regions_[0];
  ASSERT_TRUE(header.pack_header);
  std::set<std::string> in_pack;
  for (const Region& r : regions_) {
    if (!r.pack_header && r.pack == header.pack) in_pack.insert(r.fp.ToHex());
  }
  const std::string pack_line = "pack 00000001 is damaged: " + header.pack.string() + ": ";
  for (uint64_t off : {uint64_t{0}, uint64_t{7}, uint64_t{8}, uint64_t{12}, uint64_t{15}}) {
    repo_.reset();
    const uint8_t saved = ByteAt(header.pack, off);
    SetByte(header.pack, off, saved ^ 0x20);
    Open();
    ASSERT_NE(repo_, nullptr) << "pack header byte " << off;
    for (bool read_data : {false, true}) {
      auto problems = RunCheck(repo_.get(), CheckOptions{read_data});
      ASSERT_TRUE(problems.ok()) << problems.status();
      std::vector<std::string> pack_lines, rest;
      for (const std::string& p : *problems) {
        (p.rfind("pack ", 0) == 0 ? pack_lines : rest).push_back(p);
      }
      ASSERT_EQ(pack_lines.size(), 1u) << "byte " << off;
      EXPECT_EQ(pack_lines[0].rfind(pack_line, 0), 0u) << pack_lines[0];
      EXPECT_NE(pack_lines[0].find("(" + std::to_string(in_pack.size()) + " chunks lost)"),
                std::string::npos)
          << pack_lines[0];
      std::set<std::string> reported;
      for (const auto& [hex, line] : DamageReported(rest)) reported.insert(hex);
      EXPECT_EQ(reported, in_pack) << "byte " << off << ", read_data " << read_data;
    }
    const absl::Status s = repo_->GetChunk(regions_[1].fp).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_NE(std::string(s.message()).find(header.pack.string()), std::string::npos) << s;
    std::set<Fingerprint> all;
    for (const Region& r : regions_) {
      if (!r.pack_header) all.insert(r.fp);
    }
    ExpectRestoreOfTheRest(all);
    repo_.reset();
    SetByte(header.pack, off, saved);
    Open();
  }
  auto problems = RunCheck(repo_.get(), CheckOptions{true});
  ASSERT_TRUE(problems.ok());
  EXPECT_TRUE(problems->empty());
}

// A repository whose reads fail now and then: the first read of every chunk fails (alternately
// UNAVAILABLE, as an I/O error would, and DATA_LOSS, as a bit flipped in transit would), and one
// chunk fails every time. A decorator over the real repository, not a fake: the faults are
// injected, the bytes are real.
class FlakyRepository : public ForwardingRepository {
 public:
  FlakyRepository(Repository* real, std::optional<Fingerprint> always_bad)
      : ForwardingRepository(real), always_bad_(always_bad) {}
  std::map<Fingerprint, int> reads;

  absl::StatusOr<std::string> GetChunk(const Fingerprint& fp) override {
    const int n = ++reads[fp];
    if (always_bad_ == fp) return absl::DataLossError("injected: always bad");
    if (n == 1) {
      return (fp.bytes[0] & 1) ? absl::UnavailableError("injected: transient I/O error")
                               : absl::DataLossError("injected: bit flipped in transit");
    }
    return inner()->GetChunk(fp);
  }

 private:
  std::optional<Fingerprint> always_bad_;
};

TEST_F(CorruptionTest, AReadThatFailsOnceIsNotDamage) {
  FlakyRepository flaky(repo_.get(), std::nullopt);
  auto problems = RunCheck(&flaky, CheckOptions{true});
  ASSERT_TRUE(problems.ok()) << problems.status();
  EXPECT_TRUE(problems->empty()) << (*problems)[0];
  auto stored = repo_->ListChunks();
  ASSERT_TRUE(stored.ok());
  // --read-data read every chunk twice (the failure, the retry); the walks read trees again.
  for (const Fingerprint& fp : *stored) EXPECT_GE(flaky.reads[fp], 2) << fp.ToHex();
  // Restore retries too: everything comes back.
  flaky.reads.clear();
  ExpectRestoreOfTheRest({});
}

TEST_F(CorruptionTest, AChunkThatFailsEveryReadIsReportedAfterThreeReads) {
  const Fingerprint bad = *file_chunks_.at((src_ / "d1" / "f3").string()).begin();
  FlakyRepository flaky(repo_.get(), bad);
  auto problems = RunCheck(&flaky, CheckOptions{true});
  ASSERT_TRUE(problems.ok()) << problems.status();
  ASSERT_EQ(problems->size(), 1u);
  EXPECT_EQ((*problems)[0], "chunk " + bad.ToHex() +
                                " is damaged: injected: always bad (all 3 reads failed)\n"
                                "  used by snapshot " +
                                snap_id_ + " file " + (src_ / "d1" / "f3").string());
  EXPECT_EQ(flaky.reads[bad], 3);
}

}  // namespace
}  // namespace whorl::agent
