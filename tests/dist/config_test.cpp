// dist::resolve — which launcher variables and flags make a job, and the errors that name the
// variable at fault; train::shard_of — the slices of a global batch.
#include "dist/config.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "core/error.h"
#include "train/distributed.h"

namespace bulwark::dist {
namespace {

using Env = std::map<std::string, std::string>;

EnvLookup lookup(const Env& env) {
  return [env](const std::string& name) -> std::optional<std::string> {
    const auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
}

// The message of the invalid_argument resolve throws, or "" if it does not.
std::string error_of(const Flags& flags, const Env& env) {
  try {
    resolve(flags, lookup(env));
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    return e.what();
  }
  return "";
}

TEST(DistConfig, NoLauncherIsOneProcess) {
  const Config c = resolve({}, lookup({}));
  EXPECT_FALSE(c.distributed());
  EXPECT_EQ(c.world_size, 1);
  EXPECT_EQ(c.rank, 0);
}

TEST(DistConfig, TorchrunAndPyTorchJobVariables) {
  const Config c = resolve(
      {}, lookup({{"MASTER_ADDR", "job-master-0"}, {"MASTER_PORT", "23456"}, {"WORLD_SIZE", "4"}, {"RANK", "3"}}));
  EXPECT_TRUE(c.distributed());
  EXPECT_EQ(c.master_addr, "job-master-0");
  EXPECT_EQ(c.master_port, 23456);
  EXPECT_EQ(c.world_size, 4);
  EXPECT_EQ(c.rank, 3);
  EXPECT_EQ(c.source, "WORLD_SIZE/RANK");
}

TEST(DistConfig, KubeflowTrainerIsOneProcessPerNode) {
  // Trainer's torch policy on CPU sets PET_NPROC_PER_NODE to the pod's CPU count: not processes.
  const Config c = resolve({}, lookup({{"PET_MASTER_ADDR", "tj-node-0-0.tj"},
                                       {"PET_MASTER_PORT", "29400"},
                                       {"PET_NNODES", "3"},
                                       {"PET_NODE_RANK", "1"},
                                       {"PET_NPROC_PER_NODE", "4"}}));
  EXPECT_EQ(c.world_size, 3);
  EXPECT_EQ(c.rank, 1);
  EXPECT_EQ(c.master_addr, "tj-node-0-0.tj");
  EXPECT_EQ(c.master_port, 29400);
  EXPECT_EQ(c.source, "PET_NNODES/PET_NODE_RANK");
}

TEST(DistConfig, FlagsWinOverVariablesAndPortDefaultsTo29500) {
  Flags f;
  f.master_addr = "10.0.0.7";
  f.world_size = 2;
  f.rank = 0;
  f.timeout_s = 15;
  const Config c = resolve(f, lookup({{"WORLD_SIZE", "8"}, {"RANK", "5"}, {"MASTER_ADDR", "elsewhere"}}));
  EXPECT_EQ(c.world_size, 2);
  EXPECT_EQ(c.rank, 0);
  EXPECT_EQ(c.master_addr, "10.0.0.7");
  EXPECT_EQ(c.master_port, 29500);
  EXPECT_EQ(c.timeout_s, 15);
  EXPECT_EQ(c.source, "--dist-world-size/--dist-rank");
}

TEST(DistConfig, WorldOfOneNeedsNothingElse) {
  EXPECT_FALSE(resolve({}, lookup({{"WORLD_SIZE", "1"}, {"RANK", "0"}})).distributed());
  EXPECT_FALSE(resolve({}, lookup({{"PET_NNODES", "1"}, {"PET_NPROC_PER_NODE", "auto"}})).distributed());
}

TEST(DistConfig, ErrorsNameTheVariableOrFlag) {
  struct Case {
    Flags flags;
    Env env;
    std::string expected;
  };
  const auto env_case = [](Env env, std::string expected) {
    return Case{Flags(), std::move(env), std::move(expected)};
  };
  Flags bad_timeout;
  bad_timeout.timeout_s = 0;
  Flags rank_too_big;
  rank_too_big.world_size = 2;
  rank_too_big.rank = 2;
  rank_too_big.master_addr = "127.0.0.1";
  const std::vector<Case> cases = {
      env_case({{"WORLD_SIZE", "two"}}, "WORLD_SIZE=two is not an integer"),
      env_case({{"WORLD_SIZE", "2"}, {"MASTER_ADDR", "m"}}, "set RANK"),
      env_case({{"WORLD_SIZE", "2"}, {"RANK", "1"}}, "MASTER_ADDR"),
      env_case({{"WORLD_SIZE", "2"}, {"RANK", "2"}, {"MASTER_ADDR", "m"}}, "RANK=2 must be in 0..1"),
      env_case({{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"MASTER_ADDR", "m"}, {"MASTER_PORT", "70000"}},
               "MASTER_PORT=70000"),
      env_case({{"PET_NNODES", "1:4"}, {"PET_NODE_RANK", "0"}}, "PET_NNODES=1:4: elastic"),
      env_case({{"WORLD_SIZE", "8"}, {"RANK", "1"}, {"MASTER_ADDR", "m"}, {"PET_NPROC_PER_NODE", "4"}},
               "nprocPerNode to 1"),
      Case{bad_timeout, {}, "--dist-timeout-s"},
      Case{rank_too_big, {}, "--dist-rank=2 must be in 0..1"},
  };
  for (const auto& c : cases) {
    const std::string message = error_of(c.flags, c.env);
    EXPECT_NE(message.find(c.expected), std::string::npos) << "got '" << message << "', wanted '" << c.expected << "'";
  }
}

TEST(DistConfig, UnderTorchrunNprocPerNodeIsFine) {
  // torchrun starts the processes itself and sets LOCAL_RANK: WORLD_SIZE is then the truth.
  const Config c = resolve({}, lookup({{"WORLD_SIZE", "8"},
                                       {"RANK", "5"},
                                       {"LOCAL_RANK", "1"},
                                       {"MASTER_ADDR", "m"},
                                       {"PET_NPROC_PER_NODE", "4"}}));
  EXPECT_EQ(c.world_size, 8);
  EXPECT_EQ(c.rank, 5);
}

TEST(Shard, SlicesAreDisjointContiguousAndCoverTheBatch) {
  for (int world : {1, 2, 3, 4, 7}) {
    for (int64_t global : {0, 1, 5, 64, 65, 127}) {
      int64_t next = 0;
      for (int r = 0; r < world; ++r) {
        const auto s = train::shard_of(global, r, world);
        EXPECT_EQ(s.offset, next) << global << " over " << world;
        EXPECT_LE(s.size, global / world + 1);
        EXPECT_GE(s.size, global / world);
        EXPECT_EQ(s.global, global);
        next += s.size;
      }
      EXPECT_EQ(next, global);
    }
  }
}

}  // namespace
}  // namespace bulwark::dist
