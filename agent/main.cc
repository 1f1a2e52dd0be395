// whorl: the command-line agent. Parses flags, opens the repository, calls the agent library,
// and maps the outcome to an exit code: 0 ok, 1 failed, 2 usage, 3 backup saved with errors.
#include <malloc.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/backup.h"
#include "agent/check.h"
#include "agent/cli_output.h"
#include "agent/objects.h"
#include "agent/remote_repository.h"
#include "agent/repository.h"
#include "agent/restore.h"
#include "agent/snapshot_select.h"
#include "common/file_util.h"
#include "common/mutex_mode.h"
#include "common/status_macros.h"

namespace whorl::agent {
namespace {

constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2, kExitPartial = 3;
constexpr size_t kMaxManifestFileBytes = 64 << 20;

// "m:ss", or "h:mm:ss" from an hour on.
std::string FormatDuration(double secs) {
  const long long t = static_cast<long long>(std::max(secs, 0.0));
  if (t >= 3600) return absl::StrFormat("%lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
  return absl::StrFormat("%lld:%02lld", t / 60, t % 60);
}

int Fail(const absl::Status& status) {
  std::cerr << "whorl: " << status.message() << "\n";
  return kExitFailed;
}

std::string Hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

struct Flags {
  std::string repo;
  // init
  uint32_t chunk_min = kDefaultChunkMin, chunk_avg = kDefaultChunkAvg, chunk_max = kDefaultChunkMax;
  std::string compression = kDefaultCompression.ToString();
  std::string large_compression;  // empty: lz4 by default, else what --compression says
  bool compression_given = false;
  int repository_version = kRepoFormatVersion;
  // backup
  BackupOptions backup;
  std::string exclude_file, manifest_out;
  bool json = false;
  // selection
  std::string host, snap, path, manifest, target;
  std::vector<std::string> includes;
  bool read_data = false;
  bool devices = false;
  double timeout_s = 60;          // deadline of each cluster RPC
  std::string fingerprints_file;  // debug chunks
};

RemoteOptions Remote(const Flags& f) {
  RemoteOptions o;
  o.call_timeout_s = f.timeout_s;
  return o;
}

// The repository `repo` names: a cluster for whorl://HOST:PORT, else a directory. Every command
// but backup reads only.
absl::StatusOr<std::unique_ptr<Repository>> OpenRepository(
    const std::string& repo, const RemoteOptions& options,
    RepoAccess access = RepoAccess::kReadOnly, ChunkReads reads = ChunkReads::kAnyCopy) {
  if (!IsRemoteUrl(repo)) return OpenEmbeddedRepository(repo, access, reads);
  WHORL_ASSIGN_OR_RETURN(std::unique_ptr<RemoteRepository> remote,
                         OpenRemoteRepository(repo, options));
  return std::unique_ptr<Repository>(std::move(remote));
}

int CmdInit(const Flags& f) {
  absl::StatusOr<CompressionSpec> comp = CompressionSpec::Parse(f.compression);
  if (!comp.ok()) return Fail(comp.status());
  // --compression alone sets both: "none" means nothing is compressed.
  absl::StatusOr<CompressionSpec> large =
      CompressionSpec::Parse(!f.large_compression.empty() ? f.large_compression
                             : f.compression_given        ? f.compression
                                                          : kDefaultLargeCompression.ToString());
  if (!large.ok()) return Fail(large.status());
  absl::StatusOr<RepoConfig> config =
      NewRepoConfig(f.chunk_min, f.chunk_avg, f.chunk_max, *comp, *large);
  if (!config.ok()) return Fail(config.status());
  config->version = f.repository_version;
  if (config->version < kLz4RepoFormatVersion &&
      (comp->codec == Codec::kLz4 || large->codec == Codec::kLz4)) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "lz4 compression needs repository version ", kLz4RepoFormatVersion, " (",
        comp->codec == Codec::kLz4 ? "--compression" : "--compression-large, lz4 by default",
        "); give zstd:N or none for --repository-version ", config->version)));
  }
  const absl::Status s = IsRemoteUrl(f.repo) ? InitRemoteRepository(f.repo, *config, Remote(f))
                                             : InitEmbeddedRepository(f.repo, *config);
  if (!s.ok()) return Fail(s);
  std::cout << "created whorl repository " << config->id << " at " << f.repo << "\n";
  return kExitOk;
}

absl::Status ReadExcludeFile(const std::string& path, std::vector<std::string>* out) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("cannot read exclude file " + path);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    out->push_back(line);
  }
  return absl::OkStatus();
}

int CmdBackup(Flags& f) {
  BackupOptions options = f.backup;
  if (options.host.empty()) options.host = Hostname();
  if (!f.exclude_file.empty()) {
    if (absl::Status s = ReadExcludeFile(f.exclude_file, &options.excludes); !s.ok())
      return Fail(s);
  }
  absl::StatusOr<std::unique_ptr<Repository>> repo =
      OpenRepository(f.repo, Remote(f), RepoAccess::kReadWrite);
  if (!repo.ok()) return Fail(repo.status());
  const bool tty = ::isatty(STDOUT_FILENO) && !f.json;
  const auto start = std::chrono::steady_clock::now();
  auto on_error = [&](const std::string& msg) {
    if (tty) std::cout << "\r\033[K" << std::flush;
    std::cerr << "whorl: " << msg << "\n";
    if (f.json) {
      nlohmann::ordered_json j{{"message_type", "error"}, {"error", msg}};
      std::cout << j.dump() << "\n";
    }
  };
  auto on_progress = [&](const BackupProgress& p) {
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = static_cast<double>(p.bytes) / std::max(secs, 0.001);
    std::string line = absl::StrFormat("[%s] ", FormatDuration(secs));
    if (p.total_bytes > 0) {
      line +=
          absl::StrFormat("%.1f%% ", 100.0 * static_cast<double>(std::min(p.bytes, p.total_bytes)) /
                                         static_cast<double>(p.total_bytes));
    }
    line += absl::StrFormat("%llu", static_cast<unsigned long long>(p.files));
    if (p.total_files > 0) {
      line += absl::StrFormat(" / %llu%s", static_cast<unsigned long long>(p.total_files),
                              p.totals_done ? "" : "+");
    }
    line += absl::StrFormat(" files, %s", FormatBytes(p.bytes));
    if (p.total_bytes > 0) {
      line += absl::StrFormat(" / %s%s", FormatBytes(p.total_bytes), p.totals_done ? "" : "+");
    }
    line += absl::StrFormat(", %s/s", FormatBytes(static_cast<uint64_t>(rate)));
    if (p.totals_done && rate > 0 && p.total_bytes > p.bytes) {
      line += ", ETA " + FormatDuration(static_cast<double>(p.total_bytes - p.bytes) / rate);
    }
    std::printf("\r\033[K%s", line.c_str());
    std::fflush(stdout);
  };
  absl::StatusOr<BackupResult> result =
      RunBackup(repo->get(), options, on_error,
                tty ? std::function<void(const BackupProgress&)>(on_progress) : nullptr);
  if (tty) std::cout << "\r\033[K" << std::flush;
  if (!result.ok()) return Fail(result.status());
  if (!f.manifest_out.empty()) {
    absl::Status s = WriteFileAtomic(f.manifest_out, EncodeManifestFile(result->snapshot));
    if (!s.ok()) {
      Fail(s);
      return kExitFailed;  // the snapshot is committed, but the caller asked for the file
    }
  }
  const v1::SnapshotSummary& sum = result->snapshot.summary();
  if (f.json) {
    nlohmann::ordered_json j{{"message_type", "summary"}};
    j.update(SummaryJson(sum));
    j["snapshot_id"] = result->id.ToHex();
    std::cout << j.dump() << "\n";
  } else if (tty) {
    std::cout << "Files: " << sum.files_new() << " new, " << sum.files_changed() << " changed, "
              << sum.files_unmodified() << " unmodified\n"
              << "Added to the repository: " << FormatBytes(sum.data_added()) << "\n"
              << "processed " << sum.total_files_processed() << " files, "
              << FormatBytes(sum.total_bytes_processed()) << " in " << sum.total_duration() << "s\n"
              << "snapshot " << result->id.ToHex().substr(0, 8) << " saved\n";
  }
  return result->errors.empty() ? kExitOk : kExitPartial;
}

int CmdSnapshots(const Flags& f) {
  absl::StatusOr<std::unique_ptr<Repository>> repo = OpenRepository(f.repo, Remote(f));
  if (!repo.ok()) return Fail(repo.status());
  absl::StatusOr<std::vector<metadata::SnapshotRecord>> snaps = (*repo)->ListSnapshots();
  if (!snaps.ok()) return Fail(snaps.status());
  nlohmann::ordered_json arr = nlohmann::ordered_json::array();
  if (!f.json) std::printf("%-8s  %-30s  %-16s  %s\n", "ID", "Time", "Host", "Paths");
  for (const auto& rec : *snaps) {
    if (!f.host.empty() && rec.snapshot.host() != f.host) continue;
    if (f.json) {
      arr.push_back(SnapshotJson(rec));
      continue;
    }
    std::string paths;
    for (const auto& p : rec.snapshot.paths()) paths += (paths.empty() ? "" : " ") + p;
    std::printf("%-8s  %-30s  %-16s  %s\n", rec.id.ToHex().substr(0, 8).c_str(),
                FormatTime(rec.snapshot.time_ns()).c_str(), rec.snapshot.host().c_str(),
                paths.c_str());
  }
  if (f.json) std::cout << arr.dump() << "\n";
  return kExitOk;
}

int CmdLs(const Flags& f) {
  absl::StatusOr<std::unique_ptr<Repository>> repo = OpenRepository(f.repo, Remote(f));
  if (!repo.ok()) return Fail(repo.status());
  absl::StatusOr<metadata::SnapshotRecord> snap = SelectSnapshot(repo->get(), f.snap, f.host);
  if (!snap.ok()) return Fail(snap.status());
  const std::string want = f.path.empty() ? "" : AbsolutePath(f.path);
  bool found = want.empty() || want == "/";
  bool failed = false;
  WalkTree(
      repo->get(), snap->snapshot.root(),
      [&](const std::string& path, const v1::Node&) {
        const bool inside =
            want.empty() || want == "/" || path == want || path.rfind(want + "/", 0) == 0;
        if (inside) {
          found = true;
          std::cout << path << "\n";
          return true;
        }
        return want.rfind(path + "/", 0) == 0;  // descend only toward `want`
      },
      [&](const std::string& path, const absl::Status& s) {
        failed = true;
        std::cerr << "whorl: " << path << ": " << s.message() << "\n";
      });
  if (!found) {
    std::cerr << "whorl: " << want << " is not in snapshot " << snap->id.ToHex().substr(0, 8)
              << "\n";
    return kExitFailed;
  }
  return failed ? kExitFailed : kExitOk;
}

int CmdRestore(const Flags& f) {
  // The writers decode 2 MiB bundles into fresh buffers all the time: with glibc's 128 KiB
  // trim threshold (left as it is by the fixed mmap threshold set in main) each free at the
  // heap's top gave its pages back, and the next bundle faulted them in again. A restore's peak
  // is its cache of decoded bundles (32 MiB) anyway.
  ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
  if (f.snap.empty() == f.manifest.empty()) {
    std::cerr << "whorl: restore needs exactly one of SNAP or --manifest FILE\n";
    return kExitUsage;
  }
  absl::StatusOr<std::unique_ptr<Repository>> repo = OpenRepository(f.repo, Remote(f));
  if (!repo.ok()) return Fail(repo.status());
  v1::Snapshot snapshot;
  if (!f.manifest.empty()) {
    absl::StatusOr<std::string> bytes = ReadFile(f.manifest, kMaxManifestFileBytes);
    if (!bytes.ok()) return Fail(Annotate(bytes.status(), "manifest"));
    absl::StatusOr<v1::Snapshot> decoded = DecodeManifestFile(*bytes, (*repo)->config().id);
    if (!decoded.ok()) return Fail(Annotate(decoded.status(), f.manifest));
    snapshot = *std::move(decoded);
  } else {
    absl::StatusOr<metadata::SnapshotRecord> rec = SelectSnapshot(repo->get(), f.snap, f.host);
    if (!rec.ok()) return Fail(rec.status());
    snapshot = rec->snapshot;
  }
  RestoreOptions options;
  options.target = f.target;
  options.devices = f.devices;
  for (const std::string& inc : f.includes) options.includes.push_back(AbsolutePath(inc));
  absl::StatusOr<RestoreResult> result =
      RunRestore(repo->get(), snapshot, options,
                 [](const std::string& msg) { std::cerr << "whorl: " << msg << "\n"; });
  if (!result.ok()) return Fail(result.status());
  if (::isatty(STDOUT_FILENO)) {
    std::cout << "restored " << result->files << " files, " << FormatBytes(result->bytes) << "\n";
  }
  return result->errors.empty() ? kExitOk : kExitFailed;
}

int CmdCheck(const Flags& f) {
  absl::StatusOr<std::unique_ptr<Repository>> repo =
      OpenRepository(f.repo, Remote(f), RepoAccess::kReadOnly, ChunkReads::kThroughLocator);
  if (!repo.ok()) return Fail(repo.status());
  CheckDetails details;
  absl::StatusOr<std::vector<std::string>> problems =
      RunCheck(repo->get(), CheckOptions{f.read_data}, &details);
  if (!problems.ok()) return Fail(problems.status());
  for (const std::string& p : *problems) std::cout << "error: " << p << "\n";
  for (const std::string& n : details.notes) std::cout << "note: " << n << "\n";
  if (problems->empty()) {
    std::cout << "no errors were found\n";
    return kExitOk;
  }
  std::cout << problems->size() << " errors found\n";
  return kExitFailed;
}

// whorl repair: finds the chunks and trees that cannot be read (as check does; with
// --read-data every chunk is read) and forgets them, so that the next backup that meets their
// bytes stores them again. The snapshots that use them heal then, since their fingerprints do
// not change; the next backup of each host's paths reads every file, an unchanged one too (the
// repair raised the repository's repair generation past its parent snapshot's).
int CmdRepair(const Flags& f) {
  absl::StatusOr<std::unique_ptr<Repository>> repo =
      OpenRepository(f.repo, Remote(f), RepoAccess::kReadWrite, ChunkReads::kThroughLocator);
  if (!repo.ok()) return Fail(repo.status());
  // Forgetting nothing costs nothing, and a repository that cannot forget says so before the
  // check (which may read every chunk).
  if (absl::StatusOr<std::vector<Fingerprint>> s = (*repo)->ForgetChunks({}); !s.ok()) {
    return Fail(s.status());
  }
  CheckDetails details;
  absl::StatusOr<std::vector<std::string>> problems =
      RunCheck(repo->get(), CheckOptions{f.read_data}, &details);
  if (!problems.ok()) return Fail(problems.status());
  for (const std::string& p : *problems) std::cout << "found: " << p << "\n";
  if (details.damaged.empty()) {
    std::cout << "nothing to repair: no chunk is missing or damaged"
              << (f.read_data ? "" : " (without --read-data only packs were checked, not data)")
              << "\n";
    return kExitOk;
  }
  absl::StatusOr<std::vector<Fingerprint>> kept = (*repo)->ForgetChunks(details.damaged);
  if (!kept.ok()) return Fail(kept.status());
  for (const Fingerprint& fp : *kept) {
    std::cout << "kept: chunk " << fp.ToHex()
              << " reads back whole now (run check again; nothing of it was forgotten)\n";
  }
  const size_t forgot = details.damaged.size() - kept->size();
  if (forgot == 0) {
    std::cout << "forgot nothing: every chunk check found damaged reads back whole now\n";
    return kExitOk;
  }
  std::cout << "forgot " << forgot << (forgot == 1 ? " chunk" : " chunks")
            << " that could not be read; the next backup of each host's paths reads every file "
               "and stores again what the files still hold, which makes the snapshots using "
               "those chunks whole\n";
  return kExitOk;
}

// whorl debug chunks: for the crash harness's ledger (tests/crash/), which must prove that
// every chunk the repository acknowledged is still there. Reads FILE (one hex fingerprint a line),
// asks the index about each and reads each (GetChunk verifies SHA-256; failed reads are retried as
// check does). Prints "chunk HEX: WHY" per chunk missing or damaged; exit 1 if there is one.
int CmdDebugChunks(const Flags& f) {
  constexpr size_t kMaxFileBytes = 256 << 20;
  constexpr size_t kSlice = 1024;  // fingerprints asked about and announced at a time
  absl::StatusOr<std::string> text = ReadFile(f.fingerprints_file, kMaxFileBytes);
  if (!text.ok()) return Fail(text.status());
  std::vector<Fingerprint> fps;
  for (size_t at = 0, nl; at < text->size(); at = nl + 1) {
    nl = std::min(text->find('\n', at), text->size());
    if (nl == at) continue;  // an empty line
    absl::StatusOr<Fingerprint> fp =
        Fingerprint::FromHex(std::string_view(*text).substr(at, nl - at));
    if (!fp.ok()) {
      std::cerr << "whorl: " << f.fingerprints_file << ": " << fp.status().message() << "\n";
      return kExitUsage;
    }
    fps.push_back(*fp);
  }
  absl::StatusOr<std::unique_ptr<Repository>> repo =
      OpenRepository(f.repo, Remote(f), RepoAccess::kReadOnly, ChunkReads::kThroughLocator);
  if (!repo.ok()) return Fail(repo.status());
  Repository* r = repo->get();
  size_t bad = 0;
  for (size_t begin = 0; begin < fps.size(); begin += kSlice) {
    const size_t end = std::min(fps.size(), begin + kSlice);
    const std::vector<Fingerprint> slice(fps.begin() + begin, fps.begin() + end);
    absl::StatusOr<std::vector<bool>> missing = r->FindMissing(slice);
    if (!missing.ok()) return Fail(missing.status());
    if (r->ReadsCostARoundTrip()) r->Prefetch(slice);
    for (size_t i = 0; i < slice.size(); ++i) {
      std::string why = (*missing)[i] ? "not in the index" : "";
      if (absl::StatusOr<std::string> data = ReadChunkRetrying(r, slice[i], kReadAttempts);
          !data.ok()) {
        why += (why.empty() ? "" : "; ") + std::string(data.status().message());
      }
      if (why.empty()) continue;
      ++bad;
      std::cout << "chunk " << slice[i].ToHex() << ": " << why << "\n";
    }
    r->ForgetPrefetched();
  }
  std::cout << fps.size() << " chunks read, " << bad << " missing or damaged\n";
  return bad == 0 ? kExitOk : kExitFailed;
}

// whorl upgrade: raises an embedded repository's format version to this build's, so that its
// backups store what the newer versions add (bundles, LZ4, chunk lists, tree deltas). Nothing
// stored is rewritten: this build reads every older version as it is.
int CmdUpgrade(const Flags& f) {
  absl::StatusOr<int> was = IsRemoteUrl(f.repo) ? UpgradeRemoteRepository(f.repo, Remote(f))
                                                : UpgradeEmbeddedRepository(f.repo);
  if (!was.ok()) return Fail(was.status());
  if (*was == kRepoFormatVersion) {
    std::cout << "repository at " << f.repo << " is already version " << kRepoFormatVersion << "\n";
  } else {
    std::cout << "upgraded repository at " << f.repo << " from version " << *was << " to version "
              << kRepoFormatVersion << "; builds before version " << kRepoFormatVersion
              << " no longer open it\n";
  }
  return kExitOk;
}

int CmdStats(const Flags& f) {
  absl::StatusOr<std::unique_ptr<Repository>> repo = OpenRepository(f.repo, Remote(f));
  if (!repo.ok()) return Fail(repo.status());
  absl::StatusOr<RepoStats> s = (*repo)->Stats();
  if (!s.ok()) return Fail(s.status());
  const double ratio = s->stored_bytes == 0 ? 0.0
                                            : static_cast<double>(s->logical_bytes) /
                                                  static_cast<double>(s->stored_bytes);
  if (f.json) {
    nlohmann::ordered_json j{{"snapshots", s->snapshots},
                             {"logical_bytes", s->logical_bytes},
                             {"stored_bytes", s->stored_bytes},
                             {"unique_chunks", s->unique_chunks},
                             {"dedup_ratio", ratio}};
    std::cout << j.dump() << "\n";
  } else {
    std::printf(
        "snapshots:      %llu\nlogical bytes:  %s\nstored bytes:   %s\n"
        "unique chunks:  %llu\ndedup ratio:    %.2fx\n",
        static_cast<unsigned long long>(s->snapshots), FormatBytes(s->logical_bytes).c_str(),
        FormatBytes(s->stored_bytes).c_str(), static_cast<unsigned long long>(s->unique_chunks),
        ratio);
  }
  return kExitOk;
}

int CmdAdminStats(const Flags& f) {
  if (!IsRemoteUrl(f.repo)) {
    std::cerr << "whorl: admin stats needs a cluster (--repo whorl://HOST:PORT); "
                 "use whorl stats for a repository directory\n";
    return kExitUsage;
  }
  absl::StatusOr<std::unique_ptr<RemoteRepository>> repo = OpenRemoteRepository(f.repo, Remote(f));
  if (!repo.ok()) return Fail(repo.status());
  absl::StatusOr<ClusterStats> s = (*repo)->AdminStats();
  if (!s.ok()) return Fail(s.status());
  auto ratio = [](uint64_t logical, uint64_t stored) {
    return stored == 0 ? 0.0 : static_cast<double>(logical) / static_cast<double>(stored);
  };
  const RepoStats& t = s->total;
  if (f.json) {
    nlohmann::ordered_json j{{"snapshots", t.snapshots},
                             {"logical_bytes", t.logical_bytes},
                             {"stored_bytes", t.stored_bytes},
                             {"unique_chunks", t.unique_chunks},
                             {"dedup_ratio", ratio(t.logical_bytes, t.stored_bytes)},
                             {"epoch", s->epoch}};
    nlohmann::ordered_json shards = nlohmann::ordered_json::array();
    for (const ShardStatsRow& r : s->shards) {
      shards.push_back({{"id", r.id},
                        {"address", r.address},
                        {"unique_chunks", r.unique_chunks},
                        {"stored_bytes", r.stored_bytes},
                        {"plain_bytes", r.plain_bytes},
                        {"snapshots", r.snapshots},
                        {"logical_bytes", r.logical_bytes}});
    }
    j["shards"] = shards;
    nlohmann::ordered_json nodes = nlohmann::ordered_json::array();
    for (const ChunkNodeStatsRow& r : s->chunk_nodes) {
      nodes.push_back({{"id", r.id},
                       {"address", r.address},
                       {"chunks", r.chunks},
                       {"stored_bytes", r.stored_bytes},
                       {"plain_bytes", r.plain_bytes},
                       {"packs", r.packs}});
    }
    j["chunk_stores"] = nodes;
    nlohmann::ordered_json tenants = nlohmann::ordered_json::array();
    for (const TenantStatsRow& r : s->tenants) {
      tenants.push_back(
          {{"tenant", r.tenant}, {"snapshots", r.snapshots}, {"logical_bytes", r.logical_bytes}});
    }
    j["tenants"] = tenants;
    std::cout << j.dump() << "\n";
    return kExitOk;
  }
  std::printf("cluster epoch %llu\n", static_cast<unsigned long long>(s->epoch));
  std::printf(
      "snapshots:      %llu\nlogical bytes:  %s\nstored bytes:   %s\n"
      "unique chunks:  %llu\ndedup ratio:    %.2fx\n\n",
      static_cast<unsigned long long>(t.snapshots), FormatBytes(t.logical_bytes).c_str(),
      FormatBytes(t.stored_bytes).c_str(), static_cast<unsigned long long>(t.unique_chunks),
      ratio(t.logical_bytes, t.stored_bytes));
  std::printf("%-16s %-22s %12s %12s %10s %12s\n", "SHARD", "ADDRESS", "CHUNKS", "STORED",
              "SNAPSHOTS", "LOGICAL");
  for (const ShardStatsRow& r : s->shards) {
    std::printf("%-16s %-22s %12llu %12s %10llu %12s\n", r.id.c_str(), r.address.c_str(),
                static_cast<unsigned long long>(r.unique_chunks),
                FormatBytes(r.stored_bytes).c_str(), static_cast<unsigned long long>(r.snapshots),
                FormatBytes(r.logical_bytes).c_str());
  }
  std::printf("\n%-16s %-22s %12s %12s %8s\n", "CHUNK STORE", "ADDRESS", "CHUNKS", "STORED",
              "PACKS");
  for (const ChunkNodeStatsRow& r : s->chunk_nodes) {
    std::printf("%-16s %-22s %12llu %12s %8llu\n", r.id.c_str(), r.address.c_str(),
                static_cast<unsigned long long>(r.chunks), FormatBytes(r.stored_bytes).c_str(),
                static_cast<unsigned long long>(r.packs));
  }
  std::printf("\n%-24s %10s %12s\n", "TENANT", "SNAPSHOTS", "LOGICAL");
  for (const TenantStatsRow& r : s->tenants) {
    std::printf("%-24s %10llu %12s\n", r.tenant.c_str(),
                static_cast<unsigned long long>(r.snapshots), FormatBytes(r.logical_bytes).c_str());
  }
  return kExitOk;
}

int Main(int argc, char** argv) {
  CLI::App app{"whorl: deduplicating backups"};
  app.require_subcommand(1);
  Flags f;
  auto repo_option = [&f](CLI::App* cmd) {
    cmd->add_option("--repo", f.repo, "repository directory, or whorl://HOST:PORT for a cluster")
        ->envname("WHORL_REPO")
        ->required();
    cmd->add_option("--timeout", f.timeout_s,
                    "deadline of each cluster call in seconds; a node that does not answer in "
                    "time fails the command, naming it (default 60)")
        ->envname("WHORL_TIMEOUT")
        ->check(CLI::PositiveNumber);
  };

  CLI::App* init = app.add_subcommand("init", "create a repository");
  repo_option(init);
  init->add_option("--chunk-min", f.chunk_min, "minimum chunk size in bytes");
  init->add_option("--chunk-avg", f.chunk_avg, "average chunk size (power of two)");
  init->add_option("--chunk-max", f.chunk_max, "maximum chunk size in bytes");
  init->add_option(
      "--compression", f.compression,
      "zstd:N (1..19), lz4 or none (default zstd:3); also for files of 16 MiB and more "
      "unless --compression-large is given");
  init->add_option("--compression-large", f.large_compression,
                   "zstd:N (1..19), lz4 or none for files of 16 MiB and more (default lz4, or "
                   "--compression's value when that is given)");
  init->add_option("--repository-version", f.repository_version,
                   absl::StrCat("format version (", kOldestRepoFormatVersion, "..",
                                kRepoFormatVersion, ", default ", kRepoFormatVersion,
                                "): an older one stays readable by older builds and stores "
                                "what they read; whorl upgrade raises it"))
      ->check(CLI::Range(kOldestRepoFormatVersion, kRepoFormatVersion));

  CLI::App* backup = app.add_subcommand("backup", "back up paths as a new snapshot");
  repo_option(backup);
  backup->add_option("--host", f.backup.host, "host name recorded (default: this host)");
  backup->add_option("--tag", f.backup.tags, "tag (repeatable)");
  backup->add_option("--exclude", f.backup.excludes, "glob to exclude (repeatable)");
  backup->add_option("--exclude-file", f.exclude_file, "file of globs to exclude");
  backup->add_flag("--force", f.backup.force,
                   "read every file, even one the last snapshot says is unchanged");
  backup->add_flag("--one-file-system", f.backup.one_file_system,
                   "stay on the first path's filesystem");
  backup->add_option("--manifest-out", f.manifest_out, "also write the manifest to FILE");
  backup->add_flag("--json", f.json, "JSON lines output");
  backup->add_option("paths", f.backup.paths, "paths to back up")->required();

  CLI::App* snapshots = app.add_subcommand("snapshots", "list snapshots");
  repo_option(snapshots);
  snapshots->add_option("--host", f.host, "only this host's");
  snapshots->add_flag("--json", f.json, "JSON output");

  CLI::App* ls = app.add_subcommand("ls", "list a snapshot's files");
  repo_option(ls);
  ls->add_option("--host", f.host, "host for 'latest'");
  ls->add_option("snapshot", f.snap, "snapshot id, prefix or 'latest'")->required();
  ls->add_option("path", f.path, "only this path and below");

  CLI::App* restore = app.add_subcommand("restore", "restore a snapshot");
  repo_option(restore);
  restore->add_option("--host", f.host, "host for 'latest'");
  restore->add_option("snapshot", f.snap, "snapshot id, prefix or 'latest'");
  restore->add_option("--manifest", f.manifest, "restore from this manifest file");
  restore->add_option("--target", f.target, "directory to restore into")->required();
  restore->add_option("--include", f.includes, "restore only this path (repeatable)");
  restore->add_flag("--devices", f.devices, "create device nodes (as root; refused otherwise)");

  CLI::App* check = app.add_subcommand("check", "verify the repository");
  repo_option(check);
  check->add_flag("--read-data", f.read_data, "also read and verify every chunk");

  CLI::App* repair = app.add_subcommand(
      "repair", "forget missing or damaged chunks, for the next backup to store them again");
  repo_option(repair);
  repair->add_flag("--read-data", f.read_data, "read every chunk to find the damaged ones");

  CLI::App* upgrade = app.add_subcommand(
      "upgrade", "raise a repository's format version to this build's (nothing is rewritten)");
  repo_option(upgrade);

  CLI::App* stats = app.add_subcommand("stats", "repository size and dedup ratio");
  repo_option(stats);
  stats->add_flag("--json", f.json, "JSON output");

  CLI::App* admin = app.add_subcommand("admin", "cluster administration");
  admin->require_subcommand(1);
  CLI::App* admin_stats = admin->add_subcommand("stats", "cluster, shard and tenant statistics");
  repo_option(admin_stats);
  admin_stats->add_flag("--json", f.json, "JSON output");

  CLI::App* version = app.add_subcommand("version", "print the version");

  // Commands for tests, kept out of the help (group ""): see CmdDebugChunks.
  CLI::App* debug = app.add_subcommand("debug", "commands for tests")->group("");
  debug->require_subcommand(1);
  CLI::App* debug_chunks = debug->add_subcommand(
      "chunks", "read each chunk FILE lists (hex fingerprints); exit 1 if one is bad");
  debug_chunks->group("Subcommands");  // listed in `whorl debug --help`
  repo_option(debug_chunks);
  debug_chunks->add_option("file", f.fingerprints_file, "one hex fingerprint a line")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  if (*version) {
    std::cout << "whorl " << WHORL_VERSION << " (repository format " << kRepoFormatVersion << ")\n";
    return kExitOk;
  }
  f.compression_given = init->count("--compression") > 0;
  if (*init) return CmdInit(f);
  if (*backup) return CmdBackup(f);
  if (*snapshots) return CmdSnapshots(f);
  if (*ls) return CmdLs(f);
  if (*restore) return CmdRestore(f);
  if (*check) return CmdCheck(f);
  if (*repair) return CmdRepair(f);
  if (*stats) return CmdStats(f);
  if (*upgrade) return CmdUpgrade(f);
  if (*admin_stats) return CmdAdminStats(f);
  if (*debug_chunks) return CmdDebugChunks(f);
  return kExitUsage;
}

}  // namespace
}  // namespace whorl::agent

int main(int argc, char** argv) {
  whorl::UseReleaseMutexChecks();
  // glibc gives each thread that allocates its own arena (up to 8 per core), and each keeps
  // what its thread freed: the backup's pipeline threads allocate and free chunk buffers all
  // the time, so capping the arenas keeps the peak near what is actually live (measured on
  // the tree's first backup: ~7 MiB less peak RSS, same wall time within the noise).
  ::mallopt(M_ARENA_MAX, 2);
  // A fixed threshold for handing big blocks to mmap (4 MiB: zstd's level-9 contexts, ~6.6 MB,
  // are mapped and unmapped whole; a bundle's 2 MiB buffers come from the arenas). glibc's
  // default raises the threshold to the biggest block freed and its heap-trim threshold to
  // twice that: after a night's first level-9 bundle, the heap kept ~13 MB of free memory on
  // top. The source tree's first night, cold, peak RSS: 61-71 MiB -> 57-58.5 MiB.
  ::mallopt(M_MMAP_THRESHOLD, 4 << 20);
  return whorl::agent::Main(argc, argv);
}
