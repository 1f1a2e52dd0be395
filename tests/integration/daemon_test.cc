// Integration tests of whorl-metad and whorl-chunkd: the real binaries started on 127.0.0.1
// with ephemeral ports and RocksDB in temp dirs, spoken to over gRPC with the whorl.v1 stubs.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "common/cluster_map.h"
#include "common/codec.h"
#include "common/fingerprint.h"
#include "common/hash_ring.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "whorl/v1/service.grpc.pb.h"

extern char** environ;

namespace whorl {
namespace {

namespace fs = std::filesystem;

std::string BinDir() {
  const char* d = std::getenv("WHORL_BIN_DIR");
  return d != nullptr ? d : "build/bin";
}

int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

Fingerprint Fp(const std::string& plain) { return Sha256(plain); }

v1::Chunk MakeChunk(const std::string& plain) {
  v1::Chunk c;
  c.set_fingerprint(Fp(plain).ToBytes());
  c.set_codec(0);
  c.set_plain_size(static_cast<uint32_t>(plain.size()));
  c.set_data(plain);
  return c;
}

// A cluster of 3 metadata shards and 2 chunk stores, as real processes.
class Cluster {
 public:
  Cluster() {
    dir_ = fs::temp_directory_path() /
           ("whorl-it-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    fs::create_directories(dir_);
    for (int i = 1; i <= 3; ++i) {
      map_.metadata.push_back({"meta-" + std::to_string(i), Addr(FreePort()), 1});
    }
    for (int i = 1; i <= 2; ++i) {
      map_.chunkstores.push_back({"chunk-" + std::to_string(i), Addr(FreePort()), 1});
    }
    map_.epoch = 1;
    WriteMap();
    for (const auto& n : map_.metadata) Start(n, "whorl-metad");
    for (const auto& n : map_.chunkstores) Start(n, "whorl-chunkd");
    meta_ring_ = std::make_unique<HashRing>(*map_.MetadataRing());
    chunk_ring_ = std::make_unique<HashRing>(*map_.ChunkStoreRing());
  }
  ~Cluster() {
    for (auto& [id, pid] : pids_) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
    fs::remove_all(dir_);
  }

  static std::string Addr(int port) { return "127.0.0.1:" + std::to_string(port); }

  void WriteMap() { std::ofstream(dir_ / "cluster.json") << SerializeClusterMap(map_); }

  void Start(const ClusterNode& n, const std::string& binary) {
    binaries_[n.id] = binary;
    const std::string bin = BinDir() + "/" + binary;
    const std::string data = (dir_ / n.id).string();
    const std::string map = (dir_ / "cluster.json").string();
    const std::string log = (dir_ / (n.id + ".log")).string();
    std::vector<std::string> args = {bin,      "--node-id", n.id,        "--listen", n.address,
                                     "--data", data,        "--cluster", map};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ASSERT_EQ(rc, 0) << "cannot start " << bin;
    pids_[n.id] = pid;
    WaitHealthy(n.address);
  }

  void WaitHealthy(const std::string& address) {
    for (int i = 0; i < 300; ++i) {
      // A fresh channel each try (a distinct argument keeps it off the shared subchannel):
      // a channel that failed once waits out gRPC's reconnect backoff (1 s and growing).
      grpc::ChannelArguments args;
      args.SetInt("whorl.test.attempt", i);
      auto stub = grpc::health::v1::Health::NewStub(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
      grpc::health::v1::HealthCheckRequest req;
      grpc::health::v1::HealthCheckResponse resp;
      if (stub->Check(&ctx, req, &resp).ok() &&
          resp.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL() << address << " never became healthy";
  }

  // Stops (SIGTERM, waits) and starts a node again on the same port and data.
  void Restart(const std::string& id) {
    ::kill(pids_[id], SIGTERM);
    int status = 0;
    ::waitpid(pids_[id], &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << id << " status " << status;
    Start(*map_.FindNode(id), binaries_[id]);
  }

  void Signal(const std::string& id, int sig) { ::kill(pids_[id], sig); }

  std::shared_ptr<grpc::Channel> Channel(const std::string& address) {
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(100 << 20);
    return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  }
  std::unique_ptr<v1::Index::Stub> Index(size_t i) {
    return v1::Index::NewStub(Channel(map_.metadata[i].address));
  }
  std::unique_ptr<v1::Catalog::Stub> Catalog(size_t i) {
    return v1::Catalog::NewStub(Channel(map_.metadata[i].address));
  }
  std::unique_ptr<v1::Admin::Stub> Admin(size_t i) {
    return v1::Admin::NewStub(Channel(map_.metadata[i].address));
  }
  std::unique_ptr<v1::ChunkStore::Stub> Store(size_t i) {
    return v1::ChunkStore::NewStub(Channel(map_.chunkstores[i].address));
  }
  size_t MetaOwner(const Fingerprint& fp) const { return meta_ring_->OwnerIndex(fp.Prefix64()); }
  size_t ChunkOwner(const Fingerprint& fp) const { return chunk_ring_->OwnerIndex(fp.Prefix64()); }

  ClusterMap map_;

 private:
  static inline int counter_ = 0;
  fs::path dir_;
  std::map<std::string, pid_t> pids_;
  std::map<std::string, std::string> binaries_;
  std::unique_ptr<HashRing> meta_ring_, chunk_ring_;
};

template <typename Req>
void Header(Req* req, uint64_t epoch = 1) {
  req->mutable_header()->set_request_id("test-1");
  req->mutable_header()->set_epoch(epoch);
  req->mutable_header()->set_tenant("tester");
}

class DaemonTest : public ::testing::Test {
 protected:
  // Puts `plains` through their owning chunk stores.
  void Put(const std::vector<std::string>& plains) {
    std::map<size_t, v1::PutChunksRequest> by_node;
    for (const auto& p : plains) *by_node[cluster_.ChunkOwner(Fp(p))].add_chunks() = MakeChunk(p);
    for (auto& [node, req] : by_node) {
      Header(&req);
      v1::PutChunksResponse resp;
      grpc::ClientContext ctx;
      const grpc::Status s = cluster_.Store(node)->PutChunks(&ctx, req, &resp);
      ASSERT_TRUE(s.ok()) << s.error_message();
    }
  }

  // Whether the owning shard says `plain` is missing.
  bool Missing(const std::string& plain) {
    v1::FindMissingRequest req;
    Header(&req);
    req.set_fingerprints(Fp(plain).ToBytes());
    v1::FindMissingResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status s =
        cluster_.Index(cluster_.MetaOwner(Fp(plain)))->FindMissing(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.missing_size() == 1;
  }

  v1::ChunkStoreStatsResponse StoreStats(size_t node) {
    v1::ChunkStoreStatsRequest req;
    Header(&req, 0);
    v1::ChunkStoreStatsResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(cluster_.Store(node)->GetStats(&ctx, req, &resp).ok());
    return resp;
  }

  Cluster cluster_;
};

TEST_F(DaemonTest, PutIsRegisteredWithTheOwningShardOnly) {
  std::vector<std::string> plains;
  for (int i = 0; i < 40; ++i) plains.push_back("chunk number " + std::to_string(i));
  Put(plains);
  for (const auto& p : plains) EXPECT_FALSE(Missing(p)) << p;
  // Asking a shard that does not own a fingerprint is refused, naming the owner.
  const Fingerprint fp = Fp(plains[0]);
  const size_t owner = cluster_.MetaOwner(fp);
  const size_t other = (owner + 1) % 3;
  v1::FindMissingRequest req;
  Header(&req);
  req.set_fingerprints(fp.ToBytes());
  v1::FindMissingResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status s = cluster_.Index(other)->FindMissing(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("belongs to " + cluster_.map_.metadata[owner].id),
            std::string::npos)
      << s.error_message();
  // Exact counts: every chunk on exactly one store, every entry on exactly one shard.
  uint64_t stored = 0, indexed = 0;
  for (size_t i = 0; i < 2; ++i) stored += StoreStats(i).chunks();
  for (size_t i = 0; i < 3; ++i) {
    v1::ShardStatsRequest sr;
    Header(&sr, 0);
    v1::ShardStatsResponse st;
    grpc::ClientContext c;
    ASSERT_TRUE(cluster_.Admin(i)->GetStats(&c, sr, &st).ok());
    indexed += st.unique_chunks();
  }
  EXPECT_EQ(stored, 40u);
  EXPECT_EQ(indexed, 40u);
  // A second put of the same chunks stores nothing new.
  Put(plains);
  stored = 0;
  for (size_t i = 0; i < 2; ++i) stored += StoreStats(i).chunks();
  EXPECT_EQ(stored, 40u);
}

TEST_F(DaemonTest, LyingChunkIsRefusedAndNothingOfTheBatchIsStored) {
  const std::string good = "honest bytes";
  const size_t node = cluster_.ChunkOwner(Fp(good));
  v1::PutChunksRequest req;
  Header(&req);
  *req.add_chunks() = MakeChunk(good);
  v1::Chunk liar = MakeChunk(good);
  liar.set_data("other bytes!");  // same size, other content
  // Find a fingerprint this node owns for the liar to claim.
  for (int i = 0;; ++i) {
    const Fingerprint fp = Fp("claimed " + std::to_string(i));
    if (cluster_.ChunkOwner(fp) == node) {
      liar.set_fingerprint(fp.ToBytes());
      break;
    }
  }
  *req.add_chunks() = liar;
  v1::PutChunksResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status s = cluster_.Store(node)->PutChunks(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("hashes to"), std::string::npos) << s.error_message();
  EXPECT_EQ(StoreStats(node).chunks(), 0u);
  EXPECT_TRUE(Missing(good));
  Put({good});  // still serving
  EXPECT_FALSE(Missing(good));
}

TEST_F(DaemonTest, OversizedAndMalformedBatchesAreRefused) {
  v1::FindMissingRequest req;
  Header(&req);
  req.set_fingerprints(std::string(16385 * 32, 'x'));
  v1::FindMissingResponse resp;
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(cluster_.Index(0)->FindMissing(&ctx, req, &resp).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  req.set_fingerprints(std::string(33, 'x'));
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(cluster_.Index(0)->FindMissing(&ctx, req, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  v1::PutChunksRequest put;
  Header(&put);
  for (int i = 0; i < 4097; ++i) *put.add_chunks() = MakeChunk("c" + std::to_string(i));
  v1::PutChunksResponse presp;
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(cluster_.Store(0)->PutChunks(&ctx, put, &presp).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  v1::PutChunksRequest bad;
  Header(&bad);
  *bad.add_chunks() = MakeChunk("x");
  bad.mutable_chunks(0)->set_fingerprint("short");
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(cluster_.Store(0)->PutChunks(&ctx, bad, &presp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  // A message over the 80 MiB cap.
  v1::PutChunksRequest huge;
  Header(&huge);
  *huge.add_chunks() = MakeChunk(std::string((80 << 20) + 1, 'h'));
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(cluster_.Store(0)->PutChunks(&ctx, huge, &presp).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  EXPECT_EQ(StoreStats(0).chunks(), 0u);
}

TEST_F(DaemonTest, StaleEpochIsRefusedWithTheCurrentOneAndSighupReloads) {
  cluster_.map_.epoch = 2;
  cluster_.WriteMap();
  cluster_.Signal("meta-1", SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  v1::GetFilterRequest req;
  Header(&req, 1);
  v1::GetFilterResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status s = cluster_.Index(0)->GetFilter(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("stale cluster map epoch 1, current is 2"), std::string::npos)
      << s.error_message();
  const auto& trailers = ctx.GetServerTrailingMetadata();
  auto it = trailers.find("whorl-epoch");
  ASSERT_NE(it, trailers.end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()), "2");
  v1::GetClusterMapRequest mreq;
  Header(&mreq, 0);
  v1::GetClusterMapResponse mresp;
  grpc::ClientContext c2;
  ASSERT_TRUE(cluster_.Admin(0)->GetClusterMap(&c2, mreq, &mresp).ok());
  EXPECT_EQ(mresp.epoch(), 2u);
  // A node that sees a newer epoch than its own re-reads its map (meta-2 was not signalled).
  Header(&req, 2);
  grpc::ClientContext c3;
  EXPECT_TRUE(cluster_.Index(1)->GetFilter(&c3, req, &resp).ok());
}

TEST_F(DaemonTest, CommitNeedsTheRootIndexedOnItsOwningShard) {
  v1::InitRepositoryRequest init;
  Header(&init, 0);
  init.set_config(R"({"id":"0123456789abcdef0123456789abcdef","version":1})");
  for (size_t i = 0; i < 3; ++i) {
    v1::InitRepositoryResponse r;
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Admin(i)->InitRepository(&ctx, init, &r).ok());
  }
  {
    v1::InitRepositoryRequest other = init;
    other.set_config(R"({"id":"ffffffffffffffffffffffffffffffff","version":1})");
    v1::InitRepositoryResponse r;
    grpc::ClientContext ctx;
    EXPECT_EQ(cluster_.Admin(0)->InitRepository(&ctx, other, &r).error_code(),
              grpc::StatusCode::ALREADY_EXISTS);
  }
  const std::string root = "a root tree";
  v1::Snapshot snap;
  snap.set_repository_id("0123456789abcdef0123456789abcdef");
  snap.set_host("h");
  snap.set_time_ns(1);
  snap.set_root(Fp(root).ToBytes());
  // Commit on the shard owning the snapshot id.
  std::string id_bytes;
  {
    // The id is SHA-256 of the deterministic serialization; try each shard, only the owner
    // may accept, and none may while the root is absent.
    int refused_missing = 0;
    for (size_t i = 0; i < 3; ++i) {
      v1::CommitSnapshotRequest req;
      Header(&req);
      *req.mutable_snapshot() = snap;
      v1::CommitSnapshotResponse resp;
      grpc::ClientContext ctx;
      const grpc::Status s = cluster_.Catalog(i)->CommitSnapshot(&ctx, req, &resp);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
      if (s.error_message().find("is not in the index") != std::string::npos) ++refused_missing;
    }
    EXPECT_EQ(refused_missing, 1);
  }
  Put({root});
  int accepted = 0;
  for (size_t i = 0; i < 3; ++i) {
    v1::CommitSnapshotRequest req;
    Header(&req);
    *req.mutable_snapshot() = snap;
    v1::CommitSnapshotResponse resp;
    grpc::ClientContext ctx;
    if (cluster_.Catalog(i)->CommitSnapshot(&ctx, req, &resp).ok()) {
      ++accepted;
      EXPECT_EQ(resp.id().size(), 32u);
    }
  }
  EXPECT_EQ(accepted, 1);
  // Another repository's snapshot is refused.
  snap.set_repository_id("ffffffffffffffffffffffffffffffff");
  for (size_t i = 0; i < 3; ++i) {
    v1::CommitSnapshotRequest req;
    Header(&req);
    *req.mutable_snapshot() = snap;
    v1::CommitSnapshotResponse resp;
    grpc::ClientContext ctx;
    EXPECT_FALSE(cluster_.Catalog(i)->CommitSnapshot(&ctx, req, &resp).ok());
  }
}

TEST_F(DaemonTest, FilterVersionChangesWithRegistrationsAndNeverMissesAMember) {
  v1::GetFilterRequest req;
  Header(&req);
  v1::GetFilterResponse first;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Index(0)->GetFilter(&ctx, req, &first).ok());
  }
  req.set_have_version(first.version());
  {
    v1::GetFilterResponse again;
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Index(0)->GetFilter(&ctx, req, &again).ok());
    EXPECT_TRUE(again.unchanged());
    EXPECT_TRUE(again.filter().empty());
  }
  std::vector<std::string> plains;
  for (int i = 0; i < 30; ++i) plains.push_back("filtered " + std::to_string(i));
  Put(plains);
  v1::GetFilterResponse after;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Index(0)->GetFilter(&ctx, req, &after).ok());
  }
  EXPECT_FALSE(after.unchanged());
  EXPECT_NE(after.version(), first.version());
  // The filter's format is parsed by the agent; here: it is not empty and sized for 1M keys.
  EXPECT_GT(after.filter().size(), 1000000u);
}

TEST_F(DaemonTest, SigtermThenRestartKeepsEverythingAcknowledged) {
  std::vector<std::string> plains;
  for (int i = 0; i < 20; ++i) plains.push_back(std::string(1000 + i, static_cast<char>('a' + i)));
  Put(plains);
  for (const auto& n : cluster_.map_.chunkstores) cluster_.Restart(n.id);
  for (const auto& n : cluster_.map_.metadata) cluster_.Restart(n.id);
  for (const auto& p : plains) {
    EXPECT_FALSE(Missing(p));
    v1::GetChunksRequest req;
    Header(&req);
    req.add_fingerprints(Fp(p).ToBytes());
    grpc::ClientContext ctx;
    auto reader = cluster_.Store(cluster_.ChunkOwner(Fp(p)))->GetChunks(&ctx, req);
    v1::GetChunksResponse resp;
    ASSERT_TRUE(reader->Read(&resp));
    EXPECT_EQ(resp.error_code(), 0) << resp.error_message();
    EXPECT_EQ(resp.chunk().data(), p);
    EXPECT_TRUE(reader->Finish().ok());
  }
}

}  // namespace
}  // namespace whorl
