#pragma once
// U-Net (Ronneberger et al. 2015, "U-Net: convolutional networks for biomedical image
// segmentation"), small and padded ("same" 3x3 convolutions, so no cropping), with batch
// normalisation, built by the model spec unet:... (nn/spec.h). Its output is an image
// [N, OUT, H, W] of the input's height and width, not logits.
//
// Layout and parameter names are those of the PyTorch U-Net on torch.hub
// (mateuszbuda/brain-segmentation-pytorch, unet.py), generalised to depth D and without its final
// sigmoid: encoder1..D, pool1..D, bottleneck, then upconvD, decoderD, ..., upconv1, decoder1, and
// conv. Each encoder/decoder/bottleneck is a block of two (3x3 conv, padding 1, no bias; BN; ReLU)
// named enc{i}conv1, enc{i}norm1, enc{i}relu1, enc{i}conv2, ... (dec{i}..., bottleneck...), e.g.
// encoder1.enc1conv1.weight, bottleneck.bottlenecknorm2.running_var, upconv1.weight, conv.bias.
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "chainrule/nn/layers.h"
#include "chainrule/nn/resnet.h"

namespace chainrule::nn {

// Level i (1-based) works on base·2^(i-1) channels at (H, W) / 2^(i-1); the bottleneck on base·2^D
// channels at (H, W) / 2^D. Encoder i's output is kept as the skip of decoder i, which sees
// concat(upconv_i(below), skip_i) along the channels (the upsampled map first, as in the torch.hub
// model) and halves the channels back. conv: a 1x1 convolution (with bias) to OUT channels.
// H and W must be multiples of 2^D (the pools must not drop a row or column that the skips keep).
//
// A Sequential so that build_model returns it like any other model; its forward wires the skips
// itself, so checkpointing by segments (set_checkpoint_segments > 1) is refused.
class UNet : public Sequential {
 public:
  UNet(std::array<std::int64_t, 3> image, std::int64_t base_channels, std::int64_t depth, std::int64_t out_channels,
       DType dtype = get_default_dtype());
  Tensor forward(const Tensor& x) override;
  std::string repr() const override;
  std::array<std::int64_t, 3> image;  // C, H, W of the input
  std::int64_t base_channels, depth, out_channels;
  std::vector<std::shared_ptr<Sequential>> encoders, decoders;  // level 1 first
  std::vector<std::shared_ptr<ConvTranspose2d>> upconvs;        // level 1 first
  std::shared_ptr<Sequential> bottleneck;
  std::shared_ptr<Conv2d> head;  // "conv"
};

// The block of two (conv 3x3 - BN - ReLU), children PREFIXconv1, PREFIXnorm1, PREFIXrelu1,
// PREFIXconv2, PREFIXnorm2, PREFIXrelu2 (the torch.hub model's _block).
std::shared_ptr<Sequential> make_unet_block(std::int64_t in_channels, std::int64_t channels, const std::string& prefix,
                                            DType dtype = get_default_dtype());

}  // namespace chainrule::nn
