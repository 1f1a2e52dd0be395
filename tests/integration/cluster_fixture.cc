#include "tests/integration/cluster_fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "common/bundle.h"
#include "common/codec.h"
#include "grpc/health/v1/health.grpc.pb.h"

extern char** environ;

namespace whorl::testing {
namespace fs = std::filesystem;

std::string BinDir() {
  const char* d = std::getenv("WHORL_BIN_DIR");
  return d != nullptr ? d : "build/bin";
}

int FreePort() {
  // Ports from the kernel's ephemeral range (bind to port 0) can be handed to any outgoing
  // connection of a test running alongside between this check and the daemon's bind: pick
  // below the range instead, at random, never twice in one process.
  static std::mutex mu;
  static std::set<int> given;
  static std::mt19937 rng(
      static_cast<uint32_t>(::getpid()) * 2654435761u ^
      static_cast<uint32_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  int low = 32768;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> low;
  const int top = std::max(low - 1, 2048);
  const int bottom = std::max(top - 20000, 1024);
  std::lock_guard<std::mutex> lock(mu);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const int port = std::uniform_int_distribution<int>(bottom, top)(rng);
    if (given.count(port) != 0) continue;
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    const bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    ::close(fd);
    if (free) {
      given.insert(port);
      return port;
    }
  }
  ADD_FAILURE() << "no free loopback port in " << bottom << "-" << top;
  return 0;
}

std::string Addr(int port) { return "127.0.0.1:" + std::to_string(port); }

pid_t Spawn(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, cargv[0], &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  EXPECT_EQ(rc, 0) << "cannot start " << argv[0];
  return rc == 0 ? pid : -1;
}

namespace {

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

int RunCaptured(const std::vector<std::string>& argv, std::string* output) {
  const fs::path out =
      fs::temp_directory_path() / ("whorl-it-run-" + std::to_string(::getpid()) + ".out");
  fs::remove(out);
  const pid_t pid = Spawn(argv, out.string());
  int status = -1;
  // A command still running after 60 s is killed (a test of a daemon that should have refused
  // to start fails instead of hanging).
  for (int i = 0; pid > 0 && ::waitpid(pid, &status, WNOHANG) == 0; ++i) {
    if (i == 6000) {
      ADD_FAILURE() << argv[0] << " still running after 60 s; killed";
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  *output = ReadAll(out);
  fs::remove(out);
  return status;
}

v1::Chunk MakeChunk(const std::string& plain) {
  v1::Chunk c;
  c.set_fingerprint(Sha256(plain).ToBytes());
  c.set_codec(0);
  c.set_plain_size(static_cast<uint32_t>(plain.size()));
  c.set_data(plain);
  return c;
}

v1::Chunk MakeBundle(const std::vector<std::string>& plains) {
  std::vector<BundleMember> members;
  for (const std::string& p : plains) {
    members.push_back({Sha256(p), static_cast<uint32_t>(p.size())});
  }
  std::string plain = EncodeBundleTable(members);
  for (const std::string& p : plains) plain += p;
  v1::Chunk c;
  c.set_fingerprint(BundleId(members).ToBytes());
  Codec codec = Codec::kNone;
  c.set_data(Encode(CompressionSpec{Codec::kZstd, 3}, plain, &codec));
  c.set_codec(static_cast<uint32_t>(codec));
  c.set_plain_size(static_cast<uint32_t>(plain.size()));
  for (const BundleMember& m : members) {
    v1::BundleMember* out = c.add_members();
    out->set_fingerprint(m.fingerprint.ToBytes());
    out->set_size(m.size);
  }
  return c;
}

std::string HttpGet(const std::string& address, const std::string& path) {
  const size_t colon = address.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  ::inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: " + address + "\r\n\r\n";
  if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return "";
  }
  std::string resp;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;) resp.append(buf, n);
  ::close(fd);
  return resp;
}

std::string Trailer(const grpc::ClientContext& ctx, const std::string& key) {
  const auto& trailers = ctx.GetServerTrailingMetadata();
  auto it = trailers.find(key);
  return it == trailers.end() ? "" : std::string(it->second.data(), it->second.size());
}

void WaitHealthy(const std::string& address, pid_t pid, const std::string& log) {
  for (int i = 0; i < 300; ++i) {
    int status = 0;
    if (pid > 0 && ::waitpid(pid, &status, WNOHANG) == pid) {
      FAIL() << address << ": the daemon exited (status " << status << ") before serving:\n"
             << ReadAll(log);
    }
    // A fresh channel each try (a distinct argument keeps it off the shared subchannel): a
    // channel that failed once waits out gRPC's reconnect backoff (1 s and growing).
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

Cluster::Cluster(int metas, int chunks) {
  dir_ = fs::temp_directory_path() /
         ("whorl-it-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
  fs::remove_all(dir_);
  fs::create_directories(dir_);
  for (int i = 1; i <= metas; ++i) {
    map_.metadata.push_back({"meta-" + std::to_string(i), Addr(FreePort()), 1});
  }
  for (int i = 1; i <= chunks; ++i) {
    map_.chunkstores.push_back({"chunk-" + std::to_string(i), Addr(FreePort()), 1});
  }
  map_.epoch = 1;
  WriteMap();
  for (const auto& n : map_.metadata) Start(n.id);
  for (const auto& n : map_.chunkstores) Start(n.id);
  meta_ring_ = std::make_unique<HashRing>(*map_.MetadataRing());
  chunk_ring_ = std::make_unique<HashRing>(*map_.ChunkStoreRing());
}

Cluster::~Cluster() {
  for (auto& [id, pid] : pids_) ::kill(pid, SIGTERM);
  for (auto& [id, pid] : pids_) ::waitpid(pid, nullptr, 0);
  fs::remove_all(dir_);
}

void Cluster::WriteMap() {
  const std::string tmp = MapPath() + ".tmp";
  std::ofstream(tmp) << SerializeClusterMap(map_);
  fs::rename(tmp, MapPath());
}

void Cluster::Start(const std::string& id) {
  const bool meta = id.rfind("meta-", 0) == 0;
  const ClusterNode* n = map_.FindNode(id);
  ASSERT_NE(n, nullptr) << id;
  if (metrics_[id].empty()) metrics_[id] = Addr(FreePort());
  const std::vector<std::string> argv = {BinDir() + (meta ? "/whorl-metad" : "/whorl-chunkd"),
                                         "--node-id",
                                         id,
                                         "--listen",
                                         n->address,
                                         "--data",
                                         (dir_ / id).string(),
                                         "--cluster",
                                         MapPath(),
                                         "--metrics-listen",
                                         metrics_[id],
                                         "--log-format",
                                         "json"};
  const std::string log = (dir_ / (id + ".log")).string();
  const pid_t pid = Spawn(argv, log);
  ASSERT_GT(pid, 0);
  pids_[id] = pid;
  WaitHealthy(n->address, pid, log);
}

void Cluster::Stop(const std::string& id) {
  auto it = pids_.find(id);
  ASSERT_NE(it, pids_.end()) << id << " is not running";
  ::kill(it->second, SIGTERM);
  int status = 0;
  ::waitpid(it->second, &status, 0);
  pids_.erase(it);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << id << " status " << status;
}

void Cluster::Signal(const std::string& id, int sig) { ::kill(pids_.at(id), sig); }

std::string Cluster::Log(const std::string& id) const { return ReadAll(dir_ / (id + ".log")); }

std::string Cluster::Metrics(const std::string& id) const {
  return HttpGet(metrics_.at(id), "/metrics");
}

std::shared_ptr<grpc::Channel> Cluster::Channel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(100 << 20);
  args.SetMaxReceiveMessageSize(100 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}
std::unique_ptr<v1::Index::Stub> Cluster::Index(size_t i) {
  return v1::Index::NewStub(Channel(map_.metadata[i].address));
}
std::unique_ptr<v1::Catalog::Stub> Cluster::Catalog(size_t i) {
  return v1::Catalog::NewStub(Channel(map_.metadata[i].address));
}
std::unique_ptr<v1::Admin::Stub> Cluster::Admin(size_t i) {
  return v1::Admin::NewStub(Channel(map_.metadata[i].address));
}
std::unique_ptr<v1::ChunkStore::Stub> Cluster::Store(size_t i) {
  return v1::ChunkStore::NewStub(Channel(map_.chunkstores[i].address));
}

void ClusterTest::Put(const std::vector<std::string>& plains) {
  std::map<size_t, v1::PutChunksRequest> by_node;
  for (const auto& p : plains) *by_node[cluster_.ChunkOwner(Sha256(p))].add_chunks() = MakeChunk(p);
  for (auto& [node, req] : by_node) {
    Header(&req);
    v1::PutChunksResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status s = cluster_.Store(node)->PutChunks(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
}

bool ClusterTest::Missing(const std::string& plain) {
  v1::FindMissingRequest req;
  Header(&req);
  req.set_fingerprints(Sha256(plain).ToBytes());
  v1::FindMissingResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status s =
      cluster_.Index(cluster_.MetaOwner(Sha256(plain)))->FindMissing(&ctx, req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp.missing_size() == 1;
}

v1::ShardStatsResponse ClusterTest::ShardStats(size_t i) {
  v1::ShardStatsRequest req;
  Header(&req, 0);
  v1::ShardStatsResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status s = cluster_.Admin(i)->GetStats(&ctx, req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp;
}

v1::ChunkStoreStatsResponse ClusterTest::StoreStats(size_t i) {
  v1::ChunkStoreStatsRequest req;
  Header(&req, 0);
  v1::ChunkStoreStatsResponse resp;
  grpc::ClientContext ctx;
  const grpc::Status s = cluster_.Store(i)->GetStats(&ctx, req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp;
}

}  // namespace whorl::testing
