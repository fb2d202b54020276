#include "chainrule/nn/spec.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include <charconv>

namespace chainrule::nn {

namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    auto pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos) return out;
    start = pos + 1;
  }
}

std::int64_t positive(std::string_view spec, std::string_view field, const char* what) {
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(field.data(), field.data() + field.size(), v);
  if (field.empty() || ec != std::errc() || p != field.data() + field.size() || v <= 0 || v > (1 << 24))
    throw ValueError(fmt::format("model spec '{}': {} '{}' is not a positive integer", spec, what, field));
  return v;
}

constexpr const char* kSyntax = "expected mlp:IN-H1-...-OUT[:ACTIVATION] or resmlp:IN-WIDTHxBLOCKS-OUT[:lrl|pre|lrlr[+ln|+bn]]";

}  // namespace

ModelSpec ModelSpec::parse(std::string_view spec) {
  auto parts = split(spec, ':');
  if (parts.size() < 2 || parts.size() > 3) throw ValueError(fmt::format("model spec '{}': {}", spec, kSyntax));
  ModelSpec m;
  if (parts[0] == "mlp") {
    m.kind = Kind::MLP;
    if (parts.size() == 3) {
      auto names = activation_names();
      if (std::find(names.begin(), names.end(), parts[2]) == names.end())
        throw ValueError(fmt::format("model spec '{}': an mlp takes an activation ({}), not '{}'", spec, fmt::join(names, ", "), parts[2]));
      m.activation = std::string(parts[2]);
    }
    for (auto f : split(parts[1], '-')) m.sizes.push_back(positive(spec, f, "layer size"));
    if (m.sizes.size() < 2) throw ValueError(fmt::format("model spec '{}': an mlp needs at least an input and an output size", spec));
    return m;
  }
  if (parts[0] != "resmlp") throw ValueError(fmt::format("model spec '{}': unknown kind '{}'; {}", spec, parts[0], kSyntax));
  m.kind = Kind::ResMLP;
  auto f = split(parts[1], '-');
  if (f.size() != 3) throw ValueError(fmt::format("model spec '{}': {}", spec, kSyntax));
  m.in = positive(spec, f[0], "input size");
  auto x = f[1].find('x');
  if (x == std::string_view::npos) throw ValueError(fmt::format("model spec '{}': '{}' must be WIDTHxBLOCKS; {}", spec, f[1], kSyntax));
  m.width = positive(spec, f[1].substr(0, x), "width");
  auto nb = f[1].substr(x + 1);
  if (nb == "0") {
    m.blocks = 0;
  } else {
    m.blocks = positive(spec, nb, "block count");
  }
  m.out = positive(spec, f[2], "output size");
  if (parts.size() == 3) {
    auto opts = split(parts[2], '+');
    auto lay = opts[0];
    if (lay == "lrl") m.layout = BlockLayout::LRL;
    else if (lay == "pre") m.layout = BlockLayout::Pre;
    else if (lay == "lrlr") m.layout = BlockLayout::LRLR;
    else throw ValueError(fmt::format("model spec '{}': unknown block layout '{}' (lrl, pre, lrlr)", spec, lay));
    for (std::size_t i = 1; i < opts.size(); ++i) {
      auto o = opts[i];
      if (o == "ln" && m.norm == BlockNorm::None) m.norm = BlockNorm::LayerNorm;
      else if (o == "bn" && m.norm == BlockNorm::None) m.norm = BlockNorm::BatchNorm;
      else if (o.size() > 1 && o[0] == 'd' && m.dropout == 0) {
        double p = -1;
        auto [end, ec] = std::from_chars(o.data() + 1, o.data() + o.size(), p);
        if (ec != std::errc() || end != o.data() + o.size() || !(p > 0 && p < 1))
          throw ValueError(fmt::format("model spec '{}': dropout '+{}' needs a probability in (0, 1), e.g. +d0.2", spec, o));
        m.dropout = p;
      } else {
        throw ValueError(fmt::format("model spec '{}': unknown or repeated block option '+{}' (+ln, +bn, +dP)", spec, o));
      }
    }
  }
  return m;
}

std::string ModelSpec::str() const {
  if (kind == Kind::MLP) {
    std::string s = "mlp:";
    for (std::size_t i = 0; i < sizes.size(); ++i) s += (i ? "-" : "") + std::to_string(sizes[i]);
    if (activation != "relu") s += ":" + activation;
    return s;
  }
  std::string s = fmt::format("resmlp:{}-{}x{}-{}", in, width, blocks, out);
  if (layout != BlockLayout::LRL || norm != BlockNorm::None || dropout > 0) {
    static const char* layouts[] = {"lrl", "pre", "lrlr"};
    static const char* norms[] = {"", "+ln", "+bn"};
    s += fmt::format(":{}{}", layouts[static_cast<int>(layout)], norms[static_cast<int>(norm)]);
    if (dropout > 0) s += fmt::format("+d{}", dropout);
  }
  return s;
}

std::shared_ptr<Sequential> build_model(const ModelSpec& spec, DType dtype) {
  auto model = std::make_shared<Sequential>();
  const LinearOptions lo{.dtype = dtype};
  if (spec.kind == ModelSpec::Kind::MLP) {
    for (std::size_t i = 0; i + 1 < spec.sizes.size(); ++i) {
      if (i > 0) model->push_back(make_activation(spec.activation));
      model->push_back(std::make_shared<Linear>(spec.sizes[i], spec.sizes[i + 1], lo));
    }
    return model;
  }
  model->push_back(std::make_shared<Linear>(spec.in, spec.width, lo));
  model->push_back(std::make_shared<ReLU>());
  for (std::int64_t b = 0; b < spec.blocks; ++b)
    model->push_back(std::make_shared<ResidualBlock>(spec.width, spec.layout, spec.norm, dtype, spec.dropout,
                                                     static_cast<std::uint64_t>(b)));
  model->push_back(std::make_shared<Linear>(spec.width, spec.out, lo));
  return model;
}

}  // namespace chainrule::nn
