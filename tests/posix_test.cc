// POSIX conformance, area by area (in the spirit of pjdfstest). Every case runs
// twice: on a directory of a fresh XFS disk (Raw: the kernel's own answer, which
// validates the expectation) and through a localvol-fuse mount over another
// directory of such a disk (Localvol). A Localvol-only failure is a place where
// localvol differs from the kernel.
//
// Errno cases for other identities are run in a forked child with dropped
// credentials (AsUser), so each errno is checked exactly.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <spdlog/fmt/fmt.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "tests/support/fs_under_test.h"
#include "tests/support/process.h"
#include "tests/support/space.h"
#include "tests/support/sys.h"

namespace localvol::testing {
namespace {

// ---------------------------------------------------------------------------
// Helpers

// Creates a regular file holding `data` with exactly `mode` (chmod'ed after
// creation, so the umask does not apply).
void MakeFile(const std::string& path, mode_t mode = 0644, std::string_view data = "") {
  Status st = WriteFile(path, data, 0, mode);
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_SYS_OK(::chmod(path.c_str(), mode));
}

void MakeDir(const std::string& path, mode_t mode = 0755) {
  ASSERT_SYS_OK(::mkdir(path.c_str(), mode));
  ASSERT_SYS_OK(::chmod(path.c_str(), mode));
}

struct stat LstatOrDie(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << "lstat " << path << ": " << std::strerror(errno);
  return st;
}

mode_t ModeOf(const std::string& path) { return LstatOrDie(path).st_mode & 07777; }

std::string Content(const std::string& path) {
  auto r = ReadFile(path);
  if (!r.ok()) return "<" + r.status().ToString() + ">";
  return *r;
}

std::string Octal(mode_t m) { return fmt::format("0{:o}", static_cast<unsigned>(m)); }
#define EXPECT_MODE(path, mode) EXPECT_EQ(Octal(ModeOf(path)), Octal(mode)) << (path)

int RenameAt2(const std::string& from, const std::string& to, unsigned flags) {
  return ::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags);
}

// Runs setfacl/getfacl; returns stdout, failing the test on error.
std::string Acl(const std::vector<std::string>& argv) {
  CommandResult r = RunCommand(argv, 30s);
  EXPECT_TRUE(r.ok()) << argv[0] << ": " << r.Summary();
  return r.out;
}
bool HasLine(const std::string& text, const std::string& line) {
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    if (text.compare(pos, end - pos, line) == 0) return true;
    pos = end + 1;
  }
  return false;
}

std::set<std::string> UserXattrs(const std::string& path, bool follow = true) {
  char buf[65536];
  ssize_t n = follow ? ::listxattr(path.c_str(), buf, sizeof(buf))
                     : ::llistxattr(path.c_str(), buf, sizeof(buf));
  std::set<std::string> out;
  if (n < 0) {
    ADD_FAILURE() << "listxattr " << path << ": " << std::strerror(errno);
    return out;
  }
  for (ssize_t i = 0; i < n;) {
    std::string name(buf + i);
    if (name.rfind("user.", 0) == 0) out.insert(name);
    i += name.size() + 1;
  }
  return out;
}

std::map<std::string, unsigned char> ListDir(const std::string& path) {
  std::map<std::string, unsigned char> out;
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) {
    ADD_FAILURE() << "opendir " << path << ": " << std::strerror(errno);
    return out;
  }
  while (dirent* e = ::readdir(d)) {
    EXPECT_EQ(out.count(e->d_name), 0u) << "duplicate entry " << e->d_name;
    out[e->d_name] = e->d_type;
  }
  ::closedir(d);
  return out;
}

const std::string kName255(255, 'n');
const std::string kName256(256, 'n');

// One suite per area; each is instantiated for Raw and Localvol.
// Suite is a class name, which parentheses would break.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define LV_FS_SUITE(Suite)        \
  class Suite : public FsTest {}; \
  LOCALVOL_INSTANTIATE_FS_MODES(Suite)
// NOLINTEND(bugprone-macro-parentheses)

LV_FS_SUITE(ChmodTest);
LV_FS_SUITE(ChownTest);
LV_FS_SUITE(LinkTest);
LV_FS_SUITE(MkdirTest);
LV_FS_SUITE(MknodTest);
LV_FS_SUITE(OpenTest);
LV_FS_SUITE(RenameTest);
LV_FS_SUITE(RmdirTest);
LV_FS_SUITE(SymlinkTest);
LV_FS_SUITE(TruncateTest);
LV_FS_SUITE(UnlinkTest);
LV_FS_SUITE(UtimensTest);
LV_FS_SUITE(FallocateTest);
LV_FS_SUITE(NameTest);
LV_FS_SUITE(ReaddirTest);
LV_FS_SUITE(OwnershipTest);
LV_FS_SUITE(AclTest);
LV_FS_SUITE(XattrTest);
LV_FS_SUITE(LockTest);
LV_FS_SUITE(DataTest);

// ---------------------------------------------------------------------------
// chmod

TEST_P(ChmodTest, ChangesPermissionBitsOfFilesAndDirectories) {
  MakeFile(P("f"), 0644);
  EXPECT_SYS_OK(::chmod(P("f").c_str(), 0600));
  EXPECT_MODE(P("f"), 0600);
  EXPECT_SYS_OK(::chmod(P("f").c_str(), 04755));
  EXPECT_MODE(P("f"), 04755);
  MakeDir(P("d"), 0755);
  EXPECT_SYS_OK(::chmod(P("d").c_str(), 01777));
  EXPECT_MODE(P("d"), 01777);
  UniqueFd fd(::open(P("f").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  EXPECT_SYS_OK(::fchmod(fd.get(), 0640));
  EXPECT_MODE(P("f"), 0640);
}

TEST_P(ChmodTest, ChmodChangesCtime) {
  MakeFile(P("f"), 0644);
  timespec old_times[2] = {{1000000000, 0}, {1000000000, 0}};
  ASSERT_SYS_OK(::utimensat(AT_FDCWD, P("f").c_str(), old_times, 0));
  struct stat before = LstatOrDie(P("f"));
  ::usleep(10000);
  ASSERT_SYS_OK(::chmod(P("f").c_str(), 0600));
  struct stat after = LstatOrDie(P("f"));
  EXPECT_TRUE(after.st_ctim.tv_sec > before.st_ctim.tv_sec ||
              (after.st_ctim.tv_sec == before.st_ctim.tv_sec &&
               after.st_ctim.tv_nsec > before.st_ctim.tv_nsec));
  EXPECT_EQ(after.st_mtim.tv_sec, 1000000000);
}

TEST_P(ChmodTest, NonOwnerGetsEperm) {
  MakeFile(P("f"), 0666);
  std::string f = P("f");
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::chmod(f.c_str(), 0777)); }), EPERM);
  EXPECT_MODE(f, 0666);
}

TEST_P(ChmodTest, OwnerOutsideFileGroupLosesSetgid) {
  MakeFile(P("f"), 0644);
  ASSERT_SYS_OK(::chown(P("f").c_str(), 1000, 1001));
  std::string f = P("f");
  EXPECT_RESULT_OK(AsUser(kUserA, [&] { return Sys(::chmod(f.c_str(), 02755)); }));
  EXPECT_MODE(f, 0755);  // the kernel silently drops S_ISGID
  EXPECT_RESULT_OK(AsUser(kUserA, [&] { return Sys(::chmod(f.c_str(), 04755)); }));
  EXPECT_MODE(f, 04755);
}

TEST_P(ChmodTest, Errors) {
  EXPECT_SYS_ERRNO(::chmod(P("missing").c_str(), 0644), ENOENT);
  MakeFile(P("f"));
  EXPECT_SYS_ERRNO(::chmod(P("f/x").c_str(), 0644), ENOTDIR);
  EXPECT_SYS_ERRNO(::chmod(P(kName256).c_str(), 0644), ENAMETOOLONG);
}

TEST_P(ChmodTest, FollowsSymlinks) {
  MakeFile(P("f"), 0644);
  ASSERT_SYS_OK(::symlink("f", P("l").c_str()));
  EXPECT_SYS_OK(::chmod(P("l").c_str(), 0600));
  EXPECT_MODE(P("f"), 0600);
  EXPECT_EQ(ModeOf(P("l")), 0777u);
}

// ---------------------------------------------------------------------------
// chown

TEST_P(ChownTest, RootChangesOwnerAndGroup) {
  MakeFile(P("f"));
  MakeDir(P("d"));
  EXPECT_SYS_OK(::chown(P("f").c_str(), 1000, 1001));
  EXPECT_SYS_OK(::chown(P("d").c_str(), 1002, 1002));
  struct stat f = LstatOrDie(P("f")), d = LstatOrDie(P("d"));
  EXPECT_EQ(f.st_uid, 1000u);
  EXPECT_EQ(f.st_gid, 1001u);
  EXPECT_EQ(d.st_uid, 1002u);
  EXPECT_EQ(d.st_gid, 1002u);
  EXPECT_SYS_OK(::chown(P("f").c_str(), -1, 1002));  // -1 leaves the owner
  EXPECT_EQ(LstatOrDie(P("f")).st_uid, 1000u);
  EXPECT_EQ(LstatOrDie(P("f")).st_gid, 1002u);
}

TEST_P(ChownTest, LchownChangesTheLinkNotTheTarget) {
  MakeFile(P("f"));
  ASSERT_SYS_OK(::symlink("f", P("l").c_str()));
  EXPECT_SYS_OK(::lchown(P("l").c_str(), 1000, 1000));
  EXPECT_EQ(LstatOrDie(P("l")).st_uid, 1000u);
  EXPECT_EQ(LstatOrDie(P("f")).st_uid, 0u);
  EXPECT_SYS_OK(::chown(P("l").c_str(), 1001, 1001));
  EXPECT_EQ(LstatOrDie(P("f")).st_uid, 1001u);
  EXPECT_EQ(LstatOrDie(P("l")).st_uid, 1000u);
}

TEST_P(ChownTest, NonRootCannotGiveFilesAway) {
  MakeFile(P("f"));
  ASSERT_SYS_OK(::chown(P("f").c_str(), 1000, 1000));
  std::string f = P("f");
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::chown(f.c_str(), 1001, -1)); }), EPERM);
  EXPECT_RESULT_OK(AsUser(kUserA, [&] { return Sys(::chown(f.c_str(), 1000, -1)); }));
  EXPECT_EQ(LstatOrDie(f).st_uid, 1000u);
}

TEST_P(ChownTest, NonRootChgrpOnlyToTheirOwnGroups) {
  MakeFile(P("f"));
  ASSERT_SYS_OK(::chown(P("f").c_str(), 1000, 1000));
  std::string f = P("f");
  Creds a_in_1002{1000, 1000, {1000, 1002}};
  EXPECT_RESULT_ERRNO(AsUser(a_in_1002, [&] { return Sys(::chown(f.c_str(), -1, 1001)); }), EPERM);
  EXPECT_EQ(LstatOrDie(f).st_gid, 1000u);
  EXPECT_RESULT_OK(AsUser(a_in_1002, [&] { return Sys(::chown(f.c_str(), -1, 1002)); }));
  EXPECT_EQ(LstatOrDie(f).st_gid, 1002u);
}

TEST_P(ChownTest, NonOwnerCannotChgrp) {
  MakeFile(P("f"), 0666);
  std::string f = P("f");
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::chown(f.c_str(), -1, 1000)); }), EPERM);
  EXPECT_EQ(LstatOrDie(f).st_gid, 0u);
}

TEST_P(ChownTest, ChownClearsSuidAndSgid) {
  MakeFile(P("f"), 0755);
  ASSERT_SYS_OK(::chown(P("f").c_str(), 1000, 1000));
  ASSERT_SYS_OK(::chmod(P("f").c_str(), 06755));
  EXPECT_SYS_OK(::chown(P("f").c_str(), 1001, 1001));  // by root
  EXPECT_MODE(P("f"), 0755);

  MakeFile(P("g"), 0755);
  ASSERT_SYS_OK(::chown(P("g").c_str(), 1000, 1000));
  ASSERT_SYS_OK(::chmod(P("g").c_str(), 06755));
  std::string g = P("g");
  Creds a_in_1002{1000, 1000, {1000, 1002}};
  EXPECT_RESULT_OK(AsUser(a_in_1002, [&] { return Sys(::chown(g.c_str(), -1, 1002)); }));
  EXPECT_MODE(g, 0755);
}

// chown(f, -1, -1) changes no owner, yet Linux still drops setuid (and setgid
// with group execute) from a regular file, as for any chown. FUSE does not
// pass that on with killpriv v2: the server sees a SETATTR that sets nothing.
TEST_P(ChownTest, ChownWithoutIdsStillClearsSuidAndSgid) {
  MakeFile(P("f"), 0755);
  ASSERT_SYS_OK(::chown(P("f").c_str(), 1000, 1000));
  ASSERT_SYS_OK(::chmod(P("f").c_str(), 06755));
  EXPECT_SYS_OK(::lchown(P("f").c_str(), -1, -1));  // by root
  EXPECT_MODE(P("f"), 0755);
  // Setgid without group execute stays for the owner, who is in the group.
  MakeFile(P("g"), 0644);
  ASSERT_SYS_OK(::chown(P("g").c_str(), 1000, 1000));
  ASSERT_SYS_OK(::chmod(P("g").c_str(), 06644));
  std::string g = P("g");
  EXPECT_RESULT_OK(AsUser(kUserA, [&] { return Sys(::chown(g.c_str(), -1, -1)); }));
  EXPECT_MODE(g, 02644);
  // utimensat() changing no time keeps them.
  MakeFile(P("h"), 0755);
  ASSERT_SYS_OK(::chmod(P("h").c_str(), 06755));
  const struct timespec omit[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
  EXPECT_SYS_OK(::utimensat(AT_FDCWD, P("h").c_str(), omit, 0));
  EXPECT_MODE(P("h"), 06755);
  // Directories keep both.
  ASSERT_SYS_OK(::mkdir(P("d").c_str(), 0755));
  ASSERT_SYS_OK(::chmod(P("d").c_str(), 06755));
  EXPECT_SYS_OK(::chown(P("d").c_str(), -1, -1));
  EXPECT_MODE(P("d"), 06755);
}

TEST_P(ChownTest, Errors) {
  EXPECT_SYS_ERRNO(::chown(P("missing").c_str(), 1, 1), ENOENT);
  MakeFile(P("f"));
  EXPECT_SYS_ERRNO(::chown(P("f/x").c_str(), 1, 1), ENOTDIR);
}

// ---------------------------------------------------------------------------
// link

TEST_P(LinkTest, HardLinkSharesTheInode) {
  MakeFile(P("a"), 0644, "data");
  ASSERT_SYS_OK(::link(P("a").c_str(), P("b").c_str()));
  struct stat a = LstatOrDie(P("a")), b = LstatOrDie(P("b"));
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 2u);
  EXPECT_EQ(b.st_nlink, 2u);
  ASSERT_TRUE(WriteFile(P("b"), "changed").ok());
  EXPECT_EQ(Content(P("a")), "changed");
  ASSERT_SYS_OK(::unlink(P("a").c_str()));
  EXPECT_EQ(LstatOrDie(P("b")).st_nlink, 1u);
  EXPECT_EQ(Content(P("b")), "changed");
}

TEST_P(LinkTest, ChangesThroughOneNameShowThroughTheOther) {
  MakeFile(P("a"), 0644, "1");
  ASSERT_SYS_OK(::link(P("a").c_str(), P("b").c_str()));
  ASSERT_EQ(ModeOf(P("b")), 0644u);  // both names are now in the attribute cache
  ASSERT_SYS_OK(::chmod(P("a").c_str(), 0600));
  EXPECT_MODE(P("b"), 0600);
  ASSERT_SYS_OK(::chown(P("b").c_str(), 1000, 1000));
  EXPECT_EQ(LstatOrDie(P("a")).st_uid, 1000u);
  {
    UniqueFd fd(::open(P("a").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    ASSERT_EQ(::write(fd.get(), "longer content", 14), 14);
  }
  EXPECT_EQ(LstatOrDie(P("b")).st_size, static_cast<off_t>(std::strlen("1longer content")));
  EXPECT_EQ(Content(P("b")), "1longer content");
  ASSERT_SYS_OK(::truncate(P("b").c_str(), 1));
  EXPECT_EQ(LstatOrDie(P("a")).st_size, 1);
  ASSERT_SYS_OK(::unlink(P("b").c_str()));
  EXPECT_EQ(LstatOrDie(P("a")).st_nlink, 1u);
}

TEST_P(LinkTest, LinkChangesCtimeAndParentMtime) {
  MakeFile(P("a"));
  timespec old_times[2] = {{1000000000, 0}, {1000000000, 0}};
  ASSERT_SYS_OK(::utimensat(AT_FDCWD, P("a").c_str(), old_times, 0));
  ASSERT_SYS_OK(::utimensat(AT_FDCWD, fs().root().c_str(), old_times, 0));
  ASSERT_SYS_OK(::link(P("a").c_str(), P("b").c_str()));
  EXPECT_GT(LstatOrDie(P("a")).st_ctim.tv_sec, 1000000000);
  EXPECT_GT(LstatOrDie(fs().root()).st_mtim.tv_sec, 1000000000);
}

TEST_P(LinkTest, Errors) {
  MakeFile(P("f"));
  MakeFile(P("g"));
  MakeDir(P("d"));
  EXPECT_SYS_ERRNO(::link(P("missing").c_str(), P("x").c_str()), ENOENT);
  EXPECT_SYS_ERRNO(::link(P("f").c_str(), P("g").c_str()), EEXIST);
  EXPECT_SYS_ERRNO(::link(P("d").c_str(), P("d2").c_str()), EPERM);
  EXPECT_SYS_ERRNO(::link(P("f").c_str(), P("nodir/x").c_str()), ENOENT);
  EXPECT_SYS_ERRNO(::link(P("f").c_str(), P("g/x").c_str()), ENOTDIR);
  EXPECT_SYS_ERRNO(::link(P("f").c_str(), P(kName256).c_str()), ENAMETOOLONG);
  EXPECT_SYS_OK(::link(P("f").c_str(), P(kName255).c_str()));
}

TEST_P(LinkTest, AcrossFilesystemsIsExdev) {
  MakeFile(P("f"));
  auto second = fs().SecondVolumeRoot();
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  auto other = fs().OtherFsDir();
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  MakeFile(*second + "/s");
  MakeFile(*other + "/o");
  EXPECT_SYS_ERRNO(::link(P("f").c_str(), (*second + "/f").c_str()), EXDEV);
  EXPECT_SYS_ERRNO(::link((*second + "/s").c_str(), P("s").c_str()), EXDEV);
  EXPECT_SYS_ERRNO(::link(P("f").c_str(), (*other + "/f").c_str()), EXDEV);
  EXPECT_SYS_ERRNO(::link((*other + "/o").c_str(), P("o").c_str()), EXDEV);
}

TEST_P(LinkTest, ProtectedHardlinksRefuseUnreadableFiles) {
  std::ifstream in("/proc/sys/fs/protected_hardlinks");
  int on = 0;
  in >> on;
  if (on != 1) GTEST_SKIP() << "fs.protected_hardlinks is not 1 on this kernel";
  MakeFile(P("secret"), 0600);
  std::string src = P("secret"), dst = P("mine");
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::link(src.c_str(), dst.c_str())); }), EPERM);
  EXPECT_FALSE(Exists(dst));
}

// ---------------------------------------------------------------------------
// mkdir

TEST_P(MkdirTest, CreatesWithModeMinusUmask) {
  struct stat parent_before = LstatOrDie(fs().root());
  ASSERT_SYS_OK(::mkdir(P("d").c_str(), 0777));
  struct stat d = LstatOrDie(P("d"));
  EXPECT_TRUE(S_ISDIR(d.st_mode));
  EXPECT_EQ(Octal(d.st_mode & 07777), Octal(0755));
  EXPECT_EQ(d.st_nlink, 2u);
  EXPECT_EQ(LstatOrDie(fs().root()).st_nlink, parent_before.st_nlink + 1);
  ::umask(0);
  EXPECT_SYS_OK(::mkdir(P("e").c_str(), 01777));
  ::umask(022);
  EXPECT_MODE(P("e"), 01777);
}

TEST_P(MkdirTest, Errors) {
  MakeDir(P("d"));
  MakeFile(P("f"));
  EXPECT_SYS_ERRNO(::mkdir(P("d").c_str(), 0755), EEXIST);
  EXPECT_SYS_ERRNO(::mkdir(P("f").c_str(), 0755), EEXIST);
  EXPECT_SYS_ERRNO(::mkdir(P("missing/d").c_str(), 0755), ENOENT);
  EXPECT_SYS_ERRNO(::mkdir(P("f/d").c_str(), 0755), ENOTDIR);
  EXPECT_SYS_ERRNO(::mkdir(P(kName256).c_str(), 0755), ENAMETOOLONG);
  EXPECT_SYS_OK(::mkdir(P(kName255).c_str(), 0755));
  std::string sub = P("d/sub");
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::mkdir(sub.c_str(), 0755)); }), EACCES);
  ASSERT_SYS_OK(::symlink("d", P("l").c_str()));
  EXPECT_SYS_ERRNO(::mkdir(P("l").c_str(), 0755), EEXIST);
}

// ---------------------------------------------------------------------------
// mkfifo / mknod

TEST_P(MknodTest, FifoIsCreatedAndWorks) {
  ASSERT_SYS_OK(::mkfifo(P("p").c_str(), 0644));
  struct stat st = LstatOrDie(P("p"));
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(Octal(st.st_mode & 07777), Octal(0644));
  EXPECT_SYS_ERRNO(::mkfifo(P("p").c_str(), 0644), EEXIST);
  UniqueFd fd(::open(P("p").c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
  ASSERT_TRUE(fd.valid()) << std::strerror(errno);
  ASSERT_EQ(::write(fd.get(), "xyz", 3), 3);
  char buf[8] = {};
  ASSERT_EQ(::read(fd.get(), buf, sizeof(buf)), 3);
  EXPECT_STREQ(buf, "xyz");
}

TEST_P(MknodTest, SocketNode) {
  ASSERT_SYS_OK(::mknod(P("s").c_str(), S_IFSOCK | 0640, 0));
  struct stat st = LstatOrDie(P("s"));
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(Octal(st.st_mode & 07777), Octal(0640));
}

TEST_P(MknodTest, UnixSocketBindAndConnect) {
  std::string path = P("sock");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) GTEST_SKIP() << "socket path too long: " << path;
  std::strcpy(addr.sun_path, path.c_str());
  UniqueFd server(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(server.valid());
  ASSERT_SYS_OK(::bind(server.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
  ASSERT_SYS_OK(::listen(server.get(), 1));
  EXPECT_TRUE(S_ISSOCK(LstatOrDie(path).st_mode));
  UniqueFd client(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_SYS_OK(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)));
  UniqueFd conn(::accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(conn.valid());
  ASSERT_EQ(::write(client.get(), "ping", 4), 4);
  char buf[8] = {};
  ASSERT_EQ(::read(conn.get(), buf, sizeof(buf)), 4);
  EXPECT_STREQ(buf, "ping");
}

TEST_P(MknodTest, DeviceNodesAsRoot) {
  ASSERT_SYS_OK(::mknod(P("c").c_str(), S_IFCHR | 0644, makedev(1, 3)));
  ASSERT_SYS_OK(::mknod(P("b").c_str(), S_IFBLK | 0600, makedev(7, 200)));
  struct stat c = LstatOrDie(P("c")), b = LstatOrDie(P("b"));
  EXPECT_TRUE(S_ISCHR(c.st_mode));
  EXPECT_EQ(major(c.st_rdev), 1u);
  EXPECT_EQ(minor(c.st_rdev), 3u);
  EXPECT_EQ(Octal(c.st_mode & 07777), Octal(0644));
  EXPECT_TRUE(S_ISBLK(b.st_mode));
  EXPECT_EQ(major(b.st_rdev), 7u);
  EXPECT_EQ(minor(b.st_rdev), 200u);
  EXPECT_SYS_ERRNO(::mknod(P("c").c_str(), S_IFCHR | 0644, makedev(1, 3)), EEXIST);
}

TEST_P(MknodTest, UnprivilegedUsersMayOnlyMakeFifosAndSockets) {
  std::string c = P("c"), p = P("p"), s = P("s");
  EXPECT_RESULT_ERRNO(
      AsUser(kUserA, [&] { return Sys(::mknod(c.c_str(), S_IFCHR | 0644, makedev(1, 3))); }),
      EPERM);
  EXPECT_RESULT_OK(AsUser(kUserA, [&] { return Sys(::mknod(p.c_str(), S_IFIFO | 0644, 0)); }));
  EXPECT_RESULT_OK(AsUser(kUserA, [&] { return Sys(::mknod(s.c_str(), S_IFSOCK | 0644, 0)); }));
  EXPECT_EQ(LstatOrDie(p).st_uid, 1000u);
  EXPECT_EQ(LstatOrDie(s).st_gid, 1000u);
}

TEST_P(MknodTest, RegularFileThroughMknod) {
  ASSERT_SYS_OK(::mknod(P("r").c_str(), S_IFREG | 0640, 0));
  struct stat st = LstatOrDie(P("r"));
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_size, 0);
  EXPECT_EQ(Octal(st.st_mode & 07777), Octal(0640));
}

// ---------------------------------------------------------------------------
// open

TEST_P(OpenTest, CreateExclusive) {
  int fd = ::open(P("f").c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ::close(fd);
  EXPECT_MODE(P("f"), 0644);  // umask 022
  EXPECT_SYS_ERRNO(::open(P("f").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644), EEXIST);
  ASSERT_SYS_OK(::symlink("target", P("dangling").c_str()));
  EXPECT_SYS_ERRNO(::open(P("dangling").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644), EEXIST);
  // Without O_EXCL, O_CREAT through a dangling symlink creates its target.
  fd = ::open(P("dangling").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  EXPECT_GE(fd, 0) << std::strerror(errno);
  if (fd >= 0) ::close(fd);
  EXPECT_TRUE(S_ISREG(LstatOrDie(P("target")).st_mode));
}

TEST_P(OpenTest, TruncateOnOpen) {
  MakeFile(P("f"), 0644, "hello");
  int fd = ::open(P("f").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ::close(fd);
  EXPECT_EQ(LstatOrDie(P("f")).st_size, 0);
  MakeFile(P("g"), 0644, "keep");
  std::string g = P("g");
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::open(g.c_str(), O_WRONLY | O_TRUNC)); }),
                      EACCES);
  EXPECT_EQ(Content(g), "keep");
}

TEST_P(OpenTest, AppendAlwaysWritesAtTheEnd) {
  MakeFile(P("f"), 0644, "abc");
  UniqueFd fd(::open(P("f").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(::lseek(fd.get(), 0, SEEK_SET), 0);
  ASSERT_EQ(::write(fd.get(), "de", 2), 2);
  EXPECT_EQ(Content(P("f")), "abcde");
  // Linux: pwrite on an O_APPEND fd appends too.
  ASSERT_EQ(::pwrite(fd.get(), "fg", 2, 0), 2);
  EXPECT_EQ(Content(P("f")), "abcdefg");
}

TEST_P(OpenTest, TwoAppendersInterleaveWithoutOverwriting) {
  MakeFile(P("f"), 0644);
  UniqueFd a(::open(P("f").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  UniqueFd b(::open(P("f").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  ASSERT_TRUE(a.valid() && b.valid());
  std::string expect;
  for (int i = 0; i < 20; ++i) {
    std::string chunk(100 + i, static_cast<char>('A' + i));
    ASSERT_EQ(::write((i % 2 ? b : a).get(), chunk.data(), chunk.size()),
              static_cast<ssize_t>(chunk.size()));
    expect += chunk;
  }
  EXPECT_EQ(Content(P("f")), expect);
}

TEST_P(OpenTest, DirectoryFlags) {
  MakeFile(P("f"));
  MakeDir(P("d"));
  EXPECT_SYS_ERRNO(::open(P("f").c_str(), O_RDONLY | O_DIRECTORY), ENOTDIR);
  int fd = ::open(P("d").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  EXPECT_GE(fd, 0);
  if (fd >= 0) ::close(fd);
  EXPECT_SYS_ERRNO(::open(P("d").c_str(), O_WRONLY), EISDIR);
  EXPECT_SYS_ERRNO(::open(P("d").c_str(), O_RDWR), EISDIR);
  EXPECT_SYS_ERRNO(::open(P("d").c_str(), O_CREAT | O_WRONLY, 0644), EISDIR);
}

TEST_P(OpenTest, NoFollowAndLoops) {
  MakeFile(P("f"));
  ASSERT_SYS_OK(::symlink("f", P("l").c_str()));
  EXPECT_SYS_ERRNO(::open(P("l").c_str(), O_RDONLY | O_NOFOLLOW), ELOOP);
  int fd = ::open(P("l").c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  EXPECT_GE(fd, 0);
  if (fd >= 0) ::close(fd);
  ASSERT_SYS_OK(::symlink("loop_b", P("loop_a").c_str()));
  ASSERT_SYS_OK(::symlink("loop_a", P("loop_b").c_str()));
  EXPECT_SYS_ERRNO(::open(P("loop_a").c_str(), O_RDONLY), ELOOP);
  struct stat st;
  EXPECT_SYS_ERRNO(::stat(P("loop_a").c_str(), &st), ELOOP);
  EXPECT_SYS_ERRNO(::open(P("loop_a/x").c_str(), O_RDONLY), ELOOP);
}

TEST_P(OpenTest, Errors) {
  MakeFile(P("f"));
  MakeFile(P("secret"), 0600);
  MakeDir(P("ro"), 0755);
  EXPECT_SYS_ERRNO(::open(P("missing").c_str(), O_RDONLY), ENOENT);
  EXPECT_SYS_ERRNO(::open(P("missing/x").c_str(), O_RDONLY | O_CREAT, 0644), ENOENT);
  EXPECT_SYS_ERRNO(::open(P("f/x").c_str(), O_RDONLY), ENOTDIR);
  EXPECT_SYS_ERRNO(::open(P(kName256).c_str(), O_CREAT | O_WRONLY, 0644), ENAMETOOLONG);
  int fd = ::open(P(kName255).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  EXPECT_GE(fd, 0);
  if (fd >= 0) ::close(fd);
  std::string secret = P("secret"), ro = P("ro/new");
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::open(secret.c_str(), O_RDONLY)); }),
                      EACCES);
  EXPECT_RESULT_ERRNO(
      AsUser(kUserA, [&] { return Sys(::open(ro.c_str(), O_CREAT | O_WRONLY, 0644)); }), EACCES);
  EXPECT_FALSE(Exists(ro));
}

TEST_P(OpenTest, ConcurrentExclusiveCreateHasOneWinner) {
  for (int round = 0; round < 5; ++round) {
    std::string name = P("race" + std::to_string(round));
    std::string dir = P("dir" + std::to_string(round));
    constexpr int kRacers = 6;
    std::vector<SysResult> files(kRacers), dirs(kRacers);
    std::vector<std::thread> threads;
    for (int i = 0; i < kRacers; ++i) {
      threads.emplace_back([&, i] {
        files[i] = RunInChild([&] {
          int fd = ::open(name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
          if (fd >= 0) ::close(fd);
          return Sys(fd < 0 ? -1 : 0);
        });
        dirs[i] = RunInChild([&] { return Sys(::mkdir(dir.c_str(), 0755)); });
      });
    }
    for (auto& t : threads) t.join();
    int file_wins = 0, dir_wins = 0;
    for (int i = 0; i < kRacers; ++i) {
      if (files[i].ok())
        ++file_wins;
      else
        EXPECT_RESULT_ERRNO(files[i], EEXIST);
      if (dirs[i].ok())
        ++dir_wins;
      else
        EXPECT_RESULT_ERRNO(dirs[i], EEXIST);
    }
    EXPECT_EQ(file_wins, 1) << name;
    EXPECT_EQ(dir_wins, 1) << dir;
  }
}

TEST_P(OpenTest, AccessReflectsPermissions) {
  MakeFile(P("rw"), 0644);
  MakeFile(P("x"), 0700);
  MakeFile(P("nox"), 0644);
  EXPECT_SYS_OK(::access(P("rw").c_str(), R_OK | W_OK));
  EXPECT_SYS_OK(::access(P("x").c_str(), X_OK));
  EXPECT_SYS_ERRNO(::access(P("nox").c_str(), X_OK), EACCES);  // even root needs an x bit
  EXPECT_SYS_ERRNO(::access(P("missing").c_str(), F_OK), ENOENT);
  std::string rw = P("rw"), x = P("x");
  EXPECT_RESULT_OK(AsUser(kUserA, [&] { return Sys(::access(rw.c_str(), R_OK)); }));
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::access(rw.c_str(), W_OK)); }), EACCES);
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::access(x.c_str(), R_OK)); }), EACCES);
}

TEST_P(OpenTest, ReadWriteRoundTrip) {
  const std::string data = RandomBytes(42, 3 * 1024 * 1024 + 17);
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  size_t off = 0;
  std::mt19937 rng(7);
  while (off < data.size()) {
    size_t n = std::min<size_t>(data.size() - off, 1 + rng() % 200000);
    ASSERT_EQ(::write(fd.get(), data.data() + off, n), static_cast<ssize_t>(n));
    off += n;
  }
  EXPECT_EQ(Content(P("f")), data);
  for (int i = 0; i < 50; ++i) {
    size_t at = rng() % data.size();
    size_t n = std::min<size_t>(data.size() - at, 1 + rng() % 70000);
    std::string buf(n, '\0');
    ASSERT_EQ(::pread(fd.get(), buf.data(), n, at), static_cast<ssize_t>(n));
    ASSERT_EQ(buf, data.substr(at, n)) << "at " << at;
  }
  char c;
  EXPECT_EQ(::pread(fd.get(), &c, 1, data.size()), 0);
}

// ---------------------------------------------------------------------------
// rename

TEST_P(RenameTest, FileOverFile) {
  MakeFile(P("a"), 0644, "A");
  MakeFile(P("b"), 0644, "B");
  ino_t ino = LstatOrDie(P("a")).st_ino;
  ASSERT_SYS_OK(::rename(P("a").c_str(), P("b").c_str()));
  EXPECT_FALSE(Exists(P("a")));
  EXPECT_EQ(Content(P("b")), "A");
  EXPECT_EQ(LstatOrDie(P("b")).st_ino, ino);
}

TEST_P(RenameTest, DirectoryOverEmptyAndNonEmptyDirectory) {
  MakeDir(P("d1"));
  MakeFile(P("d1/x"));
  MakeDir(P("empty"));
  EXPECT_SYS_OK(::rename(P("d1").c_str(), P("empty").c_str()));
  EXPECT_TRUE(Exists(P("empty/x")));
  EXPECT_FALSE(Exists(P("d1")));
  MakeDir(P("d3"));
  MakeDir(P("full"));
  MakeFile(P("full/z"));
  // POSIX allows either errno; XFS answers EEXIST.
  SysResult r = Sys(::rename(P("d3").c_str(), P("full").c_str()));
  EXPECT_TRUE(r.err == ENOTEMPTY || r.err == EEXIST) << Describe(r);
  EXPECT_TRUE(Exists(P("d3")));
  EXPECT_TRUE(Exists(P("full/z")));
}

TEST_P(RenameTest, TypeMismatches) {
  MakeFile(P("f"));
  MakeDir(P("d"));
  EXPECT_SYS_ERRNO(::rename(P("f").c_str(), P("d").c_str()), EISDIR);
  EXPECT_SYS_ERRNO(::rename(P("d").c_str(), P("f").c_str()), ENOTDIR);
}

TEST_P(RenameTest, DirectoryIntoItsOwnSubdirectoryIsEinval) {
  MakeDir(P("a"));
  MakeDir(P("a/b"));
  EXPECT_SYS_ERRNO(::rename(P("a").c_str(), P("a/b/c").c_str()), EINVAL);
  EXPECT_SYS_ERRNO(::rename(P("a").c_str(), P("a/c").c_str()), EINVAL);
  EXPECT_TRUE(Exists(P("a/b")));
}

TEST_P(RenameTest, NoReplace) {
  MakeFile(P("a"), 0644, "A");
  MakeFile(P("b"), 0644, "B");
  EXPECT_SYS_ERRNO(RenameAt2(P("a"), P("b"), RENAME_NOREPLACE), EEXIST);
  EXPECT_EQ(Content(P("a")), "A");
  EXPECT_EQ(Content(P("b")), "B");
  EXPECT_SYS_OK(RenameAt2(P("a"), P("c"), RENAME_NOREPLACE));
  EXPECT_EQ(Content(P("c")), "A");
  EXPECT_FALSE(Exists(P("a")));
}

TEST_P(RenameTest, Exchange) {
  MakeFile(P("a"), 0644, "A");
  MakeFile(P("b"), 0644, "B");
  EXPECT_SYS_OK(RenameAt2(P("a"), P("b"), RENAME_EXCHANGE));
  EXPECT_EQ(Content(P("a")), "B");
  EXPECT_EQ(Content(P("b")), "A");
  MakeDir(P("d"));
  MakeFile(P("d/inner"), 0644, "I");
  EXPECT_SYS_OK(RenameAt2(P("a"), P("d"), RENAME_EXCHANGE));
  EXPECT_TRUE(S_ISDIR(LstatOrDie(P("a")).st_mode));
  EXPECT_EQ(Content(P("a/inner")), "I");
  EXPECT_EQ(Content(P("d")), "B");
  EXPECT_SYS_ERRNO(RenameAt2(P("a"), P("missing"), RENAME_EXCHANGE), ENOENT);
  EXPECT_SYS_ERRNO(RenameAt2(P("a"), P("b"), RENAME_EXCHANGE | RENAME_NOREPLACE), EINVAL);
}

TEST_P(RenameTest, HardLinksToTheSameInodeAreANoop) {
  MakeFile(P("a"), 0644, "A");
  ASSERT_SYS_OK(::link(P("a").c_str(), P("b").c_str()));
  EXPECT_SYS_OK(::rename(P("a").c_str(), P("b").c_str()));
  EXPECT_TRUE(Exists(P("a")));
  EXPECT_TRUE(Exists(P("b")));
  EXPECT_EQ(LstatOrDie(P("b")).st_nlink, 2u);
}

TEST_P(RenameTest, MovingADirectoryFixesDotDotAndLinkCounts) {
  MakeDir(P("p1"));
  MakeDir(P("p2"));
  MakeDir(P("p1/c"));
  ASSERT_EQ(LstatOrDie(P("p1")).st_nlink, 3u);
  ASSERT_SYS_OK(::rename(P("p1/c").c_str(), P("p2/c").c_str()));
  struct stat dotdot {};
  ASSERT_SYS_OK(::stat(P("p2/c/..").c_str(), &dotdot));
  EXPECT_EQ(dotdot.st_ino, LstatOrDie(P("p2")).st_ino);
  EXPECT_EQ(LstatOrDie(P("p1")).st_nlink, 2u);
  EXPECT_EQ(LstatOrDie(P("p2")).st_nlink, 3u);
}

TEST_P(RenameTest, OpenFileFollowsItsNewName) {
  MakeFile(P("a"), 0644, "start");
  UniqueFd fd(::open(P("a").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_SYS_OK(::rename(P("a").c_str(), P("b").c_str()));
  ASSERT_EQ(::pwrite(fd.get(), "S", 1, 0), 1);
  EXPECT_EQ(Content(P("b")), "Start");
}

TEST_P(RenameTest, Errors) {
  MakeFile(P("f"));
  EXPECT_SYS_ERRNO(::rename(P("missing").c_str(), P("x").c_str()), ENOENT);
  EXPECT_SYS_ERRNO(::rename(P("f").c_str(), P("nodir/x").c_str()), ENOENT);
  EXPECT_SYS_ERRNO(::rename(P("f").c_str(), P(kName256).c_str()), ENAMETOOLONG);
  EXPECT_SYS_ERRNO(::rename(P("f/x").c_str(), P("y").c_str()), ENOTDIR);
  MakeDir(P("ro"), 0755);
  MakeFile(P("ro/x"));
  std::string from = P("ro/x"), to = P("mine");
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::rename(from.c_str(), to.c_str())); }),
                      EACCES);
}

TEST_P(RenameTest, AcrossFilesystemsIsExdev) {
  MakeFile(P("f"));
  MakeDir(P("d"));
  auto second = fs().SecondVolumeRoot();
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  auto other = fs().OtherFsDir();
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  MakeFile(*second + "/s");
  MakeFile(*other + "/o");
  EXPECT_SYS_ERRNO(::rename(P("f").c_str(), (*second + "/f").c_str()), EXDEV);
  EXPECT_SYS_ERRNO(::rename(P("d").c_str(), (*second + "/d").c_str()), EXDEV);
  EXPECT_SYS_ERRNO(::rename((*second + "/s").c_str(), P("s").c_str()), EXDEV);
  EXPECT_SYS_ERRNO(::rename(P("f").c_str(), (*other + "/f").c_str()), EXDEV);
  EXPECT_SYS_ERRNO(::rename((*other + "/o").c_str(), P("o").c_str()), EXDEV);
  EXPECT_TRUE(Exists(P("f")));
}

// ---------------------------------------------------------------------------
// rename at a full volume: on Raw the XFS disk itself is full, through
// localvol the volume's quota. XFS renames without a space reservation when
// it has none, as long as no directory must grow (xfs_rename).

class RenameFullTest : public FsTest {
 protected:
  FsConfig Config() const override {
    FsConfig c;
    c.disk_size = 320 * kMiB;  // about XFS's smallest, so that Raw fills quickly
    c.capacity = "16Mi";
    return c;
  }

  // Writes until write(2) fails with ENOSPC, in large then in block-sized
  // chunks, so that not even a block is left.
  void Fill() {
    UniqueFd fd(::open(P("fill").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd.valid()) << std::strerror(errno);
    const std::string chunk(kMiB, 'f');
    for (size_t size : {size_t{kMiB}, size_t{4096}}) {
      while (true) {
        const ssize_t n = ::write(fd.get(), chunk.data(), size);
        if (n < 0) {
          ASSERT_EQ(ErrnoName(errno), "ENOSPC");
          break;
        }
      }
    }
    ASSERT_SYS_OK(::fsync(fd.get()));
  }
};
LOCALVOL_INSTANTIATE_FS_MODES(RenameFullTest);

TEST_P(RenameFullTest, ReplacingOrExchangingEntriesSucceeds) {
  MakeFile(P("a"), 0644, "A");
  MakeFile(P("b"), 0644, "B");
  MakeDir(P("d"));
  MakeFile(P("d/c"), 0644, "C");
  MakeDir(P("e"));
  MakeDir(P("empty"));
  ASSERT_NO_FATAL_FAILURE(Fill());
  // Neither frees anything.
  EXPECT_SYS_OK(RenameAt2(P("d"), P("e"), RENAME_EXCHANGE));
  EXPECT_EQ(Content(P("e/c")), "C");
  EXPECT_SYS_OK(::rename(P("e").c_str(), P("empty").c_str()));
  EXPECT_EQ(Content(P("empty/c")), "C");
  // A file over a file, in one directory and across two.
  EXPECT_SYS_OK(::rename(P("a").c_str(), P("b").c_str()));
  EXPECT_EQ(Content(P("b")), "A");
  EXPECT_FALSE(Exists(P("a")));
  EXPECT_SYS_OK(::rename(P("empty/c").c_str(), P("b").c_str()));
  EXPECT_EQ(Content(P("b")), "C");
}

TEST_P(RenameFullTest, NewNameThatFitsTheDirectorySucceeds) {
  MakeFile(P("a"), 0644, "A");
  MakeDir(P("d"));
  MakeDir(P("d/sub"));
  ASSERT_NO_FATAL_FAILURE(Fill());
  EXPECT_SYS_OK(::rename(P("a").c_str(), P("a2").c_str()));
  EXPECT_SYS_OK(::rename(P("a2").c_str(), P("d/a3").c_str()));
  EXPECT_EQ(Content(P("d/a3")), "A");
  EXPECT_FALSE(Exists(P("a2")));
  // A directory moves to a new parent too: its ".." is rewritten in place.
  EXPECT_SYS_OK(::rename(P("d/sub").c_str(), P("sub").c_str()));
}

TEST_P(RenameFullTest, NewNameThatMustGrowTheDirectoryIsEnospc) {
  // Names of one length until the directory leaves its inode for a block,
  // then the last one removed: XFS moves it back into the inode, and one
  // more such name needs a block again.
  MakeDir(P("big"));
  const blkcnt_t inline_blocks = LstatOrDie(P("big")).st_blocks;
  std::string last;
  for (int i = 0; i < 1000 && last.empty(); ++i) {
    const std::string name = fmt::format("e{:03d}", i);
    MakeFile(P("big/") + name);
    if (LstatOrDie(P("big")).st_blocks != inline_blocks) last = name;
  }
  ASSERT_FALSE(last.empty()) << "the directory never grew";
  ASSERT_SYS_OK(::unlink(P("big/" + last).c_str()));
  ASSERT_EQ(LstatOrDie(P("big")).st_blocks, inline_blocks);
  MakeFile(P("x"), 0644, "X");
  ASSERT_NO_FATAL_FAILURE(Fill());
  EXPECT_SYS_ERRNO(::rename(P("x").c_str(), P("big/" + last).c_str()), ENOSPC);
  EXPECT_EQ(Content(P("x")), "X");
  EXPECT_FALSE(Exists(P("big/" + last)));
  EXPECT_EQ(LstatOrDie(P("big")).st_blocks, inline_blocks);
  // Over a name that exists, it still moves.
  EXPECT_SYS_OK(::rename(P("x").c_str(), P("big/e000").c_str()));
  EXPECT_EQ(Content(P("big/e000")), "X");
}

// ---------------------------------------------------------------------------
// rmdir

TEST_P(RmdirTest, RemovesEmptyDirectories) {
  nlink_t before = LstatOrDie(fs().root()).st_nlink;
  MakeDir(P("d"));
  EXPECT_EQ(LstatOrDie(fs().root()).st_nlink, before + 1);
  EXPECT_SYS_OK(::rmdir(P("d").c_str()));
  EXPECT_FALSE(Exists(P("d")));
  EXPECT_EQ(LstatOrDie(fs().root()).st_nlink, before);
}

TEST_P(RmdirTest, Errors) {
  MakeDir(P("full"));
  MakeFile(P("full/x"));
  MakeFile(P("f"));
  MakeDir(P("d"));
  EXPECT_SYS_ERRNO(::rmdir(P("full").c_str()), ENOTEMPTY);
  EXPECT_SYS_ERRNO(::rmdir(P("f").c_str()), ENOTDIR);
  EXPECT_SYS_ERRNO(::rmdir(P("missing").c_str()), ENOENT);
  EXPECT_SYS_ERRNO(::rmdir(P("d/.").c_str()), EINVAL);
  EXPECT_SYS_ERRNO(::rmdir(P(kName256).c_str()), ENAMETOOLONG);
  ASSERT_SYS_OK(::symlink("d", P("l").c_str()));
  EXPECT_SYS_ERRNO(::rmdir(P("l").c_str()), ENOTDIR);
  MakeDir(P("ro"), 0755);
  MakeDir(P("ro/sub"));
  std::string sub = P("ro/sub");
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::rmdir(sub.c_str())); }), EACCES);
  EXPECT_TRUE(Exists(sub));
}

// ---------------------------------------------------------------------------
// symlink / readlink

TEST_P(SymlinkTest, CreateAndRead) {
  ASSERT_SYS_OK(::symlink("some/target path", P("l").c_str()));
  struct stat st = LstatOrDie(P("l"));
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(st.st_size, 16);
  char buf[256] = {};
  EXPECT_EQ(::readlink(P("l").c_str(), buf, sizeof(buf)), 16);
  EXPECT_EQ(std::string(buf, 16), "some/target path");
  char small[4] = {};
  EXPECT_EQ(::readlink(P("l").c_str(), small, sizeof(small)), 4);
  EXPECT_EQ(std::string(small, 4), "some");
  struct stat target;
  EXPECT_SYS_ERRNO(::stat(P("l").c_str(), &target), ENOENT);
  EXPECT_SYS_ERRNO(::symlink("x", P("l").c_str()), EEXIST);
}

TEST_P(SymlinkTest, ResolvesChainsAndDirectories) {
  MakeDir(P("d"));
  MakeFile(P("d/f"), 0644, "payload");
  ASSERT_SYS_OK(::symlink("d", P("ld").c_str()));
  ASSERT_SYS_OK(::symlink("ld/f", P("l1").c_str()));
  ASSERT_SYS_OK(::symlink("l1", P("l2").c_str()));
  std::string abs = P("d/f");
  ASSERT_SYS_OK(::symlink(abs.c_str(), P("labs").c_str()));
  EXPECT_EQ(Content(P("l2")), "payload");
  EXPECT_EQ(Content(P("labs")), "payload");
  EXPECT_EQ(Content(P("ld/f")), "payload");
}

TEST_P(SymlinkTest, Errors) {
  MakeFile(P("f"));
  char buf[64];
  EXPECT_SYS_ERRNO(::readlink(P("f").c_str(), buf, sizeof(buf)), EINVAL);
  EXPECT_SYS_ERRNO(::readlink(P("missing").c_str(), buf, sizeof(buf)), ENOENT);
  EXPECT_SYS_ERRNO(::symlink("x", P(kName256).c_str()), ENAMETOOLONG);
  EXPECT_SYS_ERRNO(::symlink("x", P("missing/l").c_str()), ENOENT);
  EXPECT_SYS_ERRNO(::symlink("x", P("f/l").c_str()), ENOTDIR);
  EXPECT_SYS_ERRNO(::symlink(std::string(4096, 'x').c_str(), P("toolong").c_str()), ENAMETOOLONG);
  // XFS stores symlink targets of at most 1023 bytes.
  std::string longest(1023, 't');
  ASSERT_SYS_OK(::symlink(longest.c_str(), P("long").c_str()));
  std::string back(2048, '\0');
  EXPECT_EQ(::readlink(P("long").c_str(), back.data(), back.size()), 1023);
  EXPECT_EQ(back.substr(0, 1023), longest);
  EXPECT_SYS_ERRNO(::symlink(std::string(1024, 't').c_str(), P("long2").c_str()), ENAMETOOLONG);
}

// ---------------------------------------------------------------------------
// truncate / ftruncate

TEST_P(TruncateTest, GrowAndShrink) {
  MakeFile(P("f"), 0644, "hello world");
  EXPECT_SYS_OK(::truncate(P("f").c_str(), 5));
  EXPECT_EQ(Content(P("f")), "hello");
  EXPECT_SYS_OK(::truncate(P("f").c_str(), 100000));
  std::string data = Content(P("f"));
  ASSERT_EQ(data.size(), 100000u);
  EXPECT_EQ(data.substr(0, 5), "hello");
  EXPECT_EQ(data.find_first_not_of('\0', 5), std::string::npos);
  EXPECT_LT(LstatOrDie(P("f")).st_blocks * 512, 100000);  // the extension is a hole
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  EXPECT_SYS_OK(::ftruncate(fd.get(), 2));
  EXPECT_EQ(Content(P("f")), "he");
}

TEST_P(TruncateTest, ShrinkThenExtendReadsZeros) {
  MakeFile(P("f"), 0644, std::string(65536, 'x'));
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  std::string cached(65536, '\0');
  ASSERT_EQ(::pread(fd.get(), cached.data(), cached.size(), 0), 65536);  // pull into cache
  ASSERT_SYS_OK(::ftruncate(fd.get(), 1000));
  ASSERT_SYS_OK(::ftruncate(fd.get(), 65536));
  std::string data = Content(P("f"));
  ASSERT_EQ(data.size(), 65536u);
  EXPECT_EQ(data.find_first_not_of('x'), 1000u);
  EXPECT_EQ(data.find_first_not_of('\0', 1000), std::string::npos);
}

TEST_P(TruncateTest, Errors) {
  MakeFile(P("f"), 0644, "data");
  MakeDir(P("d"));
  EXPECT_SYS_ERRNO(::truncate(P("missing").c_str(), 0), ENOENT);
  EXPECT_SYS_ERRNO(::truncate(P("d").c_str(), 0), EISDIR);
  EXPECT_SYS_ERRNO(::truncate(P("f").c_str(), -1), EINVAL);
  UniqueFd ro(::open(P("f").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(ro.valid());
  EXPECT_SYS_ERRNO(::ftruncate(ro.get(), 0), EINVAL);
  std::string f = P("f");
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::truncate(f.c_str(), 0)); }), EACCES);
  EXPECT_EQ(Content(f), "data");
}

// ---------------------------------------------------------------------------
// unlink

TEST_P(UnlinkTest, RemovesNames) {
  MakeFile(P("f"));
  EXPECT_SYS_OK(::unlink(P("f").c_str()));
  EXPECT_FALSE(Exists(P("f")));
  ASSERT_SYS_OK(::symlink("missing", P("l").c_str()));
  EXPECT_SYS_OK(::unlink(P("l").c_str()));
  ASSERT_SYS_OK(::mkfifo(P("p").c_str(), 0644));
  EXPECT_SYS_OK(::unlink(P("p").c_str()));
  EXPECT_TRUE(ListDir(fs().root()).size() == 2u);  // . and ..
}

TEST_P(UnlinkTest, Errors) {
  MakeFile(P("f"));
  MakeDir(P("d"));
  EXPECT_SYS_ERRNO(::unlink(P("missing").c_str()), ENOENT);
  EXPECT_SYS_ERRNO(::unlink(P("d").c_str()), EISDIR);
  EXPECT_SYS_ERRNO(::unlink(P("f/x").c_str()), ENOTDIR);
  EXPECT_SYS_ERRNO(::unlink(P(kName256).c_str()), ENAMETOOLONG);
  MakeDir(P("ro"), 0755);
  MakeFile(P("ro/x"), 0666);
  std::string x = P("ro/x");
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::unlink(x.c_str())); }), EACCES);
  EXPECT_TRUE(Exists(x));
}

TEST_P(UnlinkTest, OpenFileStaysUsableAfterUnlink) {
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(::write(fd.get(), "before", 6), 6);
  ASSERT_SYS_OK(::unlink(P("f").c_str()));
  EXPECT_FALSE(Exists(P("f")));
  ASSERT_EQ(::write(fd.get(), "+after", 6), 6);
  char buf[32] = {};
  ASSERT_EQ(::pread(fd.get(), buf, sizeof(buf), 0), 12);
  EXPECT_STREQ(buf, "before+after");
  struct stat st {};
  ASSERT_SYS_OK(::fstat(fd.get(), &st));
  EXPECT_EQ(st.st_nlink, 0u);
  EXPECT_EQ(st.st_size, 12);
  EXPECT_SYS_OK(::ftruncate(fd.get(), 3));
  // A new file under the old name is a different file.
  MakeFile(P("f"), 0644, "new");
  ASSERT_EQ(::pread(fd.get(), buf, sizeof(buf), 0), 3);
  EXPECT_EQ(std::string(buf, 3), "bef");
}

// ---------------------------------------------------------------------------
// utimensat

TEST_P(UtimensTest, OwnerSetsExplicitTimesWithNanoseconds) {
  MakeFile(P("f"));
  timespec times[2] = {{1000000000, 123456789}, {1500000000, 987654321}};
  ASSERT_SYS_OK(::utimensat(AT_FDCWD, P("f").c_str(), times, 0));
  struct stat st = LstatOrDie(P("f"));
  EXPECT_EQ(st.st_atim.tv_sec, 1000000000);
  EXPECT_EQ(st.st_atim.tv_nsec, 123456789);
  EXPECT_EQ(st.st_mtim.tv_sec, 1500000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 987654321);
  timespec omit[2] = {{0, UTIME_OMIT}, {1600000000, 5}};
  ASSERT_SYS_OK(::utimensat(AT_FDCWD, P("f").c_str(), omit, 0));
  st = LstatOrDie(P("f"));
  EXPECT_EQ(st.st_atim.tv_sec, 1000000000);
  EXPECT_EQ(st.st_atim.tv_nsec, 123456789);
  EXPECT_EQ(st.st_mtim.tv_sec, 1600000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 5);
  std::string f = P("f");
  ASSERT_SYS_OK(::chown(f.c_str(), 1000, 1000));
  timespec user_times[2] = {{1100000000, 0}, {1200000000, 0}};
  EXPECT_RESULT_OK(
      AsUser(kUserA, [&] { return Sys(::utimensat(AT_FDCWD, f.c_str(), user_times, 0)); }));
  EXPECT_EQ(LstatOrDie(f).st_mtim.tv_sec, 1200000000);
}

TEST_P(UtimensTest, NonOwnerWithWritePermissionMayOnlySetNow) {
  MakeFile(P("f"), 0666);
  std::string f = P("f");
  timespec old_times[2] = {{1000000000, 0}, {1000000000, 0}};
  ASSERT_SYS_OK(::utimensat(AT_FDCWD, f.c_str(), old_times, 0));
  EXPECT_RESULT_OK(
      AsUser(kUserA, [&] { return Sys(::utimensat(AT_FDCWD, f.c_str(), nullptr, 0)); }));
  EXPECT_GT(LstatOrDie(f).st_mtim.tv_sec, 1000000000);
  timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
  EXPECT_RESULT_OK(AsUser(kUserA, [&] { return Sys(::utimensat(AT_FDCWD, f.c_str(), now, 0)); }));
  timespec explicit_times[2] = {{1100000000, 0}, {1100000000, 0}};
  EXPECT_RESULT_ERRNO(
      AsUser(kUserA, [&] { return Sys(::utimensat(AT_FDCWD, f.c_str(), explicit_times, 0)); }),
      EPERM);
  EXPECT_NE(LstatOrDie(f).st_mtim.tv_sec, 1100000000);
}

TEST_P(UtimensTest, NonOwnerWithoutWritePermission) {
  MakeFile(P("f"), 0644);
  std::string f = P("f");
  EXPECT_RESULT_ERRNO(
      AsUser(kUserA, [&] { return Sys(::utimensat(AT_FDCWD, f.c_str(), nullptr, 0)); }), EACCES);
  timespec explicit_times[2] = {{1100000000, 0}, {1100000000, 0}};
  EXPECT_RESULT_ERRNO(
      AsUser(kUserA, [&] { return Sys(::utimensat(AT_FDCWD, f.c_str(), explicit_times, 0)); }),
      EPERM);
}

TEST_P(UtimensTest, WriteUpdatesMtimeAndCtime) {
  MakeFile(P("f"), 0644, "x");
  timespec old_times[2] = {{1000000000, 0}, {1000000000, 0}};
  ASSERT_SYS_OK(::utimensat(AT_FDCWD, P("f").c_str(), old_times, 0));
  UniqueFd fd(::open(P("f").c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(::write(fd.get(), "y", 1), 1);
  struct stat st {};
  ASSERT_SYS_OK(::fstat(fd.get(), &st));
  EXPECT_GT(st.st_mtim.tv_sec, 1000000000);
  fd.Reset();
  EXPECT_GT(LstatOrDie(P("f")).st_mtim.tv_sec, 1000000000);
}

TEST_P(UtimensTest, SymlinkNoFollowSetsTheLinkTimes) {
  MakeFile(P("f"));
  ASSERT_SYS_OK(::symlink("f", P("l").c_str()));
  timespec times[2] = {{1000000000, 1}, {1000000000, 2}};
  ASSERT_SYS_OK(::utimensat(AT_FDCWD, P("l").c_str(), times, AT_SYMLINK_NOFOLLOW));
  EXPECT_EQ(LstatOrDie(P("l")).st_mtim.tv_sec, 1000000000);
  EXPECT_EQ(LstatOrDie(P("l")).st_mtim.tv_nsec, 2);
  EXPECT_NE(LstatOrDie(P("f")).st_mtim.tv_sec, 1000000000);
}

// ---------------------------------------------------------------------------
// posix_fallocate / fallocate

TEST_P(FallocateTest, PosixFallocateExtendsAndAllocates) {
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(::posix_fallocate(fd.get(), 0, 1 << 20), 0);
  struct stat st {};
  ASSERT_SYS_OK(::fstat(fd.get(), &st));
  EXPECT_EQ(st.st_size, 1 << 20);
  EXPECT_GE(st.st_blocks * 512, 1 << 20);
  std::string data = Content(P("f"));
  EXPECT_EQ(data.find_first_not_of('\0'), std::string::npos);
}

TEST_P(FallocateTest, KeepSizeAllocatesWithoutGrowing) {
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  ASSERT_SYS_OK(::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 0, 1 << 20));
  struct stat st {};
  ASSERT_SYS_OK(::fstat(fd.get(), &st));
  EXPECT_EQ(st.st_size, 0);
  EXPECT_GE(st.st_blocks * 512, 1 << 20);
}

TEST_P(FallocateTest, PunchHoleFreesBlocksAndReadsZeros) {
  const std::string data = RandomBytes(3, 1 << 20);
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  ASSERT_TRUE(PwriteAll(fd.get(), data, 0).ok());
  ASSERT_SYS_OK(::fsync(fd.get()));
  struct stat before {
  }, after{};
  ASSERT_SYS_OK(::fstat(fd.get(), &before));
  ASSERT_SYS_OK(
      ::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 256 << 10, 512 << 10));
  ASSERT_SYS_OK(::fstat(fd.get(), &after));
  EXPECT_EQ(after.st_size, 1 << 20);
  EXPECT_LE(after.st_blocks, before.st_blocks - (512 << 10) / 512);
  std::string back = Content(P("f"));
  ASSERT_EQ(back.size(), data.size());
  EXPECT_EQ(back.substr(0, 256 << 10), data.substr(0, 256 << 10));
  EXPECT_EQ(back.substr(256 << 10, 512 << 10), std::string(512 << 10, '\0'));
  EXPECT_EQ(back.substr(768 << 10), data.substr(768 << 10));
  // The blocks stay freed after a remount (not just in a cache).
  fd.Reset();
  ASSERT_TRUE(fs().Remount().ok());
  EXPECT_LE(LstatOrDie(P("f")).st_blocks, before.st_blocks - (512 << 10) / 512);
}

TEST_P(FallocateTest, Errors) {
  MakeFile(P("f"), 0644, "x");
  UniqueFd ro(::open(P("f").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(ro.valid());
  EXPECT_EQ(ErrnoName(::posix_fallocate(ro.get(), 0, 4096)), ErrnoName(EBADF));
  UniqueFd rw(::open(P("f").c_str(), O_RDWR | O_CLOEXEC));
  EXPECT_SYS_ERRNO(::fallocate(rw.get(), FALLOC_FL_PUNCH_HOLE, 0, 4096), EOPNOTSUPP);
  EXPECT_SYS_ERRNO(::fallocate(rw.get(), 0, 0, 0), EINVAL);
  EXPECT_SYS_ERRNO(::fallocate(rw.get(), 0, -1, 4096), EINVAL);
}

// ---------------------------------------------------------------------------
// names

TEST_P(NameTest, LongestNameWorksOneMoreIsEnametoolong) {
  std::string n255 = P(kName255), n256 = P(kName256);
  MakeFile(P("f"));
  EXPECT_SYS_ERRNO(::open(n256.c_str(), O_CREAT | O_WRONLY, 0644), ENAMETOOLONG);
  EXPECT_SYS_ERRNO(::mkdir(n256.c_str(), 0755), ENAMETOOLONG);
  EXPECT_SYS_ERRNO(::symlink("f", n256.c_str()), ENAMETOOLONG);
  EXPECT_SYS_ERRNO(::link(P("f").c_str(), n256.c_str()), ENAMETOOLONG);
  EXPECT_SYS_ERRNO(::mknod(n256.c_str(), S_IFIFO | 0644, 0), ENAMETOOLONG);
  struct stat st;
  EXPECT_SYS_ERRNO(::lstat(n256.c_str(), &st), ENAMETOOLONG);
  EXPECT_SYS_OK(::rename(P("f").c_str(), n255.c_str()));
  EXPECT_TRUE(Exists(n255));
  EXPECT_EQ(ListDir(fs().root()).count(kName255), 1u);
  std::string deep = fs().root();
  while (deep.size() < 4200) deep += "/" + std::string(200, 'p');
  EXPECT_SYS_ERRNO(::lstat(deep.c_str(), &st), ENAMETOOLONG);
}

TEST_P(NameTest, UnusualCharacters) {
  const std::vector<std::string> names = {"with space", "new\nline", "tab\there", "-dash",
                                          "...",        "ünïcødé",   "#hash",     "a:b;c*?"};
  for (const auto& n : names) MakeFile(P(n), 0644, n);
  auto listing = ListDir(fs().root());
  for (const auto& n : names) {
    EXPECT_EQ(listing.count(n), 1u) << n;
    EXPECT_EQ(Content(P(n)), n);
  }
}

// ---------------------------------------------------------------------------
// readdir

TEST_P(ReaddirTest, ListsEveryEntryOnceWithItsType) {
  MakeDir(P("d"));
  std::map<std::string, unsigned char> want = {{".", DT_DIR}, {"..", DT_DIR}};
  for (int i = 0; i < 300; ++i) {
    std::string n = "entry" + std::to_string(i);
    switch (i % 4) {
      case 0:
        MakeFile(P("d/" + n));
        want[n] = DT_REG;
        break;
      case 1:
        MakeDir(P("d/" + n));
        want[n] = DT_DIR;
        break;
      case 2:
        ASSERT_SYS_OK(::symlink("x", P("d/" + n).c_str()));
        want[n] = DT_LNK;
        break;
      case 3:
        ASSERT_SYS_OK(::mkfifo(P("d/" + n).c_str(), 0644));
        want[n] = DT_FIFO;
        break;
    }
  }
  auto got = ListDir(P("d"));
  for (auto& [name, type] : got) {
    if (type == DT_UNKNOWN)
      type = want.count(name) ? want[name] : static_cast<unsigned char>(DT_UNKNOWN);
  }
  EXPECT_EQ(got, want);
}

TEST_P(ReaddirTest, DirentInodeNumbersMatchStat) {
  MakeDir(P("d"));
  MakeFile(P("d/f"));
  MakeDir(P("d/sub"));
  ASSERT_SYS_OK(::link(P("d/f").c_str(), P("d/hard").c_str()));
  ASSERT_SYS_OK(::symlink("f", P("d/l").c_str()));
  DIR* d = ::opendir(P("d").c_str());
  ASSERT_NE(d, nullptr);
  std::map<std::string, ino_t> seen;
  while (dirent* e = ::readdir(d)) seen[e->d_name] = e->d_ino;
  ::closedir(d);
  for (const std::string name : {"f", "sub", "hard", "l", "."}) {
    ASSERT_EQ(seen.count(name), 1u) << name;
    EXPECT_EQ(seen[name], LstatOrDie(P("d/" + name)).st_ino) << name;
  }
  EXPECT_EQ(seen["f"], seen["hard"]);
}

TEST_P(ReaddirTest, UnlinkingWhileIteratingRemovesEverything) {
  MakeDir(P("d"));
  for (int i = 0; i < 500; ++i) MakeFile(P("d/file" + std::to_string(i)));
  // rm -r style: delete each entry as it is returned.
  DIR* d = ::opendir(P("d").c_str());
  ASSERT_NE(d, nullptr);
  int removed = 0;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    EXPECT_SYS_OK(::unlink(P("d/" + n).c_str()));
    ++removed;
  }
  ::closedir(d);
  EXPECT_EQ(removed, 500);
  EXPECT_SYS_OK(::rmdir(P("d").c_str()));
}

TEST_P(ReaddirTest, SeekdirResumesWhereTelldirWas) {
  MakeDir(P("d"));
  for (int i = 0; i < 200; ++i) MakeFile(P("d/f" + std::to_string(i)));
  DIR* d = ::opendir(P("d").c_str());
  ASSERT_NE(d, nullptr);
  for (int i = 0; i < 100; ++i) ASSERT_NE(::readdir(d), nullptr);
  long pos = ::telldir(d);
  std::vector<std::string> first, second;
  while (dirent* e = ::readdir(d)) first.push_back(e->d_name);
  ::seekdir(d, pos);
  while (dirent* e = ::readdir(d)) second.push_back(e->d_name);
  ::rewinddir(d);
  int total = 0;
  while (::readdir(d) != nullptr) ++total;
  ::closedir(d);
  EXPECT_EQ(first, second);
  EXPECT_EQ(first.size(), 102u);  // 202 entries with . and ..
  EXPECT_EQ(total, 202);
}

// ---------------------------------------------------------------------------
// ownership and special mode bits

TEST_P(OwnershipTest, NewNodesBelongToTheCaller) {
  std::string f = P("f"), d = P("d"), p = P("p"), s = P("s"), l = P("l"), m = P("m");
  struct Results {
    SysResult f, d, p, s, l, m;
  };
  Results r = AsUser(kUserA, [&] {
    Results out;
    int fd = ::open(f.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    out.f = Sys(fd);
    if (fd >= 0) ::close(fd);
    out.d = Sys(::mkdir(d.c_str(), 0755));
    out.p = Sys(::mkfifo(p.c_str(), 0644));
    out.s = Sys(::mknod(s.c_str(), S_IFSOCK | 0644, 0));
    out.l = Sys(::symlink("f", l.c_str()));
    out.m = Sys(::mknod(m.c_str(), S_IFREG | 0644, 0));
    return out;
  });
  for (const auto& [path, res] : std::vector<std::pair<std::string, SysResult>>{
           {f, r.f}, {d, r.d}, {p, r.p}, {s, r.s}, {l, r.l}, {m, r.m}}) {
    EXPECT_RESULT_OK(res) << path;
    struct stat st = LstatOrDie(path);
    EXPECT_EQ(st.st_uid, 1000u) << path;
    EXPECT_EQ(st.st_gid, 1000u) << path;
  }
  // A process with a different fsgid than its primary group still gets its egid.
  Creds odd{1001, 1002, {1002, 1000}};
  std::string g = P("g");
  EXPECT_RESULT_OK(AsUser(odd, [&] { return Sys(::mkdir(g.c_str(), 0755)); }));
  EXPECT_EQ(LstatOrDie(g).st_uid, 1001u);
  EXPECT_EQ(LstatOrDie(g).st_gid, 1002u);
}

// Access granted only through a supplementary group must work for every
// operation, including those the server performs on the caller's behalf.
TEST_P(OwnershipTest, SupplementaryGroupsGrantAccess) {
  MakeDir(P("team"), 0770);
  ASSERT_SYS_OK(::chown(P("team").c_str(), 0, 1002));
  MakeFile(P("team/shared"), 0660, "team data");
  ASSERT_SYS_OK(::chown(P("team/shared").c_str(), 0, 1002));
  const Creds member{1000, 1000, {1000, 1002}};
  std::string f = P("team/new"), d = P("team/sub"), shared = P("team/shared"),
              moved = P("team/moved");
  struct Results {
    SysResult create, mkdir, write, rename, unlink, rmdir;
  };
  Results r = AsUser(member, [&] {
    Results out;
    int fd = ::open(f.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0640);
    out.create = Sys(fd);
    if (fd >= 0) ::close(fd);
    out.mkdir = Sys(::mkdir(d.c_str(), 0750));
    fd = ::open(shared.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    out.write = fd < 0 ? Sys(fd) : Sys(::write(fd, "+", 1));
    if (fd >= 0) ::close(fd);
    out.rename = Sys(::rename(f.c_str(), moved.c_str()));
    out.unlink = Sys(::unlink(moved.c_str()));
    out.rmdir = Sys(::rmdir(d.c_str()));
    return out;
  });
  EXPECT_RESULT_OK(r.create);
  EXPECT_RESULT_OK(r.mkdir);
  EXPECT_RESULT_OK(r.write);
  EXPECT_RESULT_OK(r.rename);
  EXPECT_RESULT_OK(r.unlink);
  EXPECT_RESULT_OK(r.rmdir);
  EXPECT_EQ(Content(shared), "team data+");
  // Without the group: denied.
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::open(shared.c_str(), O_RDONLY)); }),
                      EACCES);
}

TEST_P(OwnershipTest, SetgidDirectoryMemberKeepsRequestedSetgid) {
  MakeDir(P("g"), 0777);
  ASSERT_SYS_OK(::chown(P("g").c_str(), 0, 1002));
  ASSERT_SYS_OK(::chmod(P("g").c_str(), 02777));
  const Creds member{1000, 1000, {1000, 1002}};
  std::string sg = P("g/sg");
  EXPECT_RESULT_OK(AsUser(member, [&] {
    ::umask(0);
    int fd = ::open(sg.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 02755);
    if (fd >= 0) ::close(fd);
    return Sys(fd);
  }));
  EXPECT_EQ(LstatOrDie(sg).st_gid, 1002u);
  EXPECT_MODE(sg, 02755);
}

TEST_P(OwnershipTest, SetgidDirectoryPassesItsGroupDown) {
  MakeDir(P("g"), 0777);
  ASSERT_SYS_OK(::chown(P("g").c_str(), 0, 1234));
  ASSERT_SYS_OK(::chmod(P("g").c_str(), 02777));
  std::string f = P("g/f"), sub = P("g/sub"), sg = P("g/sg"), l = P("g/l");
  struct Results {
    SysResult f, sub, sg, l;
  };
  Results r = AsUser(kUserA, [&] {
    Results out;
    int fd = ::open(f.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    out.f = Sys(fd);
    if (fd >= 0) ::close(fd);
    out.sub = Sys(::mkdir(sub.c_str(), 0755));
    ::umask(0);
    fd = ::open(sg.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 02755);
    out.sg = Sys(fd);
    if (fd >= 0) ::close(fd);
    out.l = Sys(::symlink("f", l.c_str()));
    return out;
  });
  EXPECT_RESULT_OK(r.f);
  EXPECT_RESULT_OK(r.sub);
  EXPECT_RESULT_OK(r.sg);
  EXPECT_RESULT_OK(r.l);
  EXPECT_EQ(LstatOrDie(f).st_gid, 1234u);
  EXPECT_EQ(LstatOrDie(f).st_uid, 1000u);
  EXPECT_EQ(LstatOrDie(sub).st_gid, 1234u);
  EXPECT_TRUE(LstatOrDie(sub).st_mode & S_ISGID) << "subdirectories inherit setgid";
  EXPECT_EQ(LstatOrDie(l).st_gid, 1234u);
  // The creator is not in group 1234, so a requested S_ISGID is dropped.
  EXPECT_EQ(LstatOrDie(sg).st_gid, 1234u);
  EXPECT_MODE(sg, 0755);
}

TEST_P(OwnershipTest, StickyDirectoryProtectsOtherUsersFiles) {
  MakeDir(P("t"), 01777);
  std::string a = P("t/a"), b = P("t/b"), renamed = P("t/renamed"), t = P("t");
  auto create = [](const std::string& p) {
    return [p] {
      int fd = ::open(p.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
      SysResult r = Sys(fd);
      if (fd >= 0) ::close(fd);
      return r;
    };
  };
  ASSERT_TRUE(AsUser(kUserA, create(a)).ok());
  ASSERT_TRUE(AsUser(kUserB, create(b)).ok());
  ASSERT_SYS_OK(::chmod(a.c_str(), 0666));
  EXPECT_RESULT_ERRNO(AsUser(kUserB, [&] { return Sys(::unlink(a.c_str())); }), EPERM);
  EXPECT_RESULT_ERRNO(AsUser(kUserB, [&] { return Sys(::rename(a.c_str(), renamed.c_str())); }),
                      EPERM);
  EXPECT_RESULT_ERRNO(AsUser(kUserB, [&] { return Sys(::rename(b.c_str(), a.c_str())); }), EPERM);
  EXPECT_TRUE(Exists(a));
  EXPECT_TRUE(Exists(b));
  // Writing another user's world-writable file is still allowed.
  EXPECT_RESULT_OK(AsUser(kUserB, [&] { return Sys(::truncate(a.c_str(), 1)); }));
  EXPECT_RESULT_OK(AsUser(kUserA, [&] { return Sys(::rename(a.c_str(), renamed.c_str())); }));
  EXPECT_RESULT_OK(AsUser(kUserA, [&] { return Sys(::unlink(renamed.c_str())); }));
  // The directory's owner may remove anyone's files.
  ASSERT_SYS_OK(::chown(t.c_str(), 1002, 1002));
  EXPECT_RESULT_OK(AsUser(kUserC, [&] { return Sys(::unlink(b.c_str())); }));
}

// A file holding "content", owned by uid/gid 1000, mode 06777.
void MakeSetIdFile(const std::string& path) {
  MakeFile(path, 0644, "content");
  ASSERT_SYS_OK(::chown(path.c_str(), 1000, 1000));
  ASSERT_SYS_OK(::chmod(path.c_str(), 06777));
}

TEST_P(OwnershipTest, NonRootWriteClearsSuidAndSgid) {
  auto setup = [&](const std::string& name, uid_t uid, mode_t mode) {
    MakeFile(P(name), 0644, "content");
    ASSERT_SYS_OK(::chown(P(name).c_str(), uid, uid));
    ASSERT_SYS_OK(::chmod(P(name).c_str(), mode));
  };
  auto write_one = [](const std::string& p) {
    return [p] {
      int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) return Sys(fd);
      SysResult r = Sys(::write(fd, "x", 1));
      ::close(fd);
      return r;
    };
  };
  setup("other", 1000, 06777);
  EXPECT_RESULT_OK(AsUser(kUserB, write_one(P("other"))));
  EXPECT_MODE(P("other"), 0777);
  setup("owner", 1000, 06777);
  EXPECT_RESULT_OK(AsUser(kUserA, write_one(P("owner"))));
  EXPECT_MODE(P("owner"), 0777);
  setup("byroot", 1000, 06777);
  EXPECT_TRUE(write_one(P("byroot"))().ok());
  EXPECT_MODE(P("byroot"), 06777);
  // Setgid without group execute is kept for a writer in the file's group,
  // and dropped for one outside it.
  setup("nogx", 1000, 02666);
  EXPECT_RESULT_OK(AsUser(kUserA, write_one(P("nogx"))));
  EXPECT_MODE(P("nogx"), 02666);
  EXPECT_RESULT_OK(AsUser(kUserB, write_one(P("nogx"))));
  EXPECT_MODE(P("nogx"), 0666);
}

TEST_P(OwnershipTest, NonRootTruncateClearsSuid) {
  const std::string f = P("f");
  ASSERT_NO_FATAL_FAILURE(MakeSetIdFile(f));
  EXPECT_RESULT_OK(AsUser(kUserB, [&] { return Sys(::truncate(f.c_str(), 2)); }));
  EXPECT_MODE(f, 0777);
  EXPECT_EQ(Content(f), "co");
}

// truncate(2) of an empty file to size 0 changes nothing on XFS, setgid
// included, while ftruncate(2) of it drops setgid as for any truncate.
TEST_P(OwnershipTest, EmptyFileTruncatedToZeroByPathKeepsSetgid) {
  const std::string f = P("f");
  MakeFile(f, 0755);
  ASSERT_SYS_OK(::chown(f.c_str(), 1000, 1000));
  ASSERT_SYS_OK(::chmod(f.c_str(), 02755));
  EXPECT_RESULT_OK(AsUser(kUserA, [&] { return Sys(::truncate(f.c_str(), 0)); }));
  EXPECT_MODE(f, 02755);
  EXPECT_RESULT_OK(AsUser(kUserA, [&] {
    int fd = ::open(f.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return Sys(fd);
    SysResult r = Sys(::ftruncate(fd, 0));
    ::close(fd);
    return r;
  }));
  EXPECT_MODE(f, 0755);
}

TEST_P(OwnershipTest, NonRootOpenWithTruncateClearsSuid) {
  const std::string f = P("f");
  ASSERT_NO_FATAL_FAILURE(MakeSetIdFile(f));
  EXPECT_RESULT_OK(AsUser(kUserB, [&] {
    int fd = ::open(f.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd >= 0) ::close(fd);
    return Sys(fd);
  }));
  EXPECT_MODE(f, 0777);
  EXPECT_EQ(Content(f), "");
}

// exec and permission checks use the mode the kernel has cached, not a fresh
// one: after a write drops setuid, even a query for the mode alone (which a
// FUSE mount may answer from its cache) must see it gone.
TEST_P(OwnershipTest, ModeCachedByTheKernelLosesSuidWithTheWrite) {
  const std::string f = P("f");
  ASSERT_NO_FATAL_FAILURE(MakeSetIdFile(f));
  auto cached_mode = [&] {
    struct statx stx {};
    EXPECT_EQ(::statx(AT_FDCWD, f.c_str(), AT_SYMLINK_NOFOLLOW, STATX_MODE, &stx), 0);
    return static_cast<mode_t>(stx.stx_mode & 07777);
  };
  ASSERT_EQ(Octal(cached_mode()), Octal(06777));
  EXPECT_RESULT_OK(AsUser(kUserB, [&] {
    int fd = ::open(f.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return Sys(fd);
    SysResult r = Sys(::pwrite(fd, "x", 1, 0));
    ::close(fd);
    return r;
  }));
  EXPECT_EQ(Octal(cached_mode()), Octal(0777));
}

// A write drops file capabilities (security.capability) whoever writes, as
// on a kernel filesystem: the new content must not run with the old content's
// privileges.
TEST_P(OwnershipTest, WriteDropsFileCapabilities) {
  MakeFile(P("f"), 0755, "content");
  std::string f = P("f");
  // VFS_CAP_REVISION_2 granting CAP_NET_RAW (bit 13), permitted and effective.
  const uint32_t caps[5] = {0x02000001u, 1u << 13, 0, 0, 0};
  ASSERT_SYS_OK(::setxattr(f.c_str(), "security.capability", caps, sizeof caps, 0));
  ASSERT_GT(::getxattr(f.c_str(), "security.capability", nullptr, 0), 0);
  int fd = ::open(f.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "x", 1, 0), 1);
  ::close(fd);
  EXPECT_EQ(::getxattr(f.c_str(), "security.capability", nullptr, 0), -1);
  EXPECT_EQ(errno, ENODATA);
}

// ---------------------------------------------------------------------------
// POSIX ACLs

TEST_P(AclTest, NamedUserEntryGrantsWhatModeBitsDeny) {
  MakeFile(P("f"), 0600, "secret");
  std::string f = P("f");
  auto open_rw = [&] { return Sys(::open(f.c_str(), O_RDWR)); };
  EXPECT_RESULT_ERRNO(AsUser(kUserA, open_rw), EACCES);
  Acl({"setfacl", "-m", "u:1000:rw", f});
  std::string acl = Acl({"getfacl", "-c", "-n", "-E", f});
  EXPECT_TRUE(HasLine(acl, "user:1000:rw-")) << acl;
  EXPECT_TRUE(HasLine(acl, "mask::rw-")) << acl;
  EXPECT_MODE(f, 0660);  // group bits show the mask
  struct ReadResult {
    SysResult open;
    char data[8];
  };
  ReadResult r = AsUser(kUserA, [&] {
    ReadResult out{};
    int fd = ::open(f.c_str(), O_RDWR);
    out.open = Sys(fd);
    if (fd >= 0) {
      (void)!::read(fd, out.data, 6);
      ::close(fd);
    }
    return out;
  });
  EXPECT_RESULT_OK(r.open);
  EXPECT_EQ(std::string(r.data, 6), "secret");
  EXPECT_RESULT_ERRNO(AsUser(kUserB, open_rw), EACCES);
  // chmod rewrites the mask: no group-class access means no named-user access.
  ASSERT_SYS_OK(::chmod(f.c_str(), 0600));
  EXPECT_RESULT_ERRNO(AsUser(kUserA, open_rw), EACCES);
  ASSERT_SYS_OK(::chmod(f.c_str(), 0660));
  EXPECT_RESULT_OK(AsUser(kUserA, [&] {
    int fd = ::open(f.c_str(), O_RDWR);
    if (fd >= 0) ::close(fd);
    return Sys(fd);
  }));
  Acl({"setfacl", "-b", f});
  EXPECT_RESULT_ERRNO(AsUser(kUserA, open_rw), EACCES);
}

TEST_P(AclTest, NamedGroupEntry) {
  MakeDir(P("d"), 0700);
  std::string d = P("d"), inside = P("d/new");
  auto create = [&] {
    int fd = ::open(inside.c_str(), O_CREAT | O_WRONLY, 0644);
    if (fd >= 0) ::close(fd);
    return Sys(fd);
  };
  EXPECT_RESULT_ERRNO(AsUser(kUserB, create), EACCES);
  Acl({"setfacl", "-m", "g:1001:rwx", d});
  EXPECT_RESULT_OK(AsUser(kUserB, create));
  EXPECT_EQ(LstatOrDie(inside).st_uid, 1001u);
}

TEST_P(AclTest, NamedGroupEntryThroughASupplementaryGroup) {
  MakeFile(P("f"), 0600, "acl");
  std::string f = P("f");
  Acl({"setfacl", "-m", "g:1002:r", f});
  const Creds member{1000, 1000, {1000, 1002}};
  EXPECT_RESULT_OK(AsUser(member, [&] {
    int fd = ::open(f.c_str(), O_RDONLY);
    if (fd >= 0) ::close(fd);
    return Sys(fd);
  }));
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::open(f.c_str(), O_RDONLY)); }), EACCES);
  EXPECT_RESULT_ERRNO(AsUser(member, [&] { return Sys(::open(f.c_str(), O_WRONLY)); }), EACCES);
}

TEST_P(AclTest, DefaultAclIsInheritedByNewFilesAndDirectories) {
  MakeDir(P("d"), 0755);
  std::string d = P("d");
  Acl({"setfacl", "-d", "-m", "u:1001:rwx", d});
  Acl({"setfacl", "-d", "-m", "o::---", d});
  int fd = ::open(P("d/f").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
  ASSERT_GE(fd, 0);
  ::close(fd);
  ASSERT_SYS_OK(::mkdir(P("d/sub").c_str(), 0777));
  std::string facl = Acl({"getfacl", "-c", "-n", "-E", P("d/f")});
  EXPECT_TRUE(HasLine(facl, "user:1001:rwx")) << facl;
  EXPECT_TRUE(HasLine(facl, "mask::rw-")) << facl;  // masked by the create mode 0666
  EXPECT_TRUE(HasLine(facl, "other::---")) << facl;
  EXPECT_MODE(P("d/f"), 0660);  // the umask is ignored when a default ACL exists
  std::string sub_default = Acl({"getfacl", "-c", "-n", "-E", "-d", P("d/sub")});
  EXPECT_TRUE(HasLine(sub_default, "user:1001:rwx")) << sub_default;
  std::string f = P("d/f");
  EXPECT_RESULT_OK(AsUser(kUserB, [&] {
    int fd2 = ::open(f.c_str(), O_RDWR);
    if (fd2 >= 0) ::close(fd2);
    return Sys(fd2);
  }));
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::open(f.c_str(), O_RDONLY)); }), EACCES);
}

TEST_P(AclTest, AclXattrIsVisibleAndSurvivesRemount) {
  MakeFile(P("f"), 0640);
  Acl({"setfacl", "-m", "u:1002:r", P("f")});
  char buf[256];
  EXPECT_GT(::getxattr(P("f").c_str(), "system.posix_acl_access", buf, sizeof(buf)), 0);
  ASSERT_TRUE(fs().Remount().ok());
  std::string acl = Acl({"getfacl", "-c", "-n", "-E", P("f")});
  EXPECT_TRUE(HasLine(acl, "user:1002:r--")) << acl;
}

// ---------------------------------------------------------------------------
// extended attributes

TEST_P(XattrTest, SetGetListRemove) {
  MakeFile(P("f"));
  std::string f = P("f");
  ASSERT_SYS_OK(::setxattr(f.c_str(), "user.a", "1", 1, 0));
  ASSERT_SYS_OK(::setxattr(f.c_str(), "user.b", "22", 2, 0));
  ASSERT_SYS_OK(::setxattr(f.c_str(), "user.empty", "", 0, 0));
  char buf[64] = {};
  EXPECT_EQ(::getxattr(f.c_str(), "user.a", buf, sizeof(buf)), 1);
  EXPECT_EQ(std::string(buf, 1), "1");
  EXPECT_EQ(::getxattr(f.c_str(), "user.b", nullptr, 0), 2);  // size query
  EXPECT_EQ(::getxattr(f.c_str(), "user.empty", buf, sizeof(buf)), 0);
  EXPECT_SYS_ERRNO(::getxattr(f.c_str(), "user.b", buf, 1), ERANGE);
  EXPECT_EQ(UserXattrs(f), (std::set<std::string>{"user.a", "user.b", "user.empty"}));
  ssize_t list_size = ::listxattr(f.c_str(), nullptr, 0);
  EXPECT_GE(list_size, static_cast<ssize_t>(std::strlen("user.a.user.b.user.empty.")));
  EXPECT_SYS_ERRNO(::listxattr(f.c_str(), buf, 3), ERANGE);
  ASSERT_SYS_OK(::setxattr(f.c_str(), "user.a", "replaced", 8, XATTR_REPLACE));
  EXPECT_EQ(::getxattr(f.c_str(), "user.a", buf, sizeof(buf)), 8);
  EXPECT_SYS_ERRNO(::setxattr(f.c_str(), "user.a", "x", 1, XATTR_CREATE), EEXIST);
  EXPECT_SYS_ERRNO(::setxattr(f.c_str(), "user.new", "x", 1, XATTR_REPLACE), ENODATA);
  EXPECT_SYS_OK(::removexattr(f.c_str(), "user.a"));
  EXPECT_SYS_ERRNO(::getxattr(f.c_str(), "user.a", buf, sizeof(buf)), ENODATA);
  EXPECT_SYS_ERRNO(::removexattr(f.c_str(), "user.a"), ENODATA);
  EXPECT_SYS_ERRNO(::getxattr(f.c_str(), "user.never", buf, sizeof(buf)), ENODATA);
  EXPECT_EQ(UserXattrs(f), (std::set<std::string>{"user.b", "user.empty"}));
}

TEST_P(XattrTest, LargeValuesAndFileDescriptors) {
  MakeFile(P("f"));
  const std::string big = RandomBytes(11, 60000);
  UniqueFd fd(::open(P("f").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_SYS_OK(::fsetxattr(fd.get(), "user.big", big.data(), big.size(), 0));
  std::string back(65536, '\0');
  ssize_t n = ::fgetxattr(fd.get(), "user.big", back.data(), back.size());
  ASSERT_EQ(n, static_cast<ssize_t>(big.size()));
  EXPECT_EQ(back.substr(0, n), big);
  EXPECT_SYS_OK(::fremovexattr(fd.get(), "user.big"));
}

TEST_P(XattrTest, DirectoriesSymlinksAndSpecialFiles) {
  MakeDir(P("d"));
  ASSERT_SYS_OK(::setxattr(P("d").c_str(), "user.dir", "v", 1, 0));
  EXPECT_EQ(UserXattrs(P("d")), std::set<std::string>{"user.dir"});
  ASSERT_SYS_OK(::symlink("d", P("l").c_str()));
  // user.* is not allowed on symlinks or special files.
  EXPECT_SYS_ERRNO(::lsetxattr(P("l").c_str(), "user.x", "v", 1, 0), EPERM);
  ASSERT_SYS_OK(::mkfifo(P("p").c_str(), 0644));
  EXPECT_SYS_ERRNO(::setxattr(P("p").c_str(), "user.x", "v", 1, 0), EPERM);
  // Through the symlink, the target's attributes are used.
  char buf[8];
  EXPECT_EQ(::getxattr(P("l").c_str(), "user.dir", buf, sizeof(buf)), 1);
  // trusted.* works for root.
  MakeFile(P("f"));
  EXPECT_SYS_OK(::setxattr(P("f").c_str(), "trusted.t", "tv", 2, 0));
  EXPECT_EQ(::getxattr(P("f").c_str(), "trusted.t", buf, sizeof(buf)), 2);
}

TEST_P(XattrTest, TrustedXattrsOnSymlinksForRoot) {
  ASSERT_SYS_OK(::symlink("target", P("l").c_str()));
  EXPECT_SYS_OK(::lsetxattr(P("l").c_str(), "trusted.t", "v1", 2, 0));
  char buf[16] = {};
  EXPECT_EQ(::lgetxattr(P("l").c_str(), "trusted.t", buf, sizeof(buf)), 2);
  EXPECT_EQ(std::string(buf, 2), "v1");
  char names[256];
  ssize_t n = ::llistxattr(P("l").c_str(), names, sizeof(names));
  EXPECT_EQ(n, static_cast<ssize_t>(sizeof("trusted.t")));
  EXPECT_SYS_OK(::lremovexattr(P("l").c_str(), "trusted.t"));
  EXPECT_SYS_ERRNO(::lgetxattr(P("l").c_str(), "trusted.t", buf, sizeof(buf)), ENODATA);
}

TEST_P(XattrTest, TrustedXattrsOnSpecialFilesForRoot) {
  ASSERT_SYS_OK(::mkfifo(P("p").c_str(), 0644));
  ASSERT_SYS_OK(::mknod(P("c").c_str(), S_IFCHR | 0600, makedev(1, 3)));
  for (const std::string name : {"p", "c"}) {
    SCOPED_TRACE(name);
    EXPECT_SYS_OK(::lsetxattr(P(name).c_str(), "trusted.t", "v", 1, 0));
    char buf[8] = {};
    EXPECT_EQ(::lgetxattr(P(name).c_str(), "trusted.t", buf, sizeof(buf)), 1);
  }
}

TEST_P(XattrTest, PermissionsFollowTheModeBits) {
  MakeFile(P("f"), 0644);
  MakeFile(P("secret"), 0600);
  ASSERT_SYS_OK(::setxattr(P("f").c_str(), "user.k", "v", 1, 0));
  ASSERT_SYS_OK(::setxattr(P("secret").c_str(), "user.k", "v", 1, 0));
  std::string f = P("f"), secret = P("secret");
  EXPECT_RESULT_ERRNO(
      AsUser(kUserA, [&] { return Sys(::setxattr(f.c_str(), "user.x", "v", 1, 0)); }), EACCES);
  EXPECT_RESULT_ERRNO(AsUser(kUserA, [&] { return Sys(::removexattr(f.c_str(), "user.k")); }),
                      EACCES);
  EXPECT_RESULT_OK(AsUser(kUserA, [&] {
    char b[8];
    return Sys(::getxattr(f.c_str(), "user.k", b, sizeof(b)));
  }));
  EXPECT_RESULT_ERRNO(AsUser(kUserA,
                             [&] {
                               char b[8];
                               return Sys(::getxattr(secret.c_str(), "user.k", b, sizeof(b)));
                             }),
                      EACCES);
  EXPECT_RESULT_ERRNO(
      AsUser(kUserA, [&] { return Sys(::setxattr(f.c_str(), "trusted.x", "v", 1, 0)); }), EPERM);
}

TEST_P(XattrTest, SurviveRemount) {
  MakeFile(P("f"));
  ASSERT_SYS_OK(::setxattr(P("f").c_str(), "user.keep", "value", 5, 0));
  ASSERT_TRUE(fs().Remount().ok());
  char buf[16] = {};
  EXPECT_EQ(::getxattr(P("f").c_str(), "user.keep", buf, sizeof(buf)), 5);
  EXPECT_EQ(std::string(buf, 5), "value");
}

// ---------------------------------------------------------------------------
// locks

struct LockProbe {
  SysResult set;
  short type = 0;
  pid_t pid = 0;
  off_t start = 0, len = 0;
};

TEST_P(LockTest, FlockContentionBetweenProcesses) {
  MakeFile(P("f"));
  std::string f = P("f");
  UniqueFd fd(::open(f.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_SYS_OK(::flock(fd.get(), LOCK_EX));
  auto try_lock = [&](int op) {
    return [&f, op] {
      int cfd = ::open(f.c_str(), O_RDWR);
      if (cfd < 0) return Sys(cfd);
      SysResult r = Sys(::flock(cfd, op | LOCK_NB));
      ::close(cfd);
      return r;
    };
  };
  EXPECT_RESULT_ERRNO(RunInChild(try_lock(LOCK_EX)), EWOULDBLOCK);
  EXPECT_RESULT_ERRNO(RunInChild(try_lock(LOCK_SH)), EWOULDBLOCK);
  ASSERT_SYS_OK(::flock(fd.get(), LOCK_SH));  // downgrade
  EXPECT_RESULT_OK(RunInChild(try_lock(LOCK_SH)));
  EXPECT_RESULT_ERRNO(RunInChild(try_lock(LOCK_EX)), EWOULDBLOCK);
  ASSERT_SYS_OK(::flock(fd.get(), LOCK_UN));
  EXPECT_RESULT_OK(RunInChild(try_lock(LOCK_EX)));
}

TEST_P(LockTest, FcntlContentionAndGetlkReportsTheHolder) {
  MakeFile(P("f"), 0644, std::string(4096, 'x'));
  std::string f = P("f");
  UniqueFd fd(::open(f.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  struct flock lk {};
  lk.l_type = F_WRLCK;
  lk.l_whence = SEEK_SET;
  lk.l_start = 0;
  lk.l_len = 100;
  ASSERT_SYS_OK(::fcntl(fd.get(), F_SETLK, &lk));
  const pid_t me = ::getpid();
  LockProbe probe = RunInChild([&] {
    LockProbe out;
    int cfd = ::open(f.c_str(), O_RDWR);
    if (cfd < 0) {
      out.set = Sys(cfd);
      return out;
    }
    struct flock want {};
    want.l_type = F_WRLCK;
    want.l_whence = SEEK_SET;
    want.l_start = 50;
    want.l_len = 10;
    out.set = Sys(::fcntl(cfd, F_SETLK, &want));
    struct flock q = want;
    if (::fcntl(cfd, F_GETLK, &q) == 0) {
      out.type = q.l_type;
      out.pid = q.l_pid;
      out.start = q.l_start;
      out.len = q.l_len;
    }
    ::close(cfd);
    return out;
  });
  EXPECT_TRUE(probe.set.err == EAGAIN || probe.set.err == EACCES) << Describe(probe.set);
  EXPECT_EQ(probe.type, F_WRLCK);
  EXPECT_EQ(probe.pid, me);
  EXPECT_EQ(probe.start, 0);
  EXPECT_EQ(probe.len, 100);
  // A range that does not overlap is free.
  auto lock_range = [&](short type, off_t start, off_t len) {
    return [&f, type, start, len] {
      int cfd = ::open(f.c_str(), O_RDWR);
      if (cfd < 0) return Sys(cfd);
      struct flock want {};
      want.l_type = type;
      want.l_whence = SEEK_SET;
      want.l_start = start;
      want.l_len = len;
      SysResult r = Sys(::fcntl(cfd, F_SETLK, &want));
      ::close(cfd);
      return r;
    };
  };
  EXPECT_RESULT_OK(RunInChild(lock_range(F_WRLCK, 200, 100)));
  lk.l_type = F_UNLCK;
  ASSERT_SYS_OK(::fcntl(fd.get(), F_SETLK, &lk));
  EXPECT_RESULT_OK(RunInChild(lock_range(F_WRLCK, 50, 10)));
}

TEST_P(LockTest, FcntlReadLocksShareWriteLocksExclude) {
  MakeFile(P("f"), 0644, "x");
  std::string f = P("f");
  UniqueFd fd(::open(f.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  struct flock lk {};
  lk.l_type = F_RDLCK;
  lk.l_whence = SEEK_SET;
  ASSERT_SYS_OK(::fcntl(fd.get(), F_SETLK, &lk));
  auto lock_whole = [&f](short type) {
    return [&f, type] {
      int cfd = ::open(f.c_str(), O_RDWR);
      if (cfd < 0) return Sys(cfd);
      struct flock want {};
      want.l_type = type;
      want.l_whence = SEEK_SET;
      SysResult r = Sys(::fcntl(cfd, F_SETLK, &want));
      ::close(cfd);
      return r;
    };
  };
  EXPECT_RESULT_OK(RunInChild(lock_whole(F_RDLCK)));
  SysResult w = RunInChild(lock_whole(F_WRLCK));
  EXPECT_TRUE(w.err == EAGAIN || w.err == EACCES) << Describe(w);
}

TEST_P(LockTest, FcntlLocksAreReleasedWhenAnyDescriptorCloses) {
  MakeFile(P("f"), 0644, "x");
  std::string f = P("f");
  UniqueFd fd(::open(f.c_str(), O_RDWR | O_CLOEXEC));
  UniqueFd other(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid() && other.valid());
  struct flock lk {};
  lk.l_type = F_WRLCK;
  lk.l_whence = SEEK_SET;
  ASSERT_SYS_OK(::fcntl(fd.get(), F_SETLK, &lk));
  auto try_lock = [&f] {
    int cfd = ::open(f.c_str(), O_RDWR);
    if (cfd < 0) return Sys(cfd);
    struct flock want {};
    want.l_type = F_WRLCK;
    want.l_whence = SEEK_SET;
    SysResult r = Sys(::fcntl(cfd, F_SETLK, &want));
    ::close(cfd);
    return r;
  };
  SysResult held = RunInChild(try_lock);
  EXPECT_TRUE(held.err == EAGAIN || held.err == EACCES) << Describe(held);
  other.Reset();  // POSIX: closing any fd of the file drops the process's locks
  EXPECT_RESULT_OK(RunInChild(try_lock));
}

TEST_P(LockTest, BlockingLockWaitsForTheHolder) {
  MakeFile(P("f"), 0644, "x");
  std::string f = P("f");
  UniqueFd fd(::open(f.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_SYS_OK(::flock(fd.get(), LOCK_EX));
  // The child blocks in flock until we unlock from another thread.
  std::thread unlocker([&] {
    std::this_thread::sleep_for(300ms);
    ::flock(fd.get(), LOCK_UN);
  });
  struct Waited {
    SysResult r;
    long ms;
  };
  Waited w = RunInChild([&] {
    auto start = std::chrono::steady_clock::now();
    int cfd = ::open(f.c_str(), O_RDWR);
    SysResult r = cfd < 0 ? Sys(cfd) : Sys(::flock(cfd, LOCK_EX));
    long ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    return Waited{r, ms};
  });
  unlocker.join();
  EXPECT_RESULT_OK(w.r);
  EXPECT_GE(w.ms, 200);
}

// ---------------------------------------------------------------------------
// data features

TEST_P(DataTest, SeekDataAndSeekHole) {
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  const std::string chunk = RandomBytes(5, 64 << 10);
  ASSERT_TRUE(PwriteAll(fd.get(), chunk, 0).ok());
  ASSERT_TRUE(PwriteAll(fd.get(), chunk, 1 << 20).ok());
  ASSERT_SYS_OK(::ftruncate(fd.get(), 2 << 20));
  ASSERT_SYS_OK(::fsync(fd.get()));
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_DATA), 0);
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_HOLE), 64 << 10);
  EXPECT_EQ(::lseek(fd.get(), 64 << 10, SEEK_DATA), 1 << 20);
  EXPECT_EQ(::lseek(fd.get(), 1 << 20, SEEK_HOLE), (1 << 20) + (64 << 10));
  EXPECT_SYS_ERRNO(::lseek(fd.get(), (1 << 20) + (64 << 10), SEEK_DATA), ENXIO);
  EXPECT_EQ(::lseek(fd.get(), (2 << 20) - 1, SEEK_HOLE), (2 << 20) - 1);
  EXPECT_SYS_ERRNO(::lseek(fd.get(), 2 << 20, SEEK_HOLE), ENXIO);
  EXPECT_SYS_ERRNO(::lseek(fd.get(), 3 << 20, SEEK_DATA), ENXIO);
}

TEST_P(DataTest, CopyFileRange) {
  const std::string data = RandomBytes(9, (1 << 20) + 123);
  MakeFile(P("src"), 0644, data);
  MakeFile(P("dst"), 0644);
  UniqueFd in(::open(P("src").c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd out(::open(P("dst").c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(in.valid() && out.valid());
  loff_t off_in = 4096, off_out = 100;
  size_t want = 512 << 10, done = 0;
  while (done < want) {
    ssize_t n = ::copy_file_range(in.get(), &off_in, out.get(), &off_out, want - done, 0);
    ASSERT_GT(n, 0) << std::strerror(errno);
    done += n;
  }
  EXPECT_EQ(off_in, static_cast<loff_t>(4096 + want));
  std::string got = Content(P("dst"));
  ASSERT_EQ(got.size(), 100 + want);
  EXPECT_EQ(got.substr(0, 100), std::string(100, '\0'));
  EXPECT_EQ(got.substr(100), data.substr(4096, want));
  // At or past the source's end there is nothing to copy.
  loff_t eof = data.size();
  EXPECT_EQ(::copy_file_range(in.get(), &eof, out.get(), nullptr, 4096, 0), 0);
  // Using the file offsets.
  UniqueFd out2(::open(P("dst2").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(::lseek(in.get(), 0, SEEK_SET) == 0);
  size_t total = 0;
  for (;;) {
    ssize_t n = ::copy_file_range(in.get(), nullptr, out2.get(), nullptr, 1 << 30, 0);
    ASSERT_GE(n, 0) << std::strerror(errno);
    if (n == 0) break;
    total += n;
  }
  EXPECT_EQ(total, data.size());
  EXPECT_EQ(Content(P("dst2")), data);
  EXPECT_SYS_ERRNO(::copy_file_range(out.get(), nullptr, in.get(), nullptr, 10, 0), EBADF);
}

TEST_P(DataTest, SharedWritableMmap) {
  const size_t size = 1 << 20;
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  ASSERT_SYS_OK(::ftruncate(fd.get(), size));
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  ASSERT_NE(map, MAP_FAILED) << std::strerror(errno);
  const std::string pattern = RandomBytes(21, size);
  std::memcpy(map, pattern.data(), size);
  ASSERT_SYS_OK(::msync(map, size, MS_SYNC));
  std::string back(size, '\0');
  ASSERT_EQ(::pread(fd.get(), back.data(), size, 0), static_cast<ssize_t>(size));
  EXPECT_TRUE(back == pattern) << "read(2) does not see the mmap writes";
  // write(2) is visible through the mapping.
  ASSERT_EQ(::pwrite(fd.get(), "WRITTEN", 7, 4096), 7);
  EXPECT_EQ(std::string(static_cast<char*>(map) + 4096, 7), "WRITTEN");
  std::string expect = pattern;
  expect.replace(4096, 7, "WRITTEN");
  ASSERT_SYS_OK(::munmap(map, size));
  fd.Reset();
  ASSERT_TRUE(fs().Remount().ok());
  EXPECT_TRUE(Content(P("f")) == expect) << "mmap writes lost across a remount";
}

TEST_P(DataTest, MmapWritesReachTheFileWithoutMsync) {
  const size_t size = 64 << 10;
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  ASSERT_SYS_OK(::ftruncate(fd.get(), size));
  char* map =
      static_cast<char*>(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0));
  ASSERT_NE(map, MAP_FAILED) << std::strerror(errno);
  std::memset(map, 'm', size);
  ASSERT_SYS_OK(::munmap(map, size));
  fd.Reset();  // close without msync: the kernel writes back on its own
  ASSERT_TRUE(fs().Remount().ok());
  EXPECT_EQ(Content(P("f")), std::string(size, 'm'));
}

TEST_P(DataTest, DirectIoReadWrite) {
  constexpr size_t kLen = 64 << 10;
  int fd = ::open(P("f").c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << "open O_DIRECT: " << std::strerror(errno);
  UniqueFd owner(fd);
  void* raw = nullptr;
  ASSERT_EQ(::posix_memalign(&raw, 4096, kLen), 0);
  std::unique_ptr<void, decltype(&std::free)> buf(raw, &std::free);
  const std::string data = RandomBytes(17, kLen);
  std::memcpy(raw, data.data(), kLen);
  ASSERT_EQ(::pwrite(fd, raw, kLen, 0), static_cast<ssize_t>(kLen)) << std::strerror(errno);
  ASSERT_EQ(::pwrite(fd, raw, kLen, 1 << 20), static_cast<ssize_t>(kLen)) << std::strerror(errno);
  std::memset(raw, 0, kLen);
  ASSERT_EQ(::pread(fd, raw, kLen, 1 << 20), static_cast<ssize_t>(kLen)) << std::strerror(errno);
  EXPECT_EQ(std::memcmp(raw, data.data(), kLen), 0);
  ASSERT_SYS_OK(::fsync(fd));
  std::string buffered = Content(P("f"));
  ASSERT_EQ(buffered.size(), (1u << 20) + kLen);
  EXPECT_EQ(buffered.substr(0, kLen), data);
  EXPECT_EQ(buffered.substr(kLen, (1 << 20) - kLen), std::string((1 << 20) - kLen, '\0'));
  EXPECT_EQ(buffered.substr(1 << 20), data);
  // Buffered writes are visible to a later direct read.
  ASSERT_TRUE(WriteFile(P("f"), std::string(kLen, 'b')).ok());
  ASSERT_EQ(::pread(fd, raw, kLen, 0), static_cast<ssize_t>(kLen));
  EXPECT_EQ(std::string(static_cast<char*>(raw), kLen), std::string(kLen, 'b'));
}

TEST_P(DataTest, RandomOverwritesMatchAModel) {
  const uint64_t seed = SeedFromEnvOr(1234);
  SCOPED_TRACE("seed " + std::to_string(seed) + " (set LOCALVOL_TEST_SEED to replay)");
  std::mt19937_64 rng(seed);
  std::string model = RandomBytes(seed, 4 << 20);
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  ASSERT_TRUE(PwriteAll(fd.get(), model, 0).ok());
  for (int i = 0; i < 300; ++i) {
    size_t off = rng() % (6 << 20);
    size_t len = 1 + rng() % (200 << 10);
    std::string chunk = RandomBytes(rng(), len);
    ASSERT_TRUE(PwriteAll(fd.get(), chunk, off).ok());
    if (model.size() < off + len) model.resize(off + len, '\0');
    model.replace(off, len, chunk);
    if (i % 50 == 49) {
      size_t t = rng() % model.size();
      ASSERT_SYS_OK(::ftruncate(fd.get(), t));
      model.resize(t);
    }
  }
  EXPECT_TRUE(Content(P("f")) == model);
  fd.Reset();
  ASSERT_TRUE(fs().Remount().ok());
  EXPECT_TRUE(Content(P("f")) == model) << "differs after remount";
}

TEST_P(DataTest, FsyncFilesAndDirectories) {
  MakeFile(P("f"), 0644, "sync me");
  MakeDir(P("d"));
  UniqueFd f(::open(P("f").c_str(), O_RDWR | O_CLOEXEC));
  UniqueFd d(::open(P("d").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(f.valid() && d.valid());
  EXPECT_SYS_OK(::fsync(f.get()));
  EXPECT_SYS_OK(::fdatasync(f.get()));
  EXPECT_SYS_OK(::fsync(d.get()));
  EXPECT_SYS_OK(::syncfs(f.get()));
  EXPECT_SYS_OK(::sync_file_range(f.get(), 0, 0, SYNC_FILE_RANGE_WRITE));
}

TEST_P(DataTest, ProgramsCanBeExecutedFromTheVolume) {
  auto binary = ReadFile("/bin/true");
  ASSERT_TRUE(binary.ok());
  MakeFile(P("true"), 0755, *binary);
  CommandResult r = RunCommand({P("true")}, 30s);
  EXPECT_TRUE(r.ok()) << r.Summary();
  ASSERT_TRUE(WriteFile(P("script.sh"), "#!/bin/sh\necho from-volume\n").ok());
  ASSERT_SYS_OK(::chmod(P("script.sh").c_str(), 0755));
  CommandResult s = RunCommand({P("script.sh")}, 30s);
  EXPECT_EQ(s.out, "from-volume\n") << s.Summary();
}

TEST_P(DataTest, LargeSingleReadAndWriteCalls) {
  const std::string data = RandomBytes(31, 8 * 1024 * 1024 + 4095);
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(::write(fd.get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
  std::string back(data.size() + 100, '\0');
  ASSERT_EQ(::pread(fd.get(), back.data(), back.size(), 0), static_cast<ssize_t>(data.size()));
  back.resize(data.size());
  EXPECT_TRUE(back == data);
  struct iovec iov[3];
  std::string a(1000, '\0'), b(70000, '\0'), c(3 * 1024 * 1024, '\0');
  iov[0] = {a.data(), a.size()};
  iov[1] = {b.data(), b.size()};
  iov[2] = {c.data(), c.size()};
  ASSERT_EQ(::preadv(fd.get(), iov, 3, 12345),
            static_cast<ssize_t>(a.size() + b.size() + c.size()));
  EXPECT_TRUE(a + b + c == data.substr(12345, a.size() + b.size() + c.size()));
  ASSERT_EQ(::pwritev(fd.get(), iov, 3, 1), static_cast<ssize_t>(a.size() + b.size() + c.size()));
  std::string expect = data;
  expect.replace(1, a.size() + b.size() + c.size(), a + b + c);
  EXPECT_TRUE(Content(P("f")) == expect);
}

TEST_P(DataTest, HugeOffsets) {
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  const off_t far = off_t{1} << 50;
  EXPECT_EQ(::pwrite(fd.get(), "far", 3, far), 3) << std::strerror(errno);
  struct stat st {};
  ASSERT_SYS_OK(::fstat(fd.get(), &st));
  EXPECT_EQ(st.st_size, far + 3);
  EXPECT_LT(st.st_blocks, 1024);
  char buf[8] = {};
  EXPECT_EQ(::pread(fd.get(), buf, 8, far), 3);
  EXPECT_EQ(::pread(fd.get(), buf, 8, far + 100), 0);
  EXPECT_EQ(::pread(fd.get(), buf, 8, far - 8), 8);
  EXPECT_EQ(std::string(buf, 8), std::string(8, '\0'));
  const off_t max = std::numeric_limits<off_t>::max();
  // A write whose end would pass the largest loff_t is invalid.
  EXPECT_SYS_ERRNO(::pwrite(fd.get(), "xx", 2, max - 1), EINVAL);
  EXPECT_SYS_ERRNO(::pwrite(fd.get(), "x", 1, max), EINVAL);
  EXPECT_SYS_OK(::ftruncate(fd.get(), max));
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_END), max);
  EXPECT_SYS_OK(::ftruncate(fd.get(), far + 3));
}

TEST_P(DataTest, ParallelWritersToDistinctRegions) {
  constexpr int kThreads = 4;
  constexpr size_t kRegion = 4 << 20;
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid());
  std::string model(kThreads * kRegion, '\0');
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      for (int i = 0; i < 150; ++i) {
        size_t len = 1 + rng() % (256 << 10);
        size_t off = t * kRegion + rng() % (kRegion - len);
        std::string chunk = RandomBytes(rng(), len);
        if (!PwriteAll(fd.get(), chunk, off).ok()) ++errors;
        model.replace(off, len, chunk);  // regions are disjoint: no race on the model
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  std::string back = Content(P("f"));
  back.resize(model.size(), '\0');
  EXPECT_TRUE(back == model);
  fd.Reset();
  ASSERT_TRUE(fs().Remount().ok());
  back = Content(P("f"));
  back.resize(model.size(), '\0');
  EXPECT_TRUE(back == model) << "differs after remount";
}

TEST_P(DataTest, SynchronousWriteFlags) {
  for (int flag : {O_SYNC, O_DSYNC}) {
    std::string p = P("f" + std::to_string(flag));
    UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CREAT | flag | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd.valid());
    EXPECT_EQ(::write(fd.get(), "durable", 7), 7);
    EXPECT_EQ(Content(p), "durable");
  }
}

TEST_P(DataTest, PrivateMappingWritesStayPrivate) {
  MakeFile(P("f"), 0644, std::string(8192, 'o'));
  UniqueFd fd(::open(P("f").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  char* map =
      static_cast<char*>(::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.get(), 0));
  ASSERT_NE(map, MAP_FAILED) << std::strerror(errno);
  std::memset(map, 'p', 8192);
  EXPECT_EQ(map[100], 'p');
  ::munmap(map, 8192);
  EXPECT_EQ(Content(P("f")), std::string(8192, 'o'));
}

TEST_P(DataTest, ZeroRange) {
  const std::string data = RandomBytes(41, 1 << 20);
  MakeFile(P("f"), 0644, data);
  UniqueFd fd(::open(P("f").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_SYS_OK(::fallocate(fd.get(), FALLOC_FL_ZERO_RANGE, 1000, 300000));
  std::string expect = data;
  expect.replace(1000, 300000, std::string(300000, '\0'));
  EXPECT_TRUE(Content(P("f")) == expect);
  ASSERT_SYS_OK(::fallocate(fd.get(), FALLOC_FL_ZERO_RANGE, (1 << 20) - 10, 100));
  expect.replace((1 << 20) - 10, 10, std::string(10, '\0'));
  expect.resize((1 << 20) + 90, '\0');
  EXPECT_TRUE(Content(P("f")) == expect);
}

TEST_P(DataTest, StatReportsSizeBlocksAndLinks) {
  MakeFile(P("f"), 0644, std::string(10000, 'z'));
  ::sync();
  struct stat st = LstatOrDie(P("f"));
  EXPECT_EQ(st.st_size, 10000);
  EXPECT_GE(st.st_blocks * 512, 10000);
  EXPECT_GT(st.st_blksize, 0);
  EXPECT_EQ(st.st_nlink, 1u);
  MakeFile(P("g"));
  EXPECT_NE(LstatOrDie(P("g")).st_ino, st.st_ino);
}

}  // namespace
}  // namespace localvol::testing
