#include "agent/config.h"

#include <fcntl.h>
#include <spdlog/fmt/fmt.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "base/size.h"
#include "base/unique_fd.h"

namespace localvol::agent {
namespace {

// A config error: "<source>: <key>: <what> (line N)".
class ConfigError {
 public:
  ConfigError(std::string key, std::string what, int line = -1)
      : key_(std::move(key)), what_(std::move(what)), line_(line) {}
  Status ToStatus(const std::string& source) const {
    std::string msg = source + ": " + (key_.empty() ? "" : key_ + ": ") + what_;
    if (line_ >= 0) msg += " (line " + std::to_string(line_ + 1) + ")";
    return Status::Error(EINVAL, msg);
  }

 private:
  std::string key_, what_;
  int line_;
};

int LineOf(const YAML::Node& n) { return n.Mark().line; }

std::string Scalar(const YAML::Node& n, const std::string& key) {
  if (!n.IsScalar()) throw ConfigError(key, "expected a single value", LineOf(n));
  return n.Scalar();
}

bool Bool(const YAML::Node& n, const std::string& key) {
  const std::string s = Scalar(n, key);
  if (s == "true" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "no" || s == "off") return false;
  throw ConfigError(key, "expected true or false, not '" + s + "'", LineOf(n));
}

std::string AbsolutePath(const YAML::Node& n, const std::string& key) {
  std::string s = Scalar(n, key);
  if (s.empty() || s[0] != '/') {
    throw ConfigError(key, "expected an absolute path, not '" + s + "'", LineOf(n));
  }
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

uint64_t Size(const YAML::Node& n, const std::string& key) {
  const std::string s = Scalar(n, key);
  auto size = ParseSize(s);
  if (!size.ok()) throw ConfigError(key, size.status().context(), LineOf(n));
  return *size;
}

Reserve ParseReserve(const YAML::Node& n, const std::string& key) {
  const std::string s = Scalar(n, key);
  Reserve r;
  if (!s.empty() && s.back() == '%') {
    double pct = 0;
    const std::string num = s.substr(0, s.size() - 1);
    auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), pct);
    if (num.empty() || ec != std::errc() || end != num.data() + num.size() || !(pct >= 0) ||
        pct >= 100) {
      throw ConfigError(
          key,
          "expected a percentage from 0% to below 100%, or a size such as 2Gi, not '" + s + "'",
          LineOf(n));
    }
    r.percent = pct;
    return r;
  }
  auto size = ParseSize(s);
  if (!size.ok()) {
    throw ConfigError(
        key, "expected a size such as 2Gi or a percentage such as 5%, not '" + s + "'", LineOf(n));
  }
  r.bytes = *size;
  return r;
}

// Rejects a key given twice in one map, anywhere in the tree below `n`
// (yaml-cpp keeps both pairs and its lookup returns the first, so the second
// would be ignored without a word). `where` names `n` as messages do.
void CheckNoDuplicateKeys(const YAML::Node& n, const std::string& where, int depth = 0) {
  // No valid configuration nests this deep; the bound also ends a walk that
  // an alias of an enclosing node (`a: &x [*x]`) would make endless.
  constexpr int kMaxDepth = 8;
  if (depth > kMaxDepth) return;
  const auto child = [&](const std::string& key) {
    return where.empty() ? key : where + "." + key;
  };
  if (n.IsMap()) {
    std::map<std::string, int> line_of;  // scalar key -> its first line
    for (const auto& kv : n) {
      if (!kv.first.IsScalar()) continue;  // CheckKeys rejects it by name
      const std::string key = kv.first.Scalar();
      const auto [first, inserted] = line_of.emplace(key, LineOf(kv.first));
      if (!inserted) {
        const int line = LineOf(kv.first);
        throw ConfigError(child(key), "given twice, " +
                                          (line == first->second
                                               ? "on line " + std::to_string(line + 1)
                                               : "on lines " + std::to_string(first->second + 1) +
                                                     " and " + std::to_string(line + 1)) +
                                          "; keep one of them");
      }
      CheckNoDuplicateKeys(kv.second, child(key), depth + 1);
    }
  } else if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) {
      CheckNoDuplicateKeys(n[i], where + "[" + std::to_string(i) + "]", depth + 1);
    }
  }
}

// Rejects keys of `map` that are not in `known`.
void CheckKeys(const YAML::Node& map, const std::string& where,
               const std::set<std::string>& known) {
  for (const auto& kv : map) {
    const std::string key = kv.first.Scalar();
    if (known.count(key) == 0) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw ConfigError(where.empty() ? key : where + "." + key,
                        "unknown key; the keys allowed here are: " + list, LineOf(kv.first));
    }
  }
}

DiskEntry ParseDisk(const YAML::Node& n, const std::string& where) {
  DiskEntry d;
  if (n.IsScalar()) {
    d.device = AbsolutePath(n, where);
    return d;
  }
  if (!n.IsMap()) {
    throw ConfigError(where, "expected a device path or a map with 'device'", LineOf(n));
  }
  CheckKeys(n, where, {"device", "wipe", "reserve"});
  if (!n["device"])
    throw ConfigError(where + ".device", "missing; name the device path or pattern", LineOf(n));
  d.device = AbsolutePath(n["device"], where + ".device");
  if (n["wipe"]) d.wipe = Bool(n["wipe"], where + ".wipe");
  if (n["reserve"]) d.reserve = ParseReserve(n["reserve"], where + ".reserve");
  if (d.wipe && d.IsPattern()) {
    throw ConfigError(where + ".wipe",
                      "wipe: true is only allowed for one exact device, not for the pattern '" +
                          d.device + "'; list that device on its own",
                      LineOf(n["wipe"]));
  }
  return d;
}

Config Parse(const YAML::Node& root) {
  Config c;
  if (root.IsNull()) return c;  // an empty file: all defaults
  if (!root.IsMap())
    throw ConfigError("", "the configuration must be a YAML map of keys", LineOf(root));
  CheckKeys(
      root, "",
      {"disks", "filesystem", "publish_dir", "state_dir", "reserve", "socket", "log_level",
       "metrics_port", "embedded_disk_size", "io_scheduler", "io_contended_in_flight",
       "fuse_io_uring", "fuse_thread_placement", "read_passthrough", "node_name", "csi_socket"});
  if (const auto disks = root["disks"]) {
    if (!disks.IsNull()) {
      if (!disks.IsSequence())
        throw ConfigError("disks", "expected a list of devices", LineOf(disks));
      std::set<std::string> seen;
      for (size_t i = 0; i < disks.size(); ++i) {
        const std::string where = "disks[" + std::to_string(i) + "]";
        DiskEntry d = ParseDisk(disks[i], where);
        if (!seen.insert(d.device).second) {
          throw ConfigError(where, "'" + d.device + "' is listed twice", LineOf(disks[i]));
        }
        c.disks.push_back(std::move(d));
      }
    }
  }
  if (const auto fs = root["filesystem"]) {
    const std::string s = Scalar(fs, "filesystem");
    if (s == "xfs") {
      c.filesystem = FsType::kXfs;
    } else if (s == "ext4") {
      c.filesystem = FsType::kExt4;
    } else {
      throw ConfigError("filesystem", "expected xfs or ext4, not '" + s + "'", LineOf(fs));
    }
  }
  if (const auto n = root["publish_dir"]) c.publish_dir = AbsolutePath(n, "publish_dir");
  if (const auto n = root["state_dir"]) c.state_dir = AbsolutePath(n, "state_dir");
  if (const auto n = root["socket"]) c.socket = AbsolutePath(n, "socket");
  if (const auto n = root["reserve"]) c.reserve = ParseReserve(n, "reserve");
  if (const auto n = root["log_level"]) {
    const std::string s = Scalar(n, "log_level");
    static const std::set<std::string> kLevels = {"trace", "debug",    "info", "warn",
                                                  "error", "critical", "off"};
    if (kLevels.count(s) == 0) {
      throw ConfigError(
          "log_level", "expected trace, debug, info, warn, error, critical or off, not '" + s + "'",
          LineOf(n));
    }
    c.log_level = s;
  }
  if (const auto n = root["metrics_port"]) {
    const std::string s = Scalar(n, "metrics_port");
    unsigned v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v > 65535) {
      throw ConfigError(
          "metrics_port",
          "expected a TCP port from 1 to 65535, or 0 to turn metrics off, not '" + s + "'",
          LineOf(n));
    }
    c.metrics_port = static_cast<uint16_t>(v);
  }
  if (const auto n = root["embedded_disk_size"]) {
    c.embedded_disk_size = Size(n, "embedded_disk_size");
    if (c.embedded_disk_size < (512ull << 20)) {
      throw ConfigError("embedded_disk_size", "must be at least 512Mi (XFS needs 300 MB)",
                        LineOf(n));
    }
  }
  if (const auto n = root["io_scheduler"]) {
    const std::string s = Scalar(n, "io_scheduler");
    if (s == "fair") {
      c.io_scheduler = iopath::IoPolicy::kFair;
    } else if (s == "fifo") {
      c.io_scheduler = iopath::IoPolicy::kFifo;
    } else {
      throw ConfigError("io_scheduler", "expected fair or fifo, not '" + s + "'", LineOf(n));
    }
  }
  if (const auto n = root["fuse_io_uring"]) c.fuse_io_uring = Bool(n, "fuse_io_uring");
  if (const auto n = root["fuse_thread_placement"]) {
    c.fuse_thread_placement = Bool(n, "fuse_thread_placement");
  }
  if (const auto n = root["read_passthrough"]) {
    const std::string s = Scalar(n, "read_passthrough");
    if (s != "auto" && s != "off") {
      throw ConfigError("read_passthrough",
                        "expected auto (kernel FUSE passthrough for read-only opens where the "
                        "kernel offers it) or off, not '" +
                            s + "'",
                        LineOf(n));
    }
    c.read_passthrough = s == "auto";
  }
  if (const auto n = root["node_name"]) {
    c.node_name = Scalar(n, "node_name");
    if (Status st = ValidateNodeName(c.node_name); !st.ok())
      throw ConfigError("node_name", st.context(), LineOf(n));
  }
  if (const auto n = root["csi_socket"]) {
    // "" turns the CSI driver off.
    c.csi_socket = n.IsScalar() && n.Scalar().empty() ? "" : AbsolutePath(n, "csi_socket");
  }
  if (const auto n = root["io_contended_in_flight"]) {
    c.io_contended_in_flight = Size(n, "io_contended_in_flight");
  }
  if (c.publish_dir == c.state_dir) {
    throw ConfigError("publish_dir", "must differ from state_dir (" + c.state_dir + ")");
  }
  return c;
}

}  // namespace

std::string FsTypeName(FsType type) { return type == FsType::kXfs ? "xfs" : "ext4"; }

uint64_t Reserve::For(uint64_t fs_size) const {
  uint64_t r = bytes;
  if (percent > 0)
    r = static_cast<uint64_t>(std::ceil(static_cast<double>(fs_size) * percent / 100.0));
  return r > fs_size ? fs_size : r;
}

std::string Reserve::ToString() const {
  if (percent > 0) {
    return fmt::format("{:g}%", percent);
  }
  return FormatSize(bytes);
}

Status ValidateNodeName(const std::string& name) {
  const auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  bool ok = !name.empty() && name.size() <= 63 && alnum(name.front()) && alnum(name.back());
  for (char c : name) ok = ok && (alnum(c) || c == '-' || c == '_' || c == '.');
  if (ok) return Status::Ok();
  return Status::Error(EINVAL,
                       "'" + name +
                           "' cannot be a node name: it becomes the value of the "
                           "topology label topology.localvol.io/node, which takes 1 to 63 letters, "
                           "digits, '-', '_' and '.', starting and ending with a letter or digit; "
                           "set node_name to the Kubernetes node name");
}

bool DiskEntry::IsPattern() const { return device.find_first_of("*?[") != std::string::npos; }

Result<Config> ParseConfig(const std::string& text, const std::string& source) {
  try {
    YAML::Node root = YAML::Load(text);
    CheckNoDuplicateKeys(root, "");
    Config c = Parse(root);
    c.source = source;
    return c;
  } catch (const ConfigError& e) {
    return e.ToStatus(source);
  } catch (const YAML::Exception& e) {
    // Malformed YAML: e.msg says what, e.mark says where.
    std::string msg = source + ": not valid YAML: " + e.msg;
    if (!e.mark.is_null()) {
      msg += " (line " + std::to_string(e.mark.line + 1) + ", column " +
             std::to_string(e.mark.column + 1) + ")";
    }
    return Status::Error(EINVAL, msg);
  } catch (const std::exception& e) {
    return Status::Error(EINVAL, source + ": " + e.what());
  }
}

Result<Config> LoadConfig(const std::string& path) {
  // O_NONBLOCK: a FIFO named by mistake must not hang the start; it is
  // refused below like any file that is not regular.
  auto fd = OpenAt(AT_FDCWD, path, O_RDONLY | O_NONBLOCK);
  if (!fd.ok()) return Status::Error(fd.err(), "cannot read the configuration " + path);
  struct stat st;
  if (::fstat(fd->get(), &st) != 0)
    return Status::FromErrno("cannot read the configuration " + path);
  if (!S_ISREG(st.st_mode)) {
    return Status::Error(EINVAL, "the configuration " + path + " is " +
                                     (S_ISDIR(st.st_mode) ? "a directory" : "not a regular file") +
                                     "; name a YAML file (such as " + kDefaultConfigPath + ")");
  }
  std::string text;
  char buf[8192];
  for (;;) {
    const ssize_t n = RetryEintr([&] { return ::read(fd->get(), buf, sizeof buf); });
    if (n < 0) return Status::FromErrno("cannot read the configuration " + path);
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  return ParseConfig(text, path);
}

}  // namespace localvol::agent
