/* state.h — the agent's state directory (/var/lib/phiwatch): created 0700, and the host secret kept in it. */
#ifndef PHIWATCH_STATE_H
#define PHIWATCH_STATE_H

#include <stdbool.h>
#include <stddef.h>

#define STATE_SECRET_FILE "host.secret"

/* mkdir -p with mode 0700 for the directories it creates; an existing
 * directory must already be a directory. Returns 0 or -errno (err set). */
int state_dir_ensure(const char *dir, char *err, size_t errlen);

/* Reads dir/host.secret (32 bytes), creating it (0600, random) when create
 * and it is missing. Used for the API-key HMAC, so the same key maps to the
 * same principal across restarts and in replays. Returns 0 or -errno. */
int state_secret_load(const char *dir, unsigned char out[32], bool create, char *err, size_t errlen);

#endif
