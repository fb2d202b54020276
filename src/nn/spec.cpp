#include "chainrule/nn/spec.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include <charconv>
#include <cmath>

#include "chainrule/nn/densenet.h"
#include "chainrule/nn/resnet.h"
#include "chainrule/nn/unet.h"

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

constexpr const char* kSyntax =
    "expected mlp:IN-H1-...-OUT[:ACTIVATION], resmlp:IN-WIDTHxBLOCKS-OUT[:lrl|pre|lrlr[+ln|+bn]] or "
    "resnet:CxHxW-WIDTHxBLOCKS-...-OUT[:post|pre], densenet:CxHxW-gGROWTH-bN1xN2x...[-cTHETA]-OUT[:basic] or "
    "unet:CxHxW-cBASE-dDEPTH-OUT";

// "AxB" -> (A, B), each a positive integer.
std::pair<std::int64_t, std::int64_t> pair_of(std::string_view spec, std::string_view field, const char* a, const char* b) {
  auto x = field.find('x');
  if (x == std::string_view::npos)
    throw ValueError(fmt::format("model spec '{}': '{}' must be {}x{}; {}", spec, field, a, b, kSyntax));
  return {positive(spec, field.substr(0, x), a), positive(spec, field.substr(x + 1), b)};
}

// "CxHxW" -> image; in = C·H·W.
void parse_image(ModelSpec& m, std::string_view spec, std::string_view field) {
  auto dims = split(field, 'x');
  if (dims.size() != 3) throw ValueError(fmt::format("model spec '{}': image shape '{}' must be CxHxW, e.g. 1x28x28", spec, field));
  for (std::size_t i = 0; i < 3; ++i) m.image[i] = positive(spec, dims[i], i == 0 ? "channel count" : "image size");
  m.in = m.image[0] * m.image[1] * m.image[2];
}

// A field "<letter>VALUE", e.g. "g12": the VALUE part, or a ValueError naming what was expected.
std::string_view tagged(std::string_view spec, std::string_view field, char tag, const char* what) {
  if (field.size() < 2 || field[0] != tag)
    throw ValueError(fmt::format("model spec '{}': expected {} as {}N, got '{}'; {}", spec, what, tag, field, kSyntax));
  return field.substr(1);
}

ModelSpec parse_densenet(std::string_view spec, const std::vector<std::string_view>& parts) {
  ModelSpec m;
  m.kind = ModelSpec::Kind::DenseNet;
  auto f = split(parts[1], '-');
  if (f.size() != 4 && f.size() != 5)
    throw ValueError(fmt::format("model spec '{}': a densenet needs an image shape, a growth rate, block sizes, an optional "
                                 "compression and an output size; {}", spec, kSyntax));
  parse_image(m, spec, f[0]);
  m.growth = positive(spec, tagged(spec, f[1], 'g', "the growth rate"), "growth rate");
  for (auto n : split(tagged(spec, f[2], 'b', "the block sizes"), 'x')) m.dense_blocks.push_back(positive(spec, n, "block size"));
  if (f.size() == 5) {
    auto t = tagged(spec, f[3], 'c', "the compression");
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), m.compression);
    if (ec != std::errc() || end != t.data() + t.size() || !(m.compression > 0 && m.compression <= 1))
      throw ValueError(fmt::format("model spec '{}': compression '{}' must be a number in (0, 1], e.g. c0.5", spec, f[3]));
  }
  m.out = positive(spec, f.back(), "output size");
  if (parts.size() == 3) {
    if (parts[2] == "basic") m.bottleneck = false;
    else if (parts[2] != "bottleneck") throw ValueError(fmt::format("model spec '{}': unknown layer kind '{}' (bottleneck, basic)", spec, parts[2]));
  }
  // Every transition halves the image (rounding down) and must leave a pixel; and θ must leave a channel.
  std::int64_t h = m.image[1], w = m.image[2], c = 2 * m.growth;
  for (std::size_t b = 0; b + 1 < m.dense_blocks.size(); ++b) {
    c = static_cast<std::int64_t>(std::floor(m.compression * static_cast<double>(c + m.dense_blocks[b] * m.growth)));
    h /= 2, w /= 2;
    if (h == 0 || w == 0)
      throw ShapeError(fmt::format("model spec '{}': {} transitions halve the {}x{} image to nothing (transition {} gets {}x{})", spec,
                                   m.dense_blocks.size() - 1, m.image[1], m.image[2], b + 1, m.image[1] >> b, m.image[2] >> b));
    if (c == 0) throw ValueError(fmt::format("model spec '{}': compression {} leaves transition {} no channel", spec, m.compression, b + 1));
  }
  return m;
}

ModelSpec parse_unet(std::string_view spec, const std::vector<std::string_view>& parts) {
  ModelSpec m;
  m.kind = ModelSpec::Kind::UNet;
  auto f = split(parts[1], '-');
  if (f.size() != 4 || parts.size() != 2)
    throw ValueError(fmt::format("model spec '{}': a unet needs an image shape, base channels, a depth and output channels; {}", spec, kSyntax));
  parse_image(m, spec, f[0]);
  m.base_channels = positive(spec, tagged(spec, f[1], 'c', "the base channels"), "base channel count");
  m.depth = positive(spec, tagged(spec, f[2], 'd', "the depth"), "depth");
  m.out = positive(spec, f[3], "output channel count");
  if (m.depth > 16 || (m.base_channels << m.depth) > (1 << 24))
    throw ValueError(fmt::format("model spec '{}': {} channels doubled {} times is too many", spec, m.base_channels, m.depth));
  const std::int64_t scale = std::int64_t{1} << m.depth;
  if (m.image[1] % scale != 0 || m.image[2] % scale != 0) {
    std::string halves = fmt::format("{}x{}", m.image[1], m.image[2]);
    for (std::int64_t h = m.image[1], w = m.image[2], i = 0; i < m.depth && h % 2 == 0 && w % 2 == 0; ++i)
      h /= 2, w /= 2, halves += fmt::format(" -> {}x{}", h, w);
    throw ShapeError(fmt::format("model spec '{}': a depth of {} halves the image {} times, so its height and width must be multiples of "
                                 "2^{} = {}; {} cannot be halved again (use a smaller depth or pad the images)",
                                 spec, m.depth, m.depth, m.depth, scale, halves));
  }
  return m;
}

// The layers of densenet:... in torchvision's order and names (see spec.h).
std::shared_ptr<Sequential> build_densenet(const ModelSpec& spec, DType dtype) {
  auto model = std::make_shared<Sequential>();
  const auto [c, h, w] = spec.image;
  // float32 runs channels-last inside, as build_resnet does; names, parameters, inputs and outputs
  // do not change.
  const bool cl = dtype == DType::f32;
  model->push_back("unflatten", std::make_shared<Unflatten>(1, Shape{c, h, w}));
  if (cl) model->push_back("channels_last", std::make_shared<ToChannelsLast>());
  auto features = std::make_shared<Sequential>();
  std::int64_t channels = 2 * spec.growth;
  features->push_back("conv0", std::make_shared<Conv2d>(c, channels, std::array<std::int64_t, 2>{3, 3},
                                                        Conv2dLayerOptions{.padding = {1, 1}, .bias = false, .dtype = dtype, .channels_last = cl}));
  for (std::size_t b = 0; b < spec.dense_blocks.size(); ++b) {
    auto block = std::make_shared<DenseBlock>(channels, spec.dense_blocks[b], spec.growth, spec.bottleneck, dtype, cl);
    features->push_back(fmt::format("denseblock{}", b + 1), block);
    channels = block->out_channels();
    if (b + 1 < spec.dense_blocks.size()) {
      const auto next = static_cast<std::int64_t>(std::floor(spec.compression * static_cast<double>(channels)));
      features->push_back(fmt::format("transition{}", b + 1), make_transition(channels, next, dtype, cl));
      channels = next;
    }
  }
  auto norm5 = std::make_shared<BatchNorm2d>(channels, 1e-5, 0.1, true, dtype);
  norm5->channels_last = cl;
  features->push_back("norm5", norm5);
  model->push_back("features", features);
  model->push_back("relu", std::make_shared<ReLU>());
  model->push_back("avgpool", std::make_shared<GlobalAvgPool2d>(cl));
  model->push_back("classifier", std::make_shared<Linear>(channels, spec.out, LinearOptions{.dtype = dtype}));
  return model;
}

ModelSpec parse_resnet(std::string_view spec, const std::vector<std::string_view>& parts) {
  ModelSpec m;
  m.kind = ModelSpec::Kind::ResNet;
  auto f = split(parts[1], '-');
  if (f.size() < 3) throw ValueError(fmt::format("model spec '{}': a resnet needs an image shape, at least one stage and an output size; {}", spec, kSyntax));
  parse_image(m, spec, f[0]);
  for (std::size_t i = 1; i + 1 < f.size(); ++i) m.stages.push_back(pair_of(spec, f[i], "WIDTH", "BLOCKS"));
  m.out = positive(spec, f.back(), "output size");
  if (parts.size() == 3) {
    if (parts[2] == "pre") m.preact = true;
    else if (parts[2] != "post") throw ValueError(fmt::format("model spec '{}': unknown block kind '{}' (post, pre)", spec, parts[2]));
  }
  return m;
}

// The layers of resnet:... in PyTorch's order and names (see spec.h).
std::shared_ptr<Sequential> build_resnet(const ModelSpec& spec, DType dtype) {
  auto model = std::make_shared<Sequential>();
  const auto [c, h, w] = spec.image;
  const std::int64_t stem = spec.stages.front().first;
  // float32 networks run channels-last inside (oneDNN's NHWC convolutions need no reorders around
  // them); the layers' names, parameters and the model's inputs and outputs do not change.
  const bool cl = dtype == DType::f32;
  model->push_back("unflatten", std::make_shared<Unflatten>(1, Shape{c, h, w}));
  if (cl) model->push_back("channels_last", std::make_shared<ToChannelsLast>());
  model->push_back("conv1", std::make_shared<Conv2d>(c, stem, std::array<std::int64_t, 2>{3, 3},
                                                     Conv2dLayerOptions{.padding = {1, 1}, .bias = false, .dtype = dtype, .channels_last = cl}));
  auto bn = [&](std::int64_t channels) {
    auto m = std::make_shared<BatchNorm2d>(channels, 1e-5, 0.1, true, dtype);
    m->channels_last = cl;
    return m;
  };
  if (!spec.preact) {
    model->push_back("bn1", bn(stem));
    model->push_back("relu", std::make_shared<ReLU>());
  }
  std::int64_t channels = stem;
  for (std::size_t s = 0; s < spec.stages.size(); ++s) {
    const auto [width, blocks] = spec.stages[s];
    auto stage = std::make_shared<Sequential>();
    for (std::int64_t b = 0; b < blocks; ++b) {
      stage->push_back(std::make_shared<BasicBlock>(channels, width, s > 0 && b == 0 ? 2 : 1, spec.preact, dtype, cl));
      channels = width;
    }
    model->push_back(fmt::format("layer{}", s + 1), stage);
  }
  if (spec.preact) {
    model->push_back("bn_final", bn(channels));
    model->push_back("relu", std::make_shared<ReLU>());
  }
  model->push_back("avgpool", std::make_shared<GlobalAvgPool2d>(cl));
  model->push_back("fc", std::make_shared<Linear>(channels, spec.out, LinearOptions{.dtype = dtype}));
  return model;
}

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
  if (parts[0] == "resnet") return parse_resnet(spec, parts);
  if (parts[0] == "densenet") return parse_densenet(spec, parts);
  if (parts[0] == "unet") return parse_unet(spec, parts);
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
  if (kind == Kind::ResNet) {
    std::string s = fmt::format("resnet:{}x{}x{}", image[0], image[1], image[2]);
    for (auto [w, n] : stages) s += fmt::format("-{}x{}", w, n);
    return s + fmt::format("-{}{}", out, preact ? ":pre" : "");
  }
  if (kind == Kind::DenseNet) {
    std::string s = fmt::format("densenet:{}x{}x{}-g{}-b", image[0], image[1], image[2], growth);
    for (std::size_t i = 0; i < dense_blocks.size(); ++i) s += (i ? "x" : "") + std::to_string(dense_blocks[i]);
    return s + fmt::format("-c{}-{}{}", compression, out, bottleneck ? "" : ":basic");
  }
  if (kind == Kind::UNet) return fmt::format("unet:{}x{}x{}-c{}-d{}-{}", image[0], image[1], image[2], base_channels, depth, out);
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
  if (spec.kind == ModelSpec::Kind::ResNet) return build_resnet(spec, dtype);
  if (spec.kind == ModelSpec::Kind::DenseNet) return build_densenet(spec, dtype);
  if (spec.kind == ModelSpec::Kind::UNet) return std::make_shared<UNet>(spec.image, spec.base_channels, spec.depth, spec.out, dtype);
  model->push_back(std::make_shared<Linear>(spec.in, spec.width, lo));
  model->push_back(std::make_shared<ReLU>());
  for (std::int64_t b = 0; b < spec.blocks; ++b)
    model->push_back(std::make_shared<ResidualBlock>(spec.width, spec.layout, spec.norm, dtype, spec.dropout,
                                                     static_cast<std::uint64_t>(b)));
  model->push_back(std::make_shared<Linear>(spec.width, spec.out, lo));
  return model;
}

}  // namespace chainrule::nn
