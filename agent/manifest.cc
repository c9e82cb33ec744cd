#include "agent/manifest.h"

#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <ctime>
#include <set>

#include "agent/system.h"
#include "base/directory.h"

namespace localvol::agent {
namespace {

uint64_t U64(const YAML::Node& n, const std::string& key) {
  if (!n || !n.IsScalar()) throw std::runtime_error(key + ": missing or not a number");
  const std::string& s = n.Scalar();
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos) {
    throw std::runtime_error(key + ": not a number: '" + s + "'");
  }
  return std::stoull(s);
}

std::string Str(const YAML::Node& n, const std::string& key, bool required = true) {
  if (!n) {
    if (required) throw std::runtime_error(key + ": missing");
    return "";
  }
  if (!n.IsScalar()) throw std::runtime_error(key + ": not a string");
  return n.Scalar();
}

// The `io_limits:` map of one volume; `where` names the volume.
iopath::IoLimits IoLimitsOf(const YAML::Node& n, const std::string& where) {
  iopath::IoLimits limits;
  if (!n || n.IsNull()) return limits;
  if (!n.IsMap())
    throw std::runtime_error(where +
                             ": io_limits: not a map of setting: value (e.g. read-iops: 500)");
  std::set<std::string> seen;
  for (const auto& kv : n) {
    const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "?";
    if (!seen.insert(key).second)
      throw std::runtime_error(where + ": io_limits: " + key + ": listed twice");
    if (!kv.second.IsScalar()) {
      throw std::runtime_error(where + ": io_limits: " + key + ": not a single value");
    }
    if (Status s = iopath::SetIoLimit(&limits, key, kv.second.Scalar()); !s.ok()) {
      throw std::runtime_error(where + ": io_limits: " + s.context());
    }
  }
  if (Status s = iopath::ValidateIoLimits(limits); !s.ok()) {
    throw std::runtime_error(where + ": io_limits: " + s.context());
  }
  return limits;
}

}  // namespace

const VolumeRecord* DiskManifest::Find(const std::string& name) const {
  for (const auto& v : volumes) {
    if (v.name == name) return &v;
  }
  return nullptr;
}

VolumeRecord* DiskManifest::Find(const std::string& name) {
  for (auto& v : volumes) {
    if (v.name == name) return &v;
  }
  return nullptr;
}

std::string FormatManifest(const DiskManifest& m) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "format" << YAML::Value << DiskManifest::kFormat;
  e << YAML::Key << "disk_uuid" << YAML::Value << m.disk_uuid;
  e << YAML::Key << "filesystem" << YAML::Value << m.filesystem;
  e << YAML::Key << "created" << YAML::Value << m.created;
  e << YAML::Key << "host" << YAML::Value << m.host;
  e << YAML::Key << "volumes" << YAML::Value << YAML::BeginSeq;
  for (const auto& v : m.volumes) {
    e << YAML::BeginMap;
    e << YAML::Key << "name" << YAML::Value << v.name;
    e << YAML::Key << "capacity_bytes" << YAML::Value << v.capacity_bytes;
    e << YAML::Key << "inode_limit" << YAML::Value << v.inode_limit;
    e << YAML::Key << "default_inodes" << YAML::Value << v.default_inodes;
    e << YAML::Key << "created" << YAML::Value << v.created;
    const auto limits = iopath::IoLimitSettings(v.io_limits);
    if (!limits.empty()) {
      e << YAML::Key << "io_limits" << YAML::Value << YAML::BeginMap;
      for (const auto& [key, value] : limits) e << YAML::Key << key << YAML::Value << value;
      e << YAML::EndMap;
    }
    if (v.csi) {
      e << YAML::Key << "csi" << YAML::Value << true;
      if (!v.pvc.empty()) e << YAML::Key << "pvc" << YAML::Value << v.pvc;
    }
    if (!v.read_passthrough) e << YAML::Key << "read_passthrough" << YAML::Value << "off";
    e << YAML::EndMap;
  }
  e << YAML::EndSeq;
  e << YAML::EndMap;
  return "# localvol disk manifest: written by localvold, do not edit while it runs.\n" +
         std::string(e.c_str()) + "\n";
}

Result<DiskManifest> ParseManifest(const std::string& text, const std::string& source) {
  try {
    YAML::Node root = YAML::Load(text);
    if (!root.IsMap()) throw std::runtime_error("not a YAML map");
    const uint64_t format = U64(root["format"], "format");
    if (format != DiskManifest::kFormat) {
      throw std::runtime_error("format " + std::to_string(format) +
                               " is not supported by this localvold (it reads format " +
                               std::to_string(DiskManifest::kFormat) + "); upgrade localvold");
    }
    DiskManifest m;
    m.disk_uuid = Str(root["disk_uuid"], "disk_uuid");
    m.filesystem = Str(root["filesystem"], "filesystem", false);
    m.created = Str(root["created"], "created", false);
    m.host = Str(root["host"], "host", false);
    std::set<std::string> names;
    if (const auto vols = root["volumes"]) {
      if (!vols.IsSequence() && !vols.IsNull()) throw std::runtime_error("volumes: not a list");
      for (size_t i = 0; vols.IsSequence() && i < vols.size(); ++i) {
        const std::string where = "volumes[" + std::to_string(i) + "]";
        const auto n = vols[i];
        if (!n.IsMap()) throw std::runtime_error(where + ": not a map");
        VolumeRecord v;
        v.name = Str(n["name"], where + ".name");
        v.capacity_bytes = U64(n["capacity_bytes"], where + ".capacity_bytes");
        v.inode_limit = U64(n["inode_limit"], where + ".inode_limit");
        if (n["default_inodes"]) v.default_inodes = n["default_inodes"].as<bool>();
        v.created = Str(n["created"], where + ".created", false);
        v.io_limits = IoLimitsOf(n["io_limits"], where + " (" + v.name + ")");
        if (n["csi"]) v.csi = n["csi"].as<bool>();
        v.pvc = Str(n["pvc"], where + ".pvc", false);
        if (n["read_passthrough"]) {
          const std::string mode = Str(n["read_passthrough"], where + ".read_passthrough");
          if (mode != "auto" && mode != "off") {
            throw std::runtime_error(where + ".read_passthrough: expected auto or off, not '" +
                                     mode + "'");
          }
          v.read_passthrough = mode == "auto";
        }
        if (!names.insert(v.name).second)
          throw std::runtime_error(where + ": volume '" + v.name + "' listed twice");
        m.volumes.push_back(std::move(v));
      }
    }
    return m;
  } catch (const YAML::Exception& e) {
    return Status::Error(EINVAL, source + ": not valid YAML: " + e.msg);
  } catch (const std::exception& e) {
    return Status::Error(EINVAL, source + ": " + e.what());
  }
}

std::string ManifestPath(const std::string& disk_root) { return disk_root + "/" + kManifestFile; }

Result<DiskManifest> ReadManifest(const std::string& disk_root) {
  const std::string path = ManifestPath(disk_root);
  auto text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  return ParseManifest(*text, path);
}

Status WriteManifest(const std::string& disk_root, const DiskManifest& manifest) {
  DiskManifest m = manifest;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) m.host = host;
  return WriteFileAtomic(ManifestPath(disk_root), FormatManifest(m), 0644);
}

std::vector<std::string> RemoveStaleManifestTemps(const std::string& disk_root) {
  const std::string prefix = std::string(kManifestFile) + ".tmp.";
  std::vector<std::string> stale;
  if (auto names = ListDirectory(disk_root); names.ok()) {
    for (const auto& name : *names) {
      if (name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
          name.find_first_not_of("0123456789", prefix.size()) == std::string::npos) {
        stale.push_back(name);
      }
    }
  }
  std::vector<std::string> removed;
  for (const auto& name : stale) {
    const std::string path = disk_root + "/" + name;
    struct stat st;
    // Only a regular file: WriteFileAtomic never makes anything else.
    if (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::unlink(path.c_str()) == 0) {
      removed.push_back(name);
    }
  }
  return removed;
}

std::string NowUtc() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  // 20 characters always fit; 0 would mean they did not.
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf, n);
}

}  // namespace localvol::agent
