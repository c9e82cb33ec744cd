#include "agent/io_limits_proto.h"

#include "agent/proto/localvol.pb.h"

namespace localvol::agent {
namespace {

namespace pb = ::localvol::v1;

iopath::RateLimit FromProto(const pb::RateLimit& in) {
  iopath::RateLimit out;
  out.rate = in.rate();
  out.burst_rate = in.burst_rate();
  if (in.burst_seconds() != 0) out.burst_seconds = in.burst_seconds();
  return out;
}

void ToProto(const iopath::RateLimit& in, pb::RateLimit* out) {
  out->set_rate(in.rate);
  out->set_burst_rate(in.burst_rate);
  out->set_burst_seconds(in.burst_seconds);
}

}  // namespace

iopath::IoLimits IoLimitsFromProto(const pb::IoLimits& in) {
  iopath::IoLimits out;
  out.read_iops = FromProto(in.read_iops());
  out.write_iops = FromProto(in.write_iops());
  out.read_bps = FromProto(in.read_bps());
  out.write_bps = FromProto(in.write_bps());
  if (in.weight() != 0) out.weight = in.weight();
  return out;
}

void IoLimitsToProto(const iopath::IoLimits& in, pb::IoLimits* out) {
  ToProto(in.read_iops, out->mutable_read_iops());
  ToProto(in.write_iops, out->mutable_write_iops());
  ToProto(in.read_bps, out->mutable_read_bps());
  ToProto(in.write_bps, out->mutable_write_bps());
  out->set_weight(in.weight);
}

}  // namespace localvol::agent
