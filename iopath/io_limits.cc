#include "iopath/io_limits.h"

#include <cerrno>
#include <charconv>

#include "base/size.h"

namespace localvol::iopath {
namespace {

enum class Field { kRate, kBurstRate, kBurstSeconds };

struct LimitName {
  const char* prefix;  // "read-iops"
  bool bytes;          // values may carry size suffixes
  RateLimit IoLimits::*member;
};
constexpr LimitName kLimits[] = {
    {"read-iops", false, &IoLimits::read_iops},
    {"write-iops", false, &IoLimits::write_iops},
    {"read-bps", true, &IoLimits::read_bps},
    {"write-bps", true, &IoLimits::write_bps},
};
constexpr const char* kWeightKey = "weight";

Result<uint64_t> ParseCount(std::string_view key, std::string_view value) {
  uint64_t n = 0;
  const char* end = value.data() + value.size();
  auto [ptr, ec] = std::from_chars(value.data(), end, n);
  if (value.empty() || ec != std::errc() || ptr != end) {
    return Status::Error(
        EINVAL, std::string(key) + ": '" + std::string(value) + "' is not a non-negative integer");
  }
  return n;
}

Status CheckLimit(const char* name, const RateLimit& l) {
  const std::string n(name);
  if (l.burst_rate > 0 && l.rate == 0) {
    return Status::Error(EINVAL, n + "-burst is set but " + n +
                                     " is not: a burst needs a sustained rate to fall back to");
  }
  if (l.burst_rate > 0 && l.burst_rate <= l.rate) {
    return Status::Error(EINVAL, n + "-burst (" + std::to_string(l.burst_rate) +
                                     ") must be above " + n + " (" + std::to_string(l.rate) + ")");
  }
  if (l.burst_seconds < 1 || l.burst_seconds > kMaxBurstSeconds) {
    return Status::Error(EINVAL, n + "-burst-seconds is " + std::to_string(l.burst_seconds) +
                                     ": it must be 1.." + std::to_string(kMaxBurstSeconds));
  }
  return Status::Ok();
}

}  // namespace

Status ValidateIoLimits(const IoLimits& limits) {
  for (const LimitName& l : kLimits) {
    if (Status s = CheckLimit(l.prefix, limits.*l.member); !s.ok()) return s;
  }
  if (limits.weight < 1 || limits.weight > kMaxWeight) {
    return Status::Error(EINVAL, "weight is " + std::to_string(limits.weight) + ": it must be 1.." +
                                     std::to_string(kMaxWeight));
  }
  return Status::Ok();
}

const std::vector<std::string>& IoLimitKeys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k;
    for (const LimitName& l : kLimits) {
      k.push_back(l.prefix);
      k.push_back(std::string(l.prefix) + "-burst");
      k.push_back(std::string(l.prefix) + "-burst-seconds");
    }
    k.push_back(kWeightKey);
    return k;
  }();
  return keys;
}

Status SetIoLimit(IoLimits* limits, std::string_view key, std::string_view value) {
  if (key == kWeightKey) {
    auto n = ParseCount(key, value);
    if (!n.ok()) return n.status();
    if (*n < 1 || *n > kMaxWeight) {
      return Status::Error(
          EINVAL, "weight: " + std::string(value) + " is outside 1.." + std::to_string(kMaxWeight));
    }
    limits->weight = static_cast<uint32_t>(*n);
    return Status::Ok();
  }
  for (const LimitName& l : kLimits) {
    const std::string_view prefix(l.prefix);
    if (key.substr(0, prefix.size()) != prefix) continue;
    const std::string_view rest = key.substr(prefix.size());
    Field field;
    if (rest.empty()) {
      field = Field::kRate;
    } else if (rest == "-burst") {
      field = Field::kBurstRate;
    } else if (rest == "-burst-seconds") {
      field = Field::kBurstSeconds;
    } else {
      continue;
    }
    RateLimit& limit = limits->*l.member;
    if (field == Field::kBurstSeconds) {
      auto n = ParseCount(key, value);
      if (!n.ok()) return n.status();
      if (*n < 1 || *n > kMaxBurstSeconds) {
        return Status::Error(EINVAL, std::string(key) + ": " + std::string(value) +
                                         " is outside 1.." + std::to_string(kMaxBurstSeconds));
      }
      limit.burst_seconds = static_cast<uint32_t>(*n);
      return Status::Ok();
    }
    Result<uint64_t> n = ParseCount(key, value);
    if (l.bytes) {
      n = ParseSize(value);
      if (!n.ok()) return Status::Error(EINVAL, std::string(key) + ": " + n.status().context());
    }
    if (!n.ok()) return n.status();
    (field == Field::kRate ? limit.rate : limit.burst_rate) = *n;
    return Status::Ok();
  }
  std::string known;
  for (const std::string& k : IoLimitKeys()) known += (known.empty() ? "" : ", ") + k;
  return Status::Error(EINVAL,
                       "unknown I/O limit '" + std::string(key) + "' (known: " + known + ")");
}

std::vector<std::pair<std::string, std::string>> IoLimitSettings(const IoLimits& limits) {
  std::vector<std::pair<std::string, std::string>> out;
  const RateLimit unlimited;
  for (const LimitName& l : kLimits) {
    const RateLimit& limit = limits.*l.member;
    auto text = [&](uint64_t v) { return l.bytes ? FormatExactSize(v) : std::to_string(v); };
    if (limit.rate != unlimited.rate) out.emplace_back(l.prefix, text(limit.rate));
    if (limit.burst_rate != unlimited.burst_rate) {
      out.emplace_back(std::string(l.prefix) + "-burst", text(limit.burst_rate));
    }
    if (limit.burst_seconds != unlimited.burst_seconds) {
      out.emplace_back(std::string(l.prefix) + "-burst-seconds",
                       std::to_string(limit.burst_seconds));
    }
  }
  if (limits.weight != kDefaultWeight) out.emplace_back(kWeightKey, std::to_string(limits.weight));
  return out;
}

std::string FormatIoLimits(const IoLimits& limits) {
  std::string out;
  for (const auto& [key, value] : IoLimitSettings(limits)) {
    if (key == kWeightKey) continue;
    out += (out.empty() ? "" : " ") + key + "=" + value;
  }
  if (out.empty()) out = "unlimited";
  return out + " weight=" + std::to_string(limits.weight);
}

}  // namespace localvol::iopath
