// Helpers shared by the chunk-store tests.
#ifndef WHORL_CHUNK_STORE_TEST_UTIL_H_
#define WHORL_CHUNK_STORE_TEST_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

namespace whorl::chunkstore::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents at the end.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/chunk_store.XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();  // tests cannot run without it
    path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// `n` pseudo-random bytes, the same for the same seed.
inline std::string Bytes(uint64_t seed, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    out.push_back(static_cast<char>(seed >> 56));
  }
  return out;
}

// Every file under `dir` (path relative to it) with its size: what a test compares to show
// that something wrote nothing.
inline std::map<std::string, uintmax_t> FilesAndSizes(const std::string& dir) {
  std::map<std::string, uintmax_t> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out[std::filesystem::relative(e.path(), dir)] = e.file_size();
  }
  return out;
}

}  // namespace whorl::chunkstore::testing

#endif  // WHORL_CHUNK_STORE_TEST_UTIL_H_
