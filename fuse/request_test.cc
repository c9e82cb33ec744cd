#include "fuse/request.h"

#include <gtest/gtest.h>
#include <linux/fuse.h>

#include <cstring>
#include <vector>

namespace localvol::fuse {
namespace {

// A raw request: the header, then the opcode's struct.
template <typename Body>
std::vector<char> Raw(uint32_t opcode, uint64_t unique, const Body& body) {
  std::vector<char> raw(sizeof(fuse_in_header) + sizeof(Body));
  fuse_in_header header{};
  header.len = static_cast<uint32_t>(raw.size());
  header.opcode = opcode;
  header.unique = unique;
  std::memcpy(raw.data(), &header, sizeof header);
  std::memcpy(raw.data() + sizeof header, &body, sizeof body);
  return raw;
}

TEST(RequestTest, ReadsOpcodeUniqueAndTheKillFlagOfEachOpcode) {
  fuse_write_in write{};
  write.write_flags = FUSE_WRITE_KILL_SUIDGID;
  fuse_setattr_in setattr{};
  setattr.valid = FATTR_KILL_SUIDGID | FATTR_SIZE;
  fuse_open_in open{};
  open.open_flags = FUSE_OPEN_KILL_SUIDGID;
  fuse_create_in create{};
  create.open_flags = FUSE_OPEN_KILL_SUIDGID;
  const std::vector<std::vector<char>> killing = {
      Raw(FUSE_WRITE, 7, write), Raw(FUSE_SETATTR, 8, setattr), Raw(FUSE_OPEN, 9, open),
      Raw(FUSE_CREATE, 10, create)};
  for (const auto& raw : killing) {
    Request r;
    r.Begin(Transport::kDevFuse, raw.data(), raw.size());
    EXPECT_TRUE(r.kills_suidgid()) << "opcode " << r.opcode();
  }
  Request w;
  w.Begin(Transport::kRing, killing[0].data(), killing[0].size());
  EXPECT_EQ(w.opcode(), FUSE_WRITE);
  EXPECT_EQ(w.unique(), 7u);
  EXPECT_EQ(w.transport(), Transport::kRing);

  // The same bit in another opcode's struct means something else.
  fuse_read_in read{};
  read.flags = FUSE_WRITE_KILL_SUIDGID;
  auto raw = Raw(FUSE_READ, 11, read);
  Request r;
  r.Begin(Transport::kDevFuse, raw.data(), raw.size());
  EXPECT_FALSE(r.kills_suidgid());
  // Without the flag.
  write.write_flags = 0;
  raw = Raw(FUSE_WRITE, 12, write);
  Request plain;
  plain.Begin(Transport::kDevFuse, raw.data(), raw.size());
  EXPECT_FALSE(plain.kills_suidgid());
}

TEST(RequestTest, ATruncatedRequestCarriesNoFlags) {
  fuse_write_in write{};
  write.write_flags = FUSE_WRITE_KILL_SUIDGID;
  auto raw = Raw(FUSE_WRITE, 1, write);
  Request r;
  r.Begin(Transport::kDevFuse, raw.data(), sizeof(fuse_in_header) + 4);
  EXPECT_EQ(r.opcode(), FUSE_WRITE);
  EXPECT_FALSE(r.kills_suidgid());
  Request none;
  none.Begin(Transport::kDevFuse, raw.data(), 3);
  EXPECT_EQ(none.opcode(), 0u);
}

TEST(RequestTest, InitGrantsExactlyWhatIsOfferedAndAsked) {
  fuse_init_in init{};
  init.flags = FUSE_INIT_EXT | FUSE_HANDLE_KILLPRIV_V2;
  init.flags2 = 1u << (41 - 32);  // FUSE_OVER_IO_URING
  auto raw = Raw(FUSE_INIT, 1, init);
  Request r;
  r.Begin(Transport::kDevFuse, raw.data(), raw.size());
  EXPECT_TRUE(r.KernelOffers(Feature::kKillPrivV2));
  EXPECT_TRUE(r.KernelOffers(Feature::kOverIoUring));
  EXPECT_FALSE(r.KernelOffers(Feature::kDirectIoAllowMmap));
  EXPECT_EQ(r.init_granted(), 0u);
  r.Ask(Feature::kOverIoUring);
  r.Ask(Feature::kDirectIoAllowMmap);  // not offered: not granted
  EXPECT_EQ(r.init_granted(), 1ull << 41);

  // flags2 counts only with FUSE_INIT_EXT.
  init.flags = 0;
  raw = Raw(FUSE_INIT, 2, init);
  Request old;
  old.Begin(Transport::kDevFuse, raw.data(), raw.size());
  EXPECT_FALSE(old.KernelOffers(Feature::kOverIoUring));

  // Outside INIT nothing is offered or asked.
  fuse_open_in open{};
  raw = Raw(FUSE_OPEN, 3, open);
  Request o;
  o.Begin(Transport::kDevFuse, raw.data(), raw.size());
  o.Ask(Feature::kKillPrivV2);
  EXPECT_FALSE(o.KernelOffers(Feature::kKillPrivV2));
  EXPECT_EQ(o.init_granted(), 0u);
}

TEST(RequestTest, PassthroughIsBit37OfTheInitFlags) {
  fuse_init_in init{};
  init.flags = FUSE_INIT_EXT;
  init.flags2 = 1u << (37 - 32);  // FUSE_PASSTHROUGH, protocol 7.40
  auto raw = Raw(FUSE_INIT, 1, init);
  Request r;
  r.Begin(Transport::kDevFuse, raw.data(), raw.size());
  EXPECT_TRUE(r.KernelOffers(Feature::kPassthrough));
  EXPECT_FALSE(r.KernelOffers(Feature::kOverIoUring));
  r.Ask(Feature::kPassthrough);
  EXPECT_EQ(r.init_granted(), 1ull << 37);
}

TEST(RequestTest, PayloadsAreHandedOutOnceAndOnlyForTheirOpcode) {
  char entry[8192];
  fuse_write_in write{};
  auto raw = Raw(FUSE_WRITE, 1, write);
  Request w;
  w.Begin(Transport::kRing, raw.data(), raw.size());
  w.SetRingPayload(entry, sizeof entry);
  EXPECT_EQ(w.TakeReplyBuffer(4096).data(), nullptr);  // a WRITE has no reply data
  EXPECT_EQ(w.TakeWritePayload().data(), entry);
  EXPECT_EQ(w.TakeWritePayload().data(), nullptr);

  fuse_read_in read{};
  raw = Raw(FUSE_READ, 2, read);
  Request r;
  r.Begin(Transport::kRing, raw.data(), raw.size());
  r.SetRingPayload(entry, sizeof entry);
  EXPECT_EQ(r.TakeWritePayload().data(), nullptr);
  EXPECT_EQ(r.TakeReplyBuffer(sizeof entry + 1).data(), nullptr);  // too small
  EXPECT_EQ(r.TakeReplyBuffer(sizeof entry).data(), entry);
  EXPECT_EQ(r.TakeReplyBuffer(1).data(), nullptr);

  // /dev/fuse: the write's own received buffer.
  BufferPool pool;
  PooledBuffer received = pool.Get(4096);
  char* data = received.data();
  raw = Raw(FUSE_WRITE, 3, write);
  Request d;
  d.Begin(Transport::kDevFuse, raw.data(), raw.size());
  d.SetWritePayload(std::move(received));
  EXPECT_EQ(d.TakeReplyBuffer(1).data(), nullptr);
  EXPECT_EQ(d.TakeWritePayload().data(), data);
  EXPECT_EQ(d.TakeWritePayload().data(), nullptr);
}

}  // namespace
}  // namespace localvol::fuse
