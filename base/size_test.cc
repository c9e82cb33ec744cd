#include "base/size.h"

#include <gtest/gtest.h>

namespace localvol {
namespace {

TEST(ParseSize, PlainAndSuffixes) {
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("500M"), 500'000'000u);
  EXPECT_EQ(*ParseSize("10Gi"), 10ull << 30);
  EXPECT_EQ(*ParseSize("1Ki"), 1024u);
  EXPECT_EQ(*ParseSize("2k"), 2000u);
  EXPECT_EQ(*ParseSize("3GiB"), 3ull << 30);
  EXPECT_EQ(*ParseSize("0"), 0u);
}

TEST(ParseSize, RejectsMalformed) {
  for (const char* bad : {"", "Gi", "-1", "1.5Gi", "10 Gi", "10Xi", "10ki", "10Gib", "1GG"}) {
    auto r = ParseSize(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.err(), EINVAL) << bad;
  }
}

TEST(ParseSize, RejectsOverflow) {
  EXPECT_EQ(ParseSize("99999999999999999999").err(), ERANGE);
  EXPECT_EQ(ParseSize("20000000Pi").err(), ERANGE);
}

TEST(FormatSize, Readable) {
  EXPECT_EQ(FormatSize(512), "512");
  EXPECT_EQ(FormatSize(10ull << 30), "10Gi");
  EXPECT_EQ(FormatSize(3ull << 29), "1.5Gi");
}

TEST(FormatExactSize, RoundTripsThroughParseSize) {
  EXPECT_EQ(FormatExactSize(0), "0");
  EXPECT_EQ(FormatExactSize(1000), "1000");
  EXPECT_EQ(FormatExactSize(100ull << 20), "100Mi");
  EXPECT_EQ(FormatExactSize(3ull << 29), "1536Mi");
  for (uint64_t v : {uint64_t{1}, uint64_t{4097}, uint64_t{3} << 29, uint64_t{1} << 62}) {
    auto parsed = ParseSize(FormatExactSize(v));
    ASSERT_TRUE(parsed.ok()) << FormatExactSize(v);
    EXPECT_EQ(*parsed, v);
  }
}

}  // namespace
}  // namespace localvol
