// What whorl-metad and whorl-chunkd share: flags, structured logging, the cluster map as this
// node sees it (reloaded on SIGHUP) with the epoch and ownership checks, Prometheus metrics,
// one log event per RPC, clients of peer nodes with deadlines and retries, and signal handling.
//
// Thread-safety: ClusterState, Metrics and PeerClients are safe for concurrent use.
#ifndef WHORL_COMMON_DAEMON_DAEMON_H_
#define WHORL_COMMON_DAEMON_DAEMON_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/cluster_map.h"
#include "common/fingerprint.h"
#include "common/hash_ring.h"
#include "common/rocksdb_log.h"
#include "whorl/v1/service.grpc.pb.h"

namespace prometheus {
class Registry;
class Exposer;
}  // namespace prometheus

namespace whorl::daemon {

// Largest gRPC message a daemon accepts or sends. It must be at least max(48 MiB, largest chunk
// + 1 MiB): a PutChunks batch (at most 32 MiB of encoded data, agent side) or one 64 MiB chunk
// (ChunkStoreOptions::max_chunk_bytes) with its framing. 80 MiB leaves headroom; the agent uses
// the same cap.
inline constexpr int kMaxMessageBytes = 80 << 20;
static_assert(kMaxMessageBytes >= (64 << 20) + (1 << 20) && kMaxMessageBytes >= (48 << 20));

struct DaemonFlags {
  std::string node_id;
  std::string listen;
  std::string data;
  std::string cluster;
  std::string metrics_listen;
  std::string log_format = "text";  // or "json"
  std::string log_level = "info";
};

// Parses argv into `flags` (CLI11). Returns -1 to go on, else the exit code (help: 0, error: 2).
int ParseFlags(const std::string& name, int argc, char** argv, DaemonFlags* flags);

// stderr logger; "json" gives one JSON object per line.
void SetUpLogging(const std::string& format, const std::string& level);

enum class LogLevel { kDebug, kInfo, kWarn, kError };
// One structured event: `msg` plus fields (values printed as JSON), e.g.
//   Log(LogLevel::kInfo, "rpc", {{"method", "FindMissing"}, {"code", "OK"}});
void Log(LogLevel level, const std::string& msg,
         const std::vector<std::pair<std::string, std::string>>& fields = {});

// RocksDB's info log as log events "rocksdb" with {"store": store, "line": ...}: RocksDB's warnings
// and errors at kWarn and kError, its info lines at kDebug (read only when the logger is at debug;
// returned as the level to set, for the store's options).
struct RocksDbLog {
  RocksLogSink sink;
  rocksdb::InfoLogLevel level;
};
RocksDbLog RocksDbLogFor(const std::string& store);

absl::Status FromGrpc(const grpc::Status& s, const std::string& where);
grpc::Status ToGrpc(const absl::Status& s);

// The fingerprints of a request's `fingerprints` field (N x 32 bytes, 0 < N <= max) into
// `out`; otherwise INVALID_ARGUMENT (a length not a multiple of 32, `empty batch: no
// fingerprints`) or RESOURCE_EXHAUSTED (`batch of N fingerprints exceeds MAX`).
grpc::Status ParseFingerprints(const std::string& bytes, size_t max, std::vector<Fingerprint>* out);

// One epoch's map and rings.
struct ClusterView {
  ClusterMap map;
  std::unique_ptr<HashRing> meta_ring;   // ring index i = map.metadata[i]
  std::unique_ptr<HashRing> chunk_ring;  // ring index i = map.chunkstores[i]
};

enum class Role { kMetadata, kChunkStore };

class ClusterState {
 public:
  // Loads the map at `path`; INVALID_ARGUMENT if `node_id` is not in the list for `role`.
  static absl::StatusOr<std::unique_ptr<ClusterState>> Load(const std::string& path,
                                                            const std::string& node_id, Role role);

  std::shared_ptr<const ClusterView> view() const;
  const std::string& self() const { return self_; }

  // Re-reads the file; on any error keeps the current map and returns the error.
  absl::Status Reload();

  // OK if `epoch` is 0 (unrouted) or equals this node's. Otherwise FAILED_PRECONDITION "stale
  // cluster map epoch N, current is M" with trailing metadata whorl-epoch: M. A request with a
  // newer epoch first makes this node re-read its map file (its own map may be the stale one);
  // it is served if the file now has that epoch.
  grpc::Status CheckEpoch(grpc::ServerContext* ctx, uint64_t epoch);

 private:
  ClusterState(std::string path, std::string self, Role role)
      : path_(std::move(path)), self_(std::move(self)), role_(role) {}
  absl::StatusOr<std::shared_ptr<const ClusterView>> Read() const;
  // Whether a request with a newer epoch may trigger a re-read now: at most one a second, so
  // that a client ahead of this node's file does not make every request parse the file.
  bool ReloadDue();

  const std::string path_;
  const std::string self_;
  const Role role_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const ClusterView> view_ ABSL_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point last_lazy_reload_ ABSL_GUARDED_BY(mu_);
};

// Prometheus metrics, served on --metrics-listen when given.
class Metrics {
 public:
  // Serves GET /metrics on `listen` (HOST:PORT; port 0: any, logged as event "metrics"). Empty
  // `listen`: metrics are kept but not served. UNAVAILABLE if it cannot listen.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const std::string& listen);
  ~Metrics();

  prometheus::Registry& registry() { return *registry_; }
  void ObserveRpc(const std::string& method, grpc::StatusCode code, double seconds, size_t bytes_in,
                  size_t bytes_out);
  // A counter or gauge by name (created on first use), for the daemons' own figures.
  void Add(const std::string& name, const std::string& help, double value);
  void Set(const std::string& name, const std::string& help, double value);

 private:
  Metrics();
  struct Impl;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string listen_;  // of exposer_
  std::unique_ptr<Impl> impl_;
};

// Logs one event and records metrics for an RPC when finished.
class RpcScope {
 public:
  RpcScope(Metrics* metrics, const char* method, grpc::ServerContext* ctx,
           const v1::RequestHeader& header, size_t bytes_in);
  // Returns `status` after logging it.
  grpc::Status Finish(const grpc::Status& status, size_t bytes_out = 0);
  const std::string& request_id() const { return request_id_; }

 private:
  Metrics* metrics_;
  const char* method_;
  std::string peer_, request_id_, tenant_;
  size_t bytes_in_;
  std::chrono::steady_clock::time_point start_;
};

// The timeout for a call a daemon makes on behalf of the RPC `ctx`: `cap`, or less if the
// caller's own deadline comes sooner (no point working for a caller that has given up).
std::chrono::milliseconds PeerTimeout(const grpc::ServerContext* ctx,
                                      std::chrono::milliseconds cap);

// A failed call to a peer, as the error of the RPC that made it: a peer that is down, slow or
// on another map epoch (UNAVAILABLE, DEADLINE_EXCEEDED, FAILED_PRECONDITION, ABORTED, CANCELLED,
// RESOURCE_EXHAUSTED, UNKNOWN) becomes UNAVAILABLE, which the caller retries; other codes and
// the message are kept.
absl::Status AsUnavailable(const absl::Status& s);

// Stubs of peer nodes by address, with a deadline and retries (exponential backoff with jitter)
// on UNAVAILABLE.
class PeerClients {
 public:
  std::shared_ptr<grpc::Channel> Channel(const std::string& address);
  // Runs `rpc` up to `attempts` times while it fails with UNAVAILABLE, sleeping 100 ms, 200 ms,
  // 400 ms ... (x0.5-1.5 jitter) between tries; each try gets a fresh context with `timeout`.
  // Errors are prefixed with `describe` ("metadata shard meta-2 at HOST:PORT: ...").
  absl::Status Call(const std::string& describe, std::chrono::milliseconds timeout, int attempts,
                    const std::function<grpc::Status(grpc::ClientContext*)>& rpc);

 private:
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_ ABSL_GUARDED_BY(mu_);
};

// Blocks SIGTERM, SIGINT and SIGHUP in this thread and all threads it starts later. Call first.
void BlockSignals();
// glibc's allocator for a daemon that receives big requests all the time: blocks up to 4 MiB
// (a chunk, a PutChunks request's bytes fields) come from the heap, up to 16 MiB free at a
// heap's top stays, and there are at most 4 arenas (each gRPC thread would get its own, up to
// 8 per core, each keeping what it freed). With glibc's defaults each request's 1 MiB chunks
// were fresh pages, mapped or trimmed and faulted in again: whorl-chunkd took ~40k page faults
// and 1.9-2.2 s of CPU for its half of a 1 GiB image; 12-13k and 1.4-1.6 s with these. A
// refused 80 MiB request still leaves the node's peak under three times its size
// (hostile_requests_test). Call before starting threads.
void TuneAllocator();
// Waits for SIGTERM or SIGINT, calling `on_hup` for every SIGHUP meanwhile.
void WaitForShutdown(const std::function<void()>& on_hup);

// Adds the health service, reflection and message caps, binds `listen` and starts the server.
// `*port` receives the bound port (useful with port 0).
absl::StatusOr<std::unique_ptr<grpc::Server>> StartServer(
    const std::string& listen, const std::vector<grpc::Service*>& services, int* port);

// The tail of a daemon's main: starts the server with `services` on flags.listen, logs
// "serving", re-reads the cluster map on SIGHUP, and on SIGTERM/SIGINT shuts the server down
// (in-flight calls finish, within 10 s). Returns the exit code (0, or 1 if it cannot listen).
// The caller closes its stores after it returns.
int Serve(const std::string& name, const DaemonFlags& flags, ClusterState* cluster,
          const std::vector<grpc::Service*>& services);

}  // namespace whorl::daemon

#endif  // WHORL_COMMON_DAEMON_DAEMON_H_
