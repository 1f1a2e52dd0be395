#include "agent/walk_ahead.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

namespace whorl::agent {
namespace {

// Waits until the walk has read `want` directories or 10 s passed; then waits 100 ms more,
// so that a walk reading too much is seen too.
size_t ReadCount(const WalkAhead& w, size_t want) {
  for (int i = 0; i < 1000 && w.dirs_read() < want; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return w.dirs_read();
}

TEST(WalkAheadTest, ReadsEveryDirectoryOnceButExcludedOnes) {
  char tmpl[] = "/tmp/whorl-walk-ahead-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  namespace fs = std::filesystem;
  // 1 root + 10 dirs with 3 subdirs each = 41 directories, plus an excluded one with 5 inside.
  for (int i = 0; i < 10; ++i) {
    for (int j = 0; j < 3; ++j) {
      fs::create_directories(root + "/d" + std::to_string(i) + "/s" + std::to_string(j));
      std::ofstream(root + "/d" + std::to_string(i) + "/f" + std::to_string(j)) << "x";
    }
  }
  for (int j = 0; j < 5; ++j) fs::create_directories(root + "/skip/s" + std::to_string(j));
  fs::create_symlink(root + "/d0", root + "/link");  // not followed
  {
    WalkAhead w({root}, [](const std::string&, const std::string& name) { return name == "skip"; });
    EXPECT_EQ(ReadCount(w, 41), 41u);
    // Each listing is handed over once, in name order with lstat results, as ReadListing reads it.
    std::optional<std::vector<DirEntry>> d1 = w.Take(root + "/d1");
    ASSERT_TRUE(d1.has_value());
    std::vector<std::string> names;
    for (const DirEntry& e : *d1) {
      names.push_back(e.name);
      EXPECT_EQ(e.err, 0);
      EXPECT_EQ(S_ISDIR(e.st.st_mode), e.name[0] == 's') << e.name;
    }
    EXPECT_EQ(names, (std::vector<std::string>{"f0", "f1", "f2", "s0", "s1", "s2"}));
    std::vector<DirEntry> direct;
    ASSERT_EQ(ReadListing(root + "/d1", &direct), 0);
    ASSERT_EQ(direct.size(), d1->size());
    for (size_t i = 0; i < direct.size(); ++i) EXPECT_EQ(direct[i].st.st_ino, (*d1)[i].st.st_ino);
    EXPECT_FALSE(w.Take(root + "/d1").has_value());
    EXPECT_FALSE(w.Take(root + "/skip").has_value());  // excluded: never read
    // A symlink is not followed (O_DIRECTORY with O_NOFOLLOW: ENOTDIR on Linux).
    EXPECT_EQ(ReadListing(root + "/link", &direct), ENOTDIR);
  }
  {
    // The walk may get to a directory before the threads: it claims it, reads it itself and
    // hands it back, and the threads go on below it without reading it again. Either way
    // every directory is read exactly once, by one side or the other.
    WalkAhead w({root}, [](const std::string&, const std::string& name) { return name == "skip"; });
    size_t read_here = 0;
    if (!w.Take(root).has_value()) {
      std::vector<DirEntry> mine;
      unsigned long dev = 0;
      ASSERT_EQ(ReadListing(root, &mine, &dev), 0);
      struct stat st;
      ASSERT_EQ(::stat(root.c_str(), &st), 0);
      EXPECT_EQ(dev, static_cast<unsigned long>(st.st_dev));
      w.Walked(root, dev, mine);
      read_here = 1;
    }
    EXPECT_EQ(ReadCount(w, 41 - read_here) + read_here, 41u);
    EXPECT_TRUE(w.Take(root + "/d9/s2").has_value());
    EXPECT_FALSE(w.Take(root + "/skip/s0").has_value());
  }
  {
    WalkAhead w({root + "/d1", root + "/d2/f0", root + "/missing"},
                [](const std::string&, const std::string&) { return false; });
    EXPECT_EQ(ReadCount(w, 4), 4u);  // d1 and its 3 subdirs; a file or a missing root: nothing
  }
  fs::remove_all(root);
}

// More entries than the threads may keep: the listings past the cap are dropped and read again
// by the walk, but no directory is read twice by the threads (the walk once handed a dropped
// directory's subdirectories back to be read a second time, and theirs, and so on).
TEST(WalkAheadTest, PastTheCapNoDirectoryIsReadTwiceByTheThreads) {
  char tmpl[] = "/tmp/whorl-walk-ahead-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  namespace fs = std::filesystem;
  // 18 dirs of 460 files and 2 subdirs each (55 dirs, 8352 entries > the cap of 8192).
  constexpr int kDirs = 18, kFiles = 460;
  constexpr size_t kCap = 1 << 13;
  static_assert(kDirs * (kFiles + 2) > static_cast<int>(kCap));
  std::ofstream(root + "/x") << "x";
  for (int i = 0; i < kDirs; ++i) {
    const std::string d = root + "/d" + std::to_string(100 + i);
    fs::create_directories(d + "/a");
    fs::create_directories(d + "/b");
    // Hard links of one file: creating 8k inodes takes seconds on some disks, links do not.
    for (int j = 0; j < kFiles; ++j)
      fs::create_hard_link(root + "/x", d + "/f" + std::to_string(j));
  }
  const size_t total = 1 + 3 * kDirs;  // the root, each d and its a and b
  WalkAhead w(
      {root}, [](const std::string&, const std::string&) { return false; },
      WalkAhead::kDefaultThreads, kCap);
  // Let the threads read everything (past the cap), then walk as the backup does.
  EXPECT_EQ(ReadCount(w, total), total);
  size_t read_here = 0;
  std::vector<std::string> todo = {root};
  while (!todo.empty()) {
    const std::string dir = todo.back();
    todo.pop_back();
    std::optional<std::vector<DirEntry>> entries = w.Take(dir);
    if (!entries.has_value()) {
      entries.emplace();
      unsigned long dev = 0;
      ASSERT_EQ(ReadListing(dir, &*entries, &dev), 0);
      w.Walked(dir, dev, *entries);
      ++read_here;
    }
    for (auto it = entries->rbegin(); it != entries->rend(); ++it) {
      if (S_ISDIR(it->st.st_mode)) todo.push_back(dir + "/" + it->name);
    }
  }
  EXPECT_GT(read_here, 0u);  // some listings were dropped
  // Anything handed back twice would be read by now.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(w.dirs_read(), total);
  fs::remove_all(root);
}

}  // namespace
}  // namespace whorl::agent
