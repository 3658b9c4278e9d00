// SPDX-License-Identifier: Apache-2.0
//
// Writes the seed corpus of the segment reader fuzzer:
//
//   segment_reader_make_corpus tests/fuzz/corpus
//
// valid-writer-2slots is a real segment written by libloopwatch (a loop
// with beats, an activity label and a closed stall report with hook text);
// valid-fresh-1slot is one created by the reader, as the sidecar does; the
// others are both bent into the shapes a reader must refuse or survive.
// Committed seeds only change when the format does: regenerate then.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "loopwatch/loopwatch.h"
#include "reader.h"
#include "segment_layout.h"

namespace {

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

void WriteSeed(const std::string& dir, const std::string& name,
               const std::vector<uint8_t>& b) {
  std::ofstream f(dir + "/" + name, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  printf("%s/%s: %zu bytes\n", dir.c_str(), name.c_str(), b.size());
}

template <typename T>
void Put(std::vector<uint8_t>& b, size_t off, T v) {
  if (off + sizeof v <= b.size()) memcpy(b.data() + off, &v, sizeof v);
}

size_t Hook(lw_loop_t*, void*, char* buf, size_t size) {
  static const char kText[] =
      "Traceback (most recent call last):\n"
      "  File \"/app/main.py\", line 41, in orders\n"
      "    time.sleep(5)\n";
  size_t n = std::min(size, sizeof kText - 1);
  memcpy(buf, kText, n);
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  std::string out = argv[1];
  char tmpl[] = "/tmp/lwcorpus.XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  std::string tmp = tmpl;

  // A segment as libloopwatch writes it.
  std::string wpath = tmp + "/writer";
  setenv("LOOPWATCH_SEGMENT", wpath.c_str(), 1);
  setenv("LOOPWATCH_SLOTS", "2", 1);
  lw_loop_options_t o{};
  o.struct_size = sizeof o;
  o.name = "uvicorn-7";
  o.kind = "asyncio";
  o.interval_ns = 10000000;
  o.report_after_ns = 20000000;
  lw_loop_t* loop = nullptr;
  if (lw_loop_open_ex(&o, &loop) != 0) {
    fprintf(stderr, "lw_loop_open_ex: %s\n", lw_last_error());
    return 1;
  }
  lw_set_report_hook(loop, Hook, nullptr);
  lw_set_activity(loop, "GET /orders");
  for (int i = 0; i < 3; i++) {
    lw_beat(loop);
    usleep(10000);
  }
  loopwatch::SegmentReader r(wpath);
  std::vector<loopwatch::SlotSnapshot> snaps;
  for (int i = 0; i < 200; i++) {  // the stall: wait for its text
    usleep(10000);
    if (r.Snapshot(&snaps) == loopwatch::SegmentStatus::kOk &&
        !snaps[0].report.text.empty()) {
      break;
    }
  }
  lw_beat(loop);
  for (int i = 0; i < 200; i++) {  // and for the report to close
    usleep(5000);
    if (r.Snapshot(&snaps) == loopwatch::SegmentStatus::kOk &&
        snaps[0].report.state == LW_REPORT_CLOSED) {
      break;
    }
  }
  std::vector<uint8_t> writer = ReadFile(wpath);
  lw_loop_close(loop);

  // A segment as the sidecar creates it.
  std::string fpath = tmp + "/fresh";
  {
    loopwatch::SegmentReader creator(fpath, 1);
    creator.Snapshot(&snaps);
  }
  std::vector<uint8_t> fresh = ReadFile(fpath);
  unlink(wpath.c_str());
  unlink(fpath.c_str());
  rmdir(tmp.c_str());

  WriteSeed(out, "valid-writer-2slots", writer);
  WriteSeed(out, "valid-fresh-1slot", fresh);

  std::vector<uint8_t> b = writer;
  size_t s0 = LW_SEG_HEADER_SIZE;
  Put<uint32_t>(b, s0 + offsetof(lw_seg_slot_t, text_len), 0xFFFFFFFFu);
  Put<uint32_t>(b, s0 + offsetof(lw_seg_slot_t, report_state), 9);
  Put<uint32_t>(b, s0 + offsetof(lw_seg_slot_t, stall_class), 9);
  memset(b.data() + s0 + offsetof(lw_seg_slot_t, name), 'N', LW_SLOT_NAME_SIZE);
  memset(b.data() + s0 + offsetof(lw_seg_slot_t, syscall_name), 'S',
         LW_SYSCALL_NAME_SIZE);
  Put<uint32_t>(b, s0 + LW_SEG_SLOT_SIZE + offsetof(lw_seg_slot_t, state), 3);
  WriteSeed(out, "valid-hostile-slots", b);

  b = writer;
  Put<uint64_t>(b, s0 + offsetof(lw_seg_slot_t, beat_seq), 7);  // mid-beat
  Put<uint32_t>(b, s0 + LW_SEG_SLOT_SIZE + offsetof(lw_seg_slot_t, generation), 3);
  WriteSeed(out, "valid-odd-sequences", b);

  WriteSeed(out, "empty", {});
  WriteSeed(out, "short-100", std::vector<uint8_t>(fresh.begin(), fresh.begin() + 100));
  WriteSeed(out, "header-only", std::vector<uint8_t>(fresh.begin(), fresh.begin() + 256));
  b = fresh;
  Put<uint64_t>(b, 0, 0);
  WriteSeed(out, "not-initialised", b);
  b = fresh;
  Put<uint64_t>(b, 0, UINT64_C(0x0123456789ABCDEF));
  WriteSeed(out, "bad-magic", b);
  b = fresh;
  Put<uint16_t>(b, 8, 2);
  WriteSeed(out, "version-2", b);
  b = fresh;
  Put<uint32_t>(b, 20, 5000);
  WriteSeed(out, "corrupt-slot-count", b);
  b = writer;
  b.resize(LW_SEG_HEADER_SIZE + LW_SEG_SLOT_SIZE + 1000);
  WriteSeed(out, "truncated-mid-slot", b);
  return 0;
}
