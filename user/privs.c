/* privs.c — path trust checks and capability dropping with libcap (see privs.h). */
#include "privs.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/stat.h>

int privs_check_path(const char *path, bool must_exist, char *err, size_t errlen)
{
	char cur[PATH_MAX];
	struct stat st;

	if (snprintf(cur, sizeof(cur), "%s", path) >= (int)sizeof(cur)) {
		snprintf(err, errlen, "%s: path too long", path);
		return -ENAMETOOLONG;
	}
	if (stat(cur, &st) != 0) {
		if (errno == ENOENT && !must_exist)
			return 0;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	for (;;) {
		if (stat(cur, &st) != 0) {
			snprintf(err, errlen, "%s: %s", cur, strerror(errno));
			return -errno;
		}
		/* sticky world-writable dirs (/tmp) only let owners replace entries */
		bool sticky_dir = S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX) && strcmp(cur, path) != 0;
		if (st.st_uid != 0) {
			snprintf(err, errlen, "%s is owned by uid %u, not root: refusing to trust %s", cur,
				 (unsigned)st.st_uid, path);
			return -EPERM;
		}
		if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !sticky_dir) {
			snprintf(err, errlen, "%s is writable by %s (mode %04o): refusing to trust %s", cur,
				 (st.st_mode & S_IWOTH) ? "others" : "its group", (unsigned)(st.st_mode & 07777), path);
			return -EPERM;
		}
		if (strcmp(cur, "/") == 0 || strcmp(cur, ".") == 0)
			return 0;
		char tmp[PATH_MAX];
		snprintf(tmp, sizeof(tmp), "%s", cur);
		snprintf(cur, sizeof(cur), "%s", dirname(tmp));
	}
}

int privs_drop(void)
{
	/* CAP_SYS_ADMIN stays: on the kernels tested (6.18), creating a second
	 * uprobe perf event in an already-hooked executable after the drop fails
	 * with EACCES when only CAP_PERFMON + CAP_BPF are held. */
	static const cap_value_t keep[] = { CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH, CAP_SYS_ADMIN };
	const int nkeep = (int)(sizeof(keep) / sizeof(keep[0]));
	cap_t caps = cap_init();
	int err = 0;

	if (!caps)
		return -errno;
	if (cap_set_flag(caps, CAP_EFFECTIVE, nkeep, keep, CAP_SET) ||
	    cap_set_flag(caps, CAP_PERMITTED, nkeep, keep, CAP_SET)) {
		err = -errno;
		goto out;
	}
	/* The bounding set first (needs CAP_SETPCAP, still held). */
	for (cap_value_t c = 0; c <= CAP_LAST_CAP; c++) {
		bool kept = false;
		for (int i = 0; i < nkeep; i++)
			kept |= keep[i] == c;
		if (!kept && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) && errno != EINVAL) {
			err = -errno;
			goto out;
		}
	}
	if (cap_set_proc(caps) || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		err = -errno;
out:
	cap_free(caps);
	return err;
}
