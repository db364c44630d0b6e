// The polling window's policy: it opens when sleeps are short, never passes
// its maximum, and closes again when the driver goes quiet.
#include "vhost_user/adaptive_poll.h"

#include <gtest/gtest.h>

namespace vfsd::vhost_user {
namespace {

using std::chrono::microseconds;

TEST(AdaptivePoll, StartsClosedAndAZeroMaximumNeverOpens) {
  AdaptivePoll off(microseconds(0));
  for (int i = 0; i < 10; ++i) off.slept(microseconds(1));
  EXPECT_EQ(off.window().count(), 0);
  AdaptivePoll on(microseconds(50));
  EXPECT_EQ(on.window().count(), 0);
}

// A driver whose next request comes `gap` after each completion: the
// worker polls for the window, and sleeps for the rest if that was short.
void serve_requests(AdaptivePoll& poll, microseconds gap, int requests) {
  for (int i = 0; i < requests; ++i) {
    if (poll.window() >= gap) {
      poll.found_work();
    } else {
      poll.slept(gap - poll.window());
    }
  }
}

TEST(AdaptivePoll, ADriverFasterThanTheMaximumIsCaughtByThePoll) {
  AdaptivePoll poll(microseconds(50));
  serve_requests(poll, microseconds(30), 20);
  EXPECT_GE(poll.window(), microseconds(30));
  EXPECT_LE(poll.window(), microseconds(50));
}

TEST(AdaptivePoll, TheWindowNeverPassesItsMaximum) {
  AdaptivePoll poll(microseconds(50));
  for (int i = 0; i < 100; ++i) {
    poll.slept(microseconds(0));
    EXPECT_LE(poll.window(), microseconds(50));
  }
  EXPECT_EQ(poll.window(), microseconds(50));
}

TEST(AdaptivePoll, ADriverSlowerThanTheMaximumClosesTheWindow) {
  AdaptivePoll poll(microseconds(50));
  serve_requests(poll, microseconds(30), 20);
  ASSERT_GT(poll.window().count(), 0);
  serve_requests(poll, microseconds(1000), 20);  // polls only burn CPU now
  EXPECT_EQ(poll.window().count(), 0);
  // And it stays closed while the driver stays slow.
  serve_requests(poll, microseconds(1000), 20);
  EXPECT_EQ(poll.window().count(), 0);
}

TEST(AdaptivePoll, FoundWorkKeepsTheWindow) {
  AdaptivePoll poll(microseconds(50));
  for (int i = 0; i < 3; ++i) poll.slept(microseconds(1));
  const auto w = poll.window();
  for (int i = 0; i < 10; ++i) poll.found_work();
  EXPECT_EQ(poll.window(), w);
}

}  // namespace
}  // namespace vfsd::vhost_user
