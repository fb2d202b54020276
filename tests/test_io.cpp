// Tests for the file-format layer: atomic writes, safetensors, IDX (MNIST) and CSV. Every
// validation rule gets a hand-made malformed file, and the error message is checked for the
// field name / offset that lets a user find the problem.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <bit>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "chainrule/errors.h"
#include "chainrule/io/atomic_file.h"
#include "chainrule/io/csv.h"
#include "chainrule/io/idx.h"
#include "chainrule/io/safetensors.h"

namespace fs = std::filesystem;
using namespace chainrule;
using namespace chainrule::io;

namespace {

static_assert(std::endian::native == std::endian::little, "these tests spell out little-endian bytes");

// A fresh directory under /tmp per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/chainrule_io_test_XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path(const std::string& name) const { return (fs::path(dir_) / name).string(); }
  const std::string& dir() const { return dir_; }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::string dir_;
};

std::vector<std::byte> bytes_of(std::string_view s) {
  std::vector<std::byte> b(s.size());
  if (!s.empty()) std::memcpy(b.data(), s.data(), s.size());
  return b;
}

std::string string_of(const std::vector<std::byte>& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

void write_raw(const std::string& path, std::string_view content) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(content.data(), static_cast<std::streamsize>(content.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Passes if `f` throws E and the message contains every fragment.
template <class E = IOError, class F>
::testing::AssertionResult throws_with(F&& f, std::initializer_list<std::string_view> fragments) {
  try {
    f();
  } catch (const E& e) {
    const std::string msg = e.what();
    for (std::string_view frag : fragments) {
      if (msg.find(frag) == std::string::npos) {
        return ::testing::AssertionFailure() << "message lacks \"" << frag << "\": " << msg;
      }
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "wrong exception type: " << e.what();
  }
  return ::testing::AssertionFailure() << "no exception thrown";
}

// ---------------------------------------------------------------------------------------------
// safetensors helpers

std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

// A safetensors image with the given header text and data buffer, header length as written.
std::string st_image(const std::string& header, const std::string& data = "") {
  return le64(header.size()) + header + data;
}

template <class T>
std::vector<std::byte> raw_of(std::initializer_list<T> values) {
  std::vector<std::byte> b(values.size() * sizeof(T));
  std::size_t i = 0;
  for (T v : values) std::memcpy(b.data() + sizeof(T) * i++, &v, sizeof(T));
  return b;
}

// Writes `content` to a temp file and reads it back with read_safetensors, expecting an
// IOError that names the file and contains the fragments.
::testing::AssertionResult st_rejects(const std::string& content, std::initializer_list<std::string_view> fragments) {
  TempDir tmp;
  const std::string path = tmp.path("bad.safetensors");
  write_raw(path, content);
  auto r = throws_with([&] { read_safetensors(path); }, fragments);
  if (!r) return r;
  return throws_with([&] { read_safetensors(path); }, {path});
}

Safetensors sample() {
  Safetensors st;
  st.metadata = {{"format", "pt"}, {"step", "42"}};
  st.tensors.push_back({"weight", {"F32", {2, 3}, raw_of<float>({1, 2, 3, 4, 5, 6})}});
  st.tensors.push_back({"bias", {"F64", {3}, raw_of<double>({0.5, -1.25, 1e300})}});
  st.tensors.push_back({"step", {"I64", {}, raw_of<std::int64_t>({-7})}});
  st.tensors.push_back({"mask", {"BOOL", {4}, raw_of<std::uint8_t>({1, 0, 0, 1})}});
  st.tensors.push_back({"empty", {"F32", {0, 5}, {}}});
  st.tensors.push_back({"half", {"F16", {2}, raw_of<std::uint16_t>({0x3C00, 0xC000})}});
  st.tensors.push_back({"bhalf", {"BF16", {1}, raw_of<std::uint16_t>({0x3F80})}});
  st.tensors.push_back({"idx", {"I32", {2}, raw_of<std::int32_t>({-1, 1 << 30})}});
  st.tensors.push_back({"pixels", {"U8", {1, 1, 3}, raw_of<std::uint8_t>({0, 128, 255})}});
  return st;
}

}  // namespace

// =============================================================================================
// AtomicFile

TEST(AtomicFile, WritesNewFileAndLeavesNoTemporaries) {
  TempDir tmp;
  const std::string path = tmp.path("out.bin");
  write_file_atomic(path, bytes_of("hello"));
  EXPECT_EQ(slurp(path), "hello");
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"out.bin"});
}

TEST(AtomicFile, OverwritesExistingFileAndKeepsItsMode) {
  TempDir tmp;
  const std::string path = tmp.path("out.bin");
  write_raw(path, "old contents that are longer");
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  write_file_atomic(path, bytes_of("new"));
  EXPECT_EQ(slurp(path), "new");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"out.bin"});
}

TEST(AtomicFile, EmptyAndLargeContents) {
  TempDir tmp;
  const std::string path = tmp.path("x");
  write_file_atomic(path, {});
  EXPECT_EQ(slurp(path), "");
  std::vector<std::byte> big(3 << 20);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::byte>(i * 7 + (i >> 11));
  write_file_atomic(path, big);
  EXPECT_EQ(read_file(path, big.size()), big);
}

TEST(AtomicFile, FailedRenameRemovesTemporaryAndNamesStep) {
  TempDir tmp;
  // A non-empty directory cannot be replaced by a file, even by root.
  const std::string path = tmp.path("target");
  fs::create_directory(path);
  write_raw(tmp.path("target/keep"), "x");
  EXPECT_TRUE(throws_with([&] { write_file_atomic(path, bytes_of("data")); }, {path, "rename", "directory"}));
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"target"});
  EXPECT_EQ(slurp(tmp.path("target/keep")), "x");
}

TEST(AtomicFile, MissingDirectoryNamesStepAndReason) {
  TempDir tmp;
  const std::string path = tmp.path("no/such/dir/file");
  EXPECT_TRUE(throws_with([&] { write_file_atomic(path, bytes_of("data")); },
                          {path, "creating temporary file", "No such file or directory"}));
}

TEST(AtomicFile, PathWithoutFileNameIsRejected) {
  TempDir tmp;
  EXPECT_TRUE(throws_with([&] { write_file_atomic(tmp.dir() + "/", bytes_of("x")); }, {"does not name a file"}));
}

TEST(AtomicFile, ReadFileErrors) {
  TempDir tmp;
  const std::string missing = tmp.path("missing");
  EXPECT_TRUE(throws_with([&] { read_file(missing, 100); }, {missing, "open", "No such file or directory"}));
  EXPECT_TRUE(throws_with([&] { read_file(tmp.dir(), 100); }, {tmp.dir(), "directory"}));
  const std::string path = tmp.path("ten");
  write_raw(path, "0123456789");
  EXPECT_EQ(string_of(read_file(path, 10)), "0123456789");
  EXPECT_TRUE(throws_with([&] { read_file(path, 9); }, {path, "10 bytes", "limit of 9"}));
  // A character device has no size up front: the limit must hold while reading.
  EXPECT_TRUE(throws_with([] { read_file("/dev/zero", 1000); }, {"/dev/zero", "over the limit"}));
  EXPECT_TRUE(read_file("/dev/null", 0).empty());
}

// The crash tests: the child aborts at the injected point; the parent then checks which
// version of the file a reader would see.
TEST(AtomicFile, FaultInjectionBeforeRenameLeavesOldFile) {
  for (const char* stage : {"after_write", "after_fsync"}) {
    SCOPED_TRACE(stage);
    TempDir tmp;
    const std::string path = tmp.path("ckpt");
    write_raw(path, "old");
    EXPECT_EXIT(
        {
          ::setenv("CHAINRULE_FAULT_INJECT", stage, 1);
          write_file_atomic(path, bytes_of("new contents"));
        },
        ::testing::KilledBySignal(SIGABRT), "");
    EXPECT_EQ(slurp(path), "old");
    // The abandoned temporary holds the complete new data; cleaning those up is the
    // caller's business after a crash.
    auto names = tmp.entries();
    ASSERT_EQ(names.size(), 2u);
    const std::string& leftover = names[0] == "ckpt" ? names[1] : names[0];
    EXPECT_TRUE(leftover.starts_with(".ckpt.tmp.")) << leftover;
    EXPECT_EQ(slurp(tmp.path(leftover)), "new contents");
  }
}

TEST(AtomicFile, FaultInjectionAfterRenameHasNewFile) {
  TempDir tmp;
  const std::string path = tmp.path("ckpt");
  write_raw(path, "old");
  EXPECT_EXIT(
      {
        ::setenv("CHAINRULE_FAULT_INJECT", "after_rename", 1);
        write_file_atomic(path, bytes_of("new contents"));
      },
      ::testing::KilledBySignal(SIGABRT), "");
  EXPECT_EQ(slurp(path), "new contents");
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"ckpt"});
}

TEST(AtomicFile, UnknownFaultInjectionValueIsIgnored) {
  TempDir tmp;
  const std::string path = tmp.path("f");
  ::setenv("CHAINRULE_FAULT_INJECT", "never", 1);
  write_file_atomic(path, bytes_of("ok"));
  ::unsetenv("CHAINRULE_FAULT_INJECT");
  EXPECT_EQ(slurp(path), "ok");
}

// =============================================================================================
// Safetensors: round trips

TEST(Safetensors, RoundTripThroughFile) {
  TempDir tmp;
  const std::string path = tmp.path("model.safetensors");
  const Safetensors st = sample();
  save_safetensors(path, st);
  EXPECT_EQ(tmp.entries(), std::vector<std::string>{"model.safetensors"});
  const Safetensors back = read_safetensors(path);
  EXPECT_EQ(back.metadata, st.metadata);
  ASSERT_EQ(back.tensors.size(), st.tensors.size());
  for (const auto& [name, t] : st.tensors) {
    const RawTensor* r = back.find(name);
    ASSERT_NE(r, nullptr) << name;
    EXPECT_EQ(r->dtype, t.dtype) << name;
    EXPECT_EQ(r->shape, t.shape) << name;
    EXPECT_EQ(r->data, t.data) << name;
  }
  EXPECT_EQ(back.find("nope"), nullptr);
  // Files we write list tensors by name, and reading keeps that order.
  for (std::size_t i = 1; i < back.tensors.size(); ++i) EXPECT_LT(back.tensors[i - 1].first, back.tensors[i].first);
}

TEST(Safetensors, SerializationIsDeterministicAndPadded) {
  Safetensors a = sample();
  Safetensors b = a;
  std::reverse(b.tensors.begin(), b.tensors.end());
  const auto bytes = serialize_safetensors(a);
  EXPECT_EQ(bytes, serialize_safetensors(b));
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  const std::string header = string_of(bytes).substr(8, n);
  EXPECT_TRUE(header.starts_with(R"({"__metadata__":{"format":"pt","step":"42"},)")) << header;
}

TEST(Safetensors, ExactBytesMatchReferenceLayout) {
  Safetensors st;
  st.metadata = {{"format", "pt"}};
  st.tensors.push_back({"b", {"F32", {1}, raw_of<float>({1.0f})}});
  st.tensors.push_back({"a", {"I64", {}, raw_of<std::int64_t>({5})}});
  std::string header = R"({"__metadata__":{"format":"pt"},"a":{"dtype":"I64","shape":[],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  while (header.size() % 8 != 0) header += ' ';
  const std::string expected =
      st_image(header, string_of(raw_of<std::int64_t>({5})) + string_of(raw_of<float>({1.0f})));
  EXPECT_EQ(string_of(serialize_safetensors(st)), expected);
}

TEST(Safetensors, EmptyFileHasNoMetadataKey) {
  const auto bytes = serialize_safetensors({});
  EXPECT_EQ(string_of(bytes), st_image("{}      "));
  const Safetensors back = parse_safetensors(bytes, "mem");
  EXPECT_TRUE(back.tensors.empty());
  EXPECT_TRUE(back.metadata.empty());
}

TEST(Safetensors, ReadsForeignLayoutInHeaderOrder) {
  // As the Python library writes: unpadded-looking but valid JSON with spaces, tensors not in
  // name order, data laid out in a different order than the header lists them.
  const std::string header =
      R"({ "z": {"dtype":"U8","shape":[2],"data_offsets":[4,6]}, )"
      R"("__metadata__": {"format": "np"}, "a": {"dtype":"F32","shape":[1],"data_offsets":[0,4], "extra": 1}})";
  const std::string data = string_of(raw_of<float>({2.5f})) + "\x07\x09";
  const Safetensors st = parse_safetensors(bytes_of(st_image(header, data)), "mem");
  ASSERT_EQ(st.tensors.size(), 2u);
  EXPECT_EQ(st.tensors[0].first, "z");
  EXPECT_EQ(st.tensors[1].first, "a");
  EXPECT_EQ(st.metadata.at("format"), "np");
  EXPECT_EQ(st.tensors[0].second.data, raw_of<std::uint8_t>({7, 9}));
  EXPECT_EQ(st.tensors[1].second.data, raw_of<float>({2.5f}));
}

TEST(Safetensors, UnicodeNamesRoundTrip) {
  Safetensors st;
  st.tensors.push_back({"gewicht_ä\"\\/\n", {"U8", {1}, raw_of<std::uint8_t>({1})}});
  st.metadata["note"] = "naïve \"quoted\"";
  const Safetensors back = parse_safetensors(serialize_safetensors(st), "mem");
  ASSERT_EQ(back.tensors.size(), 1u);
  EXPECT_EQ(back.tensors[0].first, st.tensors[0].first);
  EXPECT_EQ(back.metadata, st.metadata);
}

TEST(Safetensors, ZeroSizedTensorsAtAnyBoundary) {
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
      R"("c":{"dtype":"F64","shape":[3,0],"data_offsets":[2,2]},"d":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}})";
  const Safetensors st = parse_safetensors(bytes_of(st_image(header, "xy")), "mem");
  EXPECT_EQ(st.tensors.size(), 4u);
  EXPECT_TRUE(st.find("c")->data.empty());
}

TEST(Safetensors, SerializeRejectsInvalidStructs) {
  auto one = [](RawTensor t, std::string name = "t") {
    Safetensors st;
    st.tensors.push_back({std::move(name), std::move(t)});
    return st;
  };
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        serialize_safetensors(one({"F99", {1}, raw_of<float>({1})}));
      },
      {"'t'", "unknown dtype 'F99'"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        serialize_safetensors(one({"F32", {2}, raw_of<float>({1})}));
      },
      {"'t'", "needs 8 bytes", "data has 4"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { serialize_safetensors(one({"F32", {-1}, {}})); }, {"negative"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        serialize_safetensors(one({"U8", {1}, raw_of<std::uint8_t>({1})}, "__metadata__"));
      },
      {"reserved"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] {
        serialize_safetensors(one({"U8", {1}, raw_of<std::uint8_t>({1})}, "bad\xff"));
      },
      {"UTF-8"}));
  Safetensors dup = one({"U8", {1}, raw_of<std::uint8_t>({1})});
  dup.tensors.push_back(dup.tensors[0]);
  EXPECT_TRUE(throws_with<ValueError>([&] { serialize_safetensors(dup); }, {"'t' appears twice"}));
  Safetensors bad_meta;
  bad_meta.metadata["k"] = "\xc3";
  EXPECT_TRUE(throws_with<ValueError>([&] { serialize_safetensors(bad_meta); }, {"metadata value", "UTF-8"}));
}

TEST(Safetensors, SaveFailureIsIOError) {
  TempDir tmp;
  EXPECT_TRUE(throws_with([&] { save_safetensors(tmp.path("no/dir/x.safetensors"), sample()); }, {"no/dir"}));
}

// =============================================================================================
// Safetensors: one malformed file per validation rule

TEST(Safetensors, RejectsFileShorterThan8Bytes) {
  EXPECT_TRUE(st_rejects("", {"0 bytes", "8-byte header length", "offset 0"}));
  EXPECT_TRUE(st_rejects(std::string("\x08\0\0\0", 4), {"4 bytes", "offset 0"}));
}

TEST(Safetensors, RejectsHeaderLengthOverLimit) {
  EXPECT_TRUE(st_rejects(le64(100'000'001) + "{}", {"header length 100000001", "offset 0", "limit"}));
  EXPECT_TRUE(st_rejects(le64(~0ull), {"header length 18446744073709551615", "limit"}));
}

TEST(Safetensors, RejectsHeaderLengthPastEndOfFile) {
  EXPECT_TRUE(st_rejects(le64(100) + "{}", {"header length 100", "offset 0", "past the end", "2 bytes"}));
}

TEST(Safetensors, RejectsInvalidUtf8Header) {
  // 0xff at header index 3 -> file offset 11.
  EXPECT_TRUE(st_rejects(st_image("{\"a\xff\":1}"), {"UTF-8", "file offset 11"}));
  // Overlong encoding of '/' and a lone surrogate are ill-formed too.
  EXPECT_TRUE(st_rejects(st_image("{\"\xc0\xaf\":1}"), {"UTF-8", "file offset 10"}));
  EXPECT_TRUE(st_rejects(st_image("{\"\xed\xa0\x80\":1}"), {"UTF-8", "file offset 10"}));
  EXPECT_TRUE(st_rejects(st_image("{\"\xe2\x82"), {"UTF-8", "file offset 10"}));
}

TEST(Safetensors, RejectsInvalidJson) {
  // The syntax error is at the '}' at header index 6 -> file offset 14.
  EXPECT_TRUE(st_rejects(st_image(R"({"a": })"), {"not valid JSON", "file offset 14"}));
  EXPECT_TRUE(st_rejects(st_image(""), {"not valid JSON", "file offset"}));
  EXPECT_TRUE(st_rejects(st_image("{} x"), {"not valid JSON", "file offset 11"}));
}

TEST(Safetensors, RejectsHeaderThatIsNotAnObject) {
  EXPECT_TRUE(st_rejects(st_image("[1, 2]"), {"JSON array", "expected an object", "offset 8"}));
  EXPECT_TRUE(st_rejects(st_image("\"x\""), {"JSON string", "expected an object"}));
}

TEST(Safetensors, RejectsMetadataNotAnObjectOfStrings) {
  EXPECT_TRUE(st_rejects(st_image(R"({"__metadata__":[1]})"),
                         {"'__metadata__' at file offset 9", "array", "expected an object"}));
  EXPECT_TRUE(st_rejects(st_image(R"({"__metadata__":{"ok":"x","epoch":3}})"),
                         {"'__metadata__'", "'epoch'", "expected a string"}));
  EXPECT_TRUE(st_rejects(st_image(R"({"__metadata__":{"k":null}})"), {"'__metadata__'", "'k'", "null"}));
}

TEST(Safetensors, RejectsUnknownDtype) {
  // The entry's key "w" is at header index 1, file offset 9.
  EXPECT_TRUE(st_rejects(st_image(R"({"w":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}})", "abcd"),
                         {"tensor 'w'", "header entry at file offset 9", "'dtype'", "unknown dtype 'F99'"}));
  EXPECT_TRUE(st_rejects(st_image(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", "abcd"),
                         {"tensor 'w'", "'f32'"}));
  EXPECT_TRUE(st_rejects(st_image(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "abcd"),
                         {"tensor 'w'", "'dtype'", "expected a string"}));
}

TEST(Safetensors, RejectsMalformedEntries) {
  EXPECT_TRUE(st_rejects(st_image(R"({"w":[1,2]})"), {"tensor 'w'", "array", "expected an object"}));
  EXPECT_TRUE(
      st_rejects(st_image(R"({"w":{"dtype":"F32","data_offsets":[0,0]}})"), {"tensor 'w'", "missing field 'shape'"}));
  EXPECT_TRUE(st_rejects(st_image(R"({"w":{"shape":[],"data_offsets":[0,0]}})"), {"missing field 'dtype'"}));
  EXPECT_TRUE(st_rejects(st_image(R"({"w":{"dtype":"F32","shape":[0]}})"), {"missing field 'data_offsets'"}));
}

TEST(Safetensors, RejectsBadShapes) {
  auto with_shape = [](const std::string& shape) {
    return st_image(R"({"w":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,4]}})", "abcd");
  };
  EXPECT_TRUE(st_rejects(with_shape("3"), {"tensor 'w'", "'shape'", "expected an array"}));
  EXPECT_TRUE(st_rejects(with_shape("[1,-1]"), {"tensor 'w'", "file offset 9", "'shape' element 1", "-1"}));
  EXPECT_TRUE(st_rejects(with_shape("[1.0]"), {"'shape' element 0", "non-negative integer"}));
  EXPECT_TRUE(st_rejects(with_shape(R"(["1"])"), {"'shape' element 0"}));
  EXPECT_TRUE(st_rejects(with_shape("[9223372036854775808]"), {"'shape' element 0"}));
  // Each dimension fits, the product does not.
  EXPECT_TRUE(st_rejects(with_shape("[4294967296,4294967296]"), {"tensor 'w'", "'shape'", "overflows 64 bits"}));
  // The element count fits, times the item size does not.
  EXPECT_TRUE(st_rejects(with_shape("[4611686018427387904]"), {"tensor 'w'", "overflows 64 bits"}));
}

TEST(Safetensors, RejectsBadDataOffsets) {
  auto with_offsets = [](const std::string& offs) {
    return st_image(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":)" + offs + "}}", "abcd");
  };
  EXPECT_TRUE(st_rejects(with_offsets("[0]"), {"tensor 'w'", "'data_offsets'", "[begin, end]"}));
  EXPECT_TRUE(st_rejects(with_offsets("[0,4,8]"), {"'data_offsets'", "[begin, end]"}));
  EXPECT_TRUE(st_rejects(with_offsets("[-4,0]"), {"'data_offsets'"}));
  EXPECT_TRUE(st_rejects(with_offsets(R"({"begin":0})"), {"'data_offsets'"}));
  EXPECT_TRUE(st_rejects(with_offsets("[8,4]"), {"tensor 'w'", "[8, 4]", "begin > end"}));
}

TEST(Safetensors, RejectsByteCountNotMatchingShape) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})";
  // Data starts at 8 + 54 = 62.
  EXPECT_TRUE(st_rejects(st_image(header, "abcd"),
                         {"tensor 'w'", "'data_offsets' [0, 4]", "spans 4 bytes", "needs 8 bytes", "file offset 62"}));
}

TEST(Safetensors, RejectsOverlappingOffsets) {
  const std::string header =
      R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})";
  const std::uint64_t data_start = 8 + header.size();
  EXPECT_TRUE(st_rejects(st_image(header, std::string(12, 'x')),
                         {"tensor 'b'", "overlaps tensor 'a'", "file offset " + std::to_string(data_start + 4)}));
  // A zero-sized tensor strictly inside another one also overlaps.
  const std::string inside =
      R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"e":{"dtype":"U8","shape":[0],"data_offsets":[3,3]}})";
  EXPECT_TRUE(st_rejects(st_image(inside, std::string(8, 'x')), {"tensor 'e'", "overlaps tensor 'a'"}));
  // Two tensors on the same bytes.
  const std::string same =
      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})";
  EXPECT_TRUE(st_rejects(st_image(same, "abcd"), {"overlaps"}));
}

TEST(Safetensors, RejectsHoleBetweenTensors) {
  const std::string header =
      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})";
  const std::uint64_t data_start = 8 + header.size();
  EXPECT_TRUE(st_rejects(st_image(header, std::string(12, 'x')),
                         {"tensor 'b'", "hole of 4 bytes", "'a'", "file offset " + std::to_string(data_start + 4)}));
}

TEST(Safetensors, RejectsOffsetsNotStartingAtZero) {
  const std::string header = R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})";
  EXPECT_TRUE(st_rejects(st_image(header, std::string(8, 'x')), {"tensor 'a'", "lowest offset must be 0 but is 4",
                                                                 "file offset " + std::to_string(8 + header.size())}));
}

TEST(Safetensors, RejectsTrailingBytesAfterLastTensor) {
  const std::string header = R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})";
  EXPECT_TRUE(
      st_rejects(st_image(header, std::string(6, 'x')), {"data buffer is 6 bytes", "cover only 4", "2 unused bytes",
                                                         "file offset " + std::to_string(8 + header.size() + 4)}));
  EXPECT_TRUE(st_rejects(st_image("{}", "x"), {"data buffer is 1 bytes", "cover only 0"}));
}

TEST(Safetensors, RejectsTruncatedDataBuffer) {
  const std::string header = R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})";
  EXPECT_TRUE(st_rejects(st_image(header, "xy"), {"tensor 'a'", "ends at 4", "only 2 bytes", "truncated",
                                                  "file offset " + std::to_string(8 + header.size())}));
}

TEST(Safetensors, RejectsDuplicateKeys) {
  const std::string header =
      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})";
  EXPECT_TRUE(st_rejects(st_image(header, "xy"),
                         {"tensor 'a' more than once", "again at file offset " + std::to_string(8 + header.find("\"a\"", 2))}));
  EXPECT_TRUE(st_rejects(st_image(R"({"a":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}})", "x"),
                         {"duplicate key 'dtype'"}));
}

TEST(Safetensors, ErrorsLocateTheEntryPastEscapesAndNesting) {
  // Keys with escaped quotes, values holding braces, commas and strings: the second entry's
  // key is located exactly.
  const std::string first = R"("x\"{,":{"dtype":"U8","shape":[1],"data_offsets":[0,1]})";
  const std::string header = "{ " + first + R"(, "bad":{"dtype":"Q8","shape":[],"data_offsets":[1,1]}})";
  EXPECT_TRUE(st_rejects(st_image(header, "x"), {"tensor 'bad'", "header entry at file offset " +
                                                                      std::to_string(8 + header.find("\"bad\""))}));
}

TEST(Safetensors, RejectsDeeplyNestedHeader) {
  // Millions of levels would overflow the stack in recursive JSON code; a cap stops it early.
  const std::string deep = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  EXPECT_TRUE(st_rejects(st_image(R"({"w":{"shape":)" + deep + R"(,"dtype":"U8","data_offsets":[0,0]}})"),
                         {"more than 64 levels deep"}));
  EXPECT_TRUE(st_rejects(st_image(R"({"__metadata__":{"k":)" + deep + "}}"), {"more than 64 levels deep"}));
}

TEST(Safetensors, MissingFileIsIOError) {
  TempDir tmp;
  const std::string path = tmp.path("absent.safetensors");
  EXPECT_TRUE(throws_with([&] { read_safetensors(path); }, {path, "No such file"}));
}

// =============================================================================================
// IDX

namespace {

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

// An IDX image: magic, dims, and the payload exactly as given (already big-endian).
std::string idx_image(std::uint8_t type, const std::vector<std::uint32_t>& dims, const std::string& payload,
                      std::uint8_t ndims_override = 0) {
  std::string s = {'\0', '\0', static_cast<char>(type),
                   static_cast<char>(ndims_override ? ndims_override : dims.size())};
  for (std::uint32_t d : dims) s += be32(d);
  return s + payload;
}

std::string gzip_with_zlib(const std::string& path, const std::string& content) {
  gzFile f = gzopen(path.c_str(), "wb");
  if (f == nullptr) throw std::runtime_error("gzopen failed");
  if (!content.empty() && gzwrite(f, content.data(), static_cast<unsigned>(content.size())) == 0) {
    throw std::runtime_error("gzwrite failed");
  }
  if (gzclose(f) != Z_OK) throw std::runtime_error("gzclose failed");
  return slurp(path);
}

::testing::AssertionResult idx_rejects(const std::string& content, std::initializer_list<std::string_view> fragments,
                                       std::uint64_t max_bytes = 1ull << 30) {
  TempDir tmp;
  const std::string path = tmp.path("bad-idx1-ubyte");
  write_raw(path, content);
  auto r = throws_with([&] { read_idx(path, max_bytes); }, fragments);
  if (!r) return r;
  return throws_with([&] { read_idx(path, max_bytes); }, {path});
}

// 2x3 ubyte images plus a gzip of them.
const std::string kSmallIdx = idx_image(0x08, {2, 3}, "\x01\x02\x03\x04\x05\xff");

}  // namespace

TEST(Idx, ReadsRawUbyte) {
  TempDir tmp;
  write_raw(tmp.path("a"), kSmallIdx);
  const IdxArray a = read_idx(tmp.path("a"));
  EXPECT_EQ(a.type_code, 0x08);
  EXPECT_EQ(a.dims, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(a.data, (std::vector<std::uint8_t>{1, 2, 3, 4, 5, 255}));
}

TEST(Idx, ConvertsEveryTypeToHostOrder) {
  auto host = [](const IdxArray& a, auto sample) {
    decltype(sample) v;
    std::memcpy(&v, a.data.data(), sizeof v);
    return v;
  };
  const auto i8 = parse_idx(bytes_of(idx_image(0x09, {2}, "\xfe\x05")), "mem");
  EXPECT_EQ(host(i8, std::int8_t{}), -2);
  const auto i16 = parse_idx(bytes_of(idx_image(0x0B, {1}, std::string("\x01\x02", 2))), "mem");
  EXPECT_EQ(host(i16, std::int16_t{}), 0x0102);
  const auto i32 = parse_idx(bytes_of(idx_image(0x0C, {1}, "\xff\xff\xff\xfe")), "mem");
  EXPECT_EQ(host(i32, std::int32_t{}), -2);
  const auto f32 = parse_idx(bytes_of(idx_image(0x0D, {1}, std::string("\x3f\xc0\x00\x00", 4))), "mem");
  EXPECT_EQ(host(f32, float{}), 1.5f);
  const auto f64 =
      parse_idx(bytes_of(idx_image(0x0E, {1, 1}, std::string("\xc0\x04\x00\x00\x00\x00\x00\x00", 8))), "mem");
  EXPECT_EQ(host(f64, double{}), -2.5);
  EXPECT_EQ(f64.dims, (std::vector<std::int64_t>{1, 1}));
}

TEST(Idx, EmptyDimensionAndEightDims) {
  const auto empty = parse_idx(bytes_of(idx_image(0x0C, {5, 0}, "")), "mem");
  EXPECT_TRUE(empty.data.empty());
  const auto eight = parse_idx(bytes_of(idx_image(0x08, {1, 1, 1, 1, 1, 1, 1, 2}, "ab")), "mem");
  EXPECT_EQ(eight.dims.size(), 8u);
}

TEST(Idx, GzipRoundTripWithZlib) {
  TempDir tmp;
  std::string payload(4 * 1000 * 7, '\0');
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 31 % 251);
  const std::string image = idx_image(0x0C, {1000, 7}, payload);
  gzip_with_zlib(tmp.path("x-idx2-int.gz"), image);
  const IdxArray a = read_idx(tmp.path("x-idx2-int.gz"));
  EXPECT_EQ(a.dims, (std::vector<std::int64_t>{1000, 7}));
  ASSERT_EQ(a.data.size(), payload.size());
  // Element 0 big-endian bytes 00 1f 3e 5d -> host int 0x001f3e5d.
  std::int32_t first;
  std::memcpy(&first, a.data.data(), 4);
  EXPECT_EQ(first, 0x001f3e5d);
}

TEST(Idx, PlainDataWithGzName) {
  TempDir tmp;
  write_raw(tmp.path("train-images-idx3-ubyte.gz"), kSmallIdx);
  EXPECT_EQ(read_idx(tmp.path("train-images-idx3-ubyte.gz")).dims, (std::vector<std::int64_t>{2, 3}));
}

TEST(Idx, ConcatenatedGzipMembers) {
  TempDir tmp;
  const std::string a = gzip_with_zlib(tmp.path("a.gz"), kSmallIdx.substr(0, 7));
  const std::string b = gzip_with_zlib(tmp.path("b.gz"), kSmallIdx.substr(7));
  write_raw(tmp.path("ab.gz"), a + b);
  EXPECT_EQ(read_idx(tmp.path("ab.gz")).data, (std::vector<std::uint8_t>{1, 2, 3, 4, 5, 255}));
}

TEST(Idx, RejectsTruncatedGzip) {
  TempDir tmp;
  std::string big(50000, 'q');
  const std::string gz = gzip_with_zlib(tmp.path("t.gz"), idx_image(0x08, {50000}, big));
  // Cut inside the trailer, and inside the deflate data.
  EXPECT_TRUE(
      idx_rejects(gz.substr(0, gz.size() - 3), {"truncated", "compressed offset " + std::to_string(gz.size() - 3)}));
  EXPECT_TRUE(idx_rejects(gz.substr(0, gz.size() / 2), {"truncated", "compressed offset"}));
  EXPECT_TRUE(idx_rejects(gz.substr(0, 5), {"truncated", "compressed offset 5"}));
}

TEST(Idx, RejectsCorruptGzip) {
  TempDir tmp;
  std::string gz = gzip_with_zlib(tmp.path("c.gz"), kSmallIdx);
  std::string bad_crc = gz;
  bad_crc[gz.size() - 8] = static_cast<char>(bad_crc[gz.size() - 8] ^ 0x55);
  EXPECT_TRUE(idx_rejects(bad_crc, {"corrupt gzip", "incorrect data check", "compressed offset"}));
  std::string bad_len = gz;
  bad_len[gz.size() - 1] = static_cast<char>(bad_len[gz.size() - 1] ^ 0x01);
  EXPECT_TRUE(idx_rejects(bad_len, {"corrupt gzip", "incorrect length check"}));
  EXPECT_TRUE(idx_rejects("\x1f\x8b\x09garbage-not-deflate", {"corrupt gzip", "compressed offset"}));
  EXPECT_TRUE(idx_rejects(gz + "junk", {"4 bytes of trailing data", "compressed offset " + std::to_string(gz.size())}));
}

TEST(Idx, RejectsOverDecompressionLimit) {
  TempDir tmp;
  const std::string image = idx_image(0x08, {1 << 20}, std::string(1 << 20, '\0'));
  const std::string gz = gzip_with_zlib(tmp.path("bomb.gz"), image);
  EXPECT_LT(gz.size(), 10000u);  // a small file that inflates to a megabyte
  EXPECT_TRUE(idx_rejects(gz, {"exceeds the limit of 100000 bytes", "compressed offset"}, 100000));
  // Exactly at the limit is fine.
  EXPECT_NO_THROW(parse_idx(bytes_of(gz), "mem", image.size()));
  EXPECT_TRUE(throws_with([&] { parse_idx(bytes_of(gz), "mem", image.size() - 1); }, {"exceeds the limit"}));
  EXPECT_TRUE(throws_with([&] { parse_idx(bytes_of(image), "mem", 1000); }, {"over the limit of 1000 bytes"}));
  EXPECT_TRUE(idx_rejects(image, {"1048584 bytes", "at most 1000 bytes"}, 1000));
  EXPECT_TRUE(idx_rejects(image, {"1048584 bytes", "over the limit of 1048583 bytes"}, image.size() - 1));
}

TEST(Idx, RejectsBadMagic) {
  EXPECT_TRUE(idx_rejects(std::string("\x01\x00\x08\x01", 4) + be32(1) + "x", {"'magic'", "offset 0", "01 00"}));
  EXPECT_TRUE(idx_rejects("PK\x03\x04", {"'magic'", "offset 0", "not an IDX file"}));
  EXPECT_TRUE(idx_rejects(std::string("\0\0", 2), {"'magic'", "only 2 bytes"}));
  EXPECT_TRUE(idx_rejects("", {"'magic'", "only 0 bytes"}));
}

TEST(Idx, RejectsUnknownTypeCode) {
  EXPECT_TRUE(idx_rejects(idx_image(0x0A, {1}, "x"), {"'type code'", "offset 2", "0x0a"}));
}

TEST(Idx, RejectsDimensionCountOutside1To8) {
  EXPECT_TRUE(idx_rejects(idx_image(0x08, {}, ""), {"'dimension count'", "offset 3", "is 0"}));
  EXPECT_TRUE(idx_rejects(idx_image(0x08, {1, 1, 1, 1, 1, 1, 1, 1, 1}, "x"), {"'dimension count'", "is 9"}));
}

TEST(Idx, RejectsTruncatedHeader) {
  EXPECT_TRUE(idx_rejects(idx_image(0x08, {3, 4}, "", 3), {"'dims'", "header truncated at offset 12", "need 16"}));
}

TEST(Idx, RejectsDimsOverflow) {
  const std::vector<std::uint32_t> huge(8, 0xFFFFFFFFu);
  EXPECT_TRUE(idx_rejects(idx_image(0x0E, huge, ""), {"'dims'", "overflows 64 bits"}));
}

TEST(Idx, RejectsShortPayload) {
  EXPECT_TRUE(idx_rejects(idx_image(0x0B, {2, 2}, "abcdef"),
                          {"payload truncated", "need 8 bytes", "offset 12", "only 6", "ends at offset 18"}));
}

TEST(Idx, RejectsTrailingBytes) {
  EXPECT_TRUE(idx_rejects(idx_image(0x08, {2}, "abc"), {"1 trailing bytes", "offset 10", "exactly 2 bytes"}));
}

TEST(Idx, OffsetsInsideGzipAreDecompressedOffsets) {
  TempDir tmp;
  const std::string gz = gzip_with_zlib(tmp.path("g.gz"), idx_image(0x08, {4}, "abc"));
  EXPECT_TRUE(idx_rejects(gz, {"payload truncated", "decompressed offset 8"}));
}

TEST(Idx, MissingFile) {
  TempDir tmp;
  EXPECT_TRUE(throws_with([&] { read_idx(tmp.path("nope.gz")); }, {"nope.gz", "No such file"}));
}

TEST(Idx, ReadsFashionMnist) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::is_directory(dir)) GTEST_SKIP() << dir << " not present";
  struct Case {
    const char* file;
    std::vector<std::int64_t> dims;
  };
  for (const Case& c :
       {Case{"train-images-idx3-ubyte.gz", {60000, 28, 28}}, Case{"train-labels-idx1-ubyte.gz", {60000}},
        Case{"t10k-images-idx3-ubyte.gz", {10000, 28, 28}}, Case{"t10k-labels-idx1-ubyte.gz", {10000}}}) {
    SCOPED_TRACE(c.file);
    const IdxArray a = read_idx(dir + "/" + c.file);
    EXPECT_EQ(a.type_code, 0x08);
    EXPECT_EQ(a.dims, c.dims);
    std::int64_t n = 1;
    for (std::int64_t d : c.dims) n *= d;
    EXPECT_EQ(static_cast<std::int64_t>(a.data.size()), n);
    if (c.dims.size() == 1) {
      std::vector<int> counts(10);
      for (std::uint8_t y : a.data) {
        ASSERT_LT(y, 10);
        ++counts[y];
      }
      for (int k : counts) EXPECT_EQ(k, n / 10);  // Fashion-MNIST is exactly balanced
    }
  }
}

// =============================================================================================
// CSV

namespace {

::testing::AssertionResult csv_rejects(const std::string& content, std::initializer_list<std::string_view> fragments,
                                       int label_column = -1, std::optional<bool> has_header = std::nullopt) {
  TempDir tmp;
  const std::string path = tmp.path("bad.csv");
  write_raw(path, content);
  auto r = throws_with([&] { read_csv(path, label_column, has_header); }, fragments);
  if (!r) return r;
  return throws_with([&] { read_csv(path, label_column, has_header); }, {path});
}

}  // namespace

TEST(Csv, ReadsWithDetectedHeader) {
  TempDir tmp;
  write_raw(tmp.path("d.csv"), "sepal,petal,class\n1,2,0\n3.5,-4e2,1\n+0.25, 7 ,2\n");
  const CsvTable t = read_csv(tmp.path("d.csv"));
  EXPECT_EQ(t.header, (std::vector<std::string>{"sepal", "petal", "class"}));
  EXPECT_EQ(t.rows, 3);
  EXPECT_EQ(t.cols, 2);
  EXPECT_EQ(t.values, (std::vector<double>{1, 2, 3.5, -400, 0.25, 7}));
  EXPECT_EQ(t.labels, (std::vector<std::int64_t>{0, 1, 2}));
}

TEST(Csv, ReadsWithoutHeader) {
  const CsvTable t = parse_csv("1,2,3\n4,5,6", "mem");
  EXPECT_TRUE(t.header.empty());
  EXPECT_EQ(t.rows, 2);
  EXPECT_EQ(t.values, (std::vector<double>{1, 2, 4, 5}));
  EXPECT_EQ(t.labels, (std::vector<std::int64_t>{3, 6}));
}

TEST(Csv, LabelColumnFirstAndMiddle) {
  const CsvTable first = parse_csv("y,a,b\n2,0.5,1.5\n", "mem", 0);
  EXPECT_EQ(first.labels, (std::vector<std::int64_t>{2}));
  EXPECT_EQ(first.values, (std::vector<double>{0.5, 1.5}));
  const CsvTable mid = parse_csv("1,9,2\n", "mem", 1);
  EXPECT_EQ(mid.labels, (std::vector<std::int64_t>{9}));
  EXPECT_EQ(mid.values, (std::vector<double>{1, 2}));
  const CsvTable only = parse_csv("3\n4\n", "mem");
  EXPECT_EQ(only.cols, 0);
  EXPECT_EQ(only.labels, (std::vector<std::int64_t>{3, 4}));
}

TEST(Csv, ExplicitHeaderFlag) {
  const CsvTable t = parse_csv("10,20,1\n1,2,0\n", "mem", -1, true);
  EXPECT_EQ(t.header, (std::vector<std::string>{"10", "20", "1"}));
  EXPECT_EQ(t.rows, 1);
  EXPECT_TRUE(csv_rejects("a,b,c\n1,2,0\n", {"line 1, column 1", "'a' is not a number"}, -1, false));
}

TEST(Csv, CrlfBomBlankLinesQuotesAndSpaces) {
  const std::string text =
      "\xEF\xBB\xBF\"first, name\",\"say \"\"hi\"\"\",label\r\n\r\n 1 , \"2\" ,0\r\n\n  \n3,4,1\r\n";
  const CsvTable t = parse_csv(text, "mem");
  EXPECT_EQ(t.header, (std::vector<std::string>{"first, name", "say \"hi\"", "label"}));
  EXPECT_EQ(t.values, (std::vector<double>{1, 2, 3, 4}));
  EXPECT_EQ(t.labels, (std::vector<std::int64_t>{0, 1}));
}

TEST(Csv, IntegralFloatLabelsAccepted) {
  EXPECT_EQ(parse_csv("1,2.0\n1,+3\n", "mem").labels, (std::vector<std::int64_t>{2, 3}));
}

TEST(Csv, RejectsNonNumericField) {
  EXPECT_TRUE(csv_rejects("a,b,y\n1,2,0\n3,abc,1\n", {"line 3, column 2 (byte offset 14)", "'abc' is not a number"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n3,0x10,1\n", {"line 2, column 2", "'0x10'"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n3,1.5.2,1\n", {"line 2, column 2"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n3,+-1,1\n", {"line 2, column 2"}));
}

TEST(Csv, RejectsEmptyAndNonFiniteFields) {
  EXPECT_TRUE(csv_rejects("1,2,0\n3,,1\n", {"line 2, column 2", "empty field"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n3,nan,1\n", {"line 2, column 2", "not a finite number"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n-inf,2,1\n", {"line 2, column 1", "not a finite number"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n1e999,2,1\n", {"line 2, column 1", "out of range"}));
}

TEST(Csv, RejectsRaggedRows) {
  EXPECT_TRUE(csv_rejects("a,b,y\n1,2,0\n1,2,3,0\n", {"line 3 (byte offset 12)", "4 fields, expected 3", "line 1"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n\n1,0\n", {"line 3", "2 fields, expected 3"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n1,2,0,\n", {"line 2", "4 fields"}));
}

TEST(Csv, RejectsEmptyFile) {
  EXPECT_TRUE(csv_rejects("", {"empty file"}));
  EXPECT_TRUE(csv_rejects("\n \r\n\t\n", {"empty file"}));
  EXPECT_TRUE(csv_rejects("\xEF\xBB\xBF", {"empty file"}));
  EXPECT_TRUE(csv_rejects("a,b,y\n\n", {"line 1", "not followed by any data rows"}));
}

TEST(Csv, RejectsBadLabels) {
  EXPECT_TRUE(csv_rejects("1,2,0\n1,2,-1\n", {"line 2, column 3 (byte offset 10)", "label '-1' is not a class index"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n1,2,1.5\n", {"line 2, column 3", "label '1.5'"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n1,2,cat\n", {"line 2, column 3", "label 'cat'"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n1,2,\n", {"line 2, column 3", "label ''"}));
  EXPECT_TRUE(csv_rejects("5,2,0\n-0,2,0\n", {"line 2, column 1", "label '-0'"}, 0));
  EXPECT_TRUE(csv_rejects("1,2,0\n1,2,99999999999999999999\n", {"line 2, column 3"}));
  // Labels are class indices: one past the cap would ask for a 65537-wide output layer.
  EXPECT_EQ(parse_csv("1,65535\n", "mem").labels, (std::vector<std::int64_t>{65535}));
  EXPECT_TRUE(csv_rejects("1,2,0\n1,2,65536\n", {"line 2, column 3 (byte offset 10)", "'65536'", "0 to 65535"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n1,2,7e4\n", {"line 2, column 3", "'7e4'"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n1,2,9000000000000000000\n", {"line 2, column 3"}));
}

TEST(Csv, RejectsBadLabelColumn) {
  EXPECT_TRUE(csv_rejects("1,2,0\n", {"line 1 (byte offset 0)", "label_column 3", "3 columns"}, 3));
  EXPECT_TRUE(throws_with<ValueError>([] { parse_csv("1,2\n", "mem", -2); }, {"label_column", "-2"}));
}

TEST(Csv, RejectsBadQuoting) {
  EXPECT_TRUE(csv_rejects("1,2,0\n1,\"2\n,0\n", {"line 2, column 2 (byte offset 8)", "never closed"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n1,\"2\"x,0\n", {"line 2, column 2 (byte offset 11)", "after a closing quote"}));
  EXPECT_TRUE(csv_rejects("1,2,0\n1,2\"3,0\n", {"line 2, column 2 (byte offset 9)", "quote character"}));
}

TEST(Csv, LineNumbersCountQuotedLineBreaks) {
  EXPECT_TRUE(csv_rejects("\"a\nb\",c,y\n1,2,0\nx,2,0\n", {"line 4, column 1 (byte offset 16)", "'x'"}));
}

TEST(Csv, MissingFile) {
  TempDir tmp;
  EXPECT_TRUE(throws_with([&] { read_csv(tmp.path("none.csv")); }, {"none.csv", "No such file"}));
}

// =============================================================================================
// Fuzz seed corpus: the valid_* seeds parse and the invalid_* seeds fail with IOError only.

#ifdef CHAINRULE_SOURCE_DIR
TEST(FuzzCorpus, SeedsBehaveAsNamed) {
  const fs::path root = fs::path(CHAINRULE_SOURCE_DIR) / "tests" / "fuzz" / "corpus";
  if (!fs::is_directory(root)) GTEST_SKIP() << root << " not present";
  int seen = 0;
  for (const char* kind : {"safetensors", "idx", "csv"}) {
    for (const auto& e : fs::directory_iterator(root / kind)) {
      const std::string name = e.path().filename().string();
      SCOPED_TRACE(e.path().string());
      const auto bytes = read_file(e.path().string(), 4096);
      auto parse = [&] {
        if (std::string_view(kind) == "safetensors") parse_safetensors(bytes, name);
        if (std::string_view(kind) == "idx") parse_idx(bytes, name);
        if (std::string_view(kind) == "csv") parse_csv(string_of(bytes), name);
      };
      if (name.starts_with("valid_")) {
        EXPECT_NO_THROW(parse());
      } else {
        EXPECT_THROW(parse(), IOError);
      }
      ++seen;
    }
  }
  EXPECT_GT(seen, 0);
}
#endif
