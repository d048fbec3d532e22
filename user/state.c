/* state.c — state directory and host secret (see state.h). */
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int state_dir_ensure(const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct stat st;

	if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path)) {
		snprintf(err, errlen, "%s: path too long", dir);
		return -ENAMETOOLONG;
	}
	for (char *p = path + 1;; p++) {
		bool end = *p == '\0';
		if (*p == '/' || end) {
			*p = '\0';
			if (mkdir(path, 0700) != 0 && errno != EEXIST) {
				int e = errno;
				snprintf(err, errlen, "%s: %s", path, strerror(e));
				return -e;
			}
			if (!end)
				*p = '/';
		}
		if (end)
			break;
	}
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: not a directory", dir);
		return -ENOTDIR;
	}
	return 0;
}

int state_secret_load(const char *dir, unsigned char out[32], bool create, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, STATE_SECRET_FILE);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) {
		ssize_t n = read(fd, out, 32);
		close(fd);
		if (n != 32) {
			snprintf(err, errlen, "%s: expected 32 bytes", path);
			return -EINVAL;
		}
		return 0;
	}
	if (errno != ENOENT || !create) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	if (RAND_bytes(out, 32) != 1) {
		snprintf(err, errlen, "no randomness for %s", path);
		return -EIO;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || write(fd, out, 32) != 32 || fsync(fd) != 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		unlink(path);
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	close(fd);
	return 0;
}
