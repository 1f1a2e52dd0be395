// Helpers shared by the agent's tests.
#ifndef WHORL_AGENT_TEST_UTIL_H_
#define WHORL_AGENT_TEST_UTIL_H_

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "agent/repository.h"

namespace whorl::agent::testing {

// The whole file (empty if it cannot be read).
inline std::string ReadAll(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A fresh directory /tmp/PREFIX-XXXXXX; the caller removes it.
inline std::filesystem::path MakeTempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) std::abort();  // tests cannot run without it
  return tmpl;
}

// Creates an embedded repository in `dir` with the default chunk sizes and `compression`
// ("zstd:3", "none"), and opens it; null (and a test failure) if that fails.
std::unique_ptr<Repository> NewEmbeddedRepository(const std::filesystem::path& dir,
                                                  const std::string& compression);

}  // namespace whorl::agent::testing

#endif  // WHORL_AGENT_TEST_UTIL_H_
