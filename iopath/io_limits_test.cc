#include "iopath/io_limits.h"

#include <gtest/gtest.h>

#include "iopath/io_stats.h"

namespace localvol::iopath {
namespace {

TEST(IoLimitsTest, DefaultsAreValidAndUnlimited) {
  IoLimits l;
  EXPECT_TRUE(ValidateIoLimits(l).ok());
  EXPECT_EQ(FormatIoLimits(l), "unlimited weight=100");
  EXPECT_TRUE(IoLimitSettings(l).empty());
}

TEST(IoLimitsTest, ValidateNamesTheBadField) {
  IoLimits l;
  l.read_iops.burst_rate = 100;
  Status s = ValidateIoLimits(l);
  EXPECT_EQ(s.err(), EINVAL);
  EXPECT_NE(s.context().find("read-iops-burst"), std::string::npos) << s.context();

  l = IoLimits{};
  l.write_bps = RateLimit{1000, 1000, 1};
  s = ValidateIoLimits(l);
  EXPECT_EQ(s.err(), EINVAL);
  EXPECT_NE(s.context().find("must be above write-bps"), std::string::npos) << s.context();

  l = IoLimits{};
  l.read_bps = RateLimit{1000, 2000, 0};
  EXPECT_EQ(ValidateIoLimits(l).err(), EINVAL);
  l = IoLimits{};
  l.weight = 0;
  EXPECT_NE(ValidateIoLimits(l).context().find("weight"), std::string::npos);
}

TEST(IoLimitsTest, SettingsRoundTripThroughSetIoLimit) {
  IoLimits l;
  l.read_iops = RateLimit{500, 2000, 10};
  l.write_bps = RateLimit{100ull << 20, 0, 1};
  l.weight = 300;
  const auto settings = IoLimitSettings(l);
  IoLimits parsed;
  for (const auto& [key, value] : settings)
    ASSERT_TRUE(SetIoLimit(&parsed, key, value).ok()) << key;
  EXPECT_EQ(parsed, l);
  EXPECT_EQ(FormatIoLimits(l),
            "read-iops=500 read-iops-burst=2000 read-iops-burst-seconds=10 write-bps=100Mi "
            "weight=300");
}

TEST(IoLimitsTest, SetIoLimitParsesSizesForBytesOnly) {
  IoLimits l;
  EXPECT_TRUE(SetIoLimit(&l, "read-bps", "10Mi").ok());
  EXPECT_EQ(l.read_bps.rate, 10u << 20);
  EXPECT_TRUE(SetIoLimit(&l, "write-bps-burst", "1G").ok());
  EXPECT_EQ(l.write_bps.burst_rate, 1'000'000'000u);
  EXPECT_EQ(SetIoLimit(&l, "read-iops", "10k").err(), EINVAL);
}

TEST(IoLimitsTest, SetIoLimitRejectsBadInputAndChangesNothing) {
  IoLimits l;
  l.read_iops.rate = 7;
  const IoLimits before = l;
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{{"read-iops", "-1"},
                                                        {"read-iops", "abc"},
                                                        {"read-iops", ""},
                                                        {"read-iops-burst-seconds", "0"},
                                                        {"read-iops-burst-seconds", "3601"},
                                                        {"weight", "0"},
                                                        {"weight", "10001"},
                                                        {"write-bps", "12Xi"},
                                                        {"read-latency", "5"},
                                                        {"read-iopsx", "5"}}) {
    Status s = SetIoLimit(&l, key, value);
    EXPECT_EQ(s.err(), EINVAL) << key << "=" << value;
    EXPECT_NE(s.context().find(key), std::string::npos) << s.context();
    EXPECT_EQ(l, before);
  }
}

TEST(IoLimitsTest, KeysCoverEveryLimit) {
  EXPECT_EQ(IoLimitKeys().size(), 13u);
  IoLimits l;
  for (const std::string& key : IoLimitKeys()) {
    ASSERT_TRUE(SetIoLimit(&l, key, key == "weight" ? "5" : "2").ok()) << key;
  }
  EXPECT_EQ(l.read_iops, (RateLimit{2, 2, 2}));
  EXPECT_EQ(l.write_bps, (RateLimit{2, 2, 2}));
  EXPECT_EQ(l.weight, 5u);
}

TEST(LatencyBucketTest, BoundsAreInclusive) {
  EXPECT_EQ(LatencyBucket(0), 0u);
  EXPECT_EQ(LatencyBucket(50'000), 0u);
  EXPECT_EQ(LatencyBucket(50'001), 1u);
  EXPECT_EQ(LatencyBucket(10'000'000'000), kLatencyBuckets - 2);
  EXPECT_EQ(LatencyBucket(10'000'000'001), kLatencyBuckets - 1);
}

}  // namespace
}  // namespace localvol::iopath
