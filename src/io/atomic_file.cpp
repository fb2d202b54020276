#include "chainrule/io/atomic_file.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string_view>

#include "chainrule/errors.h"

namespace chainrule::io {
namespace {

// strerror is not thread-safe; strerror_r comes in a GNU flavour (returns the message) and an
// XSI flavour (fills the buffer). Overloading on the return type picks the right one.
[[maybe_unused]] const char* strerror_result(int /*xsi_rc*/, const char* buf) { return buf; }
[[maybe_unused]] const char* strerror_result(const char* gnu_msg, const char* /*buf*/) { return gnu_msg; }

std::string sys_error(int err) {
  char buf[256] = {};
  return strerror_result(strerror_r(err, buf, sizeof buf), buf);
}

[[noreturn]] void fail_write(const std::string& path, std::string_view step, int err) {
  throw IOError(fmt::format("write_file_atomic('{}'): {} failed: {}", path, step, sys_error(err)));
}

[[noreturn]] void fail_read(const std::string& path, std::string_view what) {
  throw IOError(fmt::format("read_file('{}'): {}", path, what));
}

// Read once per call rather than cached, so tests can flip it between calls. "STAGE" aborts in
// every write, "STAGE:NAME" only in writes of a file named NAME. CHAINRULE_FAULT_DELAY_MS sleeps
// after each stage, so that a test's kill at a random moment often lands inside a save.
void maybe_inject_fault(const char* stage, const std::string& base) {
  if (const char* ms = std::getenv("CHAINRULE_FAULT_DELAY_MS")) ::usleep(static_cast<useconds_t>(std::atoi(ms)) * 1000u);
  const char* want = std::getenv("CHAINRULE_FAULT_INJECT");
  if (want == nullptr) return;
  std::string_view w(want);
  if (w == stage || (w.starts_with(stage) && w.substr(std::strlen(stage)) == ":" + base)) std::abort();
}

// Unique within the process (counter), across processes (pid) and across reboots / pid reuse
// (random). O_EXCL at open time settles any remaining collision.
std::string temp_name(const std::filesystem::path& dir, const std::string& base) {
  static std::atomic<std::uint64_t> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  // Keep the name under NAME_MAX even when the target's name is already long.
  std::string stem = base.substr(0, std::min<std::size_t>(base.size(), 100));
  std::string name =
      fmt::format(".{}.tmp.{}.{}.{:016x}", stem, static_cast<long>(::getpid()), counter.fetch_add(1), rng());
  return (dir / name).string();
}

// Owns the temporary file until it has been renamed into place: any exit before that closes
// and unlinks it.
struct TempFile {
  std::string path;
  int fd = -1;
  bool renamed = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!renamed && !path.empty()) ::unlink(path.c_str());
  }
};

}  // namespace

void write_file_atomic(const std::string& path, std::span<const std::byte> bytes) {
  const std::filesystem::path target(path);
  const std::string base = target.filename().string();
  if (base.empty() || base == "." || base == "..") {
    throw IOError(fmt::format("write_file_atomic('{}'): path does not name a file", path));
  }
  std::filesystem::path dir = target.parent_path();
  if (dir.empty()) dir = ".";

  TempFile tmp;
  for (int attempt = 0; tmp.fd < 0; ++attempt) {
    std::string name = temp_name(dir, base);
    int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
      tmp.path = std::move(name);
      tmp.fd = fd;
    } else if (errno != EEXIST || attempt >= 100) {
      fail_write(path, fmt::format("creating temporary file '{}'", name), errno);
    }
  }

  // Replacing a file should not silently change who may read it (e.g. a 0600 file).
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    if (::fchmod(tmp.fd, st.st_mode & 07777) != 0) fail_write(path, "fchmod of temporary file", errno);
  }

  const auto* p = reinterpret_cast<const char*>(bytes.data());
  std::size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(tmp.fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_write(path, fmt::format("write to '{}'", tmp.path), errno);
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  maybe_inject_fault("after_write", base);

  if (::fsync(tmp.fd) != 0) fail_write(path, fmt::format("fsync of '{}'", tmp.path), errno);
  maybe_inject_fault("after_fsync", base);

  // close can report delayed write errors (e.g. on NFS), so it is checked like the rest.
  int fd = tmp.fd;
  tmp.fd = -1;
  if (::close(fd) != 0) fail_write(path, fmt::format("close of '{}'", tmp.path), errno);

  if (::rename(tmp.path.c_str(), path.c_str()) != 0) {
    fail_write(path, fmt::format("rename of '{}' over the target", tmp.path), errno);
  }
  tmp.renamed = true;
  maybe_inject_fault("after_rename", base);

  // Without this the rename may be lost on power failure, resurrecting the old file.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    fail_write(path,
               fmt::format("opening directory '{}' to fsync it (the new contents are in place "
                           "but may not survive a crash)",
                           dir.string()),
               errno);
  }
  int rc = ::fsync(dfd);
  int err = errno;
  ::close(dfd);
  // EINVAL: the file system cannot sync directories at all, so there is nothing more to do.
  if (rc != 0 && err != EINVAL) {
    fail_write(path,
               fmt::format("fsync of directory '{}' (the new contents are in place but may "
                           "not survive a crash)",
                           dir.string()),
               err);
  }
}

std::vector<std::byte> read_file(const std::string& path, std::size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_read(path, fmt::format("open failed: {}", sys_error(errno)));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};

  struct stat st {};
  if (::fstat(fd, &st) != 0) fail_read(path, fmt::format("fstat failed: {}", sys_error(errno)));
  if (S_ISDIR(st.st_mode)) fail_read(path, "is a directory, not a file");
  std::size_t expected = 0;
  if (S_ISREG(st.st_mode)) {
    expected = static_cast<std::size_t>(st.st_size);
    if (expected > max_bytes) {
      fail_read(path, fmt::format("file is {} bytes, over the limit of {} bytes", expected, max_bytes));
    }
  }

  // The buffer never grows past max_bytes + 1: one byte over is enough to detect the overrun.
  const std::size_t hard_cap = max_bytes == SIZE_MAX ? max_bytes : max_bytes + 1;
  std::vector<std::byte> out(std::min(hard_cap, std::max<std::size_t>(expected + 1, 4096)));
  std::size_t len = 0;
  for (;;) {
    if (len == out.size()) {
      if (out.size() >= hard_cap) {
        fail_read(path, fmt::format("file is more than {} bytes, over the limit", max_bytes));
      }
      out.resize(std::min(hard_cap, out.size() * 2));
    }
    ssize_t n = ::read(fd, out.data() + len, out.size() - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_read(path, fmt::format("read failed at byte offset {}: {}", len, sys_error(errno)));
    }
    if (n == 0) break;
    len += static_cast<std::size_t>(n);
  }
  if (len > max_bytes) fail_read(path, fmt::format("file is more than {} bytes, over the limit", max_bytes));
  out.resize(len);
  return out;
}

}  // namespace chainrule::io
