// Model files that are well-formed safetensors but do not fit the model they name: missing,
// extra or mis-shaped tensors, unsupported dtypes, bad metadata, and a spec so large that
// building it first would exhaust memory. Each must be an IOError naming the file and tensor.
#include <gtest/gtest.h>

#include <filesystem>
#include <initializer_list>
#include <string>
#include <string_view>

#include "chainrule/chainrule.h"
#include "chainrule/nn/nn.h"

using namespace chainrule;
using namespace chainrule::nn;

namespace {

class ModelFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("chainrule_model_files_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "model.safetensors").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // mlp:2-4-2's tensors, with `edit` applied, saved with the given spec as metadata.
  template <class Edit>
  void write(const std::string& spec, Edit edit) {
    auto m = build_model("mlp:2-4-2");
    std::map<std::string, Tensor> sd;
    for (auto& [n, t] : m->state_dict()) sd.emplace(n, t);
    edit(sd);
    NamedTensors named(sd.begin(), sd.end());
    save_tensors(path_, named, {{kModelKey, spec}, {kStepKey, "7"}});
  }

  ::testing::AssertionResult rejects(std::initializer_list<std::string_view> fragments) {
    try {
      load_model(path_);
    } catch (const IOError& e) {
      const std::string msg = e.what();
      for (std::string_view f : fragments) {
        if (msg.find(f) == std::string::npos) return ::testing::AssertionFailure() << "lacks \"" << f << "\": " << msg;
      }
      if (msg.find(path_) == std::string::npos) return ::testing::AssertionFailure() << "lacks the path: " << msg;
      return ::testing::AssertionSuccess();
    } catch (const std::exception& e) {
      return ::testing::AssertionFailure() << "wrong exception type: " << e.what();
    }
    return ::testing::AssertionFailure() << "no exception";
  }

  std::filesystem::path dir_;
  std::string path_;
};

}  // namespace

TEST_F(ModelFile, LoadsWhenEverythingFits) {
  write("mlp:2-4-2", [](auto&) {});
  EXPECT_EQ(load_model(path_).step, 7);
}

TEST_F(ModelFile, RejectsMissingTensor) {
  write("mlp:2-4-2", [](auto& sd) { sd.erase("0.bias"); });
  EXPECT_TRUE(rejects({"does not match model mlp:2-4-2", "missing '0.bias'", "[4]"}));
}

TEST_F(ModelFile, RejectsUnexpectedTensor) {
  write("mlp:2-4-2", [](auto& sd) { sd.emplace("5.weight", zeros({2, 2})); });
  EXPECT_TRUE(rejects({"unexpected '5.weight'"}));
}

TEST_F(ModelFile, RejectsTensorOfWrongShape) {
  write("mlp:2-4-2", [](auto& sd) { sd["0.weight"] = zeros({4, 3}); });
  EXPECT_TRUE(rejects({"'0.weight'", "[4, 2]", "[4, 3]"}));
  write("mlp:2-4-2", [](auto& sd) { sd["2.bias"] = zeros({2, 1}); });
  EXPECT_TRUE(rejects({"'2.bias'", "[2, 1]"}));
}

TEST_F(ModelFile, RejectsUnsupportedDtype) {
  // Written by hand: chainrule never writes I32, other tools do.
  io::Safetensors st;
  st.metadata = {{kModelKey, "mlp:2-4-2"}};
  st.tensors.push_back({"0.weight", {"I32", {4, 2}, std::vector<std::byte>(32)}});
  io::save_safetensors(path_, st);
  EXPECT_TRUE(rejects({"tensor '0.weight'", "dtype I32 is not supported"}));
}

TEST_F(ModelFile, RejectsNonIntegerStep) {
  const auto sd = build_model("mlp:2-4-2")->state_dict();
  save_tensors(path_, NamedTensors(sd.begin(), sd.end()), {{kModelKey, "mlp:2-4-2"}, {kStepKey, "seven"}});
  EXPECT_TRUE(rejects({"chainrule.step", "'seven'", "not an integer"}));
}

TEST_F(ModelFile, RejectsSpecTooLargeForTheFileBeforeBuildingIt) {
  // 2^24 x 2^24 weights would be a petabyte: refused from the file's size, not by bad_alloc.
  write("mlp:16777216-16777216", [](auto&) {});
  EXPECT_TRUE(rejects({"needs at least 281474976710656 parameters", "hold 22 elements", "chainrule.model"}));
  write("resmlp:2-4096x64-2", [](auto&) {});
  EXPECT_TRUE(rejects({"needs at least", "resmlp:2-4096x64-2"}));
}
