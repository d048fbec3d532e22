/* privs.h — the agent's own safety: refusing unsafe state/config files, dropping capabilities once attached. */
#ifndef PHIWATCH_PRIVS_H
#define PHIWATCH_PRIVS_H

#include <stdbool.h>
#include <stddef.h>

/* A path phiwatch trusts must be owned by root and not writable by group or
 * others (nor may any parent directory be, up to /): someone who can write
 * it can change what phiwatch does as root. Returns 0 or -EPERM with err
 * naming the path and the problem. A missing path is fine when !must_exist. */
int privs_check_path(const char *path, bool must_exist, char *err, size_t errlen);

/* Capabilities kept after attach: CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN
 * (hook programs that start later), CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH
 * (read other processes' /proc maps and open their libraries through
 * /proc/PID/root).
 * Everything else is dropped from the effective, permitted, inheritable and
 * bounding sets, and no_new_privs is set. Returns 0 or -errno. */
int privs_drop(void);

#endif
