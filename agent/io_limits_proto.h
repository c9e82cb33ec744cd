// The one conversion between iopath::IoLimits and the API's
// localvol.v1.IoLimits, for the server and localvolctl alike.
//
// In the API, 0 means "unset": a RateLimit's burst_seconds 0 reads as 1 and a
// weight 0 as the default weight (100). Everything else maps field by field.
// Pure functions; thread-safe.
#pragma once

#include "iopath/io_limits.h"

namespace localvol::v1 {
class IoLimits;
}  // namespace localvol::v1

namespace localvol::agent {

iopath::IoLimits IoLimitsFromProto(const ::localvol::v1::IoLimits& in);
// Sets every field of `out`, the four rate limits included.
void IoLimitsToProto(const iopath::IoLimits& in, ::localvol::v1::IoLimits* out);

}  // namespace localvol::agent
