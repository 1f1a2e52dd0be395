// Writes the seed corpora of the fuzz targets from the real encoders, so the seeds are valid
// objects the fuzzer mutates from: corpus_gen OUT_DIR writes OUT_DIR/<target>/<name>.
// Deterministic (fixed contents, no randomness), a few KB in all.
#include <filesystem>
#include <fstream>
#include <iostream>

#include "agent/objects.h"
#include "agent/repo_config.h"
#include "chunk-store/pack.h"
#include "common/bloom_filter.h"
#include "common/bundle.h"
#include "common/cluster_map.h"
#include "common/codec.h"
#include "whorl/v1/service.pb.h"

namespace {

namespace v1 = whorl::v1;
namespace cs = whorl::chunkstore;
using whorl::Fingerprint;

std::string g_out;

void Put(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::string dir = g_out + "/" + target;
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
}

std::string Text(size_t n, char seed) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>('a' + (seed + i * 7 + i / 13) % 26));
  return s;
}

void Trees() {
  v1::Tree empty;
  Put("tree", "empty", whorl::agent::EncodeTree(&empty));
  v1::Tree t;
  v1::Node* f = t.add_nodes();
  f->set_name("file.txt");
  f->set_type(v1::Node::FILE);
  f->set_mode(0644);
  f->set_size(11);
  f->add_chunks(whorl::Sha256("hello world").ToBytes());
  f->set_mtime_ns(1700000000000000000);
  v1::Node* d = t.add_nodes();
  d->set_name("dir");
  d->set_type(v1::Node::DIR);
  d->set_mode(0755);
  d->set_subtree(whorl::Sha256("subtree").ToBytes());
  v1::Node* l = t.add_nodes();
  l->set_name("link");
  l->set_type(v1::Node::SYMLINK);
  l->set_symlink_target("../file.txt");
  v1::Node* p = t.add_nodes();
  p->set_name("fifo");
  p->set_type(v1::Node::FIFO);
  Put("tree", "mixed", whorl::agent::EncodeTree(&t));
}

v1::Snapshot Snapshot() {
  v1::Snapshot s;
  s.set_repository_id("00112233445566778899aabbccddeeff");  // manifest_fuzz.cc's kRepoId
  s.set_time_ns(1700000000123456789);
  s.set_host("host-1");
  s.add_paths("/home/user");
  s.add_tags("nightly");
  s.set_root(whorl::Sha256("root").ToBytes());
  s.mutable_summary()->set_files_new(3);
  s.mutable_summary()->set_total_bytes_processed(12345);
  return s;
}

void Manifests() {
  v1::Snapshot s = Snapshot();
  Put("manifest", "snapshot", whorl::agent::EncodeManifestFile(s));
  s.set_parent(whorl::Sha256("parent").ToBytes());
  s.set_tenant("tenant-a");
  Put("manifest", "with_parent", whorl::agent::EncodeManifestFile(s));
}

void RepoConfigs() {
  whorl::agent::RepoConfig c;
  c.id = "00112233445566778899aabbccddeeff";
  c.chunker.polynomial = 0x3DA3358B4DC173;  // irreducible, degree 53
  c.chunker.min_size = whorl::agent::kDefaultChunkMin;
  c.chunker.avg_size = whorl::agent::kDefaultChunkAvg;
  c.chunker.max_size = whorl::agent::kDefaultChunkMax;
  Put("repo_config", "zstd", c.ToJson());
  c.large_compression = {whorl::Codec::kZstd, 1};
  c.chunker.cut_on_ones = true;
  Put("repo_config", "zstd-large", c.ToJson());
  c.chunker.cut_on_ones = false;
  c.compression = {whorl::Codec::kNone, 0};
  c.chunker.min_size = 512;
  c.chunker.avg_size = 1024;
  c.chunker.max_size = 8192;
  Put("repo_config", "none", c.ToJson());
}

std::string Record(const std::string& plain, const whorl::CompressionSpec& spec) {
  cs::RecordHeader h;
  const std::string stored = whorl::Encode(spec, plain, &h.codec);
  h.plain_size = static_cast<uint32_t>(plain.size());
  h.stored_size = static_cast<uint32_t>(stored.size());
  h.fingerprint = whorl::Sha256(plain);
  return cs::EncodeRecord(h, stored);
}

// A bundle of `parts`: its plain bytes, and its record.
std::string BundlePlain(const std::vector<std::string>& parts) {
  std::vector<whorl::BundleMember> members;
  for (const std::string& p : parts) {
    members.push_back({whorl::Sha256(p), static_cast<uint32_t>(p.size())});
  }
  std::string plain = whorl::EncodeBundleTable(members);
  for (const std::string& p : parts) plain += p;
  return plain;
}

std::string BundleRecord(const std::vector<std::string>& parts) {
  const std::string plain = BundlePlain(parts);
  cs::RecordHeader h;
  const std::string stored = whorl::Encode({whorl::Codec::kZstd, 3}, plain, &h.codec);
  h.bundle = true;
  h.plain_size = static_cast<uint32_t>(plain.size());
  h.stored_size = static_cast<uint32_t>(stored.size());
  std::vector<whorl::BundleMember> members;
  for (const std::string& p : parts) {
    members.push_back({whorl::Sha256(p), static_cast<uint32_t>(p.size())});
  }
  h.fingerprint = whorl::BundleId(members);
  return cs::EncodeRecord(h, stored);
}

void Packs() {
  const std::string a = Record(Text(200, 1), {whorl::Codec::kNone, 0});
  const std::string b = Record(std::string(600, 'x') + Text(100, 3), {whorl::Codec::kZstd, 3});
  const std::string c = Record("", {whorl::Codec::kNone, 0});
  const std::string pack = cs::EncodePackHeader(1) + a + b + c;
  Put("pack", "three_records", pack);
  Put("pack", "torn_tail", pack.substr(0, pack.size() - c.size() - 10));
  Put("pack", "header_only", cs::EncodePackHeader(1));
  cs::ChunkLocation loc{3, 16, 700, 1200, whorl::Codec::kZstd};
  Put("pack", "locator_value", cs::EncodeLocatorValue(loc) + b);
  const std::vector<std::string> parts = {Text(300, 4), Text(50, 5), std::string(400, 'y')};
  Put("pack", "bundle_pack", cs::EncodePackHeader(2) + a + BundleRecord(parts) + c);
  Put("pack", "bundle_table", BundlePlain(parts));
  cs::ChunkLocation member{4, 16, 300, 50, whorl::Codec::kZstd, true, 412, 120};
  Put("pack", "bundled_locator_value", cs::EncodeLocatorValue(member));
}

std::string Le32(uint32_t v) {
  std::string s;
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>(v >> (8 * i)));
  return s;
}

void Codecs() {
  const std::string plain = std::string(300, 'y') + Text(200, 5);
  whorl::Codec used;
  const std::string z = whorl::Encode({whorl::Codec::kZstd, 3}, plain, &used);
  Put("codec", "zstd", std::string(1, static_cast<char>(used)) + Le32(plain.size()) + z);
  Put("codec", "none", std::string(1, '\0') + Le32(64) + Text(64, 9));
  const std::string l = whorl::Encode({whorl::Codec::kLz4, 0}, plain, &used);
  Put("codec", "lz4", std::string(1, static_cast<char>(used)) + Le32(plain.size()) + l);
}

void ClusterMaps() {
  whorl::ClusterMap m;
  m.epoch = 3;
  m.vnodes_per_weight = 8;
  m.metadata = {{"meta-1", "10.0.0.1:7001", 1}, {"meta-2", "10.0.0.2:7001", 2}};
  m.chunkstores = {{"chunk-1", "[::1]:7101", 1}, {"chunk.2_x", "host.example:7102", 3}};
  Put("cluster_map", "two_by_two", whorl::SerializeClusterMap(m));
  Put("cluster_map", "minimal",
      R"({"format":1,"epoch":1,"metadata":[{"id":"m","address":"a:1"}],)"
      R"("chunkstores":[{"id":"c","address":"b:65535","weight":65536}],"extra":[null,true,1.5e3]})");
}

void Blooms() {
  whorl::BloomFilter f(40, 0.01);
  for (int i = 0; i < 10; ++i) f.Add(whorl::Sha256(std::to_string(i)));
  Put("bloom_filter", "ten_keys", f.Serialize(42));
  Put("bloom_filter", "empty", whorl::BloomFilter(1, 0.5).Serialize(0));
}

// One rpc_fuzz frame: method byte, 2-byte length, request.
std::string Frame(int method, const google::protobuf::Message& req) {
  const std::string body = req.SerializeAsString();
  std::string out(1, static_cast<char>(method));
  out.push_back(static_cast<char>(body.size() & 0xff));
  out.push_back(static_cast<char>(body.size() >> 8));
  return out + body;
}

void Rpcs() {
  const std::string plain = Text(100, 2);
  const Fingerprint fp = whorl::Sha256(plain);
  v1::PutChunksRequest put;
  put.mutable_header()->set_epoch(7);
  put.mutable_header()->set_request_id("seed-1");
  v1::Chunk* c = put.add_chunks();
  c->set_fingerprint(fp.ToBytes());
  c->set_codec(0);
  c->set_plain_size(static_cast<uint32_t>(plain.size()));
  c->set_data(plain);
  const std::string zplain = std::string(400, 'q');
  v1::Chunk* z = put.add_chunks();
  whorl::Codec used;
  z->set_data(whorl::Encode({whorl::Codec::kZstd, 1}, zplain, &used));
  z->set_codec(static_cast<uint32_t>(used));
  z->set_plain_size(static_cast<uint32_t>(zplain.size()));
  z->set_fingerprint(whorl::Sha256(zplain).ToBytes());

  v1::FindMissingRequest find;
  find.mutable_header()->set_epoch(7);
  find.set_fingerprints(fp.ToBytes() + whorl::Sha256("absent").ToBytes());
  v1::GetChunksRequest get;
  get.add_fingerprints(fp.ToBytes());
  get.add_fingerprints("short");
  Put("rpc", "put_find_get", Frame(0, put) + Frame(2, find) + Frame(11, get));

  // `whorl repair`'s calls: forget (nothing: the chunk reads back whole), unregister, the
  // generation, then the fingerprint is missing.
  v1::ForgetChunksRequest forget;
  forget.mutable_header()->set_epoch(7);
  forget.set_fingerprints(fp.ToBytes() + whorl::Sha256("absent").ToBytes());
  v1::UnregisterRequest unregister;
  unregister.mutable_header()->set_epoch(7);
  unregister.set_fingerprints(fp.ToBytes());
  v1::GetRepairGenerationRequest generation;
  Put("rpc", "put_forget_unregister",
      Frame(0, put) + Frame(15, forget) + Frame(14, unregister) + Frame(16, generation) +
          Frame(2, find));

  v1::RegisterRequest reg;
  reg.mutable_header()->set_epoch(7);
  v1::IndexEntry* e = reg.add_entries();
  e->set_fingerprint(whorl::Sha256("tree").ToBytes());
  e->set_stored_size(10);
  e->set_plain_size(10);
  e->set_node("chunk-1");
  v1::CommitSnapshotRequest commit;
  commit.mutable_header()->set_epoch(7);
  *commit.mutable_snapshot() = Snapshot();
  commit.mutable_snapshot()->set_root(whorl::Sha256("tree").ToBytes());
  v1::InitRepositoryRequest init;
  init.set_config(R"({"id":"00112233445566778899aabbccddeeff","version":1})");
  v1::ListSnapshotsRequest list;
  Put("rpc", "register_commit_list",
      Frame(1, reg) + Frame(7, init) + Frame(4, commit) + Frame(5, list));

  // `whorl upgrade`: a config, a refused upgrade (another field changed), an accepted one.
  const std::string id = R"("id":"00112233445566778899aabbccddeeff")";
  v1::InitRepositoryRequest init1;
  init1.set_config("{" + id + R"(,"version":1,"compression":"zstd:3"})");
  v1::UpgradeRepositoryRequest changed;
  changed.set_config("{" + id + R"(,"version":2,"compression":"zstd:9"})");
  v1::UpgradeRepositoryRequest raised;
  raised.set_config("{" + id + R"(,"version":2,"compression":"zstd:3"})");
  v1::GetRepositoryConfigRequest get_config;
  Put("rpc", "init_upgrade",
      Frame(7, init1) + Frame(17, changed) + Frame(17, raised) + Frame(8, get_config));

  v1::GetFilterRequest filter;
  filter.set_have_version(1);
  v1::GetClusterMapRequest map;
  v1::GetRepositoryConfigRequest config;
  v1::ShardStatsRequest shard;
  v1::ChunkStoreStatsRequest chunk;
  v1::ListChunksRequest listc;
  listc.mutable_header()->set_epoch(8);
  Put("rpc", "reads",
      Frame(3, filter) + Frame(6, map) + Frame(8, config) + Frame(9, shard) + Frame(10, chunk) +
          Frame(12, listc));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: corpus_gen OUT_DIR\n";
    return 2;
  }
  g_out = argv[1];
  Trees();
  Manifests();
  RepoConfigs();
  Packs();
  Codecs();
  ClusterMaps();
  Blooms();
  Rpcs();
  return 0;
}
