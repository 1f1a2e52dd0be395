#include "chunk-store/pack.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "chunk-store/pack_format.h"
#include "chunk-store/test_util.h"
#include "common/crc32c.h"
#include "common/file_util.h"

namespace whorl::chunkstore {
namespace {

using testing::Bytes;
using testing::TempDir;

RecordHeader HeaderFor(std::string_view data) {
  RecordHeader h;
  h.codec = Codec::kNone;
  h.plain_size = static_cast<uint32_t>(data.size());
  h.stored_size = static_cast<uint32_t>(data.size());
  h.fingerprint = Sha256(data);
  return h;
}

void WriteFile(const std::string& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  ASSERT_TRUE(out.good());
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

absl::StatusOr<PackScan> ScanFile(const std::string& path, uint64_t max_chunk_bytes = 1 << 20) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return ErrnoStatus("open", path, errno);
  absl::StatusOr<PackScan> scan = ScanPack(fd, path, max_chunk_bytes);
  ::close(fd);
  return scan;
}

// Record header bytes with the CRC recomputed, so that only the field under test is wrong.
std::string Recrc(std::string header, std::string_view data) {
  const uint32_t crc = crc32c::Extend(crc32c::Value(header.substr(0, kRecordCrcOffset)), data);
  for (int i = 0; i < 4; ++i) header[kRecordCrcOffset + i] = static_cast<char>(crc >> (8 * i));
  return header;
}

bool RecordAccepted(std::string_view header, std::string_view data, uint64_t cap = 1 << 20) {
  return DecodeRecordHeader(header, cap).ok() && CheckRecordCrc(header, data).ok();
}

TEST(PackTest, PackFileNamesRoundTrip) {
  EXPECT_EQ(PackFileName(3), "00000003.pack");
  EXPECT_EQ(PackPath("/x/packs", 12345678), "/x/packs/12345678.pack");
  EXPECT_EQ(ParsePackFileName("00000003.pack"), 3u);
  EXPECT_EQ(ParsePackFileName("99999999.pack"), 99999999u);
  EXPECT_EQ(ParsePackFileName("00000000.pack"), 0u);
  EXPECT_EQ(ParsePackFileName("0000003.pack"), 0u);
  EXPECT_EQ(ParsePackFileName("0000000a.pack"), 0u);
  EXPECT_EQ(ParsePackFileName("00000003.pack.tmp"), 0u);
  EXPECT_EQ(ParsePackFileName("LOCK"), 0u);
}

TEST(PackTest, PackHeaderKnownAnswer) {
  EXPECT_EQ(HexEncode(EncodePackHeader(1)), "57484f524c50414b0100000000000000");
  EXPECT_EQ(HexEncode(EncodePackHeader(2)), "57484f524c50414b0200000000000000");
  EXPECT_EQ(*CheckPackHeader(EncodePackHeader(1)), 1u);
  EXPECT_EQ(*CheckPackHeader(EncodePackHeader(2)), 2u);
}

TEST(PackTest, PackHeaderWithBadMagicIsRefused) {
  std::string header = EncodePackHeader(1);
  header[0] = 'X';
  EXPECT_EQ(CheckPackHeader(header).status().code(), absl::StatusCode::kDataLoss);
}

TEST(PackTest, PackHeaderWithUnknownVersionIsRefused) {
  std::string header = EncodePackHeader(1);
  header[8] = 4;
  const absl::Status s = CheckPackHeader(header).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("unknown pack version 4 (this build reads 1 to 3)"),
            absl::string_view::npos)
      << s;
  header[8] = 0;
  EXPECT_EQ(CheckPackHeader(header).status().code(), absl::StatusCode::kDataLoss);
}

TEST(PackTest, PackHeaderWithNonzeroReservedIsRefused) {
  std::string header = EncodePackHeader(1);
  header[15] = 1;
  EXPECT_EQ(CheckPackHeader(header).status().code(), absl::StatusCode::kDataLoss);
}

TEST(PackTest, RecordRoundTrip) {
  const std::string data = Bytes(1, 1000);
  RecordHeader in = HeaderFor(data);
  in.codec = Codec::kZstd;
  in.plain_size = 4321;
  const std::string record = EncodeRecord(in, data);
  ASSERT_EQ(record.size(), kRecordHeaderSize + data.size());
  const std::string_view header(record.data(), kRecordHeaderSize);
  absl::StatusOr<RecordHeader> out = DecodeRecordHeader(header, 1 << 20);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->codec, Codec::kZstd);
  EXPECT_EQ(out->plain_size, 4321u);
  EXPECT_EQ(out->stored_size, 1000u);
  EXPECT_EQ(out->fingerprint, in.fingerprint);
  EXPECT_TRUE(CheckRecordCrc(header, record.substr(kRecordHeaderSize)).ok());
}

// The worked example of pack_format.md.
TEST(PackTest, RecordKnownAnswer) {
  const std::string record = EncodeRecord(HeaderFor("abc"), "abc");
  EXPECT_EQ(HexEncode(record),
            "57524331"                                                          // magic "WRC1"
            "00"                                                                // codec: none
            "00"                                                                // flags
            "0000"                                                              // reserved
            "03000000"                                                          // plain_size 3
            "03000000"                                                          // stored_size 3
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  // SHA-256("abc")
            "d51f84ed"  // CRC32C 0xed841fd5 (also computed with a bitwise CRC32C in Python)
            "616263");  // data "abc"
}

TEST(PackTest, RecordWithBadMagicIsRefused) {
  const std::string data = "abc";
  std::string header = EncodeRecordHeader(HeaderFor(data), data);
  header[3] = '2';  // "WRC2"
  header = Recrc(header, data);
  const absl::StatusOr<RecordHeader> out = DecodeRecordHeader(header, 1 << 20);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(out.status().message().find("bad record magic 0x32435257"), absl::string_view::npos)
      << out.status();
}

TEST(PackTest, RecordWithUnknownCodecIsRefused) {
  const std::string data = "abc";
  std::string header = EncodeRecordHeader(HeaderFor(data), data);
  for (char codec : {'\x03', '\xff'}) {
    header[kRecordCodecOffset] = codec;
    EXPECT_FALSE(RecordAccepted(Recrc(header, data), data));
  }
}

// An LZ4 record (codec 2) is valid only in a version 3 pack: a scan of an older pack stops
// before it, as a version 2 build, which does not know codec 2, would.
TEST(PackTest, Lz4RecordIsReadFromAVersion3PackOnly) {
  const std::string plain = std::string(3000, 'z') + "end";
  RecordHeader h;
  const std::string data = Encode(CompressionSpec{Codec::kLz4, 0}, plain, &h.codec);
  ASSERT_EQ(h.codec, Codec::kLz4);
  h.plain_size = static_cast<uint32_t>(plain.size());
  h.stored_size = static_cast<uint32_t>(data.size());
  h.fingerprint = Sha256(plain);
  const std::string first = Bytes(1, 40);
  for (uint32_t version : {1u, 2u, 3u}) {
    TempDir dir;
    const std::string path = dir.path() + "/00000001.pack";
    const std::string pack =
        EncodePackHeader(version) + EncodeRecord(HeaderFor(first), first) + EncodeRecord(h, data);
    WriteFile(path, pack);
    absl::StatusOr<PackScan> scan = ScanFile(path);
    ASSERT_TRUE(scan.ok()) << scan.status();
    if (version < 3) {
      EXPECT_EQ(scan->records.size(), 1u) << version;
      EXPECT_EQ(scan->valid_end, kPackHeaderSize + kRecordHeaderSize + first.size());
      continue;
    }
    ASSERT_EQ(scan->records.size(), 2u);
    EXPECT_EQ(scan->valid_end, pack.size());
    EXPECT_EQ(scan->records[1].header.codec, Codec::kLz4);
    EXPECT_EQ(*Decode(Codec::kLz4, data, plain.size()), plain);
  }
}

TEST(PackTest, RecordWithNonzeroFlagsIsRefused) {
  const std::string data = "abc";
  std::string header = EncodeRecordHeader(HeaderFor(data), data);
  for (char flags : {'\x02', '\x80', '\x03'}) {
    header[kRecordFlagsOffset] = flags;
    EXPECT_FALSE(RecordAccepted(Recrc(header, data), data));
  }
}

TEST(PackTest, RecordWithNonzeroReservedIsRefused) {
  const std::string data = "abc";
  for (size_t i : {kRecordReservedOffset, kRecordReservedOffset + 1}) {
    std::string header = EncodeRecordHeader(HeaderFor(data), data);
    header[i] = 1;
    EXPECT_FALSE(RecordAccepted(Recrc(header, data), data)) << "byte " << i;
  }
}

TEST(PackTest, RecordWithSizesOverTheCapIsRefused) {
  const std::string data = Bytes(2, 100);
  RecordHeader h = HeaderFor(data);
  EXPECT_TRUE(RecordAccepted(EncodeRecordHeader(h, data), data, 100));
  EXPECT_FALSE(RecordAccepted(EncodeRecordHeader(h, data), data, 99));  // stored over
  h.plain_size = 101;
  EXPECT_FALSE(RecordAccepted(EncodeRecordHeader(h, data), data, 100));  // plain over
}

TEST(PackTest, EveryCrcCoveredByteIsChecked) {
  const std::string data = Bytes(3, 40);
  const std::string record = EncodeRecord(HeaderFor(data), data);
  for (size_t i = 0; i < record.size(); ++i) {
    std::string broken = record;
    broken[i] ^= 0x01;
    EXPECT_FALSE(
        RecordAccepted(broken.substr(0, kRecordHeaderSize), broken.substr(kRecordHeaderSize)))
        << "flipped byte " << i;
  }
}

TEST(PackTest, LocatorValueKnownAnswerAndRoundTrip) {
  const ChunkLocation in{3, 0x1234, 7, 9, Codec::kZstd};
  const std::string value = EncodeLocatorValue(in);
  EXPECT_EQ(HexEncode(value),
            "03000000"          // pack_id 3
            "3412000000000000"  // offset 0x1234
            "07000000"          // stored_size 7
            "09000000"          // plain_size 9
            "01");              // codec zstd
  absl::StatusOr<ChunkLocation> out = DecodeLocatorValue(value);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->pack_id, 3u);
  EXPECT_EQ(out->offset, 0x1234u);
  EXPECT_EQ(out->stored_size, 7u);
  EXPECT_EQ(out->plain_size, 9u);
  EXPECT_EQ(out->codec, Codec::kZstd);
}

TEST(PackTest, LocatorValueOfWrongLengthIsRefused) {
  const std::string value = EncodeLocatorValue(ChunkLocation{1, 16, 3, 3, Codec::kNone});
  EXPECT_EQ(DecodeLocatorValue(value.substr(0, 20)).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(DecodeLocatorValue(value + "x").status().code(), absl::StatusCode::kDataLoss);
}

TEST(PackTest, LocatorValueWithUnknownCodecIsRefused) {
  std::string value = EncodeLocatorValue(ChunkLocation{1, 16, 3, 3, Codec::kNone});
  value[20] = 5;
  EXPECT_EQ(DecodeLocatorValue(value).status().code(), absl::StatusCode::kDataLoss);
}

// A pack of `n` records of varied sizes; `ends` receives the end offset of each record.
std::string MakePack(int n, std::vector<uint64_t>* ends) {
  std::string pack = EncodePackHeader(1);
  for (int i = 0; i < n; ++i) {
    const std::string data = Bytes(100 + i, 10 + 7 * i);
    pack += EncodeRecord(HeaderFor(data), data);
    ends->push_back(pack.size());
  }
  return pack;
}

TEST(PackTest, ScanFindsEveryRecord) {
  TempDir dir;
  std::vector<uint64_t> ends;
  const std::string pack = MakePack(5, &ends);
  const std::string path = dir.path() + "/00000001.pack";
  WriteFile(path, pack);
  absl::StatusOr<PackScan> scan = ScanFile(path);
  ASSERT_TRUE(scan.ok()) << scan.status();
  ASSERT_EQ(scan->records.size(), 5u);
  EXPECT_EQ(scan->records[0].offset, kPackHeaderSize);
  for (size_t i = 1; i < 5; ++i) EXPECT_EQ(scan->records[i].offset, ends[i - 1]);
  EXPECT_EQ(scan->records[2].header.fingerprint, Sha256(Bytes(102, 24)));
  EXPECT_EQ(scan->valid_end, pack.size());
  EXPECT_EQ(scan->file_size, pack.size());
}

TEST(PackTest, TruncatedAtEveryOffsetOfLastTwoRecordsRecoversValidPrefix) {
  TempDir dir;
  std::vector<uint64_t> ends;
  const std::string pack = MakePack(4, &ends);
  const std::string path = dir.path() + "/00000001.pack";
  for (uint64_t cut = ends[1]; cut <= pack.size(); ++cut) {
    WriteFile(path, pack.substr(0, cut));
    absl::StatusOr<PackScan> scan = RecoverNewestPack(path, 1 << 20);
    ASSERT_TRUE(scan.ok()) << scan.status();
    size_t whole = 0;
    while (whole < ends.size() && ends[whole] <= cut) ++whole;
    ASSERT_EQ(scan->records.size(), whole) << "cut at " << cut;
    EXPECT_EQ(scan->valid_end, ends[whole - 1]) << "cut at " << cut;
    EXPECT_EQ(scan->file_size, cut);
    EXPECT_EQ(std::filesystem::file_size(path), ends[whole - 1]) << "cut at " << cut;
    EXPECT_EQ(ReadWholeFile(path), pack.substr(0, ends[whole - 1]));
  }
}

TEST(PackTest, GarbageTailIsCut) {
  TempDir dir;
  std::vector<uint64_t> ends;
  const std::string pack = MakePack(3, &ends);
  const std::string path = dir.path() + "/00000001.pack";
  WriteFile(path, pack + Bytes(9, 500));
  absl::StatusOr<PackScan> scan = RecoverNewestPack(path, 1 << 20);
  ASSERT_TRUE(scan.ok()) << scan.status();
  EXPECT_EQ(scan->records.size(), 3u);
  EXPECT_EQ(std::filesystem::file_size(path), pack.size());
}

TEST(PackTest, ScanStopsAtCorruptMiddleRecord) {
  TempDir dir;
  std::vector<uint64_t> ends;
  std::string pack = MakePack(3, &ends);
  pack[ends[0] + kRecordHeaderSize + 2] ^= 0x40;  // a data byte of record 1
  const std::string path = dir.path() + "/00000001.pack";
  WriteFile(path, pack);
  absl::StatusOr<PackScan> scan = ScanFile(path);
  ASSERT_TRUE(scan.ok()) << scan.status();
  EXPECT_EQ(scan->records.size(), 1u);
  EXPECT_EQ(scan->valid_end, ends[0]);
}

TEST(PackTest, ScanTreatsRecordOverTheCapAsEnd) {
  TempDir dir;
  std::vector<uint64_t> ends;
  const std::string path = dir.path() + "/00000001.pack";
  WriteFile(path, MakePack(3, &ends));  // data sizes 10, 17, 24
  absl::StatusOr<PackScan> scan = ScanFile(path, 17);
  ASSERT_TRUE(scan.ok()) << scan.status();
  EXPECT_EQ(scan->records.size(), 2u);
}

TEST(PackTest, ShortNewestPackIsRewrittenEmpty) {
  TempDir dir;
  const std::string path = dir.path() + "/00000001.pack";
  for (size_t len = 0; len < kPackHeaderSize; ++len) {
    WriteFile(path, EncodePackHeader(1).substr(0, len));
    absl::StatusOr<PackScan> scan = RecoverNewestPack(path, 1 << 20);
    ASSERT_TRUE(scan.ok()) << scan.status();
    EXPECT_TRUE(scan->records.empty());
    EXPECT_EQ(ReadWholeFile(path), EncodePackHeader(1)) << "length " << len;
  }
}

TEST(PackTest, PackWithBadMagicIsRefusedNamingTheFile) {
  TempDir dir;
  const std::string path = dir.path() + "/00000001.pack";
  WriteFile(path, "NOTAPACK" + EncodePackHeader(1).substr(8));
  const absl::Status s = RecoverNewestPack(path, 1 << 20).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find(path), absl::string_view::npos) << s;
  EXPECT_EQ(CheckPackFile(path).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(ReadWholeFile(path).substr(0, 8), "NOTAPACK");  // left alone
}

TEST(PackTest, ShortClosedPackIsRefused) {
  TempDir dir;
  const std::string path = dir.path() + "/00000001.pack";
  WriteFile(path, EncodePackHeader(1).substr(0, 10));
  EXPECT_EQ(CheckPackFile(path).status().code(), absl::StatusCode::kDataLoss);
}

TEST(PackTest, CheckPackFileNamesAnEmptyPackAndGivesASoundOnesLength) {
  TempDir dir;
  const std::string path = dir.path() + "/00000001.pack";
  WriteFile(path, "");
  const absl::Status s = CheckPackFile(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), path + ": empty pack file (0 bytes)");
  WriteFile(path, EncodePackHeader(1) + "tail");
  EXPECT_EQ(*CheckPackFile(path), kPackHeaderSize + 4);
  EXPECT_EQ(CheckPackFile(dir.path() + "/00000002.pack").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(PackTest, WriterAppendsAndReaderReadsBack) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<PackWriter>> writer = PackWriter::Create(dir.path(), 7);
  ASSERT_TRUE(writer.ok()) << writer.status();
  EXPECT_EQ(PackWriter::Create(dir.path(), 7).status().code(), absl::StatusCode::kInternal);
  const std::string a = Bytes(1, 30), b = Bytes(2, 50);
  absl::StatusOr<uint64_t> off_a = (*writer)->Append(HeaderFor(a), a);
  absl::StatusOr<uint64_t> off_b = (*writer)->Append(HeaderFor(b), b);
  ASSERT_TRUE(off_a.ok() && off_b.ok());
  EXPECT_EQ(*off_a, kPackHeaderSize);
  EXPECT_EQ(*off_b, kPackHeaderSize + kRecordHeaderSize + 30);
  ASSERT_TRUE((*writer)->Sync().ok());

  absl::StatusOr<std::unique_ptr<PackReader>> reader = PackReader::Open(dir.path(), 7);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::string data;
  absl::StatusOr<RecordHeader> h = (*reader)->ReadRecord(*off_b, 50, &data);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->fingerprint, Sha256(b));
  EXPECT_EQ(data, b);
  EXPECT_EQ((*reader)->ReadRecord(*off_b, 49, &data).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ((*reader)->ReadRecord(*off_b + 1, 50, &data).status().code(),
            absl::StatusCode::kDataLoss);

  ASSERT_TRUE((*writer)->TruncateTo(*off_b).ok());
  EXPECT_EQ((*writer)->size(), *off_b);
  EXPECT_EQ((*reader)->ReadRecord(*off_b, 50, &data).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(PackReader::Open(dir.path(), 8).status().code(), absl::StatusCode::kNotFound);
}

TEST(PackTest, QueuedRecordsAreWrittenInOrderByFlushAndDroppedByTruncate) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<PackWriter>> writer = PackWriter::Create(dir.path(), 3);
  ASSERT_TRUE(writer.ok()) << writer.status();
  const std::string path = dir.path() + "/00000003.pack";
  // More records than one writev takes (IOV_MAX is 1024 buffers: two a record), of sizes 0..
  std::vector<std::string> records;
  std::vector<uint64_t> offsets;
  for (int i = 0; i < 700; ++i) records.push_back(Bytes(i, static_cast<size_t>(i % 97)));
  uint64_t expected_end = kPackHeaderSize;
  for (const std::string& r : records) {
    offsets.push_back((*writer)->Queue(HeaderFor(r), r));
    EXPECT_EQ(offsets.back(), expected_end);
    expected_end += kRecordHeaderSize + r.size();
  }
  EXPECT_EQ((*writer)->size(), expected_end);
  EXPECT_EQ(ReadWholeFile(path).size(), kPackHeaderSize);  // queued, not written
  // Append writes what was queued before its own record.
  const std::string last = Bytes(999, 40);
  absl::StatusOr<uint64_t> off_last = (*writer)->Append(HeaderFor(last), last);
  ASSERT_TRUE(off_last.ok()) << off_last.status();
  EXPECT_EQ(*off_last, expected_end);
  expected_end += kRecordHeaderSize + last.size();
  EXPECT_EQ(ReadWholeFile(path).size(), expected_end);

  absl::StatusOr<std::unique_ptr<PackReader>> reader = PackReader::Open(dir.path(), 3);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::string data;
  for (size_t i = 0; i < records.size(); ++i) {
    absl::StatusOr<RecordHeader> h =
        (*reader)->ReadRecord(offsets[i], static_cast<uint32_t>(records[i].size()), &data);
    ASSERT_TRUE(h.ok()) << i << ": " << h.status();
    EXPECT_EQ(data, records[i]) << i;
  }
  // One RecordBuffer for every read, in reverse (each smaller or bigger than the last): each
  // read views its own record's bytes, and a failed read leaves the buffer viewing nothing.
  RecordBuffer buffer;
  for (size_t i = records.size(); i-- > 0;) {
    absl::StatusOr<RecordHeader> h =
        (*reader)->ReadRecord(offsets[i], static_cast<uint32_t>(records[i].size()), &buffer);
    ASSERT_TRUE(h.ok()) << i << ": " << h.status();
    EXPECT_EQ(buffer.data(), records[i]) << i;
    EXPECT_EQ(h->stored_size, records[i].size()) << i;
  }
  EXPECT_EQ((*reader)
                ->ReadRecord(offsets[0], static_cast<uint32_t>(records[0].size()) + 1, &buffer)
                .status()
                .code(),
            absl::StatusCode::kDataLoss);
  EXPECT_TRUE(buffer.data().empty());

  // Queued then truncated: nothing of it reaches the file, and a later Sync writes only what
  // was queued after.
  const std::string dropped = Bytes(5, 64), kept = Bytes(6, 33);
  (*writer)->Queue(HeaderFor(dropped), dropped);
  ASSERT_TRUE((*writer)->TruncateTo(expected_end).ok());
  EXPECT_EQ((*writer)->Queue(HeaderFor(kept), kept), expected_end);
  ASSERT_TRUE((*writer)->Sync().ok());
  EXPECT_EQ(ReadWholeFile(path).size(), expected_end + kRecordHeaderSize + kept.size());
  absl::StatusOr<RecordHeader> h = (*reader)->ReadRecord(expected_end, 33, &data);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(data, kept);
}

TEST(FileUtilTest, WriteAllVWritesEveryPartInOrderPastIovMax) {
  TempDir dir;
  const std::string path = dir.path() + "/out";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  std::vector<std::string> owned;
  std::string expected;
  for (int i = 0; i < 2500; ++i) {
    owned.push_back(Bytes(i, static_cast<size_t>(i % 7)));  // empty ones among them
    expected += owned.back();
  }
  const std::vector<std::string_view> parts(owned.begin(), owned.end());
  EXPECT_TRUE(WriteAllV(fd, parts, path).ok());
  EXPECT_TRUE(WriteAllV(fd, {}, path).ok());
  ::close(fd);
  EXPECT_EQ(ReadWholeFile(path), expected);
  const absl::Status bad = WriteAllV(-1, parts, path);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInternal) << bad;
  EXPECT_EQ(bad.message(), "write " + path + ": Bad file descriptor");
}

}  // namespace
}  // namespace whorl::chunkstore
