#include "agent/blkid_probe.h"

#include <blkid/blkid.h>
#include <spdlog/fmt/fmt.h>

#include <cstdio>
#include <memory>

namespace localvol::agent {
namespace {

struct ProbeDeleter {
  void operator()(blkid_struct_probe* p) const { blkid_free_probe(p); }
};
// The move-only owner of one blkid_probe.
using ProbePtr = std::unique_ptr<blkid_struct_probe, ProbeDeleter>;

std::string Value(blkid_probe pr, const char* name) {
  const char* data = nullptr;
  size_t len = 0;
  if (blkid_probe_lookup_value(pr, name, &data, &len) != 0 || data == nullptr) return "";
  std::string s(data, len);
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

Result<ProbePtr> Open(const std::string& device) {
  errno = 0;
  ProbePtr pr(blkid_new_probe_from_filename(device.c_str()));
  if (!pr) return Status::Error(errno != 0 ? errno : EIO, "blkid: cannot probe " + device);
  return pr;
}

}  // namespace

std::string DeviceSignatures::Describe() const {
  std::string s;
  for (const auto& f : found) s += (s.empty() ? "" : ", ") + f;
  return s.empty() ? "no signature" : s;
}

Result<DeviceSignatures> ProbeSignatures(const std::string& device) {
  DeviceSignatures out;
  {
    // Every signature, the way wipefs(8) lists them.
    auto pr = Open(device);
    if (!pr.ok()) return pr.status();
    blkid_probe p = pr->get();
    blkid_probe_enable_superblocks(p, 1);
    blkid_probe_set_superblocks_flags(
        p, BLKID_SUBLKS_MAGIC | BLKID_SUBLKS_TYPE | BLKID_SUBLKS_BADCSUM | BLKID_SUBLKS_USAGE);
    blkid_probe_enable_partitions(p, 1);
    blkid_probe_set_partitions_flags(p, BLKID_PARTS_MAGIC);
    int rc;
    int guard = 0;
    while ((rc = blkid_do_probe(p)) == 0 && guard++ < 64) {
      std::string what, offset;
      if (blkid_probe_has_value(p, "TYPE")) {
        what = Value(p, "TYPE");
        offset = Value(p, "SBMAGIC_OFFSET");
      } else if (blkid_probe_has_value(p, "PTTYPE")) {
        what = "partition table " + Value(p, "PTTYPE");
        offset = Value(p, "PTMAGIC_OFFSET");
      } else {
        continue;
      }
      if (!offset.empty()) {
        what += fmt::format(" at offset 0x{:x}", std::strtoull(offset.c_str(), nullptr, 10));
      }
      out.found.push_back(what);
    }
    if (rc < 0) return Status::Error(EIO, "blkid: probing " + device + " failed");
  }
  {
    // The one filesystem, with its label and UUID, when unambiguous.
    auto pr = Open(device);
    if (!pr.ok()) return pr.status();
    blkid_probe p = pr->get();
    blkid_probe_enable_superblocks(p, 1);
    blkid_probe_set_superblocks_flags(p,
                                      BLKID_SUBLKS_TYPE | BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID);
    blkid_probe_enable_partitions(p, 1);
    const int rc = blkid_do_safeprobe(p);
    if (rc == 0) {
      out.type = Value(p, "TYPE");
      out.label = Value(p, "LABEL");
      out.uuid = Value(p, "UUID");
    } else if (rc == -2) {
      out.found.push_back("several conflicting signatures (ambivalent probe)");
    } else if (rc < 0) {
      return Status::Error(EIO, "blkid: probing " + device + " failed");
    }
  }
  return out;
}

}  // namespace localvol::agent
