#include "chunk-store/pack.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "chunk-store/pack_format.h"
#include "common/bundle.h"
#include "common/crc32c.h"
#include "common/file_util.h"
#include "common/kill_point.h"
#include "common/status_macros.h"

namespace whorl::chunkstore {
namespace {

void EncodeFixed32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
void EncodeFixed64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
uint64_t DecodeFixed(const char* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
uint32_t DecodeFixed32(const char* p) { return static_cast<uint32_t>(DecodeFixed(p, 4)); }

// Closes a file descriptor when it goes out of scope.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() { ::close(fd_); }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  const int fd_;
};

absl::StatusOr<uint64_t> FileSize(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus("stat", path, errno);
  return static_cast<uint64_t>(st.st_size);
}

// Reads and checks the pack header of a file of `file_size` bytes; returns its version.
absl::StatusOr<uint32_t> ReadPackHeader(int fd, const std::string& path, uint64_t file_size) {
  if (file_size < kPackHeaderSize) {
    return absl::DataLossError(
        absl::StrCat(path, ": pack header incomplete (", file_size, " bytes)"));
  }
  std::string header;
  WHORL_RETURN_IF_ERROR(PreadExact(fd, 0, kPackHeaderSize, &header, path));
  absl::StatusOr<uint32_t> version = CheckPackHeader(header);
  if (!version.ok()) return Annotate(version.status(), path);
  return version;
}

// The members of a bundle record whose stored bytes are `data`, for the scan.
absl::StatusOr<std::vector<BundleSlice>> ParseBundleRecord(const RecordHeader& h,
                                                           std::string_view data) {
  WHORL_ASSIGN_OR_RETURN(const std::string plain, Decode(h.codec, data, h.plain_size));
  WHORL_ASSIGN_OR_RETURN(std::vector<BundleSlice> members, ParseBundle(plain));
  std::vector<BundleMember> table;
  for (const BundleSlice& m : members) table.push_back(m.member);
  if (BundleId(table) != h.fingerprint) {
    return absl::DataLossError("bundle record's fingerprint is not that of its member table");
  }
  return members;
}

absl::Status DataSync(int fd, const std::string& path) {
  if (::fdatasync(fd) != 0) return ErrnoStatus("fdatasync", path, errno);
  return absl::OkStatus();
}

}  // namespace

std::string PackIdString(uint32_t pack_id) { return absl::StrFormat("%08u", pack_id); }
std::string PackFileName(uint32_t pack_id) { return PackIdString(pack_id) + ".pack"; }
std::string PackPath(const std::string& packs_dir, uint32_t pack_id) {
  return packs_dir + "/" + PackFileName(pack_id);
}

uint32_t ParsePackFileName(std::string_view name) {
  constexpr std::string_view kSuffix = ".pack";
  if (name.size() != 8 + kSuffix.size() || name.substr(8) != kSuffix) return 0;
  uint32_t id = 0;
  for (char c : name.substr(0, 8)) {
    if (c < '0' || c > '9') return 0;
    id = id * 10 + static_cast<uint32_t>(c - '0');
  }
  return id;
}

absl::StatusOr<std::vector<uint32_t>> ListPackIds(const std::string& packs_dir) {
  DIR* d = ::opendir(packs_dir.c_str());
  if (d == nullptr) return ErrnoStatus("opendir", packs_dir, errno);
  std::vector<uint32_t> ids;
  errno = 0;
  while (const dirent* e = ::readdir(d)) {
    if (const uint32_t id = ParsePackFileName(e->d_name); id != 0) ids.push_back(id);
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) return ErrnoStatus("readdir", packs_dir, err);
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::string EncodePackHeader(uint32_t version) {
  std::string out(kPackMagic, kPackMagicSize);
  out.resize(kPackHeaderSize, '\0');
  EncodeFixed32(&out[kPackMagicSize], version);
  return out;  // reserved stays zero
}

absl::StatusOr<uint32_t> CheckPackHeader(std::string_view header) {
  if (header.size() != kPackHeaderSize) {
    return absl::DataLossError(
        absl::StrCat("pack header is ", header.size(), " bytes, want ", kPackHeaderSize));
  }
  if (header.substr(0, kPackMagicSize) != std::string_view(kPackMagic, kPackMagicSize)) {
    return absl::DataLossError("bad pack magic (not a whorl pack file)");
  }
  const uint32_t version = DecodeFixed32(&header[kPackMagicSize]);
  if (version < kOldestPackVersion || version > kPackVersion) {
    return absl::DataLossError(absl::StrCat("unknown pack version ", version, " (this build reads ",
                                            kOldestPackVersion, " to ", kPackVersion, ")"));
  }
  if (DecodeFixed32(&header[kPackMagicSize + 4]) != 0) {
    return absl::DataLossError("nonzero reserved field in pack header");
  }
  return version;
}

std::string EncodeRecordHeader(const RecordHeader& header, std::string_view data) {
  assert(header.stored_size == data.size());  // The CRC must cover exactly the stored bytes.
  std::string out(kRecordHeaderSize, '\0');
  EncodeFixed32(&out[0], kRecordMagic);
  out[kRecordCodecOffset] = static_cast<char>(header.codec);
  out[kRecordFlagsOffset] = static_cast<char>(header.bundle ? kRecordFlagBundle : 0);
  // reserved stays zero.
  EncodeFixed32(&out[kRecordPlainSizeOffset], header.plain_size);
  EncodeFixed32(&out[kRecordStoredSizeOffset], header.stored_size);
  std::memcpy(&out[kRecordFingerprintOffset], header.fingerprint.bytes.data(), Fingerprint::kSize);
  const uint32_t crc =
      crc32c::Extend(crc32c::Value(std::string_view(out.data(), kRecordCrcOffset)), data);
  EncodeFixed32(&out[kRecordCrcOffset], crc);
  return out;
}

std::string EncodeRecord(const RecordHeader& header, std::string_view data) {
  std::string out = EncodeRecordHeader(header, data);
  out.append(data);
  return out;
}

absl::StatusOr<RecordHeader> DecodeRecordHeader(std::string_view header, uint64_t max_chunk_bytes) {
  if (header.size() != kRecordHeaderSize) {
    return absl::DataLossError(
        absl::StrCat("record header is ", header.size(), " bytes, want ", kRecordHeaderSize));
  }
  const uint32_t magic = DecodeFixed32(&header[0]);
  if (magic != kRecordMagic) {
    return absl::DataLossError(
        absl::StrCat("bad record magic 0x", absl::Hex(magic, absl::kZeroPad8)));
  }
  const uint8_t codec = static_cast<uint8_t>(header[kRecordCodecOffset]);
  if (!KnownCodec(codec)) return absl::DataLossError(absl::StrCat("unknown codec ", codec));
  const uint8_t flags = static_cast<uint8_t>(header[kRecordFlagsOffset]);
  if ((flags & ~kRecordFlagBundle) != 0) {
    return absl::DataLossError(
        absl::StrCat("unknown record flags 0x", absl::Hex(flags, absl::kZeroPad2)));
  }
  if (header[kRecordReservedOffset] != 0 || header[kRecordReservedOffset + 1] != 0) {
    return absl::DataLossError("nonzero reserved field in record header");
  }
  RecordHeader out;
  out.codec = static_cast<Codec>(codec);
  out.bundle = (flags & kRecordFlagBundle) != 0;
  out.plain_size = DecodeFixed32(&header[kRecordPlainSizeOffset]);
  out.stored_size = DecodeFixed32(&header[kRecordStoredSizeOffset]);
  if (out.plain_size > max_chunk_bytes || out.stored_size > max_chunk_bytes) {
    return absl::DataLossError(absl::StrCat("record sizes (plain ", out.plain_size, ", stored ",
                                            out.stored_size, ") over the limit of ",
                                            max_chunk_bytes));
  }
  std::memcpy(out.fingerprint.bytes.data(), &header[kRecordFingerprintOffset], Fingerprint::kSize);
  return out;
}

absl::Status CheckRecordCrc(std::string_view header, std::string_view data) {
  assert(header.size() == kRecordHeaderSize);  // DecodeRecordHeader checked it
  const uint32_t want = DecodeFixed32(&header[kRecordCrcOffset]);
  const uint32_t got = crc32c::Extend(crc32c::Value(header.substr(0, kRecordCrcOffset)), data);
  if (want == got) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("record CRC mismatch (stored 0x",
                                          absl::Hex(want, absl::kZeroPad8), ", computed 0x",
                                          absl::Hex(got, absl::kZeroPad8), ")"));
}

absl::StatusOr<PackScan> ScanPack(int fd, const std::string& path, uint64_t max_chunk_bytes,
                                  uint64_t start) {
  PackScan scan;
  WHORL_ASSIGN_OR_RETURN(scan.file_size, FileSize(fd, path));
  WHORL_ASSIGN_OR_RETURN(const uint32_t version, ReadPackHeader(fd, path, scan.file_size));
  start = std::max<uint64_t>(start, kPackHeaderSize);
  if (scan.file_size < start) {
    return absl::DataLossError(
        absl::StrCat(path, ": ", scan.file_size, " bytes, but its indexed records end at ", start));
  }
  uint64_t offset = start;
  std::string header, data;
  while (scan.file_size - offset >= kRecordHeaderSize) {
    WHORL_RETURN_IF_ERROR(PreadExact(fd, offset, kRecordHeaderSize, &header, path));
    absl::StatusOr<RecordHeader> decoded = DecodeRecordHeader(header, max_chunk_bytes);
    if (!decoded.ok()) break;
    if (scan.file_size - offset - kRecordHeaderSize < decoded->stored_size) break;
    WHORL_RETURN_IF_ERROR(
        PreadExact(fd, offset + kRecordHeaderSize, decoded->stored_size, &data, path));
    if (!CheckRecordCrc(header, data).ok()) break;
    if (decoded->codec == Codec::kLz4 && version < kLz4PackVersion) break;
    std::vector<BundleSlice> members;
    if (decoded->bundle) {
      if (version < kBundlePackVersion) break;
      absl::StatusOr<std::vector<BundleSlice>> parsed = ParseBundleRecord(*decoded, data);
      if (!parsed.ok()) break;
      members = *std::move(parsed);
    }
    scan.records.push_back(ScannedRecord{offset, *decoded, std::move(members)});
    offset += kRecordHeaderSize + decoded->stored_size;
  }
  scan.valid_end = offset;
  return scan;
}

absl::StatusOr<PackScan> RecoverNewestPack(const std::string& path, uint64_t max_chunk_bytes,
                                           uint64_t indexed_end) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path, errno);
  FdCloser closer(fd);
  WHORL_ASSIGN_OR_RETURN(const uint64_t size, FileSize(fd, path));
  if (size < kPackHeaderSize && indexed_end <= kPackHeaderSize) {
    // Created but its header never made it to disk: nothing in it was acknowledged.
    if (::ftruncate(fd, 0) != 0) return ErrnoStatus("truncate", path, errno);
    WHORL_RETURN_IF_ERROR(WriteAll(fd, EncodePackHeader(kOldestPackVersion), path));
    WHORL_RETURN_IF_ERROR(DataSync(fd, path));
    PackScan scan;
    scan.valid_end = kPackHeaderSize;
    scan.file_size = size;
    return scan;
  }
  WHORL_ASSIGN_OR_RETURN(PackScan scan, ScanPack(fd, path, max_chunk_bytes, indexed_end));
  if (scan.valid_end < scan.file_size) {
    if (::ftruncate(fd, static_cast<off_t>(scan.valid_end)) != 0) {
      return ErrnoStatus("truncate", path, errno);
    }
    WHORL_KILL_POINT("pack.recover.truncated");
    WHORL_RETURN_IF_ERROR(DataSync(fd, path));
  }
  return scan;
}

absl::StatusOr<PackScan> ScanClosedPackTail(const std::string& path, uint64_t max_chunk_bytes,
                                            uint64_t indexed_end) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path, errno);
  FdCloser closer(fd);
  return ScanPack(fd, path, max_chunk_bytes, indexed_end);
}

absl::StatusOr<uint64_t> CheckPackFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path, errno);
  FdCloser closer(fd);
  WHORL_ASSIGN_OR_RETURN(const uint64_t size, FileSize(fd, path));
  if (size == 0) return absl::DataLossError(path + ": empty pack file (0 bytes)");
  WHORL_RETURN_IF_ERROR(ReadPackHeader(fd, path, size).status());
  return size;
}

absl::StatusOr<std::unique_ptr<PackWriter>> PackWriter::Create(const std::string& packs_dir,
                                                               uint32_t pack_id, uint32_t version) {
  std::string path = PackPath(packs_dir, pack_id);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("create", path, errno);
  WHORL_KILL_POINT("pack.create.before_header");
  absl::Status s = WriteAll(fd, EncodePackHeader(version), path);
  if (s.ok()) s = DataSync(fd, path);
  if (s.ok()) WHORL_KILL_POINT("pack.dir_fsync.before");
  if (s.ok()) s = SyncDir(packs_dir);
  if (s.ok()) WHORL_KILL_POINT("pack.dir_fsync.after");
  if (!s.ok()) {
    ::close(fd);
    ::unlink(path.c_str());
    return s;
  }
  return std::unique_ptr<PackWriter>(
      new PackWriter(fd, std::move(path), pack_id, version, kPackHeaderSize));
}

absl::StatusOr<std::unique_ptr<PackWriter>> PackWriter::OpenForAppend(const std::string& packs_dir,
                                                                      uint32_t pack_id) {
  std::string path = PackPath(packs_dir, pack_id);
  const int fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path, errno);
  absl::StatusOr<uint64_t> size = FileSize(fd, path);
  absl::StatusOr<uint32_t> version =
      size.ok() ? ReadPackHeader(fd, path, *size) : absl::StatusOr<uint32_t>(size.status());
  if (!version.ok()) {
    ::close(fd);
    return version.status();
  }
  return std::unique_ptr<PackWriter>(new PackWriter(fd, std::move(path), pack_id, *version, *size));
}

PackWriter::~PackWriter() { ::close(fd_); }

absl::StatusOr<uint64_t> PackWriter::Append(const RecordHeader& header, std::string_view data) {
  const uint64_t offset = Queue(header, data);
  WHORL_RETURN_IF_ERROR(Flush());
  return offset;
}

uint64_t PackWriter::Queue(const RecordHeader& header, std::string_view data) {
  queued_headers_ += EncodeRecordHeader(header, data);
  queued_data_.push_back(data);
  const uint64_t offset = size_;
  size_ += kRecordHeaderSize + data.size();
  return offset;
}

absl::Status PackWriter::Flush() {
  if (queued_data_.empty()) return absl::OkStatus();
  // Everything up to the last record's header in as few writes as IOV_MAX allows, then that
  // record's data: a crash between the two leaves a record without data, which recovery cuts
  // like any torn tail (the state kill point pack.append.mid_record makes).
  std::string headers;
  headers.swap(queued_headers_);
  std::vector<std::string_view> data;
  data.swap(queued_data_);
  std::vector<std::string_view> parts;
  parts.reserve(2 * data.size());
  for (size_t i = 0; i < data.size(); ++i) {
    parts.push_back(std::string_view(headers).substr(i * kRecordHeaderSize, kRecordHeaderSize));
    parts.push_back(data[i]);
  }
  const std::string_view last = parts.back();
  parts.pop_back();
  WHORL_KILL_POINT("pack.append.before");
  WHORL_RETURN_IF_ERROR(WriteAllV(fd_, parts, path_));
  WHORL_KILL_POINT("pack.append.mid_record");
  WHORL_RETURN_IF_ERROR(WriteAll(fd_, last, path_));
  WHORL_KILL_POINT("pack.append.after");
  return absl::OkStatus();
}

absl::Status PackWriter::Sync() {
  WHORL_RETURN_IF_ERROR(Flush());
  WHORL_KILL_POINT("pack.fdatasync.before");
  WHORL_RETURN_IF_ERROR(DataSync(fd_, path_));
  WHORL_KILL_POINT("pack.fdatasync.after");
  return absl::OkStatus();
}

absl::Status PackWriter::TruncateTo(uint64_t size) {
  queued_headers_.clear();
  queued_data_.clear();
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return ErrnoStatus("truncate", path_, errno);
  size_ = size;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PackReader>> PackReader::Open(const std::string& packs_dir,
                                                             uint32_t pack_id) {
  std::string path = PackPath(packs_dir, pack_id);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path, errno);
  return std::unique_ptr<PackReader>(new PackReader(fd, std::move(path)));
}

PackReader::~PackReader() { ::close(fd_); }

char* RecordBuffer::Reserve(size_t n) {
  if (n > capacity_) {
    bytes_ = std::make_unique_for_overwrite<char[]>(n);
    capacity_ = n;
  }
  return bytes_.get();
}

absl::StatusOr<RecordHeader> PackReader::ReadRecord(uint64_t offset, uint32_t stored_size,
                                                    std::string* data) const {
  RecordBuffer buffer;
  WHORL_ASSIGN_OR_RETURN(RecordHeader decoded, ReadRecord(offset, stored_size, &buffer));
  data->assign(buffer.data());
  return decoded;
}

absl::StatusOr<RecordHeader> PackReader::ReadRecord(uint64_t offset, uint32_t stored_size,
                                                    RecordBuffer* buffer) const {
  buffer->data_ = {};
  // Header and data in one read (one system call, and one disk request on a cold cache); the
  // header is checked before the data is trusted.
  const size_t n = kRecordHeaderSize + size_t{stored_size};
  char* bytes = buffer->Reserve(n);
  WHORL_RETURN_IF_ERROR(PreadExact(fd_, offset, n, bytes, path_));
  const std::string_view header(bytes, kRecordHeaderSize);
  WHORL_ASSIGN_OR_RETURN(RecordHeader decoded,
                         DecodeRecordHeader(header, std::numeric_limits<uint32_t>::max()));
  if (decoded.stored_size != stored_size) {
    return absl::DataLossError(
        absl::StrCat("record stored size ", decoded.stored_size, ", locator says ", stored_size));
  }
  const std::string_view data(bytes + kRecordHeaderSize, stored_size);
  WHORL_RETURN_IF_ERROR(CheckRecordCrc(header, data));
  buffer->data_ = data;
  return decoded;
}

absl::Status CheckRecordMatches(const RecordHeader& header, const Fingerprint& fp,
                                const ChunkLocation& location) {
  if (header.bundle != location.bundled) {
    return absl::DataLossError(location.bundled ? "record is not a bundle, locator expects one"
                                                : "record is a bundle, locator expects a chunk");
  }
  if (location.bundled) {
    if (header.stored_size != location.stored_size || header.codec != location.codec ||
        uint64_t{location.inner_offset} + location.plain_size > header.plain_size) {
      return absl::DataLossError(absl::StrCat(
          "bundle record (stored ", header.stored_size, ", plain ", header.plain_size, ", codec ",
          static_cast<int>(header.codec), ") differs from the locator (stored ",
          location.stored_size, ", codec ", static_cast<int>(location.codec), ", chunk at ",
          location.inner_offset, " + ", location.plain_size, ")"));
    }
    return absl::OkStatus();
  }
  if (header.fingerprint != fp) {
    return absl::DataLossError("record holds chunk " + header.fingerprint.ToHex() +
                               ", locator expects " + fp.ToHex());
  }
  if (header.stored_size != location.stored_size || header.plain_size != location.plain_size ||
      header.codec != location.codec) {
    return absl::DataLossError(absl::StrCat(
        "record (stored ", header.stored_size, ", plain ", header.plain_size, ", codec ",
        static_cast<int>(header.codec), ") differs from the locator (stored ", location.stored_size,
        ", plain ", location.plain_size, ", codec ", static_cast<int>(location.codec), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string_view> FindBundleMember(std::string_view bundle, const Fingerprint& fp,
                                                  const ChunkLocation& location) {
  WHORL_ASSIGN_OR_RETURN(const std::vector<BundleSlice> members, ParseBundle(bundle));
  return FindBundleMember(bundle, members, fp, location);
}

absl::StatusOr<std::string_view> FindBundleMember(std::string_view bundle,
                                                  const std::vector<BundleSlice>& members,
                                                  const Fingerprint& fp,
                                                  const ChunkLocation& location) {
  // Offsets never decrease in table order; members of 0 bytes may share one.
  auto it =
      std::lower_bound(members.begin(), members.end(), location.inner_offset,
                       [](const BundleSlice& m, uint32_t offset) { return m.offset < offset; });
  for (; it != members.end() && it->offset == location.inner_offset; ++it) {
    if (it->member.fingerprint == fp && it->member.size == location.plain_size) {
      return bundle.substr(it->offset, it->member.size);
    }
  }
  // Not where the locator places it: say where it is, if anywhere.
  for (const BundleSlice& m : members) {
    if (m.member.fingerprint != fp) continue;
    return absl::DataLossError(absl::StrCat("bundle holds chunk ", fp.ToHex(), " at ", m.offset,
                                            " + ", m.member.size, ", locator says ",
                                            location.inner_offset, " + ", location.plain_size));
  }
  return absl::DataLossError("bundle does not hold chunk " + fp.ToHex());
}

std::string EncodeLocatorValue(const ChunkLocation& location) {
  std::string out(location.bundled ? kBundledLocatorValueSize : kLocatorValueSize, '\0');
  EncodeFixed32(&out[0], location.pack_id);
  EncodeFixed64(&out[4], location.offset);
  EncodeFixed32(&out[12], location.stored_size);
  EncodeFixed32(&out[16], location.plain_size);
  out[20] = static_cast<char>(location.codec);
  if (location.bundled) {
    EncodeFixed32(&out[21], location.inner_offset);
    EncodeFixed32(&out[25], location.share);
  }
  return out;
}

absl::StatusOr<ChunkLocation> DecodeLocatorValue(std::string_view value) {
  if (value.size() != kLocatorValueSize && value.size() != kBundledLocatorValueSize) {
    return absl::DataLossError(absl::StrCat("locator value is ", value.size(), " bytes, want ",
                                            kLocatorValueSize, " or ", kBundledLocatorValueSize));
  }
  const uint8_t codec = static_cast<uint8_t>(value[20]);
  if (!KnownCodec(codec)) {
    return absl::DataLossError(absl::StrCat("locator value has unknown codec ", codec));
  }
  ChunkLocation out;
  out.pack_id = DecodeFixed32(&value[0]);
  out.offset = DecodeFixed(&value[4], 8);
  out.stored_size = DecodeFixed32(&value[12]);
  out.plain_size = DecodeFixed32(&value[16]);
  out.codec = static_cast<Codec>(codec);
  if (value.size() == kBundledLocatorValueSize) {
    out.bundled = true;
    out.inner_offset = DecodeFixed32(&value[21]);
    out.share = DecodeFixed32(&value[25]);
  }
  if (out.pack_id == 0) return absl::DataLossError("locator value names pack 0");
  return out;
}

}  // namespace whorl::chunkstore
