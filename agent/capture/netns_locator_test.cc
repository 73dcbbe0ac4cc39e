#include "agent/capture/netns_locator.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "agent/cni/state_files.h"
#include "crypto/test_util.h"
#include "gtest/gtest.h"

namespace nodeward::capture {
namespace {

TEST(NetnsLocatorTest, RecognisesKubeletCgroupLayouts) {
  const std::string uid = "6f1c1d2e-9b7a-4c53-8a4b-2f7d0e1c9a10";
  // cgroupfs driver, v1 and v2.
  EXPECT_TRUE(
      CgroupNamesPod(absl::StrCat("12:memory:/kubepods/burstable/pod", uid, "/0123abcd\n"), uid));
  EXPECT_TRUE(CgroupNamesPod(absl::StrCat("0::/kubepods/pod", uid, "/ctr\n"), uid));
  // systemd driver.
  EXPECT_TRUE(CgroupNamesPod(
      "0::/kubepods.slice/kubepods-besteffort.slice/"
      "kubepods-besteffort-pod6f1c1d2e_9b7a_4c53_8a4b_2f7d0e1c9a10.slice/cri-containerd-ab.scope\n",
      uid));
  // Another pod whose uid starts the same way, or the uid somewhere else in the path.
  EXPECT_FALSE(CgroupNamesPod(absl::StrCat("0::/kubepods/pod", uid, "0/ctr\n"), uid));
  EXPECT_FALSE(CgroupNamesPod(absl::StrCat("0::/kubepods/xpod", uid, "/ctr\n"), uid));
  EXPECT_FALSE(CgroupNamesPod("0::/user.slice\n", uid));
  EXPECT_FALSE(CgroupNamesPod("0::/kubepods/pod/ctr\n", ""));
}

TEST(NetnsLocatorTest, FindsByCniRecordFirstThenByProcess) {
  crypto::testing::TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string proc = dir.Sub("proc");
  auto process = [&](int pid, const std::string& cgroup, const std::string& netns) {
    const std::string base = absl::StrCat(proc, "/", pid);
    ASSERT_EQ(system(absl::StrCat("mkdir -p ", base, "/ns").c_str()), 0);
    std::ofstream(base + "/cgroup") << cgroup;
    ASSERT_EQ(symlink(netns.c_str(), (base + "/ns/net").c_str()), 0);
  };
  process(1, "0::/init.scope\n", "net:[1]");
  process(40, "0::/kubepods/podu-proc/pause\n", "net:[40]");
  process(41, "0::/kubepods/podu-proc/app\n", "net:[40]");
  process(50, "0::/kubepods/podu-hostnet/app\n", "net:[1]");
  // A live record and one whose sandbox is gone.
  ASSERT_TRUE(
      cni::WritePodRecord(dir.Sub("cni"),
                          {"s1", dir.Sub("proc/40/cgroup"), "shop", "web", "u-cni", "eth0", {}, 5})
          .ok());
  ASSERT_TRUE(cni::WritePodRecord(dir.Sub("cni"),
                                  {"s0", dir.Sub("gone"), "shop", "old", "u-gone", "eth0", {}, 4})
                  .ok());
  HostNetnsLocator locator(dir.Sub("cni"), proc);
  absl::flat_hash_map<std::string, NetnsLocation> found =
      locator.Find({"u-cni", "u-proc", "u-hostnet", "u-gone", "u-none"});
  ASSERT_TRUE(found.contains("u-cni"));
  EXPECT_EQ(found["u-cni"].found_by, "cni record");
  EXPECT_EQ(found["u-cni"].container_id, "s1");
  ASSERT_TRUE(found.contains("u-proc"));
  EXPECT_EQ(found["u-proc"].path, absl::StrCat(proc, "/40/ns/net"));
  EXPECT_EQ(found["u-proc"].found_by, "process 40");
  EXPECT_FALSE(found.contains("u-hostnet"));  // the node's own netns
  EXPECT_FALSE(found.contains("u-gone"));
  EXPECT_FALSE(found.contains("u-none"));
}

}  // namespace
}  // namespace nodeward::capture
