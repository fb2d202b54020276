#pragma once
// Whole-file reads and crash-safe whole-file writes. Checkpoints and saved models go through
// write_file_atomic so that a crash or a full disk never leaves a half-written file behind.
#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace chainrule::io {

// Replaces `path` with `bytes` atomically: readers, and the file system after a crash, see
// either the old file or the complete new one. The bytes go to a uniquely named temporary
// file in the same directory (rename is only atomic within one file system), which is
// fsync'd, renamed over `path`, and then the directory is fsync'd so the rename itself is
// durable. An existing target's permission bits are kept; a new file gets 0666 & ~umask.
//
// Throws IOError naming `path`, the failing step and the system's reason. On failure before
// the rename the temporary file is removed and `path` is untouched. If only the final
// directory fsync fails, `path` already holds the new contents; the error says so.
//
// Fault injection for crash tests: if the environment variable CHAINRULE_FAULT_INJECT is
// "after_write", "after_fsync" or "after_rename", the process calls std::abort() right after
// that step; "after_rename:model.safetensors" does so only when writing a file of that name.
// Other values are ignored. CHAINRULE_FAULT_DELAY_MS=N sleeps N ms after each of the three steps
// (kill tests use it to land SIGKILLs inside saves).
void write_file_atomic(const std::string& path, std::span<const std::byte> bytes);

// Reads the whole file. Throws IOError naming `path` if it cannot be opened or read, is a
// directory, or holds more than `max_bytes` bytes (checked while reading, so a file that
// grows, or a pipe, cannot exhaust memory either).
std::vector<std::byte> read_file(const std::string& path, std::size_t max_bytes);

}  // namespace chainrule::io
