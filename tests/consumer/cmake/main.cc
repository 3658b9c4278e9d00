// SPDX-License-Identifier: Apache-2.0
//
// An app's view of the installed C++ header: open a loop, beat, close. With
// LOOPWATCH_SEGMENT set it must really claim a slot; unset, every call must be
// a no-op that succeeds. Exit 0 on success, 1 with a message otherwise.
#include <loopwatch/loopwatch.hpp>

#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <system_error>
#include <thread>

// The static target must hand its define to consumers (it empties LW_EXPORT).
#if defined(CONSUMER_EXPECT_STATIC) != defined(LOOPWATCH_STATIC_DEFINE)
#error "loopwatch::loopwatch_static must define LOOPWATCH_STATIC_DEFINE, loopwatch::loopwatch must not"
#endif

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      std::fprintf(stderr, "%s:%d: check failed: %s (%s)\n", __FILE__, \
                   __LINE__, #cond, lw_last_error());                   \
      return 1;                                                         \
    }                                                                   \
  } while (0)

int main() {
  const char* segment = std::getenv("LOOPWATCH_SEGMENT");
  const bool want = segment != nullptr && *segment != '\0';

  // The header and the library linked in are the same release.
  const std::string header_version = std::to_string(LW_VERSION_MAJOR) + "." +
                                     std::to_string(LW_VERSION_MINOR) + "." +
                                     std::to_string(LW_VERSION_PATCH);
  CHECK(header_version == lw_version());
  CHECK(loopwatch::enabled() == want);

  {
    std::error_code ec;
    auto loop = loopwatch::Loop::open("consumer-cxx",
                                      std::chrono::milliseconds(5), ec);
    if (ec) std::fprintf(stderr, "open: %s\n", ec.message().c_str());
    CHECK(!ec);
    CHECK(static_cast<bool>(loop) == want);
    CHECK((loop.slot() >= 0) == want);

    {
      loopwatch::ScopedActivity activity(loop, "consumer test");
      loop.set_ready(true);
      for (int i = 0; i < 5; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        CHECK(lw_beat(loop.native_handle()) == 0);
        CHECK(lw_beat_at(loop.native_handle(), lw_now_ns()) == 0);
        loop.beat();
      }
    }
    // Move-only RAII: the slot follows the handle, the source becomes inert.
    loopwatch::Loop moved = std::move(loop);
    CHECK(!loop);
    CHECK(static_cast<bool>(moved) == want);
  }  // closes the slot

  if (want) {
    struct stat st {};
    CHECK(stat(segment, &st) == 0);
    CHECK(st.st_size > 0);
  }
  std::printf("consumer (C++, %s) ok: loopwatch %s, %s\n",
#ifdef CONSUMER_EXPECT_STATIC
              "static",
#else
              "shared",
#endif
              lw_version(), want ? segment : "LOOPWATCH_SEGMENT unset: no-op");
  return 0;
}
