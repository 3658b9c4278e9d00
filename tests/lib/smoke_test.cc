#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>
#include "loopwatch/loopwatch.h"
#include "reader.h"
TEST(Smoke, OpenBeatRead) {
  char dir[] = "/tmp/lwtestXXXXXX";
  ASSERT_TRUE(mkdtemp(dir));
  std::string path = std::string(dir) + "/segment";
  setenv("LOOPWATCH_SEGMENT", path.c_str(), 1);
  lw_loop_t* loop = nullptr;
  ASSERT_EQ(lw_loop_open("smoke", 10000000, &loop), 0) << lw_last_error();
  ASSERT_NE(loop, nullptr);
  for (int i = 0; i < 5; i++) { lw_beat(loop); usleep(12000); }
  loopwatch::SegmentReader r(path);
  std::vector<loopwatch::SlotSnapshot> snaps;
  ASSERT_EQ(r.Snapshot(&snaps), loopwatch::SegmentStatus::kOk) << r.error();
  ASSERT_EQ(snaps.size(), 64u);
  EXPECT_TRUE(snaps[0].valid);
  EXPECT_STREQ(snaps[0].name, "smoke");
  EXPECT_EQ(snaps[0].beat_count, 5u);
  EXPECT_EQ(snaps[0].owner_alive, 1);
  usleep(800000);
  ASSERT_EQ(r.Snapshot(&snaps), loopwatch::SegmentStatus::kOk);
  EXPECT_EQ(snaps[0].report.state, LW_REPORT_OPEN);
  printf("class %u syscall %s wchan %s cpu %lu\n", snaps[0].report.stall_class, snaps[0].report.syscall_name, snaps[0].report.wchan, (unsigned long)snaps[0].report.loop_cpu_ns);
  lw_loop_close(loop);
  ASSERT_EQ(r.Snapshot(&snaps), loopwatch::SegmentStatus::kOk);
  EXPECT_EQ(snaps[0].state, LW_SLOT_CLOSED);
  EXPECT_EQ(snaps[0].owner_alive, 0);
}
