#include "agent/csi/csi_params.h"

#include <sys/mount.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <utility>

namespace localvol::agent::csi {
namespace {

constexpr const char* kProvisionerPrefix = "csi.storage.k8s.io/";

// CSI key -> the iopath::SetIoLimit key (IoLimitKeys()). Longest CSI names
// first, so that replacing names in messages never rewrites a prefix.
const std::vector<std::pair<std::string, std::string>>& IoKeys() {
  static const auto* keys = [] {
    auto* k = new std::vector<std::pair<std::string, std::string>>;
    for (const char* dir : {"read", "write"}) {
      for (const char* unit : {"IOPS", "BPS"}) {
        const std::string camel = std::string(dir) + unit;
        std::string lower = unit;
        std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
        const std::string kebab = std::string(dir) + "-" + lower;
        k->emplace_back(camel + "BurstSeconds", kebab + "-burst-seconds");
        k->emplace_back(camel + "Burst", kebab + "-burst");
        k->emplace_back(camel, kebab);
      }
    }
    k->emplace_back("weight", "weight");
    std::stable_sort(k->begin(), k->end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    return k;
  }();
  return *keys;
}

const std::string* IoKey(const std::string& csi_key) {
  for (const auto& [camel, kebab] : IoKeys()) {
    if (camel == csi_key) return &kebab;
  }
  return nullptr;
}

// iopath's messages name settings as read-iops-burst; callers wrote
// readIOPSBurst.
std::string InCsiNames(std::string msg) {
  for (const auto& [camel, kebab] : IoKeys()) {
    for (size_t pos = 0; (pos = msg.find(kebab, pos)) != std::string::npos;) {
      const size_t end = pos + kebab.size();
      // Only whole names: "read-iops" inside "read-iops-burst" is left for
      // its own (longer, earlier) entry.
      if (end < msg.size() &&
          (msg[end] == '-' || std::isalnum(static_cast<unsigned char>(msg[end])))) {
        pos = end;
        continue;
      }
      msg.replace(pos, kebab.size(), camel);
      pos += camel.size();
    }
  }
  return msg;
}

std::string KnownKeys() {
  std::string s = "inodes, disk, readPassthrough";
  for (const char* k : {"readIOPS", "writeIOPS", "readBPS", "writeBPS"}) s += std::string(", ") + k;
  return s + ", their ...Burst and ...BurstSeconds, and weight";
}

// Keys a VolumeAttributesClass may not change: the volume was made with them.
bool FixedAtCreation(const std::string& key) {
  return key == "inodes" || key == "disk" || key == "readPassthrough";
}

Status Bad(const std::string& key, const std::string& value, const std::string& why) {
  return Status::Error(EINVAL, "parameter " + key + "='" + value + "': " + why);
}

// Sets one I/O key (already known to be one) on `*limits`.
Status SetIo(const std::string& key, const std::string& value, iopath::IoLimits* limits) {
  Status st = iopath::SetIoLimit(limits, *IoKey(key), value);
  if (!st.ok()) return Bad(key, value, InCsiNames(st.context()));
  return Status::Ok();
}

Status Unknown(const std::string& key, const char* which) {
  return Status::Error(
      EINVAL, std::string("unknown ") + which + " '" + key + "': localvol reads " + KnownKeys() +
                  " (and ignores csi.storage.k8s.io/*); fix the " +
                  (std::string(which) == "parameter" ? "StorageClass" : "VolumeAttributesClass"));
}

}  // namespace

Result<VolumeParameters> ParseVolumeParameters(const ParameterMap& parameters,
                                               const ParameterMap& mutable_parameters) {
  VolumeParameters out;
  iopath::IoLimits limits;
  bool any_io = false;
  std::string pvc_ns, pvc_name;
  for (const auto& [key, value] : parameters) {
    if (key.rfind(kProvisionerPrefix, 0) == 0) {
      if (key == std::string(kProvisionerPrefix) + "pvc/namespace") pvc_ns = value;
      if (key == std::string(kProvisionerPrefix) + "pvc/name") pvc_name = value;
      continue;
    }
    if (key == "inodes") {
      uint64_t n = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (value.empty() || ec != std::errc() || end != value.data() + value.size() || n == 0) {
        return Bad(key, value, "expected a positive number of inodes, e.g. 100000");
      }
      out.inode_limit = n;
    } else if (key == "disk") {
      if (value.empty()) return Bad(key, value, "expected a disk id (see 'localvolctl disk list')");
      out.disk = value;
    } else if (key == "readPassthrough") {
      if (value != "auto" && value != "off") return Bad(key, value, "expected auto or off");
      out.read_passthrough = value == "auto";
    } else if (IoKey(key) != nullptr) {
      if (mutable_parameters.count(key) != 0) continue;  // the mutable value wins
      if (Status st = SetIo(key, value, &limits); !st.ok()) return st;
      any_io = true;
    } else {
      return Unknown(key, "parameter");
    }
  }
  for (const auto& [key, value] : mutable_parameters) {
    if (FixedAtCreation(key)) {
      return Status::Error(EINVAL, "mutable parameter '" + key +
                                       "' cannot change on a live volume; set "
                                       "it in the StorageClass parameters instead");
    }
    if (IoKey(key) == nullptr) return Unknown(key, "mutable parameter");
    if (Status st = SetIo(key, value, &limits); !st.ok()) return st;
    any_io = true;
  }
  if (any_io) {
    if (Status st = iopath::ValidateIoLimits(limits); !st.ok()) {
      return Status::Error(EINVAL, "invalid I/O limits: " + InCsiNames(st.context()));
    }
    out.io_limits = limits;
  }
  if (!pvc_ns.empty() && !pvc_name.empty()) out.pvc = pvc_ns + "/" + pvc_name;
  return out;
}

Status ApplyMutableParameters(const ParameterMap& mutable_parameters, iopath::IoLimits* limits) {
  iopath::IoLimits next = *limits;
  for (const auto& [key, value] : mutable_parameters) {
    if (FixedAtCreation(key)) {
      return Status::Error(EINVAL,
                           "mutable parameter '" + key + "' cannot change on a live volume");
    }
    if (IoKey(key) == nullptr) return Unknown(key, "mutable parameter");
    if (Status st = SetIo(key, value, &next); !st.ok()) return st;
  }
  if (Status st = iopath::ValidateIoLimits(next); !st.ok()) {
    return Status::Error(EINVAL, "invalid I/O limits: " + InCsiNames(st.context()));
  }
  *limits = next;
  return Status::Ok();
}

Result<unsigned long> BindRemountFlags(const std::vector<std::string>& mount_flags, bool readonly,
                                       unsigned long base) {
  struct Flag {
    const char* name;
    unsigned long set;
    unsigned long clear;
  };
  static const Flag kFlags[] = {
      {"ro", MS_RDONLY, 0},
      {"rw", 0, MS_RDONLY},
      {"nosuid", MS_NOSUID, 0},
      {"suid", 0, MS_NOSUID},
      {"nodev", MS_NODEV, 0},
      {"dev", 0, MS_NODEV},
      {"noexec", MS_NOEXEC, 0},
      {"exec", 0, MS_NOEXEC},
      {"noatime", MS_NOATIME, MS_RELATIME | MS_STRICTATIME},
      {"atime", 0, MS_NOATIME},
      {"nodiratime", MS_NODIRATIME, 0},
      {"diratime", 0, MS_NODIRATIME},
      {"relatime", MS_RELATIME, MS_NOATIME | MS_STRICTATIME},
      {"norelatime", 0, MS_RELATIME},
      {"strictatime", MS_STRICTATIME, MS_NOATIME | MS_RELATIME},
      {"bind", 0, 0},
      {"defaults", 0, 0},
  };
  unsigned long flags = base;
  for (const auto& f : mount_flags) {
    const Flag* match = nullptr;
    for (const auto& k : kFlags) {
      if (f == k.name) match = &k;
    }
    if (match == nullptr) {
      return Status::Error(EINVAL,
                           "mount flag '" + f +
                               "' does not apply to localvol's bind mount; it "
                               "takes ro, rw, nosuid, nodev, noexec and the atime flags (remove it "
                               "from the StorageClass mountOptions)");
    }
    flags = (flags & ~match->clear) | match->set;
  }
  if (readonly) flags |= MS_RDONLY;
  return flags;
}

}  // namespace localvol::agent::csi
