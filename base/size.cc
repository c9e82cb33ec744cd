#include "base/size.h"

#include <cctype>
#include <cstdio>
#include <iomanip>
#include <limits>
#include <sstream>

namespace localvol {

Result<uint64_t> ParseSize(std::string_view text) {
  auto invalid = [&] {
    return Status::Error(EINVAL, "invalid size '" + std::string(text) +
                                     "': expected a number with an optional suffix such as "
                                     "500M, 10Gi or 4096");
  };
  size_t i = 0;
  uint64_t value = 0;
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    uint64_t digit = text[i] - '0';
    if (value > (kMax - digit) / 10)
      return Status::Error(ERANGE, "size '" + std::string(text) + "' is too large");
    value = value * 10 + digit;
    ++i;
  }
  if (i == 0) return invalid();
  std::string_view suffix = text.substr(i);
  if (!suffix.empty() && (suffix.back() == 'B')) suffix.remove_suffix(1);
  uint64_t multiplier = 1;
  if (!suffix.empty()) {
    const bool binary = suffix.size() == 2 && suffix[1] == 'i';
    if (suffix.size() != 1 && !binary) return invalid();
    const uint64_t base = binary ? 1024 : 1000;
    int power = 0;
    switch (suffix[0]) {
      case 'k':
      case 'K':
        power = 1;
        break;
      case 'M':
        power = 2;
        break;
      case 'G':
        power = 3;
        break;
      case 'T':
        power = 4;
        break;
      case 'P':
        power = 5;
        break;
      default:
        return invalid();
    }
    if (suffix[0] == 'k' && binary) return invalid();
    for (int p = 0; p < power; ++p) multiplier *= base;
  }
  if (value != 0 && multiplier > kMax / value) {
    return Status::Error(ERANGE, "size '" + std::string(text) + "' is too large");
  }
  return value * multiplier;
}

std::string FormatSize(uint64_t bytes) {
  static const char* kUnits[] = {"Ki", "Mi", "Gi", "Ti", "Pi"};
  if (bytes < 1024) return std::to_string(bytes);
  double v = static_cast<double>(bytes);
  int unit = -1;
  while (v >= 1024 && unit < 4) {
    v /= 1024;
    ++unit;
  }
  if (v == static_cast<double>(static_cast<uint64_t>(v))) {
    return std::to_string(static_cast<uint64_t>(v)) + kUnits[unit];
  }
  std::ostringstream out;
  out << std::fixed << std::setprecision(1) << v << kUnits[unit];
  return out.str();
}

std::string FormatExactSize(uint64_t bytes) {
  static const char* kUnits[] = {"Ki", "Mi", "Gi", "Ti", "Pi"};
  if (bytes == 0) return "0";
  int unit = -1;
  while (unit < 4 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++unit;
  }
  return std::to_string(bytes) + (unit >= 0 ? kUnits[unit] : "");
}

}  // namespace localvol
