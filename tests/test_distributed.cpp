// Data-parallel pieces that need no second process: the post-accumulate-grad hook, the loader's
// shards, the one-process communicator and DistributedDataParallel over it. The multi-process
// tests (mpirun) are in tests/mpi/.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "chainrule/chainrule.h"
#include "chainrule/data/loader.h"
#include "chainrule/distributed/communicator.h"
#include "chainrule/distributed/ddp.h"
#include "chainrule/nn/spec.h"
#include "chainrule/nn/train.h"

using namespace chainrule;

TEST(PostAccumulateGradHook, FiresOncePerBackwardWithTheAccumulatedGradient) {
  Tensor w = tensor({1.0, 2.0, 3.0}, {3}).requires_grad_();
  std::vector<std::vector<float>> seen;
  auto id = w.register_post_accumulate_grad_hook([&](const Tensor& g) { seen.push_back(g.to_vector<float>()); });
  // w is used twice: the engine sums both contributions before accumulating, so one call.
  ((w * w).sum() + w.sum()).backward();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], (std::vector<float>{3, 5, 7}));
  (w * 2.0).sum().backward();  // accumulates into the existing gradient
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1], (std::vector<float>{5, 7, 9}));
  w.remove_hook(id);
  w.sum().backward();
  EXPECT_EQ(seen.size(), 2u);
}

TEST(PostAccumulateGradHook, NeedsALeafThatRequiresGrad) {
  Tensor x = tensor({1.0}, {1});
  EXPECT_THROW(x.register_post_accumulate_grad_hook([](const Tensor&) {}), AutodiffError);
  Tensor y = x.detach().requires_grad_() * 2.0;
  EXPECT_THROW(y.register_post_accumulate_grad_hook([](const Tensor&) {}), AutodiffError);
}

TEST(DataLoaderShard, PartsOfAllRanksMakeTheBatch) {
  data::Splits s = data::make_spirals();
  data::DataLoader loader(s.train, {.batch_size = 64, .seed = 3});
  auto order = loader.order(1);
  const std::int64_t last = loader.batches_per_epoch() - 1;
  for (std::int64_t index : {std::int64_t{0}, last}) {
    data::Batch whole = loader.batch(order, index, 1);
    std::vector<float> joined;
    for (std::int64_t r = 0; r < 4; ++r) {
      data::Batch part = loader.shard(order, index, 1, r, 4);
      EXPECT_LE(part.size(), 16);
      auto v = part.x.to_vector<float>();
      joined.insert(joined.end(), v.begin(), v.end());
    }
    EXPECT_EQ(joined, whole.x.to_vector<float>()) << "batch " << index;
  }
  EXPECT_THROW(loader.shard(order, 0, 1, 0, 5), ValueError);  // 64 does not divide by 5
  EXPECT_THROW(loader.shard(order, 0, 1, 4, 4), ValueError);
}

TEST(Communicator, OneProcessCollectivesAreTheIdentity) {
  auto& c = distributed::Communicator::single();
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  Tensor t = tensor({1.0, 2.0}, {2});
  c.allreduce_sum(t);
  c.broadcast(t, 0);
  c.barrier();
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1, 2}));
  auto w = c.iallreduce_sum(t);
  EXPECT_TRUE(w.test());
  std::string s = "text";
  c.broadcast(s, 0);
  EXPECT_EQ(s, "text");
  EXPECT_THROW(c.broadcast(t, 1), ValueError);
  Tensor b = tensor({1.0}, {1}) > 0.0;
  EXPECT_THROW(c.allreduce_sum(b), DTypeError);
}

TEST(DistributedDataParallel, BucketsInReverseOrderAndGradientsUnchangedOnOneProcess) {
  auto model = nn::build_model("mlp:8-16-16-4");
  Generator gen(1);
  {
    NoGradGuard ng;
    for (auto& p : model->parameters()) p.copy_(randn(p.shape(), gen));
  }
  std::vector<std::string> events;
  // Reverse order: 4.bias, 4.weight, 2.bias, 2.weight (1360 bytes: closed), then 0.bias, 0.weight.
  distributed::DistributedDataParallel ddp(*model, distributed::Communicator::single(),
                                           {.bucket_bytes = 1200, .trace = [&](const std::string& e) { events.push_back(e); }});
  auto names = model->named_parameters();
  ASSERT_EQ(ddp.num_buckets(), 2u);
  EXPECT_EQ(ddp.bucket_parameters(0), (std::vector<std::string>{"4.bias", "4.weight", "2.bias", "2.weight"}));
  EXPECT_EQ(ddp.bucket_parameters(1), (std::vector<std::string>{"0.bias", "0.weight"}));

  Tensor x = randn({5, 8}, gen), y = from_vector(std::vector<std::int64_t>{0, 1, 2, 3, 0});
  cross_entropy(model->forward(x), y).backward();
  std::vector<std::vector<float>> before;
  for (auto& p : model->parameters()) before.push_back(p.grad().to_vector<float>());
  ddp.synchronize();
  std::size_t i = 0;
  for (auto& p : model->parameters()) EXPECT_EQ(p.grad().to_vector<float>(), before[i++]);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front(), "ready " + names.back().first);
  EXPECT_EQ(events.back(), "done");
  // Bucket 0 starts before the first layer's gradients arrive.
  auto pos = [&](const std::string& e) { return std::find(events.begin(), events.end(), e) - events.begin(); };
  EXPECT_LT(pos("start 0"), pos("ready " + names.front().first));

  // A step without backward (a rank with no examples): zeros, and the next step works as usual.
  ddp.synchronize();
  for (auto& p : model->parameters()) EXPECT_EQ(abs(p.grad()).sum().item(), 0.0);
  cross_entropy(model->forward(x), y).backward();
  EXPECT_THROW(cross_entropy(model->forward(x), y).backward(), DistributedError);  // twice before synchronize
}

TEST(DistributedDataParallel, TrainingWithAOneProcessCommunicatorMatchesPlainTraining) {
  data::Splits s = data::make_spirals();
  auto run = [&](bool with_comm) {
    nn::TrainConfig c;
    c.data = "spirals", c.model = "mlp:2-16-2", c.batch = 32, c.epochs = 1;
    nn::RunOptions o;
    o.out_dir = (std::filesystem::temp_directory_path() / (with_comm ? "ddp_one_comm" : "ddp_one_plain")).string();
    std::filesystem::remove_all(o.out_dir);
    o.comm = with_comm ? &distributed::Communicator::single() : nullptr;
    auto r = nn::train(c, s, o);
    std::vector<float> w;
    for (auto& p : r.model->parameters()) {
      auto v = p.to_vector<float>();
      w.insert(w.end(), v.begin(), v.end());
    }
    std::filesystem::remove_all(o.out_dir);
    return w;
  };
  EXPECT_EQ(run(true), run(false));
}
