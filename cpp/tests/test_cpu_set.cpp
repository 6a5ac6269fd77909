#include "corral/cpu_set.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

using corral::cpu_set;

TEST(CpuSet, ParsesKernelCpuLists) {
  EXPECT_EQ(cpu_set::parse("0-3,8\n").ids(), (std::vector<int>{0, 1, 2, 3, 8}));
  EXPECT_EQ(cpu_set::parse("5").ids(), (std::vector<int>{5}));
  EXPECT_EQ(cpu_set::parse(" 1 , 3-4 ").ids(), (std::vector<int>{1, 3, 4}));
  EXPECT_EQ(cpu_set::parse("2-2").ids(), (std::vector<int>{2}));
  EXPECT_TRUE(cpu_set::parse("").empty());
  EXPECT_TRUE(cpu_set::parse("\n").empty());
}

TEST(CpuSet, OverlappingAndUnorderedItemsMerge) {
  EXPECT_EQ(cpu_set::parse("8,0-3,2-5").to_string(), "0-5,8");
}

TEST(CpuSet, FormatsTheShortestList) {
  EXPECT_EQ(cpu_set::of({0, 1, 2, 3, 8}).to_string(), "0-3,8");
  EXPECT_EQ(cpu_set::of({1, 3, 5}).to_string(), "1,3,5");
  EXPECT_EQ(cpu_set::of({4, 5}).to_string(), "4-5");
  EXPECT_EQ(cpu_set().to_string(), "");
  for (const char* text : {"0", "0-63", "0-64", "63-64", "0-1,100-200,1023-1030,4095"}) {
    EXPECT_EQ(cpu_set::parse(text).to_string(), text);
  }
}

TEST(CpuSet, HoldsMoreThan1024Cpus) {
  const cpu_set big = cpu_set::parse("0-4095");
  EXPECT_EQ(big.count(), 4096U);
  EXPECT_TRUE(big.contains(4095));
  EXPECT_FALSE(big.contains(4096));
  EXPECT_EQ(big.first(), 0);
}

TEST(CpuSet, RejectsGarbageWithTheTextInTheMessage) {
  for (const char* bad :
       {"abc", "1-", "-1", "3-1", "0,,2", "1,", "0-3x", "1.5", "99999999999", "70000", "0 1"}) {
    try {
      (void)cpu_set::parse(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const std::invalid_argument& error) {
      EXPECT_NE(std::string(error.what()).find(bad), std::string::npos) << error.what();
    }
  }
}

TEST(CpuSet, SetOperations) {
  const cpu_set a = cpu_set::parse("0-7");
  const cpu_set b = cpu_set::parse("4-11");
  EXPECT_EQ((a & b).to_string(), "4-7");
  EXPECT_EQ((a | b).to_string(), "0-11");
  EXPECT_TRUE(cpu_set::parse("2-3").is_subset_of(a));
  EXPECT_FALSE(b.is_subset_of(a));
  // Equality ignores how large the storage once was.
  EXPECT_EQ(cpu_set::parse("0-1,200") & cpu_set::parse("0-1"), cpu_set::parse("0-1"));
  cpu_set c = cpu_set::of({1, 300});
  c.remove(300);
  EXPECT_EQ(c, cpu_set::of({1}));
  EXPECT_EQ(cpu_set().first(), -1);
}

TEST(CpuSet, AddChecksBounds) {
  cpu_set s;
  EXPECT_THROW(s.add(-1), std::out_of_range);
  EXPECT_THROW(s.add(cpu_set::max_cpu_id + 1), std::out_of_range);
  s.add(cpu_set::max_cpu_id);
  EXPECT_EQ(s.count(), 1U);
  EXPECT_FALSE(s.contains(-5));
}
