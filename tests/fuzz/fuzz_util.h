// Helpers shared by the fuzz targets: a property check that aborts (libFuzzer saves the input
// as a crash), and a scratch directory removed at exit.
#ifndef WHORL_TESTS_FUZZ_FUZZ_UTIL_H_
#define WHORL_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

// Aborts with the failed condition when a decoder breaks one of its promises.
#define FUZZ_CHECK(cond)                                                               \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

namespace whorl::fuzz {

inline std::string_view AsView(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

// A fresh directory under $TMPDIR (or /tmp), deleted when the process exits normally.
inline const std::string& ScratchDir() {
  static const std::string* dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/whorl-fuzz-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();  // nothing to fuzz without it
    auto* d = new std::string(tmpl);
    std::atexit([] { std::filesystem::remove_all(ScratchDir()); });
    return d;
  }();
  return *dir;
}

}  // namespace whorl::fuzz

#endif  // WHORL_TESTS_FUZZ_FUZZ_UTIL_H_
