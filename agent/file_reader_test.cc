#include "agent/file_reader.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace whorl::agent {
namespace {

// Small chunks and blocks, so that a few hundred KiB cross many block boundaries.
ChunkerParams Params() {
  std::mt19937_64 rng(7);
  ChunkerParams p;
  p.polynomial = DrawIrreduciblePolynomial([&] { return rng(); });
  p.min_size = 1024;
  p.avg_size = 4096;
  p.max_size = 16384;
  return p;
}

// The chunk lengths of `data` cut in memory, all at once: what reading must reproduce.
std::vector<size_t> Reference(const Chunker& chunker, const std::string& data) {
  std::vector<size_t> out;
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  for (size_t off = 0; off < data.size();) {
    const size_t len = chunker.NextChunk(p + off, data.size() - off, true);
    out.push_back(len);
    off += len;
  }
  return out;
}

class FileChunkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Under the build tree's disk, not /dev/shm: tmpfs refuses O_DIRECT.
    char tmpl[] = "/tmp/whorl-file-reader-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `data` to a file and reads it back through `fc`: chunk lengths, bytes seen, reads.
  void ReadBack(FileChunker* fc, const std::string& data, std::vector<size_t>* lengths,
                std::string* seen, uint64_t* read_total) {
    const std::string path = dir_ + "/f";
    {
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
      ::close(fd);
    }
    const int fd = ::open(path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    absl::StatusOr<uint64_t> n = fc->Chunk(
        fd, path,
        [&](std::string_view chunk) {
          lengths->push_back(chunk.size());
          seen->append(chunk);
          return absl::OkStatus();
        },
        [&](uint64_t r) { *read_total += r; });
    ::close(fd);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(*n, data.size());
  }

  std::string dir_;
};

TEST_F(FileChunkerTest, SameCutsAsInMemoryForEverySizeAndPath) {
  const Chunker chunker(Params());
  std::mt19937_64 rng(11);
  // direct_min_size 0: every file takes the O_DIRECT read-ahead path (pipelined, with a thread
  // that calls on_chunk, or not); huge: the page cache.
  for (const auto& [direct_min, pipeline_min] :
       {std::pair{uint64_t{0}, ~uint64_t{0}}, std::pair{uint64_t{0}, uint64_t{0}},
        std::pair{~uint64_t{0}, uint64_t{0}}}) {
    ChunkFileOptions options;
    options.direct_min_size = direct_min;
    options.pipeline_min_size = pipeline_min;
    options.block_size = 16384;  // == max_size: tails move at every block
    options.direct_block_size = 20480;
    options.pipelined_block_size = 24576;
    FileChunker fc(chunker, options);  // reused across files, as a worker does
    for (size_t size :
         {0, 1, 1023, 1024, 4095, 4096, 16383, 16384, 16385, 20480, 40961, 300000, 1 << 20}) {
      std::string data(size, '\0');
      for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>(rng());
      if (size > 100000) std::fill(data.begin() + 50000, data.begin() + 90000, '\0');  // zeros
      std::vector<size_t> lengths;
      std::string seen;
      uint64_t read_total = 0;
      ReadBack(&fc, data, &lengths, &seen, &read_total);
      EXPECT_EQ(lengths, Reference(chunker, data))
          << "size " << size << " direct_min " << direct_min << " pipeline_min " << pipeline_min;
      EXPECT_EQ(seen, data) << "size " << size;
      EXPECT_EQ(read_total, size);
    }
  }
}

// A pipelined file's chunks are handed to on_chunk on one other thread, in order; any other file's
// on the caller's thread.
TEST_F(FileChunkerTest, APipelinedFileCallsOnChunkOnAThreadOfItsOwn) {
  const Chunker chunker(Params());
  std::string data(3 << 20, '\0');
  std::mt19937_64 rng(5);
  for (char& c : data) c = static_cast<char>(rng());
  const std::string path = dir_ + "/f";
  {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    ::close(fd);
  }
  for (uint64_t pipeline_min : {uint64_t{0}, uint64_t{3 << 20}, uint64_t{(3 << 20) + 1}}) {
    ChunkFileOptions options;
    options.direct_min_size = 0;
    options.pipeline_min_size = pipeline_min;
    FileChunker fc(chunker, options);
    const int fd = ::open(path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    std::set<std::thread::id> threads;
    std::vector<size_t> lengths;
    std::string seen;
    absl::StatusOr<uint64_t> n = fc.Chunk(
        fd, path,
        [&](std::string_view chunk) {
          threads.insert(std::this_thread::get_id());
          lengths.push_back(chunk.size());
          seen.append(chunk);
          return absl::OkStatus();
        },
        [](uint64_t) {});
    ::close(fd);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(seen, data);
    EXPECT_EQ(lengths, Reference(chunker, data));
    ASSERT_EQ(threads.size(), 1u);
    EXPECT_EQ(*threads.begin() == std::this_thread::get_id(), pipeline_min > data.size())
        << "pipeline_min " << pipeline_min;
  }
}

TEST_F(FileChunkerTest, AnErrorOfTheCallbackStopsTheRead) {
  const Chunker chunker(Params());
  for (const auto& [direct_min, pipeline_min] :
       {std::pair{uint64_t{0}, ~uint64_t{0}}, std::pair{uint64_t{0}, uint64_t{0}},
        std::pair{~uint64_t{0}, uint64_t{0}}}) {
    ChunkFileOptions options;
    options.direct_min_size = direct_min;
    options.pipeline_min_size = pipeline_min;
    FileChunker fc(chunker, options);
    const std::string path = dir_ + "/f";
    {
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      ASSERT_GE(fd, 0);
      const std::string data(5 << 20, 'x');
      ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
      ::close(fd);
    }
    const int fd = ::open(path.c_str(), O_RDONLY);
    int calls = 0;
    absl::StatusOr<uint64_t> n = fc.Chunk(
        fd, path,
        [&](std::string_view) {
          return ++calls == 3 ? absl::UnavailableError("store down") : absl::OkStatus();
        },
        [](uint64_t) {});
    ::close(fd);
    EXPECT_EQ(n.status(), absl::UnavailableError("store down"));
    EXPECT_EQ(calls, 3);
  }
}

// The size the walk's stat gave only says where the end is expected (the reader stops there and
// reads once more to see it): a file longer or shorter than it said, or one whose stat says 0
// as /proc's files do, is read whole, with the same cuts.
TEST_F(FileChunkerTest, AFileIsReadToItsEndWhateverSizeItsStatGave) {
  const Chunker chunker(Params());
  ChunkFileOptions options;
  options.direct_min_size = ~uint64_t{0};  // the page cache, where the known size is used
  options.block_size = 16384;
  FileChunker fc(chunker, options);
  std::mt19937_64 rng(5);
  const std::string path = dir_ + "/g";
  for (size_t size : {1, 5000, 16384, 16385, 70000}) {
    std::string data(size, '\0');
    for (char& c : data) c = static_cast<char>(rng());
    {
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(::write(fd, data.data(), size), static_cast<ssize_t>(size));
      ::close(fd);
    }
    for (int64_t said : {int64_t{0}, static_cast<int64_t>(size / 2), static_cast<int64_t>(size),
                         static_cast<int64_t>(size * 2), int64_t{-1}}) {
      const int fd = ::open(path.c_str(), O_RDONLY);
      ASSERT_GE(fd, 0);
      std::vector<size_t> lengths;
      std::string seen;
      absl::StatusOr<uint64_t> n = fc.Chunk(
          fd, path,
          [&](std::string_view chunk) {
            lengths.push_back(chunk.size());
            seen.append(chunk);
            return absl::OkStatus();
          },
          [](uint64_t) {}, said);
      ::close(fd);
      ASSERT_TRUE(n.ok()) << n.status();
      EXPECT_EQ(*n, size) << "size " << size << " said " << said;
      EXPECT_EQ(seen, data) << "size " << size << " said " << said;
      EXPECT_EQ(lengths, Reference(chunker, data)) << "size " << size << " said " << said;
    }
  }
}

TEST_F(FileChunkerTest, AReadErrorNamesThePath) {
  const Chunker chunker(Params());
  FileChunker fc(chunker, ChunkFileOptions{});
  const int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY);  // read(2) on it: EISDIR
  ASSERT_GE(fd, 0);
  absl::StatusOr<uint64_t> n = fc.Chunk(
      fd, dir_, [](std::string_view) { return absl::OkStatus(); }, [](uint64_t) {});
  ::close(fd);
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.status().message().find("read " + dir_), std::string::npos) << n.status();
}

}  // namespace
}  // namespace whorl::agent
