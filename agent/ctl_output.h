// How localvolctl shows the API's answers: a table (or key: value lines for
// one volume) for people, and the messages themselves as JSON for -o json.
// Functions only; thread-safe.
#pragma once

#include <google/protobuf/message.h>

#include <ostream>
#include <string>

#include "agent/proto/localvol.pb.h"

namespace localvol::agent {

// `m` as JSON: proto field names, every field (defaults included), indented.
std::string Json(const google::protobuf::Message& m);

// One volume as "Key: value" lines.
void PrintVolume(const localvol::v1::Volume& v, std::ostream& out);
// A table of volumes, then the message of each one that has one.
void PrintVolumes(const localvol::v1::ListVolumesResponse& r, std::ostream& out);
// A table of disks, then why each disk cannot serve volumes or was refused.
void PrintDisks(const localvol::v1::ListDisksResponse& r, std::ostream& out);

}  // namespace localvol::agent
