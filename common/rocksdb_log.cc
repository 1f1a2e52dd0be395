#include "common/rocksdb_log.h"

#include <cstdarg>
#include <cstdio>
#include <string>
#include <utility>

namespace whorl {
namespace {

class SinkLogger : public rocksdb::Logger {
 public:
  SinkLogger(RocksLogSink sink, rocksdb::InfoLogLevel min_level)
      : rocksdb::Logger(min_level), sink_(std::move(sink)) {}

  // RocksDB calls this overload only for messages at or above GetInfoLogLevel(); the header lines
  // (LogHeader) come through it too, at INFO.
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (!sink_ || level < GetInfoLogLevel()) return;
    char stack[512];
    va_list copy;
    va_copy(copy, ap);
    const int n = std::vsnprintf(stack, sizeof(stack), format, copy);
    va_end(copy);
    if (n < 0) return;
    if (static_cast<size_t>(n) < sizeof(stack)) {
      sink_(level, std::string_view(stack, static_cast<size_t>(n)));
      return;
    }
    std::string line(static_cast<size_t>(n) + 1, '\0');
    std::vsnprintf(line.data(), line.size(), format, ap);
    line.resize(static_cast<size_t>(n));
    sink_(level, line);
  }
  // The level-less overload (old callers): INFO.
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }

 private:
  RocksLogSink sink_;
};

}  // namespace

std::shared_ptr<rocksdb::Logger> NewRocksLogger(RocksLogSink sink,
                                                rocksdb::InfoLogLevel min_level) {
  return std::make_shared<SinkLogger>(std::move(sink), min_level);
}

}  // namespace whorl
