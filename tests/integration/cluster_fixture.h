// A real cluster for integration tests: whorl-metad and whorl-chunkd processes on 127.0.0.1
// with ephemeral ports, RocksDB and packs in a temp dir, JSON logs and Prometheus metrics, and
// the whorl.v1 stubs to speak to them. Binaries from $WHORL_BIN_DIR (set by ctest).
//
// Not thread-safe: one test thread drives a Cluster.
#ifndef WHORL_TESTS_INTEGRATION_CLUSTER_FIXTURE_H_
#define WHORL_TESTS_INTEGRATION_CLUSTER_FIXTURE_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/cluster_map.h"
#include "common/fingerprint.h"
#include "common/hash_ring.h"
#include "whorl/v1/service.grpc.pb.h"

namespace whorl::testing {

std::string BinDir();
int FreePort();
std::string Addr(int port);

// Starts `argv` (argv[0] a path) with stdout and stderr appended to `log`; -1 on failure.
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log);

// Runs `argv` to completion with stderr (and stdout) captured; returns the exit status as
// waitpid gives it. A command still running after 60 s is killed and the test fails.
int RunCaptured(const std::vector<std::string>& argv, std::string* output);

// A plain (codec 0) chunk of `plain`.
v1::Chunk MakeChunk(const std::string& plain);
// A bundle of `plains` (zstd), as an agent sends it (proto/service_format.md).
v1::Chunk MakeBundle(const std::vector<std::string>& plains);

// An HTTP GET of http://ADDRESS/PATH: the whole response, headers included ("" on failure).
std::string HttpGet(const std::string& address, const std::string& path);

template <typename Req>
void Header(Req* req, uint64_t epoch = 1, const std::string& request_id = "test-1") {
  req->mutable_header()->set_request_id(request_id);
  req->mutable_header()->set_epoch(epoch);
  req->mutable_header()->set_tenant("tester");
}

// The value of trailing metadata `key`, or "" if absent.
std::string Trailer(const grpc::ClientContext& ctx, const std::string& key);

class Cluster {
 public:
  // Starts `metas` metadata shards (meta-1...) and `chunks` chunk stores (chunk-1...), epoch 1,
  // and waits until each answers its health check.
  explicit Cluster(int metas = 3, int chunks = 2);
  ~Cluster();  // SIGTERM to every node still running; removes the temp dir

  const std::filesystem::path& dir() const { return dir_; }
  std::string MapPath() const { return (dir_ / "cluster.json").string(); }
  void WriteMap();  // map_ to MapPath()

  // Starts node `id` (of map_) and waits until it is healthy.
  void Start(const std::string& id);
  // SIGTERM, waits; expects exit 0.
  void Stop(const std::string& id);
  void Restart(const std::string& id) {
    Stop(id);
    Start(id);
  }
  void Signal(const std::string& id, int sig);
  pid_t Pid(const std::string& id) const { return pids_.at(id); }
  // The node's log (JSON lines) so far.
  std::string Log(const std::string& id) const;
  // The node's Prometheus text metrics.
  std::string Metrics(const std::string& id) const;

  std::shared_ptr<grpc::Channel> Channel(const std::string& address);
  std::unique_ptr<v1::Index::Stub> Index(size_t i);
  std::unique_ptr<v1::Catalog::Stub> Catalog(size_t i);
  std::unique_ptr<v1::Admin::Stub> Admin(size_t i);
  std::unique_ptr<v1::ChunkStore::Stub> Store(size_t i);
  // Ring owners (indexes into map_.metadata / map_.chunkstores) as of map_ at construction.
  size_t MetaOwner(const Fingerprint& fp) const { return meta_ring_->OwnerIndex(fp.Prefix64()); }
  size_t ChunkOwner(const Fingerprint& fp) const { return chunk_ring_->OwnerIndex(fp.Prefix64()); }

  ClusterMap map_;

 private:
  static inline int counter_ = 0;
  std::filesystem::path dir_;
  std::map<std::string, pid_t> pids_;
  std::map<std::string, std::string> metrics_;  // id -> metrics address
  std::unique_ptr<HashRing> meta_ring_, chunk_ring_;
};

// Waits (up to 15 s) until ADDRESS answers grpc.health.v1 Check with SERVING; fails at once, with
// the daemon's LOG, when PID (if > 0) exits first.
void WaitHealthy(const std::string& address, pid_t pid = -1, const std::string& log = "");

// A test with a 3-shard, 2-store cluster and helpers that route as an agent would.
class ClusterTest : public ::testing::Test {
 protected:
  // Puts `plains` (codec 0) through their owning chunk stores; expects OK.
  void Put(const std::vector<std::string>& plains);
  // Whether the owning shard says `plain` is missing.
  bool Missing(const std::string& plain);
  // What shard `i` (chunk store `i`) answers to GetStats; expects OK.
  v1::ShardStatsResponse ShardStats(size_t i);
  v1::ChunkStoreStatsResponse StoreStats(size_t i);

  Cluster cluster_;
};

}  // namespace whorl::testing

#endif  // WHORL_TESTS_INTEGRATION_CLUSTER_FIXTURE_H_
