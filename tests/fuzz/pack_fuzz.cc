// A pack file of hostile bytes, as the chunk store meets it after a crash or disk damage:
// scanned (ScanPack), recovered (RecoverNewestPack: cut after the last good record), and read
// record by record (PackReader::ReadRecord, then Decode). The first bytes are also decoded as
// a record header, pack header and locator value.
// Properties: never crashes; scanned records are contiguous from the pack header, re-encode to
// exactly their bytes and read back through PackReader; recovery leaves exactly the valid
// prefix, which rescans whole; accepted locator values re-encode to the same 21 bytes.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "chunk-store/pack.h"
#include "common/bundle.h"
#include "tests/fuzz/fuzz_util.h"

namespace cs = whorl::chunkstore;

namespace {

constexpr uint64_t kMaxChunk = 1 << 20;  // the scan's size cap (the store's default is 64 MiB)

void WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  FUZZ_CHECK(out.good());
}

// Checks a scan of `in` (the file's bytes) and returns its records' data.
void CheckScan(const cs::PackScan& scan, std::string_view in, const std::string& packs_dir) {
  FUZZ_CHECK(scan.file_size == in.size());
  FUZZ_CHECK(scan.valid_end >= cs::kPackHeaderSize && scan.valid_end <= scan.file_size);
  uint64_t next = cs::kPackHeaderSize;
  absl::StatusOr<std::unique_ptr<cs::PackReader>> reader = cs::PackReader::Open(packs_dir, 1);
  FUZZ_CHECK(reader.ok());
  for (const cs::ScannedRecord& r : scan.records) {
    FUZZ_CHECK(r.offset == next);
    const uint64_t len = cs::kRecordHeaderSize + r.header.stored_size;
    FUZZ_CHECK(r.offset + len <= scan.valid_end);
    const std::string_view bytes = in.substr(r.offset, len);
    const std::string_view data = bytes.substr(cs::kRecordHeaderSize);
    FUZZ_CHECK(cs::EncodeRecord(r.header, data) == bytes);
    std::string read;
    absl::StatusOr<cs::RecordHeader> h =
        (*reader)->ReadRecord(r.offset, r.header.stored_size, &read);
    FUZZ_CHECK(h.ok() && read == data && h->fingerprint == r.header.fingerprint);
    absl::StatusOr<std::string> plain = whorl::Decode(r.header.codec, read, r.header.plain_size);
    FUZZ_CHECK(plain.ok() ? plain->size() == r.header.plain_size
                          : plain.status().code() == absl::StatusCode::kDataLoss);
    next = r.offset + len;
  }
  FUZZ_CHECK(next == scan.valid_end);
  // What follows the valid prefix is not a whole good record.
  if (scan.file_size - next >= cs::kRecordHeaderSize) {
    absl::StatusOr<cs::RecordHeader> h =
        cs::DecodeRecordHeader(in.substr(next, cs::kRecordHeaderSize), kMaxChunk);
    if (h.ok() && scan.file_size - next - cs::kRecordHeaderSize >= h->stored_size) {
      FUZZ_CHECK(!cs::CheckRecordCrc(in.substr(next, cs::kRecordHeaderSize),
                                     in.substr(next + cs::kRecordHeaderSize, h->stored_size))
                      .ok());
    }
  }
}

void CheckPrefixDecoders(std::string_view in) {
  for (size_t len : {cs::kLocatorValueSize, cs::kBundledLocatorValueSize}) {
    if (in.size() < len) break;
    const std::string_view v = in.substr(0, len);
    absl::StatusOr<cs::ChunkLocation> loc = cs::DecodeLocatorValue(v);
    if (loc.ok()) {
      FUZZ_CHECK(loc->bundled == (len == cs::kBundledLocatorValueSize));
      FUZZ_CHECK(cs::EncodeLocatorValue(*loc) == v);
    } else {
      FUZZ_CHECK(loc.status().code() == absl::StatusCode::kDataLoss);
    }
  }
  FUZZ_CHECK(
      cs::DecodeLocatorValue(in.substr(0, std::min<size_t>(in.size(), 20))).status().code() ==
      absl::StatusCode::kDataLoss);
  if (in.size() >= cs::kRecordHeaderSize) {
    absl::StatusOr<cs::RecordHeader> h =
        cs::DecodeRecordHeader(in.substr(0, cs::kRecordHeaderSize), UINT32_MAX);
    if (h.ok() && h->stored_size <= kMaxChunk) {
      // Same header fields back, apart from the CRC (which covers the data).
      const std::string again = cs::EncodeRecordHeader(*h, std::string(h->stored_size, '\0'));
      FUZZ_CHECK(again.substr(0, cs::kRecordCrcOffset) == in.substr(0, cs::kRecordCrcOffset));
    }
  }
  const absl::StatusOr<uint32_t> ph =
      cs::CheckPackHeader(in.substr(0, std::min(in.size(), cs::kPackHeaderSize)));
  FUZZ_CHECK(ph.ok() ? in.substr(0, cs::kPackHeaderSize) == cs::EncodePackHeader(*ph)
                     : ph.status().code() == absl::StatusCode::kDataLoss);
  // Bundle tables: refused with DATA_LOSS, or parsed into members that tile the input exactly.
  const absl::StatusOr<std::vector<whorl::BundleSlice>> bundle = whorl::ParseBundle(in);
  if (bundle.ok()) {
    uint64_t end = whorl::BundleTableSize(bundle->size());
    for (const whorl::BundleSlice& m : *bundle) {
      FUZZ_CHECK(m.offset == end);
      end += m.member.size;
    }
    FUZZ_CHECK(end == in.size());
  } else {
    FUZZ_CHECK(bundle.status().code() == absl::StatusCode::kDataLoss);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = whorl::fuzz::AsView(data, size);
  CheckPrefixDecoders(in);

  static const std::string packs_dir = [] {
    std::string d = whorl::fuzz::ScratchDir() + "/packs";
    std::filesystem::create_directories(d);
    return d;
  }();
  const std::string path = cs::PackPath(packs_dir, 1);
  WriteFile(path, in);

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  FUZZ_CHECK(fd >= 0);
  absl::StatusOr<cs::PackScan> scan = cs::ScanPack(fd, path, kMaxChunk);
  ::close(fd);
  if (scan.ok()) {
    CheckScan(*scan, in, packs_dir);
  } else {
    FUZZ_CHECK(scan.status().code() == absl::StatusCode::kDataLoss);
  }

  absl::StatusOr<cs::PackScan> recovered = cs::RecoverNewestPack(path, kMaxChunk);
  FUZZ_CHECK(recovered.ok() == (scan.ok() || size < cs::kPackHeaderSize));
  if (!recovered.ok()) {
    FUZZ_CHECK(recovered.status().code() == absl::StatusCode::kDataLoss);
    FUZZ_CHECK(std::filesystem::file_size(path) == size);  // a bad header is left alone
    return 0;
  }
  FUZZ_CHECK(std::filesystem::file_size(path) == recovered->valid_end);
  if (scan.ok()) FUZZ_CHECK(recovered->records.size() == scan->records.size());
  // The recovered file scans whole.
  const int fd2 = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  FUZZ_CHECK(fd2 >= 0);
  absl::StatusOr<cs::PackScan> rescan = cs::ScanPack(fd2, path, kMaxChunk);
  ::close(fd2);
  FUZZ_CHECK(rescan.ok() && rescan->valid_end == rescan->file_size &&
             rescan->records.size() == recovered->records.size());
  return 0;
}
