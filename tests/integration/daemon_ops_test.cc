// Integration tests of what operators see of the daemons: flags and exit codes, the bound port,
// JSON logs with the request id, Prometheus metrics.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/integration/cluster_fixture.h"

namespace whorl::testing {
namespace {

namespace fs = std::filesystem;

// A temp dir holding a one-shard, one-store map.
class OpsTest : public ::testing::Test {
 protected:
  OpsTest() {
    dir_ = fs::temp_directory_path() / ("whorl-ops-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    map_.epoch = 3;
    map_.metadata.push_back({"meta-1", Addr(FreePort()), 1});
    map_.chunkstores.push_back({"chunk-1", Addr(FreePort()), 1});
    std::ofstream(MapPath()) << SerializeClusterMap(map_);
  }
  ~OpsTest() override { fs::remove_all(dir_); }
  std::string MapPath() const { return (dir_ / "cluster.json").string(); }

  fs::path dir_;
  ClusterMap map_;
};

TEST_F(OpsTest, ANodeIdNotInTheMapExitsWith2) {
  struct Case {
    std::string binary, id, want;
  };
  for (const Case& c : {Case{"whorl-metad", "meta-9", "node id meta-9 is not among the metadata"},
                        Case{"whorl-metad", "chunk-1", "is not among the metadata shards"},
                        Case{"whorl-chunkd", "meta-1", "is not among the chunk-store nodes"}}) {
    std::string out;
    const int status =
        RunCaptured({BinDir() + "/" + c.binary, "--node-id", c.id, "--listen", "127.0.0.1:0",
                     "--data", (dir_ / "d").string(), "--cluster", MapPath()},
                    &out);
    ASSERT_TRUE(WIFEXITED(status)) << status;
    EXPECT_EQ(WEXITSTATUS(status), 2) << out;
    EXPECT_NE(out.find(c.want), std::string::npos) << out;
  }
  std::string out;
  const int status = RunCaptured({BinDir() + "/whorl-metad", "--node-id", "meta-1"}, &out);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << out;
  EXPECT_NE(out.find("--listen"), std::string::npos) << out;
}

// A damaged RocksDB (here its CURRENT file overwritten with garbage) stops a daemon at start
// with exit 1 and one line naming the store, before it serves anything.
TEST_F(OpsTest, ADamagedStoreStopsTheDaemonAtStartNamingIt) {
  struct Case {
    std::string binary, id, db;  // db: the RocksDB directory below --data
  };
  for (const Case& c :
       {Case{"whorl-metad", "meta-1", ""}, Case{"whorl-chunkd", "chunk-1", "locator"}}) {
    const fs::path data = dir_ / ("damaged-" + c.id);
    const fs::path db = c.db.empty() ? data : data / c.db;
    fs::create_directories(db);
    std::ofstream(db / "CURRENT", std::ios::binary) << std::string("\x01garbage\xff", 10);
    std::string out;
    const int status = RunCaptured({BinDir() + "/" + c.binary, "--node-id", c.id, "--listen",
                                    "127.0.0.1:0", "--data", data.string(), "--cluster", MapPath()},
                                   &out);
    ASSERT_TRUE(WIFEXITED(status)) << c.binary << " " << status << ": " << out;
    EXPECT_EQ(WEXITSTATUS(status), 1) << c.binary << ": " << out;
    EXPECT_NE(out.find(c.binary + ": "), std::string::npos) << out;
    EXPECT_NE(out.find(data.string()), std::string::npos)
        << c.binary << " does not name " << data << ": " << out;
  }
}

TEST_F(OpsTest, PortZeroServesOnTheLoggedPort) {
  const fs::path log = dir_ / "metad.log";
  const pid_t pid =
      Spawn({BinDir() + "/whorl-metad", "--node-id", "meta-1", "--listen", "127.0.0.1:0", "--data",
             (dir_ / "m").string(), "--cluster", MapPath(), "--log-format", "json"},
            log.string());
  ASSERT_GT(pid, 0);
  int port = 0;
  for (int i = 0; i < 200 && port == 0; ++i) {
    std::ifstream in(log);
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_object() && j.value("msg", "") == "serving") {
        port = std::stoi(j.value("port", "0"));
        EXPECT_EQ(j.value("epoch", ""), "3");
      }
    }
    if (port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GT(port, 0);
  WaitHealthy(Addr(port));
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// A second daemon told to listen on a port another daemon serves exits 1 naming the address
// (gRPC would otherwise share the port with SO_REUSEPORT and split the connections), and the
// first keeps serving.
TEST_F(ClusterTest, ASecondDaemonOnAServedPortExitsWith1) {
  Cluster& c = cluster_;
  for (const std::string& id : {std::string("meta-1"), std::string("chunk-1")}) {
    const std::string binary = id == "meta-1" ? "whorl-metad" : "whorl-chunkd";
    const std::string address = c.map_.FindNode(id)->address;
    std::string out;
    const int status = RunCaptured(
        {BinDir() + "/" + binary, "--node-id", id, "--listen", address, "--data",
         (fs::temp_directory_path() / ("whorl-second-" + std::to_string(::getpid()) + "-" + id))
             .string(),
         "--cluster", c.MapPath()},
        &out);
    fs::remove_all(fs::temp_directory_path() /
                   ("whorl-second-" + std::to_string(::getpid()) + "-" + id));
    ASSERT_TRUE(WIFEXITED(status)) << status << ": " << out;
    EXPECT_EQ(WEXITSTATUS(status), 1) << out;
    EXPECT_NE(out.find(binary + ": cannot listen on " + address), std::string::npos) << out;
    WaitHealthy(address);
  }
}

using LogsAndMetricsTest = ClusterTest;

TEST_F(LogsAndMetricsTest, EveryRpcIsOneJsonEventWithTheRequestIdPassedOn) {
  std::vector<std::string> plains;
  for (int i = 0; i < 30; ++i) plains.push_back("logged " + std::to_string(i));
  Put(plains);
  for (const auto& p : plains) EXPECT_FALSE(Missing(p));
  // chunkd logged each PutChunks; every shard logged the Register it made for it, same id.
  int puts = 0, registers = 0;
  for (const auto& n : cluster_.map_.chunkstores) {
    std::istringstream in(cluster_.Log(n.id));
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      ASSERT_TRUE(j.is_object()) << line;
      if (j.value("msg", "") != "rpc" || j.value("method", "") != "PutChunks") continue;
      ++puts;
      EXPECT_EQ(j.value("request_id", ""), "test-1");
      EXPECT_EQ(j.value("code", ""), "0");
      EXPECT_EQ(j.value("status", ""), "OK");
      EXPECT_EQ(j.value("tenant", ""), "tester");
      EXPECT_NE(j.value("peer", ""), "");
      EXPECT_GT(std::stoul(j.value("bytes_in", "0")), 0u);
      EXPECT_TRUE(j.contains("duration_ms"));
    }
  }
  EXPECT_EQ(puts, 2);
  for (const auto& n : cluster_.map_.metadata) {
    std::istringstream in(cluster_.Log(n.id));
    for (std::string line; std::getline(in, line);) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      ASSERT_TRUE(j.is_object()) << line;
      if (j.value("method", "") == "Register") {
        ++registers;
        EXPECT_EQ(j.value("request_id", ""), "test-1");
      }
    }
  }
  EXPECT_GE(registers, 3);  // each store registers with each shard owning one of its chunks
  // A refusal is logged at warn with its status and message.
  v1::FindMissingRequest bad;
  Header(&bad, 1, "bad-1");
  bad.set_fingerprints("x");
  v1::FindMissingResponse resp;
  grpc::ClientContext ctx;
  EXPECT_FALSE(cluster_.Index(0)->FindMissing(&ctx, bad, &resp).ok());
  const std::string log = cluster_.Log("meta-1");
  EXPECT_NE(
      log.find(R"("level":"warning","msg":"rpc","method":"FindMissing","request_id":"bad-1")"),
      std::string::npos)
      << log;
  EXPECT_NE(log.find(R"("status":"INVALID_ARGUMENT")"), std::string::npos);
}

TEST_F(LogsAndMetricsTest, DaemonsServePrometheusMetrics) {
  std::vector<std::string> plains;
  for (int i = 0; i < 10; ++i) plains.push_back("counted " + std::to_string(i));
  Put(plains);
  // Ask every shard about every fingerprint it owns, plus one it lacks.
  for (size_t i = 0; i < 3; ++i) {
    v1::FindMissingRequest req;
    Header(&req);
    for (const auto& p : plains) {
      if (cluster_.MetaOwner(Sha256(p)) == i)
        req.mutable_fingerprints()->append(Sha256(p).ToBytes());
    }
    v1::FindMissingResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.Index(i)->FindMissing(&ctx, req, &resp).ok());
  }
  double hits = 0, asked = 0, stored = 0, stored_bytes = 0;
  auto value = [](const std::string& body, const std::string& name) {
    const size_t at = body.find("\n" + name + " ");
    return at == std::string::npos ? -1.0 : std::stod(body.substr(at + name.size() + 2));
  };
  for (const auto& n : cluster_.map_.metadata) {
    const std::string body = cluster_.Metrics(n.id);
    ASSERT_NE(body.find("200 OK"), std::string::npos) << body;
    EXPECT_NE(body.find(R"(whorl_rpc_requests_total{code="0",method="FindMissing"})"),
              std::string::npos);
    EXPECT_NE(body.find(R"(whorl_rpc_duration_seconds_bucket{code="0",method="Register")"),
              std::string::npos);
    EXPECT_NE(body.find(R"(whorl_rpc_bytes_total{direction="in",method="Register"})"),
              std::string::npos);
    EXPECT_NE(body.find("whorl_rocksdb_estimate_num_keys"), std::string::npos);
    EXPECT_NE(body.find("whorl_rocksdb_sst_bytes"), std::string::npos);
    hits += std::max(0.0, value(body, "whorl_findmissing_hits_total"));
    asked += std::max(0.0, value(body, "whorl_findmissing_fingerprints_total"));
  }
  EXPECT_EQ(hits, 10);
  EXPECT_EQ(asked, 10);
  for (const auto& n : cluster_.map_.chunkstores) {
    const std::string body = cluster_.Metrics(n.id);
    EXPECT_NE(body.find(R"(whorl_rpc_requests_total{code="0",method="PutChunks"})"),
              std::string::npos)
        << body;
    stored += std::max(0.0, value(body, "whorl_chunks_stored_total"));
    stored_bytes += std::max(0.0, value(body, "whorl_chunk_bytes_stored_total"));
    EXPECT_EQ(value(body, "whorl_store_chunks"), 0);  // as of start; GetStats refreshes it
  }
  EXPECT_EQ(stored, 10);
  double want_bytes = 0;
  for (const auto& p : plains) want_bytes += static_cast<double>(p.size());
  EXPECT_EQ(stored_bytes, want_bytes);
}

}  // namespace
}  // namespace whorl::testing
