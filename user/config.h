/* config.h — /etc/phiwatch/phiwatch.json: every key optional, unknown keys and bad values rejected.
 * Errors name the file, the dotted key and the reason:
 *   phiwatch: /etc/phiwatch/phiwatch.json: key "detect.rate.limit": must be an integer in [1, 1000000]
 * Loading is pure (a file in, a struct out); nothing is attached before it succeeds.
 */
#ifndef PHIWATCH_CONFIG_H
#define PHIWATCH_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "conn.h"
#include "detect.h"
#include "identity.h"
#include "resource.h"

#define PHIWATCH_DEFAULT_CONFIG "/etc/phiwatch/phiwatch.json"
#define PHIWATCH_DEFAULT_STATE "/var/lib/phiwatch"
#define CONFIG_MAX_PORTS 64
#define CONFIG_MAX_COMMS 32
#define CONFIG_STR 256

struct config_capture {
	uint16_t ports[CONFIG_MAX_PORTS];      /* empty: every port */
	size_t nports;
	char exclude_comms[CONFIG_MAX_COMMS][16];  /* processes never traced (kernel comm) */
	size_t ncomms;
	uint32_t ringbuf_mb;
	uint32_t poll_ms;
};

struct config_strings {                  /* storage behind the option structs' pointers */
	char claims[IDENTITY_MAX_CLAIMS][64];
	char apikey_headers[IDENTITY_MAX_APIKEY_HEADERS][64];
	char templates[RESOURCE_MAX_TEMPLATES][RESOURCE_TEMPLATE_MAX];
};

struct config {
	char path[PATH_MAX];                   /* "" when defaults only */
	char state_dir[CONFIG_STR];
	bool drop_capabilities;                /* keep only what later attaches need */
	struct config_capture capture;
	struct conn_limits limits;
	struct identity_opts identity;         /* secret filled from state_dir/host.secret by `run` */
	struct resource_opts resource;
	struct detect_opts detect;
	struct {
		char file[CONFIG_STR];         /* alerts JSONL ("" none; `run --alerts` overrides) */
		bool syslog;                   /* send alerts to syslog */
		char syslog_socket[CONFIG_STR];
		char facility[32];             /* syslog facility name */
		int facility_value;
	} alerts;
	struct {
		bool enabled;
		char dir[CONFIG_STR];              /* "" = state_dir/audit */
		char initial_key_path[CONFIG_STR]; /* "" = state_dir/audit-initial.key */
		char enc_key_path[CONFIG_STR];     /* "" = no encryption */
		char on_full[16];                  /* "continue" | "stop" */
		struct audit_opts o;               /* paths pointed at the strings above by config_finish */
	} audit;
	struct {
		bool enabled;                      /* keep a recent history and dump it on alerts/requests */
		uint32_t memory_mb;                /* history budget */
		uint32_t max_total_mb;             /* all dumps together */
		uint32_t per_key_interval_s;       /* one alert dump per (rule, principal) per interval */
		uint32_t min_severity;             /* alerts at or above this dump */
		char dir[CONFIG_STR];              /* "" = state_dir/forensics */
	} forensics;
	char control_socket[CONFIG_STR];
	struct {
		bool enabled;                  /* Prometheus endpoint (off by default) */
		char listen[CONFIG_STR];       /* "127.0.0.1:9464" */
	} metrics;
	struct config_strings str;
};

/* Defaults only; never fails short of memory (returns -ENOMEM). */
int config_init(struct config *c);
/* Loads path over the defaults. A missing file is an error only when
 * must_exist. Returns 0, or -EINVAL/-errno with err filled. */
int config_load(struct config *c, const char *path, bool must_exist, char *err, size_t errlen);
/* Parses JSON text (for tests and fuzzing); name is used in messages. */
int config_parse(struct config *c, const char *name, const char *text, size_t len, char *err, size_t errlen);
void config_free(struct config *c);
/* Resolves defaults that depend on other keys (audit paths under state_dir). */
void config_finish(struct config *c);

#endif
