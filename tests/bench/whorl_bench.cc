// whorl-bench: whorl's own primitives, measured the way tests/bench/bench.py reports them.
//
//   whorl-bench [--json] [--mib N] [--fps N] [--seconds S] [--metad PATH] [--dir DIR]
//               [--chunker-only]
//
//   chunker     the Rabin chunker (interleaved streams) over N MiB of random bytes, one core;
//               also the byte-at-a-time reference, and a check that both cut at the same points
//   sha256      whorl's SHA-256 (OpenSSL EVP) over 32 KiB buffers, one core
//   findmissing one index shard holding --fps fingerprints (default 10M): FindMissing batches of
//               16384 (the RPC's cap), half present, half absent; in process on the RocksDB
//               store, and over gRPC against a real whorl-metad serving that store (when the
//               binary is found beside whorl-bench or given by --metad)
//   pack_write  the chunk store's PutBatch: 4 MiB batches of 32 KiB incompressible chunks,
//               each batch appended, fdatasync'd and indexed (one group commit)
//
// Rates are MB/s (1e6 bytes/s) or items/s; each figure is the best of 3 passes (the machine is
// shared: the best pass is the one least disturbed). --json prints one JSON object on the last
// line of stdout, the keys tests/bench/bench.py reads.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "chunk-store/chunk_store.h"
#include "common/chunker.h"
#include "common/fingerprint.h"
#include "metadata-service/metadata_store.h"
#include "whorl/v1/service.grpc.pb.h"

namespace whorl {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Fast deterministic filler: splitmix64.
std::string RandomBytes(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    x += 0x9e3779b97f4a7c15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::memcpy(out.data() + i, &z, 8);
  }
  return out;
}

Fingerprint NthFingerprint(uint64_t i, uint64_t salt) {
  return Sha256(std::to_string(salt) + "/" + std::to_string(i));
}

template <typename Fn>
double BestOf3(Fn fn) {  // fn returns a rate; the best pass wins
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) best = std::max(best, fn());
  return best;
}

// CPU seconds (user + system) that process `pid` has used so far; -1 if /proc cannot say.
double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  // Fields after the command name, which is in parentheses and may hold spaces.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  double utime = -1, stime = -1;
  for (int i = 3; i <= 15 && rest >> field; ++i) {  // utime and stime are fields 14 and 15
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  if (utime < 0 || stime < 0) return -1;
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

void Log(const std::string& s) {
  std::fprintf(stderr, "whorl-bench: %s\n", s.c_str());
  std::fflush(stderr);
}

// Cut points of `data` with one of the chunker's two loops.
template <typename Next>
std::vector<size_t> Cuts(const std::string& data, Next next) {
  std::vector<size_t> cuts;
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  for (size_t pos = 0; pos < data.size();) {
    const size_t len = next(p + pos, data.size() - pos);
    pos += len;
    cuts.push_back(pos);
  }
  return cuts;
}

int Run(int argc, char** argv) {
  CLI::App app{"whorl-bench: whorl's primitives (chunker, SHA-256, FindMissing, pack writes)"};
  bool json = false;
  size_t mib = 256;
  uint64_t n_fps = 10'000'000;
  double seconds = 3;
  std::string metad, dir;
  app.add_flag("--json", json, "print one JSON object (last line of stdout)");
  app.add_option("--mib", mib, "MiB of data for the chunker, SHA-256 and pack writes")
      ->check(CLI::Range(1, 4096));
  app.add_option("--fps", n_fps, "fingerprints stored in the index shard (0: skip FindMissing)");
  app.add_option("--seconds", seconds, "duration of each FindMissing pass")
      ->check(CLI::Range(0.1, 600.0));
  app.add_option("--metad", metad, "whorl-metad binary for the gRPC FindMissing figure");
  app.add_option("--dir", dir, "scratch directory (default: a new one under $TMPDIR or /tmp)");
  bool chunker_only = false;
  app.add_flag("--chunker-only", chunker_only,
               "measure the chunker only (no reference loop, nothing written): bench.py pairs "
               "short runs of it with `openssl speed`, one after the other");
  bool reuse_index = false;
  app.add_flag("--reuse-index", reuse_index,
               "with --dir: keep the index shard a previous run left there with as many "
               "fingerprints, instead of storing them again (a minute for 10M)");
  CLI11_PARSE(app, argc, argv);

  namespace fs = std::filesystem;
  const bool own_dir = dir.empty();
  if (own_dir) {
    std::string tmpl = (fs::temp_directory_path() / "whorl-bench-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("whorl-bench: mkdtemp");
      return 1;
    }
    dir = tmpl;
  }
  if (metad.empty()) {
    const fs::path beside = fs::path(argv[0]).parent_path() / "whorl-metad";
    if (fs::exists(beside)) metad = beside.string();
  }
  nlohmann::json out;
  out["data_mib"] = mib;

  // ---- chunker
  const std::string data = RandomBytes(mib << 20, 42);
  std::mt19937_64 rng(7);
  ChunkerParams params{.polynomial = DrawIrreduciblePolynomial([&] { return rng(); }),
                       .min_size = 8 << 10,
                       .avg_size = 32 << 10,
                       .max_size = 128 << 10,
                       .cut_on_ones = true};  // as `whorl init` makes them
  const Chunker chunker(params);
  auto fast = [&](const uint8_t* p, size_t n) { return chunker.NextChunk(p, n, true); };
  auto slow = [&](const uint8_t* p, size_t n) {
    return internal::NextChunkSlow(chunker, p, n, true);
  };
  size_t chunks = 0;
  const double chunker_mbps = BestOf3([&] {
    const auto t = Clock::now();
    chunks = Cuts(data, fast).size();
    return data.size() / Seconds(t) / 1e6;
  });
  if (chunker_only) {
    out["chunker_MBps"] = chunker_mbps;
    Log("chunker " + std::to_string(chunker_mbps) + " MB/s");
    if (json) std::printf("%s\n", out.dump().c_str());
    if (own_dir) fs::remove_all(dir);
    return 0;
  }
  const double slow_mbps = BestOf3([&] {
    const auto t = Clock::now();
    (void)Cuts(data, slow);
    return data.size() / Seconds(t) / 1e6;
  });
  const bool same = Cuts(data, fast) == Cuts(data, slow);
  if (!same) {
    Log("FAILED: the fast chunker's cut points differ from the reference loop's");
    return 1;
  }
  out["chunker_MBps"] = chunker_mbps;
  out["chunker_reference_MBps"] = slow_mbps;
  out["chunker_mean_chunk_bytes"] = data.size() / std::max<size_t>(chunks, 1);
  Log("chunker " + std::to_string(chunker_mbps) + " MB/s (reference loop " +
      std::to_string(slow_mbps) + " MB/s, same cut points)");

  // ---- SHA-256
  const double sha_mbps = BestOf3([&] {
    const auto t = Clock::now();
    uint8_t acc = 0;
    for (size_t off = 0; off + (32 << 10) <= data.size(); off += 32 << 10) {
      acc ^= Sha256(std::string_view(data.data() + off, 32 << 10)).bytes[0];
    }
    const double s = Seconds(t);
    if (acc == 0xff) Log("");  // keeps the loop from being optimized away
    return data.size() / s / 1e6;
  });
  out["sha256_MBps"] = sha_mbps;
  Log("sha256 " + std::to_string(sha_mbps) + " MB/s");

  // ---- pack writes
  {
    chunkstore::ChunkStoreOptions opts;
    opts.verify_puts = false;  // the bench measures the store, not the hash again
    auto store = chunkstore::ChunkStore::Open(dir + "/chunks", opts);
    if (!store.ok()) {
      Log("chunk store: " + std::string(store.status().message()));
      return 1;
    }
    uint64_t salt = 0;
    const double pack_mbps = BestOf3([&] {
      ++salt;
      uint64_t written = 0;
      const auto t = Clock::now();
      for (size_t off = 0; off + (4 << 20) <= data.size(); off += 4 << 20) {
        std::vector<chunkstore::ChunkPut> batch;
        for (size_t c = 0; c < (4 << 20); c += 32 << 10) {
          chunkstore::ChunkPut put;
          put.fingerprint = NthFingerprint(off + c, salt);  // new chunks on every pass
          put.codec = Codec::kNone;
          put.plain_size = 32 << 10;
          put.data.assign(data, off + c, 32 << 10);
          batch.push_back(std::move(put));
        }
        if (absl::Status s = (*store)->PutBatch(batch); !s.ok()) {
          Log("PutBatch: " + std::string(s.message()));
          std::exit(1);
        }
        written += 4 << 20;
      }
      return written / Seconds(t) / 1e6;
    });
    out["pack_write_MBps"] = pack_mbps;
    Log("pack writes " + std::to_string(pack_mbps) + " MB/s (4 MiB group commits)");
  }

  // ---- FindMissing on one shard
  if (n_fps > 0) {
    const std::string meta_dir = dir + "/meta";
    {
      metadata::MetadataStoreOptions as_metad;
      as_metad.block_cache_bytes = metadata::kDaemonBlockCacheBytes;
      as_metad.write_buffer_bytes = metadata::kDaemonWriteBufferBytes;
      as_metad.daemon = true;
      auto store = metadata::MetadataStore::Open(meta_dir, as_metad);
      if (!store.ok()) {
        Log("metadata store: " + std::string(store.status().message()));
        return 1;
      }
      const auto t = Clock::now();
      const std::string marker = meta_dir + "/WHORL_BENCH_STORED";
      std::string stored_before;
      if (reuse_index) std::getline(std::ifstream(marker), stored_before);
      constexpr uint64_t kBatch = 100'000;
      for (uint64_t b = stored_before == std::to_string(n_fps) ? n_fps : 0; b < n_fps;
           b += kBatch) {
        std::vector<std::pair<Fingerprint, metadata::IndexEntry>> entries;
        for (uint64_t i = b; i < std::min(n_fps, b + kBatch); ++i) {
          entries.emplace_back(NthFingerprint(i, 0), metadata::IndexEntry{.stored_size = 20000,
                                                                          .plain_size = 32768,
                                                                          .first_seen_ns = 1,
                                                                          .node = "chunk-1"});
        }
        if (absl::Status s = (*store)->Register(entries); !s.ok()) {
          Log("Register: " + std::string(s.message()));
          return 1;
        }
      }
      std::ofstream(marker) << n_fps << "\n";
      Log("stored " + std::to_string(n_fps) + " fingerprints in " + std::to_string(Seconds(t)) +
          " s");
      // Queries: half present (random stored ones), half absent.
      std::mt19937_64 qrng(11);
      uint64_t next_absent = 0;
      auto make_query = [&] {
        std::vector<Fingerprint> q;
        for (size_t i = 0; i < 16384; ++i) {
          q.push_back(i % 2 == 0 ? NthFingerprint(qrng() % n_fps, 0)
                                 : NthFingerprint(next_absent++, 1));
        }
        return q;
      };
      std::vector<std::vector<Fingerprint>> queries;
      for (int i = 0; i < 16; ++i) queries.push_back(make_query());
      const double inproc = BestOf3([&] {
        uint64_t answered = 0;
        const auto t0 = Clock::now();
        for (size_t k = 0; Seconds(t0) < seconds; ++k) {
          auto missing = (*store)->FindMissing(queries[k % queries.size()]);
          if (!missing.ok()) std::exit(1);
          answered += missing->size();
        }
        return answered / Seconds(t0);
      });
      out["findmissing_inprocess_fps"] = inproc;
      Log("FindMissing in process " + std::to_string(inproc) + " fingerprints/s");
    }
    out["findmissing_stored"] = n_fps;

    if (!metad.empty()) {
      // A free port, then the real daemon on the store just written.
      int sock = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof(addr);
      ::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
      ::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len);
      const int port = ntohs(addr.sin_port);
      ::close(sock);
      const std::string address = "127.0.0.1:" + std::to_string(port);
      nlohmann::json map = {{"format", 1},
                            {"epoch", 1},
                            {"metadata", {{{"id", "meta-1"}, {"address", address}}}},
                            {"chunkstores", {{{"id", "chunk-1"}, {"address", "127.0.0.1:1"}}}}};
      std::ofstream(dir + "/cluster.json") << map.dump();
      const pid_t pid = ::fork();
      if (pid == 0) {
        const std::string log = dir + "/metad.log";
        std::freopen(log.c_str(), "w", stderr);
        std::freopen(log.c_str(), "a", stdout);
        ::execl(metad.c_str(), metad.c_str(), "--node-id", "meta-1", "--listen", address.c_str(),
                "--data", meta_dir.c_str(), "--cluster", (dir + "/cluster.json").c_str(),
                static_cast<char*>(nullptr));
        std::_Exit(127);
      }
      auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
      const bool up =
          channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(300));
      if (!up) {
        Log("whorl-metad did not come up; see " + dir + "/metad.log");
      } else {
        auto stub = v1::Index::NewStub(channel);
        std::mt19937_64 qrng(13);
        std::vector<std::string> requests;
        for (int k = 0; k < 16; ++k) {
          std::string bytes;
          for (size_t i = 0; i < 16384; ++i) {
            bytes +=
                (i % 2 == 0 ? NthFingerprint(qrng() % n_fps, 0) : NthFingerprint(k * 16384 + i, 2))
                    .ToBytes();
          }
          requests.push_back(std::move(bytes));
        }
        // Two callers at once, as the agent's parallel fan-out does.
        double cpu_per_fp = 0;
        const double rpc = BestOf3([&] {
          std::atomic<uint64_t> answered{0};
          std::atomic<bool> failed{false};
          const double cpu0 = ProcessCpuSeconds(pid);
          const auto t0 = Clock::now();
          auto caller = [&](int id) {
            for (size_t k = id; Seconds(t0) < seconds; k += 2) {
              v1::FindMissingRequest req;
              req.mutable_header()->set_epoch(1);
              req.set_fingerprints(requests[k % requests.size()]);
              v1::FindMissingResponse resp;
              grpc::ClientContext ctx;
              if (!stub->FindMissing(&ctx, req, &resp).ok()) {
                failed = true;
                return;
              }
              answered += 16384;
            }
          };
          std::thread a(caller, 0), b(caller, 1);
          a.join();
          b.join();
          if (failed) Log("FindMissing RPC failed; see " + dir + "/metad.log");
          const double rate = answered / Seconds(t0);
          // The daemon's CPU per fingerprint, the least of the passes: steadier than the rate
          // on a shared machine, whose neighbours take cores but not this process's CPU time.
          const double cpu1 = ProcessCpuSeconds(pid);
          if (cpu0 >= 0 && cpu1 >= 0 && answered > 0) {
            const double us = (cpu1 - cpu0) / static_cast<double>(answered.load()) * 1e6;
            if (cpu_per_fp == 0 || us < cpu_per_fp) cpu_per_fp = us;
          }
          return rate;
        });
        out["findmissing_fps"] = rpc;
        Log("FindMissing over gRPC " + std::to_string(rpc) + " fingerprints/s");
        if (cpu_per_fp > 0) {
          out["findmissing_metad_cpu_us_per_fp"] = cpu_per_fp;
          Log("whorl-metad CPU per fingerprint " + std::to_string(cpu_per_fp) + " us");
        }
      }
      ::kill(pid, SIGTERM);
      int status = 0;
      ::waitpid(pid, &status, 0);
    } else {
      out["findmissing_fps"] = out["findmissing_inprocess_fps"];
      Log("no whorl-metad found: FindMissing measured in process only");
    }
  }

  if (own_dir) fs::remove_all(dir);
  if (json) std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace whorl

int main(int argc, char** argv) { return whorl::Run(argc, argv); }
