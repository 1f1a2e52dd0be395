// Hostile snapshots (design.md invariant 4): trees written directly into an embedded repository
// with names, types, sizes and shapes that `whorl backup` never produces. Restore must write
// nothing outside its target, never follow a symlink, refuse each bad entry with one message
// naming it, and restore everything else.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "agent/objects.h"
#include "agent/repository.h"
#include "agent/restore.h"
#include "agent/test_util.h"

namespace whorl::agent {
namespace {

namespace fs = std::filesystem;

using testing::ReadAll;

void WriteAll(const fs::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
}

// Every entry under `root` (relative path -> "kind:content"), symlinks not followed.
std::map<std::string, std::string> Listing(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    const std::string rel = it->path().lexically_relative(root).string();
    const fs::file_status st = it->symlink_status();
    if (fs::is_symlink(st)) {
      out[rel] = "link:" + fs::read_symlink(it->path()).string();
    } else if (fs::is_directory(st)) {
      out[rel] = "dir";
    } else if (fs::is_regular_file(st)) {
      out[rel] = "file:" + ReadAll(it->path());
    } else {
      out[rel] = "special";
    }
  }
  return out;
}

v1::Node Named(const std::string& name, v1::Node::Type type) {
  v1::Node n;
  n.set_name(name);
  n.set_type(type);
  n.set_mode(type == v1::Node::DIR ? 0755 : 0644);
  n.set_mtime_ns(1'100'000'000'000'000'000);
  return n;
}

// A fake repository, used only where the real one cannot go: content addressing makes a tree
// that contains its own fingerprint impossible (it would be a SHA-256 fixed point), so only a
// store that lies about what it holds can serve one.
class LyingRepository : public ForwardingRepository {
 public:
  explicit LyingRepository(Repository* real) : ForwardingRepository(real) {}
  std::map<Fingerprint, std::string> overrides;

  absl::StatusOr<std::string> GetChunk(const Fingerprint& fp) override {
    if (auto it = overrides.find(fp); it != overrides.end()) return it->second;
    return inner()->GetChunk(fp);
  }
};

class HostileRestoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = testing::MakeTempDir("whorl-hostile");
    target_ = tmp_ / "target";
    outside_ = tmp_ / "outside";
    fs::create_directories(outside_);
    WriteAll(outside_ / "passwd", "root:x:0:0:root:/root:/bin/sh\n");
    repo_ = testing::NewEmbeddedRepository(tmp_ / "repo", "none");
    ASSERT_NE(repo_, nullptr);
  }
  void TearDown() override {
    repo_.reset();
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }

  // Stores `bytes` as a chunk; returns its fingerprint (32 bytes).
  std::string Put(const std::string& bytes) {
    const Fingerprint fp = Sha256(bytes);
    EncodedChunk c{fp, Codec::kNone, bytes.size(), bytes, {}};
    std::vector<EncodedChunk> v;
    v.push_back(std::move(c));
    EXPECT_TRUE(repo_->PutChunks(std::move(v)).ok());
    return fp.ToBytes();
  }
  // Stores the tree exactly as given (no sorting, no checks): a hostile writer's tree.
  std::string PutTree(const std::vector<v1::Node>& nodes) {
    v1::Tree t;
    for (const v1::Node& n : nodes) *t.add_nodes() = n;
    return Put(t.SerializeAsString());
  }
  v1::Node File(const std::string& name, const std::string& content) {
    v1::Node n = Named(name, v1::Node::FILE);
    n.set_size(content.size());
    if (!content.empty()) n.add_chunks(Put(content));
    return n;
  }
  v1::Node Dir(const std::string& name, const std::vector<v1::Node>& entries) {
    v1::Node n = Named(name, v1::Node::DIR);
    n.set_subtree(PutTree(entries));
    return n;
  }
  v1::Node Symlink(const std::string& name, const std::string& to) {
    v1::Node n = Named(name, v1::Node::SYMLINK);
    n.set_symlink_target(to);
    return n;
  }
  v1::Snapshot Snap(const std::string& root) {
    v1::Snapshot s;
    s.set_repository_id(repo_->config().id);
    s.set_host("h");
    s.add_paths("/");
    s.set_root(root);
    return s;
  }

  RestoreResult Restore(const std::vector<v1::Node>& root, RestoreOptions options = {},
                        Repository* repo = nullptr) {
    options.target = target_.string();
    auto r = RunRestore(repo ? repo : repo_.get(), Snap(PutTree(root)), options, nullptr);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : RestoreResult{};
  }

  std::map<std::string, std::string> OutsideBefore() { return Listing(outside_); }
  // Nothing was written in tmp_ but under target_ (and the repository).
  void ExpectNothingOutside(const std::map<std::string, std::string>& outside_before) {
    EXPECT_EQ(Listing(outside_), outside_before);
    std::set<std::string> top;
    for (const auto& e : fs::directory_iterator(tmp_)) top.insert(e.path().filename().string());
    EXPECT_EQ(top, (std::set<std::string>{"outside", "repo", "target"}));
  }

  fs::path tmp_, target_, outside_;
  std::unique_ptr<Repository> repo_;
};

TEST_F(HostileRestoreTest, UnsafeNamesAreRefusedOneByOneAndTheRestIsRestored) {
  const auto before = OutsideBefore();
  const std::string abs_name = (outside_ / "abs-pwned").string();
  const RestoreResult r = Restore({
      Dir("..", {File("pwned", "escaped via ..")}),
      File(abs_name, "escaped via an absolute name"),
      Dir("a/..", {File("pwned2", "escaped via a/..")}),
      File("x/y", "a slash"),
      File(std::string("nul\0/etc", 8), "a NUL"),
      File("", "empty name"),
      Dir(".", {File("dot", "via .")}),
      File("ok", "restored"),
      Dir("sub", {File("inner", "also restored"), File("../up", "x")}),
  });
  EXPECT_EQ(r.errors,
            (std::vector<std::string>{
                "/..: refused: tree entry has an unsafe name '..'",
                "/" + abs_name + ": refused: tree entry has an unsafe name '" + abs_name + "'",
                "/a/..: refused: tree entry has an unsafe name 'a/..'",
                "/x/y: refused: tree entry has an unsafe name 'x/y'",
                "/nul\\x00/etc: refused: tree entry has an unsafe name 'nul\\x00/etc'",
                "/: refused: tree entry has an unsafe name ''",
                "/.: refused: tree entry has an unsafe name '.'",
                "/sub/../up: refused: tree entry has an unsafe name '../up'",
            }));
  EXPECT_EQ(r.refused, 8u);
  EXPECT_EQ(r.files, 2u);
  EXPECT_EQ(Listing(target_), (std::map<std::string, std::string>{
                                  {"ok", "file:restored"},
                                  {"sub", "dir"},
                                  {"sub/inner", "file:also restored"},
                              }));
  ExpectNothingOutside(before);
}

TEST_F(HostileRestoreTest, EveryEntryOfADuplicatedNameIsRefused) {
  const auto before = OutsideBefore();
  // The classic: a symlink `evil` -> outside next to a directory `evil` holding `passwd`, in
  // both orders, and two files of one name.
  const RestoreResult r = Restore({
      Symlink("evil", outside_.string()),
      Dir("evil", {File("passwd", "pwned::0:0\n")}),
      Dir("evil2", {File("passwd", "pwned::0:0\n")}),
      Symlink("evil2", outside_.string()),
      File("dup", "one"),
      File("dup", "two"),
      File("fine", "fine"),
  });
  EXPECT_EQ(r.errors, (std::vector<std::string>{
                          "/evil: refused: 2 entries of this name in one directory",
                          "/evil: refused: 2 entries of this name in one directory",
                          "/evil2: refused: 2 entries of this name in one directory",
                          "/evil2: refused: 2 entries of this name in one directory",
                          "/dup: refused: 2 entries of this name in one directory",
                          "/dup: refused: 2 entries of this name in one directory",
                      }));
  EXPECT_EQ(r.refused, 6u);
  EXPECT_EQ(Listing(target_), (std::map<std::string, std::string>{{"fine", "file:fine"}}));
  ExpectNothingOutside(before);
  EXPECT_EQ(ReadAll(outside_ / "passwd"), "root:x:0:0:root:/root:/bin/sh\n");
}

TEST_F(HostileRestoreTest, SymlinksPlantedInTheTargetAreNeverFollowed) {
  WriteAll(outside_ / "victim", "precious");
  fs::create_directories(target_);
  fs::create_symlink(outside_, target_ / "d");             // where a directory goes
  fs::create_symlink(outside_ / "victim", target_ / "f");  // where a file goes
  fs::create_symlink(outside_, target_ / "a");             // above a deeper path
  // In a directory that exists already (not made by the restore), too.
  fs::create_directories(target_ / "e");
  fs::create_symlink(outside_ / "victim", target_ / "e" / "g");
  const auto before = OutsideBefore();
  const RestoreResult r = Restore({
      Dir("a", {Dir("b", {File("c", "deep")})}),
      Dir("d", {File("passwd", "pwned::0:0\n")}),
      Dir("e", {File("g", "in e")}),
      File("f", "new bytes"),
  });
  const std::string not_dir =
      ": exists in the target and is not a directory (a symlink is never followed)";
  EXPECT_EQ(r.errors, (std::vector<std::string>{"/a" + not_dir, "/d" + not_dir}));
  EXPECT_EQ(r.refused, 0u);
  // The symlink where a file goes is replaced (unlinkat never follows), not written through.
  EXPECT_EQ(Listing(target_), (std::map<std::string, std::string>{
                                  {"a", "link:" + outside_.string()},
                                  {"d", "link:" + outside_.string()},
                                  {"e", "dir"},
                                  {"e/g", "file:in e"},
                                  {"f", "file:new bytes"},
                              }));
  ExpectNothingOutside(before);
  EXPECT_EQ(ReadAll(outside_ / "victim"), "precious");
}

TEST_F(HostileRestoreTest, AHardLinkGroupNeverReachesThroughAPlantedSymlink) {
  fs::create_directories(target_);
  fs::create_symlink(outside_, target_ / "d");
  const auto before = OutsideBefore();
  v1::Node a = File("passwd", "linked");  // same name as the file outside
  a.set_links(2);
  a.set_device(1);
  a.set_inode(7);
  v1::Node b = File("b", "linked");
  b.set_links(2);
  b.set_device(1);
  b.set_inode(7);
  const RestoreResult r = Restore({Dir("d", {a}), Dir("e", {b})});
  EXPECT_EQ(r.errors,
            (std::vector<std::string>{
                "/d: exists in the target and is not a directory (a symlink is never followed)"}));
  EXPECT_EQ(Listing(target_), (std::map<std::string, std::string>{
                                  {"d", "link:" + outside_.string()},
                                  {"e", "dir"},
                                  {"e/b", "file:linked"},
                              }));
  struct stat st;
  ASSERT_EQ(::lstat((target_ / "e/b").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 1u);  // not linked to anything outside
  ASSERT_EQ(::lstat((outside_ / "passwd").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 1u);
  ExpectNothingOutside(before);
}

TEST_F(HostileRestoreTest, AHardLinkGroupInsideTheTargetIsRestoredAsLinks) {
  v1::Node a = File("a", "linked");
  a.set_links(2);
  a.set_inode(9);
  v1::Node b = a;
  b.set_name("b");
  const RestoreResult r = Restore({Dir("x", {a}), Dir("y", {b})});
  EXPECT_TRUE(r.errors.empty()) << r.errors[0];
  struct stat sa, sb;
  ASSERT_EQ(::lstat((target_ / "x/a").c_str(), &sa), 0);
  ASSERT_EQ(::lstat((target_ / "y/b").c_str(), &sb), 0);
  EXPECT_EQ(sa.st_ino, sb.st_ino);
  EXPECT_EQ(sa.st_nlink, 2u);
}

TEST_F(HostileRestoreTest, DeviceNodesAreRefusedUnlessAskedForAndRoot) {
  v1::Node dev = Named("sda", v1::Node::BLOCK_DEVICE);
  dev.set_mode(0666);
  dev.set_rdev(makedev(8, 0));
  v1::Node null = Named("null", v1::Node::CHAR_DEVICE);
  null.set_mode(0666);
  null.set_rdev(makedev(1, 3));
  const RestoreResult r = Restore({dev, null, File("ok", "ok")});
  EXPECT_EQ(r.errors,
            (std::vector<std::string>{
                "/sda: refused: device node (restore with --devices, as root, to create it)",
                "/null: refused: device node (restore with --devices, as root, to create it)"}));
  EXPECT_EQ(r.refused, 2u);
  EXPECT_EQ(Listing(target_), (std::map<std::string, std::string>{{"ok", "file:ok"}}));

  fs::remove_all(target_);
  RestoreOptions with_devices;
  with_devices.devices = true;
  const RestoreResult r2 = Restore({null}, with_devices);
  struct stat st;
  if (::geteuid() != 0) {
    EXPECT_EQ(r2.errors, (std::vector<std::string>{"/null: refused: device node needs root"}));
    EXPECT_NE(::lstat((target_ / "null").c_str(), &st), 0);
    return;
  }
  EXPECT_TRUE(r2.errors.empty()) << r2.errors[0];
  ASSERT_EQ(::lstat((target_ / "null").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(1, 3));
  EXPECT_EQ(st.st_mode & 07777, 0666u);
}

TEST_F(HostileRestoreTest, ATreeThatContainsItselfIsRefused) {
  LyingRepository liar(repo_.get());
  // Under fingerprint `self`, the liar serves a tree whose directory `loop` is `self` again.
  const Fingerprint self = Sha256("not really the hash of the tree");
  v1::Node loop = Named("loop", v1::Node::DIR);
  loop.set_subtree(self.ToBytes());
  v1::Tree t;
  *t.add_nodes() = File("inner", "inner");
  *t.add_nodes() = loop;
  liar.overrides[self] = t.SerializeAsString();
  v1::Node top = Named("top", v1::Node::DIR);
  top.set_subtree(self.ToBytes());
  const RestoreResult r = Restore({top}, {}, &liar);
  EXPECT_EQ(r.errors, (std::vector<std::string>{
                          "/top/loop: refused: directory refers to a tree that contains it "
                          "(a cycle)"}));
  EXPECT_EQ(Listing(target_), (std::map<std::string, std::string>{
                                  {"top", "dir"},
                                  {"top/inner", "file:inner"},
                                  {"top/loop", "dir"},
                              }));
}

TEST_F(HostileRestoreTest, TreesNestedDeeperThan512AreCutOff) {
  // 600 trees, each holding the next as `d`, stored in one batch (one sync, not 600).
  std::vector<EncodedChunk> trees;
  v1::Tree t;
  *t.add_nodes() = File("bottom", "never restored");
  for (int i = 0; i < 600; ++i) {
    const std::string bytes = t.SerializeAsString();
    trees.push_back(EncodedChunk{Sha256(bytes), Codec::kNone, bytes.size(), bytes, {}});
    t.Clear();
    *t.add_nodes() = Named("d", v1::Node::DIR);
    t.mutable_nodes(0)->set_subtree(trees.back().fingerprint.ToBytes());
  }
  ASSERT_TRUE(repo_->PutChunks(std::move(trees)).ok());
  *t.add_nodes() = File("top", "restored");
  const RestoreResult r = Restore({t.nodes().begin(), t.nodes().end()});
  std::string path;
  for (int i = 0; i < 513; ++i) path += "/d";
  EXPECT_EQ(r.errors, (std::vector<std::string>{path + ": refused: trees nested deeper than 512"}));
  EXPECT_EQ(r.files, 1u);
  EXPECT_EQ(ReadAll(target_ / "top"), "restored");
}

TEST_F(HostileRestoreTest, SizesThatDoNotMatchTheChunksFailTheFileAndLeaveNothing) {
  v1::Node huge = File("huge", "ten bytes!");
  huge.set_size(uint64_t{1} << 62);
  v1::Node small = File("small", "ten bytes!");
  small.set_size(5);
  v1::Node many = File("many", "ten bytes!");
  for (int i = 0; i < 100000; ++i) many.add_chunks(many.chunks(0));  // 1 MB claimed as 10
  many.set_size(10);
  const RestoreResult r = Restore({huge, many, small, File("ok", "ok")});
  EXPECT_EQ(r.errors, (std::vector<std::string>{
                          "/huge: chunks hold 10 bytes, the tree says 4611686018427387904",
                          "/many: chunks hold over 20 bytes, the tree says 10",
                          "/small: chunks hold over 10 bytes, the tree says 5",
                      }));
  EXPECT_EQ(Listing(target_), (std::map<std::string, std::string>{{"ok", "file:ok"}}));
}

// The CLI on a committed hostile snapshot: one stderr line per refused entry, exit code 1, the
// rest restored.
TEST_F(HostileRestoreTest, CliNamesEachRefusedEntryAndExits1) {
  const char* bin = std::getenv("WHORL_BIN");
  ASSERT_NE(bin, nullptr) << "set WHORL_BIN to the whorl binary (ctest does)";
  const auto before = OutsideBefore();
  const std::string root = PutTree({
      Dir("..", {File("pwned", "x")}),
      Symlink("evil", outside_.string()),
      Dir("evil", {File("passwd", "pwned::0:0\n")}),
      File("ok", "restored"),
  });
  auto id = repo_->CommitSnapshot(Snap(root));
  ASSERT_TRUE(id.ok()) << id.status();
  repo_.reset();  // releases the repository lock for the child
  const fs::path err = tmp_ / "stderr", out = tmp_ / "stdout";
  const std::string cmd = std::string(bin) + " restore --repo " + (tmp_ / "repo").string() + " " +
                          id->ToHex() + " --target " + target_.string() + " >" + out.string() +
                          " 2>" + err.string();
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_EQ(ReadAll(err),
            "whorl: /..: refused: tree entry has an unsafe name '..'\n"
            "whorl: /evil: refused: 2 entries of this name in one directory\n"
            "whorl: /evil: refused: 2 entries of this name in one directory\n");
  EXPECT_EQ(ReadAll(out), "");
  fs::remove(err);
  fs::remove(out);
  EXPECT_EQ(Listing(target_), (std::map<std::string, std::string>{{"ok", "file:restored"}}));
  ExpectNothingOutside(before);
}

}  // namespace
}  // namespace whorl::agent

namespace whorl::agent {
namespace {

// Chunk lists (repository version 4) that no writer makes: each fails its own file only, which
// is left out, with the reason.
TEST_F(HostileRestoreTest, ChunkListsThatDoNotHoldFingerprintsOrTheSizeFailTheirFileOnly) {
  const std::string a = Put("aaaa"), b = Put("bbbbbb");
  auto listed = [&](const std::string& name, const std::string& list, uint64_t size) {
    v1::Node n = Named(name, v1::Node::FILE);
    n.add_chunk_lists(Put(list));
    n.set_size(size);
    return n;
  };
  const std::string torn = a + b.substr(0, 31);
  const RestoreResult r = Restore({
      listed("ragged", torn, 10),
      listed("short", a + b, 4),
      listed("long", a, 10),
      listed("good", a + b + a, 14),
      File("plain", "plain"),
  });
  EXPECT_EQ(r.errors, (std::vector<std::string>{
                          "/ragged: chunk list " + Sha256(torn).ToHex() +
                              ": chunk list of 63 bytes is not 1 to 16384 fingerprints of 32 bytes",
                          "/short: chunks hold over 10 bytes, the tree says 4",
                          "/long: chunks hold 4 bytes, the tree says 10",
                      }));
  EXPECT_EQ(Listing(target_), (std::map<std::string, std::string>{{"good", "file:aaaabbbbbbaaaa"},
                                                                  {"plain", "file:plain"}}));
}

TEST_F(HostileRestoreTest, AFileWithBothChunksAndChunkListsIsRefused) {
  v1::Node both = File("both", "inline");
  both.add_chunk_lists(Put(Sha256("x").ToBytes()));
  const RestoreResult r = Restore({both, File("ok", "ok")});
  EXPECT_EQ(
      r.errors,
      (std::vector<std::string>{"/both: refused: file 'both' has both chunks and chunk lists"}));
  EXPECT_EQ(Listing(target_), (std::map<std::string, std::string>{{"ok", "file:ok"}}));
}

}  // namespace
}  // namespace whorl::agent
