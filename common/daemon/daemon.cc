#include "common/daemon/daemon.h"

#include <arpa/inet.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <malloc.h>
#include <netinet/in.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <signal.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace whorl::daemon {
namespace {

bool g_json_logs = false;

spdlog::level::level_enum ToSpd(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return spdlog::level::debug;
    case LogLevel::kInfo:
      return spdlog::level::info;
    case LogLevel::kWarn:
      return spdlog::level::warn;
    case LogLevel::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

RocksDbLog RocksDbLogFor(const std::string& store) {
  const bool debug = spdlog::default_logger()->should_log(spdlog::level::debug);
  return {[store](rocksdb::InfoLogLevel level, std::string_view line) {
            const LogLevel ours = level >= rocksdb::InfoLogLevel::ERROR_LEVEL  ? LogLevel::kError
                                  : level >= rocksdb::InfoLogLevel::WARN_LEVEL ? LogLevel::kWarn
                                                                               : LogLevel::kDebug;
            Log(ours, "rocksdb", {{"store", store}, {"line", std::string(line)}});
          },
          debug ? rocksdb::InfoLogLevel::INFO_LEVEL : rocksdb::InfoLogLevel::WARN_LEVEL};
}

int ParseFlags(const std::string& name, int argc, char** argv, DaemonFlags* f) {
  CLI::App app{name};
  app.add_option("--node-id", f->node_id, "this node's id in the cluster map")->required();
  app.add_option("--listen", f->listen, "HOST:PORT to serve gRPC on (port 0: any)")->required();
  app.add_option("--data", f->data, "data directory")->required();
  app.add_option("--cluster", f->cluster, "cluster map file (JSON); SIGHUP re-reads it")
      ->required();
  app.add_option("--metrics-listen", f->metrics_listen, "HOST:PORT for Prometheus /metrics");
  app.add_option("--log-format", f->log_format, "text or json")
      ->check(CLI::IsMember({"text", "json"}));
  app.add_option("--log-level", f->log_level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  return -1;
}

void SetUpLogging(const std::string& format, const std::string& level) {
  auto logger = spdlog::stderr_logger_mt("whorl");
  g_json_logs = format == "json";
  logger->set_pattern(g_json_logs ? "%v" : "%Y-%m-%dT%H:%M:%S.%e %l %v");
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

void Log(LogLevel level, const std::string& msg,
         const std::vector<std::pair<std::string, std::string>>& fields) {
  if (!spdlog::default_logger()->should_log(ToSpd(level))) return;
  if (g_json_logs) {
    nlohmann::ordered_json j;
    const auto now = std::chrono::system_clock::now();
    j["ts"] = std::chrono::duration<double>(now.time_since_epoch()).count();
    j["level"] = spdlog::level::to_string_view(ToSpd(level)).data();
    j["msg"] = msg;
    for (const auto& [k, v] : fields) j[k] = v;
    spdlog::log(ToSpd(level), "{}",
                j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    return;
  }
  std::string line = msg;
  for (const auto& [k, v] : fields) absl::StrAppend(&line, " ", k, "=", v);
  spdlog::log(ToSpd(level), "{}", line);
}

absl::Status FromGrpc(const grpc::Status& s, const std::string& where) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(where, ": ", s.error_message()));
}

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

grpc::Status ParseFingerprints(const std::string& bytes, size_t max,
                               std::vector<Fingerprint>* out) {
  if (bytes.size() % Fingerprint::kSize != 0) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("fingerprints field of ", bytes.size(), " bytes is not a multiple of 32"));
  }
  const size_t n = bytes.size() / Fingerprint::kSize;
  if (n == 0) {  // no caller has a reason to
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty batch: no fingerprints");
  }
  if (n > max) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("batch of ", n, " fingerprints exceeds ", max));
  }
  out->reserve(n);
  for (size_t i = 0; i < n; ++i) {
    out->push_back(*Fingerprint::FromBytes(
        std::string_view(bytes.data() + i * Fingerprint::kSize, Fingerprint::kSize)));
  }
  return grpc::Status::OK;
}

// ---- ClusterState ------------------------------------------------------------------------

absl::StatusOr<std::shared_ptr<const ClusterView>> ClusterState::Read() const {
  WHORL_ASSIGN_OR_RETURN(ClusterMap map, LoadClusterMap(path_));
  const auto& list = role_ == Role::kMetadata ? map.metadata : map.chunkstores;
  bool found = false;
  for (const ClusterNode& n : list) found = found || n.id == self_;
  if (!found) {
    return absl::InvalidArgumentError(absl::StrCat(
        "node id ", self_, " is not among the ",
        role_ == Role::kMetadata ? "metadata shards" : "chunk-store nodes", " of ", path_));
  }
  auto view = std::make_shared<ClusterView>();
  WHORL_ASSIGN_OR_RETURN(HashRing meta, map.MetadataRing());
  WHORL_ASSIGN_OR_RETURN(HashRing chunk, map.ChunkStoreRing());
  view->meta_ring = std::make_unique<HashRing>(std::move(meta));
  view->chunk_ring = std::make_unique<HashRing>(std::move(chunk));
  view->map = std::move(map);
  return std::shared_ptr<const ClusterView>(std::move(view));
}

absl::StatusOr<std::unique_ptr<ClusterState>> ClusterState::Load(const std::string& path,
                                                                 const std::string& node_id,
                                                                 Role role) {
  std::unique_ptr<ClusterState> state(new ClusterState(path, node_id, role));
  WHORL_RETURN_IF_ERROR(state->Reload());
  return state;
}

std::shared_ptr<const ClusterView> ClusterState::view() const {
  absl::MutexLock lock(&mu_);
  return view_;
}

absl::Status ClusterState::Reload() {
  WHORL_ASSIGN_OR_RETURN(std::shared_ptr<const ClusterView> next, Read());
  absl::MutexLock lock(&mu_);
  view_ = std::move(next);
  return absl::OkStatus();
}

bool ClusterState::ReloadDue() {
  const auto now = std::chrono::steady_clock::now();
  absl::MutexLock lock(&mu_);
  if (now - last_lazy_reload_ < std::chrono::seconds(1)) return false;
  last_lazy_reload_ = now;
  return true;
}

grpc::Status ClusterState::CheckEpoch(grpc::ServerContext* ctx, uint64_t epoch) {
  if (epoch == 0) return grpc::Status::OK;
  uint64_t current = view()->map.epoch;
  if (epoch > current && ReloadDue()) {
    // The caller has seen a newer map than ours: ours may be the stale one.
    if (absl::Status s = Reload(); !s.ok()) {
      Log(LogLevel::kWarn, "cluster map reload failed", {{"error", std::string(s.message())}});
    }
    current = view()->map.epoch;
    if (epoch > current) {
      // Our map file is behind the caller's (not yet rolled out here): refuse rather than serve
      // with rings of another epoch. The caller refetches and retries; the operator's SIGHUP
      // (or the next request after the file is updated) brings this node forward.
      Log(LogLevel::kWarn, "request from a newer cluster map epoch",
          {{"request_epoch", std::to_string(epoch)}, {"epoch", std::to_string(current)}});
    }
  }
  if (epoch != current) {
    ctx->AddTrailingMetadata("whorl-epoch", std::to_string(current));
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("stale cluster map epoch ", epoch, ", current is ", current));
  }
  return grpc::Status::OK;
}

// ---- Metrics -------------------------------------------------------------------------------

struct Metrics::Impl {
  prometheus::Family<prometheus::Counter>* requests = nullptr;
  prometheus::Family<prometheus::Histogram>* latency = nullptr;
  prometheus::Family<prometheus::Counter>* bytes = nullptr;
  absl::Mutex mu;
  std::map<std::string, prometheus::Counter*> counters ABSL_GUARDED_BY(mu);
  std::map<std::string, prometheus::Gauge*> gauges ABSL_GUARDED_BY(mu);
};

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()), impl_(new Impl) {
  impl_->requests = &prometheus::BuildCounter()
                         .Name("whorl_rpc_requests_total")
                         .Help("RPCs served, by method and status code")
                         .Register(*registry_);
  impl_->latency = &prometheus::BuildHistogram()
                        .Name("whorl_rpc_duration_seconds")
                        .Help("RPC latency, by method and status code")
                        .Register(*registry_);
  impl_->bytes = &prometheus::BuildCounter()
                      .Name("whorl_rpc_bytes_total")
                      .Help("request and response payload bytes, by method and direction")
                      .Register(*registry_);
}

Metrics::~Metrics() {
  if (exposer_ == nullptr) return;
  // civetweb's accept loop polls its listening socket with a fixed 2 s timeout and notices the
  // stop flag only then. Stopping it on a thread while connecting to the port wakes the loop
  // at once: a daemon stops in milliseconds instead of 2 s.
  const std::vector<int> ports = exposer_->GetListeningPorts();
  in_addr host{htonl(INADDR_LOOPBACK)};
  const std::string ip = listen_.substr(0, listen_.rfind(':'));
  if (in_addr a{}; ::inet_pton(AF_INET, ip.c_str(), &a) == 1 && a.s_addr != INADDR_ANY) host = a;
  std::atomic<bool> done = false;
  std::thread stopper([this, &done] {
    exposer_.reset();
    done = true;
  });
  for (int i = 0; i < 300 && !done; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    for (int port : ports) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(static_cast<uint16_t>(port));
      addr.sin_addr = host;
      // A whole request, so that a worker thread handed this connection before the stop flag
      // was set answers at once rather than waiting for one. (An IPv6 or host-name `listen`
      // is not woken: that exposer stops in up to 2 s.)
      static constexpr char kRequest[] = "GET /stopping HTTP/1.0\r\n\r\n";
      if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
        (void)!::write(fd, kRequest, sizeof(kRequest) - 1);
      }
      ::close(fd);
    }
  }
  stopper.join();
}

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const std::string& listen) {
  std::unique_ptr<Metrics> m(new Metrics());
  if (!listen.empty()) {
    try {
      m->exposer_ = std::make_unique<prometheus::Exposer>(listen);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("metrics on ", listen, ": ", e.what()));
    }
    m->exposer_->RegisterCollectable(m->registry_);
    m->listen_ = listen;
    const std::vector<int> ports = m->exposer_->GetListeningPorts();
    Log(LogLevel::kInfo, "metrics",
        {{"listen", listen}, {"port", ports.empty() ? "" : std::to_string(ports[0])}});
  }
  return m;
}

void Metrics::ObserveRpc(const std::string& method, grpc::StatusCode code, double seconds,
                         size_t bytes_in, size_t bytes_out) {
  static const std::vector<double> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                               0.1,    0.25,  0.5,    1,     2.5,  5,     10};
  const std::string code_label = std::to_string(static_cast<int>(code));
  impl_->requests->Add({{"method", method}, {"code", code_label}}).Increment();
  impl_->latency->Add({{"method", method}, {"code", code_label}}, kBuckets).Observe(seconds);
  impl_->bytes->Add({{"method", method}, {"direction", "in"}})
      .Increment(static_cast<double>(bytes_in));
  impl_->bytes->Add({{"method", method}, {"direction", "out"}})
      .Increment(static_cast<double>(bytes_out));
}

void Metrics::Add(const std::string& name, const std::string& help, double value) {
  absl::MutexLock lock(&impl_->mu);
  prometheus::Counter*& c = impl_->counters[name];
  if (c == nullptr)
    c = &prometheus::BuildCounter().Name(name).Help(help).Register(*registry_).Add({});
  c->Increment(value);
}

void Metrics::Set(const std::string& name, const std::string& help, double value) {
  absl::MutexLock lock(&impl_->mu);
  prometheus::Gauge*& g = impl_->gauges[name];
  if (g == nullptr)
    g = &prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add({});
  g->Set(value);
}

// ---- RpcScope ------------------------------------------------------------------------------

RpcScope::RpcScope(Metrics* metrics, const char* method, grpc::ServerContext* ctx,
                   const v1::RequestHeader& header, size_t bytes_in)
    : metrics_(metrics),
      method_(method),
      peer_(ctx->peer()),
      // Caller-chosen strings, capped: a megabyte request id must not become a megabyte log
      // line (and be passed on to peers).
      request_id_(header.request_id().substr(0, 128)),
      tenant_(header.tenant().substr(0, 128)),
      bytes_in_(bytes_in),
      start_(std::chrono::steady_clock::now()) {}

grpc::Status RpcScope::Finish(const grpc::Status& status, size_t bytes_out) {
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (metrics_ != nullptr)
    metrics_->ObserveRpc(method_, status.error_code(), secs, bytes_in_, bytes_out);
  std::vector<std::pair<std::string, std::string>> fields = {
      {"method", method_},
      {"request_id", request_id_},
      {"tenant", tenant_},
      {"peer", peer_},
      {"code", std::to_string(static_cast<int>(status.error_code()))},
      {"status", absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()))},
      {"duration_ms", absl::StrCat(secs * 1000)},
      {"bytes_in", std::to_string(bytes_in_)},
      {"bytes_out", std::to_string(bytes_out)}};
  if (!status.ok()) fields.push_back({"error", status.error_message()});
  Log(status.ok() ? LogLevel::kInfo : LogLevel::kWarn, "rpc", fields);
  return status;
}

// ---- PeerClients ---------------------------------------------------------------------------

std::shared_ptr<grpc::Channel> PeerClients::Channel(const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<grpc::Channel>& ch = channels_[address];
  if (ch == nullptr) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxMessageBytes);
    args.SetMaxSendMessageSize(kMaxMessageBytes);
    // A peer that was down is tried again within a second of coming back (gRPC's default
    // reconnect backoff grows to minutes), so the retries of Call() reach it.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    ch = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  }
  return ch;
}

std::chrono::milliseconds PeerTimeout(const grpc::ServerContext* ctx,
                                      std::chrono::milliseconds cap) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      ctx->deadline() - std::chrono::system_clock::now());
  return std::max(std::chrono::milliseconds(1), std::min(cap, left));
}

absl::Status AsUnavailable(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kUnknown:
      return absl::UnavailableError(s.message());
    default:
      return s;
  }
}

absl::Status PeerClients::Call(const std::string& describe, std::chrono::milliseconds timeout,
                               int attempts,
                               const std::function<grpc::Status(grpc::ClientContext*)>& rpc) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  grpc::Status s;
  for (int i = 0; i < std::max(1, attempts); ++i) {
    if (i > 0) {
      std::uniform_real_distribution<double> jitter(0.5, 1.5);
      const double base = 0.1 * static_cast<double>(1 << std::min(i - 1, 6));
      std::this_thread::sleep_for(std::chrono::duration<double>(base * jitter(rng)));
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    s = rpc(&ctx);
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) break;
  }
  return FromGrpc(s, describe);
}

// ---- signals and server --------------------------------------------------------------------

void BlockSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void TuneAllocator() {
  ::mallopt(M_ARENA_MAX, 4);
  ::mallopt(M_MMAP_THRESHOLD, 4 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 16 << 20);
}

void WaitForShutdown(const std::function<void()>& on_hup) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGHUP) {
      on_hup();
      continue;
    }
    Log(LogLevel::kInfo, "shutting down", {{"signal", std::to_string(sig)}});
    return;
  }
}

absl::StatusOr<std::unique_ptr<grpc::Server>> StartServer(
    const std::string& listen, const std::vector<grpc::Service*>& services, int* port) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default: a second daemon started on a port already served would
  // bind too and silently take half of the connections. Refuse it instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  for (grpc::Service* s : services) builder.RegisterService(s);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) {
    return absl::UnavailableError("cannot listen on " + listen);
  }
  return server;
}

int Serve(const std::string& name, const DaemonFlags& flags, ClusterState* cluster,
          const std::vector<grpc::Service*>& services) {
  int port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> server = StartServer(flags.listen, services, &port);
  if (!server.ok()) {
    std::cerr << name << ": " << server.status().message() << "\n";
    return 1;
  }
  Log(LogLevel::kInfo, "serving",
      {{"node", flags.node_id},
       {"listen", flags.listen},
       {"port", std::to_string(port)},
       {"epoch", std::to_string(cluster->view()->map.epoch)}});
  WaitForShutdown([cluster] {
    const absl::Status s = cluster->Reload();
    const std::string epoch = std::to_string(cluster->view()->map.epoch);
    if (s.ok()) {
      Log(LogLevel::kInfo, "cluster map reloaded", {{"epoch", epoch}});
    } else {
      Log(LogLevel::kError, "cluster map reload failed; keeping the current map",
          {{"epoch", epoch}, {"error", std::string(s.message())}});
    }
  });
  (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  (*server)->Wait();
  Log(LogLevel::kInfo, "stopped", {{"node", flags.node_id}});
  return 0;
}

}  // namespace whorl::daemon
