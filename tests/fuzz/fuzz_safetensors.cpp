// libFuzzer target for parse_safetensors. Any input must either parse or throw IOError; a
// file that parses must survive serialize -> parse with the same tensors and metadata.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <span>
#include <string>

#include "chainrule/errors.h"
#include "chainrule/io/safetensors.h"

namespace {

std::map<std::string, chainrule::io::RawTensor> by_name(const chainrule::io::Safetensors& st) {
  std::map<std::string, chainrule::io::RawTensor> m;
  for (const auto& [name, t] : st.tensors) m.emplace(name, t);
  return m;
}

bool same(const std::map<std::string, chainrule::io::RawTensor>& a,
          const std::map<std::string, chainrule::io::RawTensor>& b) {
  if (a.size() != b.size()) return false;
  for (auto i = a.begin(), j = b.begin(); i != a.end(); ++i, ++j) {
    if (i->first != j->first || i->second.dtype != j->second.dtype || i->second.shape != j->second.shape ||
        i->second.data != j->second.data) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  chainrule::io::Safetensors st;
  try {
    st = chainrule::io::parse_safetensors(bytes, "fuzz-input");
  } catch (const chainrule::IOError&) {
    return 0;  // rejected with a typed error: the expected outcome for most inputs
  }
  // Whatever the reader accepts, the writer must be able to write back unchanged.
  const std::vector<std::byte> again = chainrule::io::serialize_safetensors(st);
  const chainrule::io::Safetensors back = chainrule::io::parse_safetensors(again, "round-trip");
  if (back.metadata != st.metadata || !same(by_name(back), by_name(st))) std::abort();
  return 0;
}
