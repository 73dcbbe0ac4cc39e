// What stat(2) says of a file, to notice that a certificate, key or CA file was replaced
// without reading it: compared from one look to the next.
#pragma once

#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

namespace nodeward {

// A file that cannot be stat'ed has `error` set. Inode and ctime count as well as mtime and
// size: a rotation by rename, or a rewrite within the mtime granularity, still shows.
struct FileStamp {
  int error = 0;
  dev_t device = 0;
  ino_t inode = 0;
  off_t size = 0;
  std::int64_t modified_ns = 0;
  std::int64_t changed_ns = 0;
  friend bool operator==(const FileStamp&, const FileStamp&) = default;
};

inline std::vector<FileStamp> StampFiles(const std::vector<std::string>& paths) {
  std::vector<FileStamp> stamps(paths.size());
  for (std::size_t i = 0; i < paths.size(); ++i) {
    struct stat st;
    if (::stat(paths[i].c_str(), &st) != 0) {
      stamps[i].error = errno;
      continue;
    }
    stamps[i].device = st.st_dev;
    stamps[i].inode = st.st_ino;
    stamps[i].size = st.st_size;
    stamps[i].modified_ns = st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec;
    stamps[i].changed_ns = st.st_ctim.tv_sec * 1'000'000'000LL + st.st_ctim.tv_nsec;
  }
  return stamps;
}

}  // namespace nodeward
