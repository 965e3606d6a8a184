// The kafka source's pure parts: where assigned partitions start.

#include "sources/kafka/kafka_source.h"

#include <librdkafka/rdkafka.h>

#include <gtest/gtest.h>

namespace pgflow {
namespace {

class StartOffsetsTest : public ::testing::Test {
 protected:
  StartOffsetsTest() : list_(rd_kafka_topic_partition_list_new(3)) {
    rd_kafka_topic_partition_list_add(list_, "t", 0)->offset = 42;
    rd_kafka_topic_partition_list_add(list_, "t", 1)->offset = RD_KAFKA_OFFSET_INVALID;
    rd_kafka_topic_partition_list_add(list_, "t", 2)->offset = 7;
  }
  ~StartOffsetsTest() override { rd_kafka_topic_partition_list_destroy(list_); }

  rd_kafka_topic_partition_list_t* list_;
};

TEST_F(StartOffsetsTest, CommittedOffsetsOrOffsetResetsEnd) {
  ASSERT_TRUE(SetStartOffsets("g", "latest", list_).ok());
  EXPECT_EQ(list_->elems[0].offset, 42);
  EXPECT_EQ(list_->elems[1].offset, RD_KAFKA_OFFSET_END);
  EXPECT_EQ(list_->elems[2].offset, 7);
  list_->elems[1].offset = RD_KAFKA_OFFSET_INVALID;
  ASSERT_TRUE(SetStartOffsets("g", "earliest", list_).ok());
  EXPECT_EQ(list_->elems[1].offset, RD_KAFKA_OFFSET_BEGINNING);
}

TEST_F(StartOffsetsTest, AnOffsetThatCouldNotBeReadIsAnErrorNotAReset) {
  // What rd_kafka_committed leaves for a partition it could not ask about: an error and no
  // offset. With offset_reset latest, taking it for "none" would skip the partition's backlog.
  list_->elems[2].offset = RD_KAFKA_OFFSET_INVALID;
  list_->elems[2].err = RD_KAFKA_RESP_ERR_UNSTABLE_OFFSET_COMMIT;
  absl::Status s = SetStartOffsets("g", "latest", list_);
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_NE(s.message().find("cannot read group g's committed offset of t[2]"), std::string::npos)
      << s;
  EXPECT_EQ(list_->elems[2].offset, RD_KAFKA_OFFSET_INVALID);
}

}  // namespace
}  // namespace pgflow
