// Differential test, mergerfs style: one seeded random sequence of filesystem
// operations is applied to a directory on the kernel's XFS and, in lockstep,
// to a localvol mount over another directory of the same disk. Every result
// (return value, errno, data read, stat fields, listings) must be identical,
// and at the end (and across a restart) both trees must be identical.
//
// The seed is printed; LOCALVOL_TEST_SEED replays a random run. A mismatch
// prints the operations leading up to it.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/fuse_server.h"
#include "tests/support/janitor.h"
#include "tests/support/loop_disk.h"
#include "tests/support/mounts.h"
#include "tests/support/process.h"
#include "tests/support/space.h"
#include "tests/support/sys.h"
#include "tests/support/temp_dir.h"

namespace localvol::testing {
namespace {

// What one operation observed. `detail` carries data that must also match:
// a hash of bytes read, stat fields, a directory listing.
struct Outcome {
  SysResult result;
  char detail[512] = {};

  std::string Detail() const { return detail; }
  // A detail too long for the buffer is kept as its hash, so that two
  // outcomes still compare exactly instead of by a truncated prefix.
  void SetDetail(const std::string& s) {
    const std::string kept =
        s.size() < sizeof(detail) ? s : "hash " + std::to_string(std::hash<std::string>{}(s));
    kept.copy(detail, sizeof(detail) - 1);
    detail[kept.size()] = '\0';
  }
  std::string ToString() const {
    return Describe(result) + (detail[0] ? " [" + Detail() + "]" : "");
  }
};

uint64_t Fnv1a(std::string_view data) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string StatDigest(const struct stat& st) {
  std::ostringstream os;
  os << "type=" << (st.st_mode & S_IFMT) << " mode=" << std::oct << (st.st_mode & 07777) << std::dec
     << " uid=" << st.st_uid << " gid=" << st.st_gid << " nlink=" << st.st_nlink;
  if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) os << " size=" << st.st_size;
  return os.str();
}

// One randomly generated operation, applicable to any root directory.
struct Op {
  std::string text;                                       // for the log
  std::function<Outcome(const std::string& root)> apply;  // runs it under `root`
  const Creds* as = nullptr;                              // run in a child as this user
  std::vector<std::string> paths{};                       // the paths it touches
  // Run as root only. chown(f, -1, -1) by another user: Linux refuses it on
  // a setuid/setgid file unless the user owns it, but FUSE hands the server
  // the same request as before a write by anyone, so localvol drops the bits
  // and succeeds (docs/volumes.md, "Permissions and ownership"). Not compared.
  bool root_only = false;
};

class OpGenerator {
 public:
  explicit OpGenerator(uint64_t seed, double user_fraction)
      : rng_(seed), user_fraction_(user_fraction) {}

  Op Next() {
    Op op = Make();
    op.paths = last_paths_;
    if (Chance(user_fraction_)) {
      const Creds* user = Chance(0.5) ? &kUserA : &kUserB;
      if (!op.root_only) op.as = user;
    }
    if (op.as != nullptr) op.text = "[uid " + std::to_string(op.as->uid) + "] " + op.text;
    return op;
  }

 private:
  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  uint64_t Below(uint64_t n) { return rng_() % n; }
  std::string Pick(const std::vector<std::string>& v) { return v[Below(v.size())]; }

  std::string Path() {
    static const std::vector<std::string> dirs = {"", "d/", "d/e/", "x/", "s/"};
    static const std::vector<std::string> names = {"a", "b", "c", "d", "e", "x", "s"};
    return Pick(dirs) + Pick(names);
  }
  mode_t Mode() {
    static const std::vector<mode_t> modes = {0644, 0600,  0755,  0777,  0666,  0700,
                                              0444, 01777, 02775, 04755, 06777, 0000};
    return modes[Below(modes.size())];
  }

  Op Make() {
    const std::string p = Path(), q = Path();
    last_paths_ = {p, q};
    switch (Below(22)) {
      case 0:
      case 1: {
        int flags = O_CREAT | O_WRONLY | (Chance(0.3) ? O_EXCL : 0) | (Chance(0.2) ? O_TRUNC : 0);
        mode_t mode = Mode();
        return {"create " + p, [=](const std::string& r) {
                  Outcome o;
                  int fd = ::open((r + "/" + p).c_str(), flags | O_CLOEXEC, mode);
                  o.result = Sys(fd);
                  if (fd >= 0) {
                    o.result.ret = 0;
                    ::close(fd);
                  }
                  return o;
                }};
      }
      case 2:
      case 3: {
        off_t off = Chance(0.5) ? Below(64 * 1024) : Below(2 * kMiB);
        size_t len = 1 + Below(Chance(0.8) ? 8192 : 300000);
        uint64_t seed = rng_();
        bool append = Chance(0.2);
        return {"write " + p + " off " + std::to_string(off) + " len " + std::to_string(len) +
                    (append ? " O_APPEND" : ""),
                [=](const std::string& r) {
                  Outcome o;
                  int fd =
                      ::open((r + "/" + p).c_str(), O_WRONLY | O_CLOEXEC | (append ? O_APPEND : 0));
                  if (fd < 0) {
                    o.result = Sys(fd);
                    return o;
                  }
                  o.result = PwriteAll(fd, RandomBytes(seed, len), off);
                  ::close(fd);
                  return o;
                }};
      }
      case 4: {
        off_t len = Chance(0.3) ? 0 : Below(3 * kMiB);
        return {"truncate " + p + " " + std::to_string(len), [=](const std::string& r) {
                  Outcome o;
                  o.result = Sys(::truncate((r + "/" + p).c_str(), len));
                  return o;
                }};
      }
      case 5: {
        mode_t mode = Mode();
        return {"mkdir " + p, [=](const std::string& r) {
                  Outcome o;
                  o.result = Sys(::mkdir((r + "/" + p).c_str(), mode));
                  return o;
                }};
      }
      case 6:
        return {"rmdir " + p, [=](const std::string& r) {
                  Outcome o;
                  o.result = Sys(::rmdir((r + "/" + p).c_str()));
                  return o;
                }};
      case 7:
        return {"unlink " + p, [=](const std::string& r) {
                  Outcome o;
                  o.result = Sys(::unlink((r + "/" + p).c_str()));
                  return o;
                }};
      case 8:
      case 9: {
        unsigned flags = Chance(0.6) ? 0 : (Chance(0.5) ? RENAME_NOREPLACE : RENAME_EXCHANGE);
        return {"rename " + p + " -> " + q + " flags " + std::to_string(flags),
                [=](const std::string& r) {
                  Outcome o;
                  o.result = Sys(::renameat2(AT_FDCWD, (r + "/" + p).c_str(), AT_FDCWD,
                                             (r + "/" + q).c_str(), flags));
                  return o;
                }};
      }
      case 10:
        return {"link " + p + " -> " + q, [=](const std::string& r) {
                  Outcome o;
                  o.result = Sys(::link((r + "/" + p).c_str(), (r + "/" + q).c_str()));
                  return o;
                }};
      case 11: {
        // Relative targets only, so both trees resolve them alike.
        std::string target = Chance(0.5) ? Path() : "../" + Path();
        return {"symlink " + target + " at " + p, [=](const std::string& r) {
                  Outcome o;
                  o.result = Sys(::symlink(target.c_str(), (r + "/" + p).c_str()));
                  return o;
                }};
      }
      case 12: {
        mode_t mode = Mode();
        return {"chmod " + p + " " + std::to_string(mode), [=](const std::string& r) {
                  Outcome o;
                  o.result = Sys(::chmod((r + "/" + p).c_str(), mode));
                  return o;
                }};
      }
      case 13: {
        uid_t uid = Chance(0.3)                          ? static_cast<uid_t>(-1)
                    : Pick({"0", "1000", "1001"}) == "0" ? 0
                                                         : 1000 + Below(2);
        gid_t gid = Chance(0.3) ? static_cast<gid_t>(-1) : 1000 + Below(3);
        bool no_follow = Chance(0.5);
        const bool sets_no_id = uid == static_cast<uid_t>(-1) && gid == static_cast<gid_t>(-1);
        Op op{"chown " + p + " " + std::to_string(static_cast<int>(uid)) + ":" +
                  std::to_string(static_cast<int>(gid)) + (no_follow ? " (lchown)" : ""),
              [=](const std::string& r) {
                Outcome o;
                std::string path = r + "/" + p;
                o.result = Sys(no_follow ? ::lchown(path.c_str(), uid, gid)
                                         : ::chown(path.c_str(), uid, gid));
                return o;
              }};
        op.root_only = sets_no_id;
        return op;
      }
      case 14: {
        std::string name = Pick({"user.a", "user.b", "user.long.name", "trusted.t"});
        std::string value = RandomBytes(rng_(), Below(300));
        int flags = Chance(0.6) ? 0 : (Chance(0.5) ? XATTR_CREATE : XATTR_REPLACE);
        return {"setxattr " + p + " " + name + " len " + std::to_string(value.size()) + " flags " +
                    std::to_string(flags),
                [=](const std::string& r) {
                  Outcome o;
                  o.result = Sys(::lsetxattr((r + "/" + p).c_str(), name.c_str(), value.data(),
                                             value.size(), flags));
                  return o;
                }};
      }
      case 15: {
        std::string name = Pick({"user.a", "user.b", "user.missing"});
        return {"removexattr " + p + " " + name, [=](const std::string& r) {
                  Outcome o;
                  o.result = Sys(::lremovexattr((r + "/" + p).c_str(), name.c_str()));
                  return o;
                }};
      }
      case 16: {
        int mode = Pick({"0", "k", "p"}) == "0" ? 0
                   : Chance(0.5)                ? FALLOC_FL_KEEP_SIZE
                                                : FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
        off_t off = Below(2 * kMiB), len = 1 + Below(512 * kKiB);
        return {"fallocate " + p + " mode " + std::to_string(mode) + " off " + std::to_string(off) +
                    " len " + std::to_string(len),
                [=](const std::string& r) {
                  Outcome o;
                  int fd = ::open((r + "/" + p).c_str(), O_WRONLY | O_CLOEXEC);
                  if (fd < 0) {
                    o.result = Sys(fd);
                    return o;
                  }
                  o.result = Sys(::fallocate(fd, mode, off, len));
                  ::close(fd);
                  return o;
                }};
      }
      case 17:
      case 18: {
        off_t off = Below(2 * kMiB);
        size_t len = 1 + Below(200000);
        return {"read " + p + " off " + std::to_string(off) + " len " + std::to_string(len),
                [=](const std::string& r) {
                  Outcome o;
                  int fd = ::open((r + "/" + p).c_str(), O_RDONLY | O_CLOEXEC);
                  if (fd < 0) {
                    o.result = Sys(fd);
                    return o;
                  }
                  std::string buf(len, '\0');
                  ssize_t n = ::pread(fd, buf.data(), len, off);
                  o.result = Sys(n);
                  if (n >= 0)
                    o.SetDetail("fnv=" + std::to_string(Fnv1a(std::string_view(buf.data(), n))));
                  ::close(fd);
                  return o;
                }};
      }
      case 19:
        return {"lstat " + p, [=](const std::string& r) {
                  Outcome o;
                  struct stat st {};
                  o.result = Sys(::lstat((r + "/" + p).c_str(), &st));
                  if (o.result.ok()) o.SetDetail(StatDigest(st));
                  return o;
                }};
      case 20:
        return {"readdir " + p, [=](const std::string& r) {
                  Outcome o;
                  DIR* d = ::opendir((r + "/" + p).c_str());
                  if (d == nullptr) {
                    o.result = Sys(-1);
                    return o;
                  }
                  std::vector<std::string> names;
                  while (dirent* e = ::readdir(d)) {
                    names.push_back(std::string(e->d_name) + ":" +
                                    std::to_string(static_cast<int>(e->d_type)));
                  }
                  ::closedir(d);
                  std::sort(names.begin(), names.end());
                  std::string all;
                  for (const auto& n : names) all += n + ",";
                  o.SetDetail(all);
                  return o;
                }};
      default: {
        // Bring an explicit timestamp along; the owner or root may set it.
        timespec times[2] = {{static_cast<time_t>(1000000000 + Below(1000)), 7}, {1500000000, 9}};
        return {"utimens " + p, [=](const std::string& r) {
                  Outcome o;
                  o.result =
                      Sys(::utimensat(AT_FDCWD, (r + "/" + p).c_str(), times, AT_SYMLINK_NOFOLLOW));
                  return o;
                }};
      }
    }
  }

  std::mt19937_64 rng_;
  double user_fraction_;
  std::vector<std::string> last_paths_;
};

std::string DescribePath(const std::string& root, const std::string& rel) {
  struct stat st {};
  if (::lstat((root + "/" + rel).c_str(), &st) != 0) return rel + ": " + ErrnoName(errno);
  return rel + ": " + StatDigest(st);
}

// Everything about a tree that must be identical on both sides.
std::map<std::string, std::string> Snapshot(const std::string& root) {
  std::map<std::string, std::string> out;
  std::function<void(const std::string&)> walk = [&](const std::string& rel) {
    std::string path = rel.empty() ? root : root + "/" + rel;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      out[rel] = "lstat: " + ErrnoName(errno);
      return;
    }
    std::string d = StatDigest(st);
    if (S_ISREG(st.st_mode)) {
      auto data = ReadFile(path);
      d +=
          data.ok() ? " fnv=" + std::to_string(Fnv1a(*data)) : " read: " + data.status().ToString();
    } else if (S_ISLNK(st.st_mode)) {
      char buf[4096];
      ssize_t n = ::readlink(path.c_str(), buf, sizeof(buf));
      d += " -> " + std::string(buf, n > 0 ? n : 0);
    }
    char names[65536];
    ssize_t n = ::llistxattr(path.c_str(), names, sizeof(names));
    std::vector<std::string> xattrs;
    for (ssize_t i = 0; n > 0 && i < n;) {
      std::string name(names + i);
      i += name.size() + 1;
      char value[65536];
      ssize_t v = ::lgetxattr(path.c_str(), name.c_str(), value, sizeof(value));
      xattrs.push_back(
          name + "=" +
          (v >= 0 ? std::to_string(Fnv1a(std::string_view(value, v))) : ErrnoName(errno)));
    }
    std::sort(xattrs.begin(), xattrs.end());
    for (const auto& x : xattrs) d += " " + x;
    out[rel.empty() ? "." : rel] = d;
    if (S_ISDIR(st.st_mode)) {
      DIR* dir = ::opendir(path.c_str());
      if (dir == nullptr) return;
      std::vector<std::string> children;
      while (dirent* e = ::readdir(dir)) {
        std::string name = e->d_name;
        if (name != "." && name != "..") children.push_back(name);
      }
      ::closedir(dir);
      for (const auto& c : children) walk(rel.empty() ? c : rel + "/" + c);
    }
  };
  walk("");
  return out;
}

class PosixDiffTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CleanupLeftoversOfDeadTests();
    ::umask(022);
    if (!FuseServer::Available()) {
      GTEST_SKIP()
          << "localvol-fuse was not built (no localvol-fuse CMake target): nothing to compare";
    }
    VolumeDirs dirs;
    ASSERT_NO_FATAL_FAILURE(MakeVolumeDirs(&dirs));
    disk_ = std::move(dirs.disk);
    mounts_ = std::move(dirs.mounts);
    auto raw = disk_->MakeDir("raw", 0777);
    ASSERT_TRUE(raw.ok());
    raw_ = *raw;
    FuseServerOptions o;
    o.source = dirs.backing;
    o.mountpoint = dirs.mountpoint;
    o.capacity = "512Mi";
    o.watchdog = std::chrono::seconds(240);
    auto server = FuseServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
    mnt_ = dirs.mountpoint;
  }

  void TearDown() override {
    if (server_ && HasFailure())
      std::cout << "--- localvol-fuse output ---\n" << server_->Log() << "\n---\n";
    server_.reset();
  }

  Outcome Apply(const Op& op, const std::string& root) {
    if (op.as == nullptr) return op.apply(root);
    return AsUser(*op.as, [&] {
      ::umask(022);
      return op.apply(root);
    });
  }

  // Runs `count` operations from `seed` on both trees, stopping at the first
  // mismatch. Restarts both sides halfway through.
  void RunSequence(uint64_t seed, int count, double user_fraction) {
    std::cout << "seed " << seed << " (LOCALVOL_TEST_SEED=" << seed << " replays)" << std::endl;
    for (const char* dir : {"d", "d/e", "x", "s"}) {
      ASSERT_SYS_OK(::mkdir((raw_ + "/" + dir).c_str(), 0777));
      ASSERT_SYS_OK(::mkdir((mnt_ + "/" + dir).c_str(), 0777));
      ASSERT_SYS_OK(::chmod((raw_ + "/" + dir).c_str(), dir[0] == 's' ? 01777 : 0777));
      ASSERT_SYS_OK(::chmod((mnt_ + "/" + dir).c_str(), dir[0] == 's' ? 01777 : 0777));
    }
    // LOCALVOL_DIFF_KEEP_GOING=1 reports every differing operation instead of
    // stopping at the first (for triage; later ones may be consequences).
    const char* env = std::getenv("LOCALVOL_DIFF_KEEP_GOING");
    const bool keep_going = env != nullptr && env[0] == '1';
    OpGenerator gen(seed, user_fraction);
    std::deque<std::string> history;
    for (int i = 0; i < count; ++i) {
      Op op = gen.Next();
      Outcome want = Apply(op, raw_);
      Outcome got = Apply(op, mnt_);
      history.push_back("#" + std::to_string(i) + " " + op.text + " => " + want.ToString());
      if (history.size() > 40) history.pop_front();
      if (want.result != got.result || want.Detail() != got.Detail()) {
        std::string log;
        for (const auto& h : history) log += "  " + h + "\n";
        std::string state;
        for (const auto& p : op.paths) {
          state +=
              "\n  xfs      " + DescribePath(raw_, p) + "\n  localvol " + DescribePath(mnt_, p);
        }
        if (keep_going) {
          ADD_FAILURE() << "operation #" << i << " differs: " << op.text
                        << "\n  xfs:      " << want.ToString() << "\n  localvol: " << got.ToString()
                        << "\nnow:" << state;
          continue;
        }
        FAIL() << "operation #" << i << " differs (seed " << seed << ")\n  op: " << op.text
               << "\n  xfs:      " << want.ToString() << "\n  localvol: " << got.ToString()
               << "\nnow:" << state << "\nlast operations:\n"
               << log;
      }
      if (i == count / 2) {
        ASSERT_NO_FATAL_FAILURE(CompareTrees("halfway, before restart"));
        ASSERT_TRUE(server_->Restart().ok()) << server_->Log();
        ASSERT_NO_FATAL_FAILURE(CompareTrees("halfway, after restart"));
      }
    }
    CompareTrees("at the end");
    // Usage bookkeeping stayed consistent through all of it.
    auto du = DuBytes(server_->options().source);
    auto space = StatFs(mnt_);
    ASSERT_TRUE(du.ok() && space.ok());
    EXPECT_TRUE(UsageAgrees(space->used_bytes(), *du))
        << "statfs used " << space->used_bytes() << " vs du " << *du;
  }

  void CompareTrees(const std::string& when) {
    auto want = Snapshot(raw_);
    auto got = Snapshot(mnt_);
    for (const auto& [path, desc] : want) {
      auto it = got.find(path);
      if (it == got.end()) {
        ADD_FAILURE() << when << ": " << path << " missing through localvol (xfs: " << desc << ")";
      } else {
        EXPECT_EQ(it->second, desc) << when << ": " << path;
      }
    }
    for (const auto& [path, desc] : got) {
      if (!want.count(path))
        ADD_FAILURE() << when << ": extra " << path << " through localvol: " << desc;
    }
  }

  std::unique_ptr<LoopDisk> disk_;
  TempDir mounts_;
  std::string raw_, mnt_;
  std::unique_ptr<FuseServer> server_;
};

TEST_F(PosixDiffTest, FixedSeedAsRoot) { RunSequence(SeedFromEnvOr(1), 1500, 0.0); }

TEST_F(PosixDiffTest, FixedSeedMixedUsers) { RunSequence(SeedFromEnvOr(2), 1000, 0.35); }

TEST_F(PosixDiffTest, RandomSeedMixedUsers) { RunSequence(RandomSeed(), 1000, 0.25); }

}  // namespace
}  // namespace localvol::testing
