/* config.c — the JSON configuration (see config.h). cJSON parses; a key table validates. */
#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline.h"
#include "control.h"
#include "metrics.h"
#include "sink_syslog.h"

enum ktype {
	K_U32,       /* uint32_t, range-checked */
	K_U64,
	K_SECONDS_NS,/* seconds in the file, uint64_t ns in memory */
	K_BOOL,
	K_STR,       /* char[CONFIG_STR] */
	K_PORTS,     /* array of 1..65535 into capture.ports */
	K_COMMS,     /* array of strings <= 15 bytes into capture.exclude_comms */
	K_SIZE,      /* size_t, range-checked */
	K_STRLIST,   /* array of strings: storage at off, pointers at off2, count at off3 */
	K_DOUBLE,    /* double in [min, max] */
	K_FACILITY,  /* syslog facility name into char[32] */
	K_ONFULL,    /* "continue" | "stop" into char[16] */
};

struct key {
	const char *path;
	enum ktype type;
	size_t off;
	uint64_t min, max;       /* K_STRLIST: most entries, longest entry (bytes incl. NUL) */
	const char *help;
	size_t off2, off3;
	bool (*check)(const char *s);  /* K_STRLIST: extra validation, NULL for none */
};

static bool header_token(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || strchr("!#$%&'*+-.^_`|~", *s)))
			return false;
	return true;
}

#define OFF(f) offsetof(struct config, f)

static const struct key keys[] = {
	{ "state_dir", K_STR, OFF(state_dir), 0, 0, "state directory (audit, forensics)" },
	{ "drop_capabilities", K_BOOL, OFF(drop_capabilities), 0, 0, "drop capabilities once attached" },
	{ "capture.ports", K_PORTS, 0, 0, 0, "only these local (server) or remote (client) ports" },
	{ "capture.exclude_comms", K_COMMS, 0, 0, 0, "process names never traced" },
	{ "capture.ringbuf_mb", K_U32, OFF(capture.ringbuf_mb), 1, 1024, "ring buffer size (rounded up to a power of two)" },
	{ "capture.poll_ms", K_U32, OFF(capture.poll_ms), 1, 1000, "longest delay before events are read" },
	{ "connections.max", K_SIZE, OFF(limits.max_conns), 16, 10000000, "connections followed at once (LRU)" },
	{ "connections.idle_timeout_s", K_SECONDS_NS, OFF(limits.idle_timeout_ns), 1, 86400 * 7, "idle connection timeout" },
	{ "connections.head_cap", K_SIZE, OFF(limits.head_cap), 1024, 1 << 24, "largest HTTP head buffered" },
	{ "connections.pipeline_max", K_U32, OFF(limits.pipeline_max), 1, 4096, "requests awaiting responses per connection" },
	{ "identity.claims", K_STRLIST, OFF(str.claims), IDENTITY_MAX_CLAIMS, 64, "JWT claims naming the principal, first present wins",
	  OFF(identity.claims), OFF(identity.nclaims), NULL },
	{ "identity.apikey_headers", K_STRLIST, OFF(str.apikey_headers), IDENTITY_MAX_APIKEY_HEADERS, 64, "headers carrying API keys",
	  OFF(identity.apikey_headers), OFF(identity.napikey), header_token },
	{ "identity.cache_entries", K_SIZE, OFF(identity.cache_entries), 0, IDENTITY_CACHE_MAX, "decoded-token cache size" },
	{ "resource.fhir", K_BOOL, OFF(resource.fhir), 0, 0, "recognise FHIR REST paths and search parameters" },
	{ "detect.max_principals", K_U32, OFF(detect.max_principals), 1, 10000000, "principals tracked (LRU)" },
	{ "detect.principal_idle_s", K_U32, OFF(detect.principal_idle_s), 1, 604800, "forget idle principals after" },
	{ "detect.suppress_s", K_U32, OFF(detect.suppress_s), 0, 86400, "alert de-duplication window per (rule, principal)" },
	{ "detect.max_suppress", K_U32, OFF(detect.max_suppress), 16, 10000000, "open suppression windows" },
	{ "detect.rate.enabled", K_BOOL, OFF(detect.rate.enabled) },
	{ "detect.rate.limit", K_U32, OFF(detect.rate.limit), 1, 65534, "requests allowed per window" },
	{ "detect.rate.window_s", K_U32, OFF(detect.rate.window_s), 1, 604800 },
	{ "detect.rate.not_enforced.enabled", K_BOOL, OFF(detect.rate.not_enforced) },
	{ "detect.rate.not_enforced.min", K_U32, OFF(detect.rate.not_enforced_min), 1, 65534 },
	{ "detect.enumeration.enabled", K_BOOL, OFF(detect.enumeration.enabled) },
	{ "detect.enumeration.max_patients", K_U32, OFF(detect.enumeration.max_patients), 1, 32766 },
	{ "detect.enumeration.window_s", K_U32, OFF(detect.enumeration.window_s), 1, 604800 },
	{ "detect.export.enabled", K_BOOL, OFF(detect.bulk_export.enabled) },
	{ "detect.export.count", K_U32, OFF(detect.bulk_export.count), 1, 65534 },
	{ "detect.export.window_s", K_U32, OFF(detect.bulk_export.window_s), 1, 604800 },
	{ "detect.export.page_size", K_U32, OFF(detect.bulk_export.page_size), 1, 100000000 },
	{ "detect.export.large_response_bytes", K_U64, OFF(detect.bulk_export.large_response_bytes), 1, UINT64_MAX / 2 },
	{ "detect.auth_failures.enabled", K_BOOL, OFF(detect.auth_failures.enabled) },
	{ "detect.auth_failures.count", K_U32, OFF(detect.auth_failures.count), 1, 65534 },
	{ "detect.auth_failures.window_s", K_U32, OFF(detect.auth_failures.window_s), 1, 604800 },
	{ "detect.anomaly.enabled", K_BOOL, OFF(detect.anomaly.enabled) },
	{ "detect.anomaly.factor", K_DOUBLE, OFF(detect.anomaly.factor), 1, 1000 },
	{ "detect.anomaly.floor_per_min", K_U32, OFF(detect.anomaly.floor_per_min), 1, 1000000 },
	{ "detect.anomaly.learn_minutes", K_U32, OFF(detect.anomaly.learn_minutes), 1, 100000 },
	{ "detect.anomaly.alpha", K_DOUBLE, OFF(detect.anomaly.alpha), 0, 1 },
	{ "detect.basic_auth.enabled", K_BOOL, OFF(detect.hipaa.basic_auth) },
	{ "detect.plaintext_phi.enabled", K_BOOL, OFF(detect.hipaa.plaintext_phi) },
	{ "detect.sensitive_data.enabled", K_BOOL, OFF(detect.hipaa.sensitive_data) },
	{ "detect.token.enabled", K_BOOL, OFF(detect.hipaa.long_lived_token) },
	{ "detect.token.max_lifetime_s", K_U32, OFF(detect.hipaa.token_max_lifetime_s), 1, 315360000 },
	{ "detect.token.no_exp", K_BOOL, OFF(detect.hipaa.token_no_exp) },
	{ "detect.capture_loss.enabled", K_BOOL, OFF(detect.capture_loss.enabled) },
	{ "alerts.file", K_STR, OFF(alerts.file), 0, 0, "alerts as JSON lines" },
	{ "alerts.syslog", K_BOOL, OFF(alerts.syslog), 0, 0, "alerts to the local syslog daemon" },
	{ "alerts.syslog_socket", K_STR, OFF(alerts.syslog_socket), 0, 0, "the syslog daemon's unix socket" },
	{ "alerts.facility", K_FACILITY, OFF(alerts.facility), 0, 0, "syslog facility (authpriv, auth, daemon, local0..7, ...)" },
	{ "audit.enabled", K_BOOL, OFF(audit.enabled), 0, 0, "keep the hash-chained audit trail" },
	{ "audit.dir", K_STR, OFF(audit.dir), 0, 0, "audit segments (default state_dir/audit)" },
	{ "audit.initial_key_path", K_STR, OFF(audit.initial_key_path), 0, 0, "where the first seal key is written once" },
	{ "audit.encryption_key_path", K_STR, OFF(audit.enc_key_path), 0, 0, "AES-256-GCM key file for closed segments" },
	{ "audit.segment_max_mb", K_U64, OFF(audit.o.segment_max_bytes), 1, 1024, "rotate segments at this size (MiB)" },
	{ "audit.segment_max_age_s", K_U64, OFF(audit.o.segment_max_age_s), 60, 86400 * 31, "rotate segments at this age" },
	{ "audit.fsync_interval_ms", K_U32, OFF(audit.o.fsync_interval_ms), 0, 60000, "group commit interval (0: every record)" },
	{ "audit.retention_days", K_U32, OFF(audit.o.retention_days), 0, 36500, "delete segments older than this (0: never)" },
	{ "audit.compress_level", K_U32, OFF(audit.o.compress_level), 1, 9, "DEFLATE level for closed segments (1 fastest; gzip files)" },
	{ "audit.on_disk_full", K_ONFULL, OFF(audit.on_full), 0, 0, "\"continue\" (count losses, retry) or \"stop\"" },
	{ "forensics.enabled", K_BOOL, OFF(forensics.enabled), 0, 0, "history in memory, dumps on alerts and requests" },
	{ "forensics.memory_mb", K_U32, OFF(forensics.memory_mb), 1, 65536, "history memory budget" },
	{ "forensics.max_total_mb", K_U32, OFF(forensics.max_total_mb), 1, 1048576, "all dumps together" },
	{ "forensics.per_key_interval_s", K_U32, OFF(forensics.per_key_interval_s), 0, 86400, "one alert dump per (rule, principal) per interval" },
	{ "forensics.min_severity", K_U32, OFF(forensics.min_severity), 1, 4, "alerts at or above this severity dump (3 high)" },
	{ "forensics.dir", K_STR, OFF(forensics.dir), 0, 0, "dumps (default state_dir/forensics)" },
	{ "metrics.enabled", K_BOOL, OFF(metrics.enabled), 0, 0, "Prometheus endpoint GET /metrics" },
	{ "metrics.listen", K_STR, OFF(metrics.listen), 0, 0, "IPv4:port, [IPv6]:port or localhost:port" },
	{ "control.socket", K_STR, OFF(control_socket), 0, 0, "the root-only control socket (dump, status)" },
	{ "resource.templates", K_STRLIST, OFF(str.templates), RESOURCE_MAX_TEMPLATES, RESOURCE_TEMPLATE_MAX,
	  "route templates with {patient}", OFF(resource.templates), OFF(resource.ntemplates), NULL },
};

int config_init(struct config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->state_dir, sizeof(c->state_dir), "%s", PHIWATCH_DEFAULT_STATE);
	c->drop_capabilities = true;
	identity_opts_default(&c->identity);
	resource_opts_default(&c->resource);
	detect_opts_default(&c->detect);
	c->alerts.syslog = true;
	snprintf(c->alerts.syslog_socket, sizeof(c->alerts.syslog_socket), "%s", SINK_SYSLOG_PATH);
	snprintf(c->alerts.facility, sizeof(c->alerts.facility), "authpriv");
	c->alerts.facility_value = sink_syslog_facility("authpriv");
	c->audit.enabled = true;
	c->forensics.enabled = true;
	c->forensics.memory_mb = 64;
	c->forensics.max_total_mb = 1024;
	c->forensics.per_key_interval_s = 300;
	c->forensics.min_severity = 3;
	snprintf(c->control_socket, sizeof(c->control_socket), "%s", CONTROL_DEFAULT_PATH);
	snprintf(c->metrics.listen, sizeof(c->metrics.listen), "%s", METRICS_DEFAULT_LISTEN);
	snprintf(c->audit.on_full, sizeof(c->audit.on_full), "continue");
	audit_opts_default(&c->audit.o);
	c->audit.o.segment_max_bytes >>= 20; /* MiB in the file; bytes after config_finish */
	c->audit.o.compress_thread = true;   /* the agent's loop never waits on zlib */
	c->capture.ringbuf_mb = 16;
	c->capture.poll_ms = 10;
	pipeline_default_limits(&c->limits);
	return 0;
}

void config_free(struct config *c)
{
	(void)c;
}

void config_finish(struct config *c)
{
	if (!c->audit.dir[0])
		snprintf(c->audit.dir, sizeof(c->audit.dir), "%.200s/audit", c->state_dir);
	if (!c->audit.initial_key_path[0])
		snprintf(c->audit.initial_key_path, sizeof(c->audit.initial_key_path), "%.200s/audit-initial.key",
			 c->state_dir);
	if (!c->forensics.dir[0])
		snprintf(c->forensics.dir, sizeof(c->forensics.dir), "%.200s/forensics", c->state_dir);
	c->audit.o.dir = c->audit.dir;
	c->audit.o.initial_key_path = c->audit.initial_key_path;
	c->audit.o.enc_key_path = c->audit.enc_key_path[0] ? c->audit.enc_key_path : NULL;
	c->audit.o.on_full = strcmp(c->audit.on_full, "stop") == 0 ? AUDIT_FULL_STOP : AUDIT_FULL_CONTINUE;
	if (c->audit.o.segment_max_bytes < (1ull << 20))
		c->audit.o.segment_max_bytes <<= 20;
}

static const struct key *find_key(const char *path)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strcmp(keys[i].path, path) == 0)
			return &keys[i];
	return NULL;
}

/* Whether some key lives under "prefix." */
static bool is_section(const char *prefix)
{
	size_t n = strlen(prefix);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strncmp(keys[i].path, prefix, n) == 0 && keys[i].path[n] == '.')
			return true;
	return false;
}

#define FAIL(...)                                                   \
	do {                                                        \
		int _n = snprintf(err, errlen, "%s: key \"%s\": ", name, path); \
		if (_n >= 0 && (size_t)_n < errlen)                 \
			snprintf(err + _n, errlen - (size_t)_n, __VA_ARGS__); \
		return -EINVAL;                                     \
	} while (0)

static int get_uint(const cJSON *v, uint64_t min, uint64_t max, uint64_t *out)
{
	if (!cJSON_IsNumber(v))
		return -1;
	double d = v->valuedouble;
	if (d != (double)(uint64_t)d || d < (double)min || d > (double)max)
		return -1;
	*out = (uint64_t)d;
	return 0;
}

static int set_key(struct config *c, const struct key *k, const cJSON *v, const char *name, const char *path,
		   char *err, size_t errlen)
{
	char *base = (char *)c;
	uint64_t u;

	switch (k->type) {
	case K_U32:
	case K_U64:
	case K_SIZE:
	case K_SECONDS_NS:
		if (get_uint(v, k->min, k->max, &u))
			FAIL("must be an integer in [%llu, %llu]", (unsigned long long)k->min, (unsigned long long)k->max);
		if (k->type == K_U32)
			*(uint32_t *)(base + k->off) = (uint32_t)u;
		else if (k->type == K_U64)
			*(uint64_t *)(base + k->off) = u;
		else if (k->type == K_SIZE)
			*(size_t *)(base + k->off) = (size_t)u;
		else
			*(uint64_t *)(base + k->off) = u * 1000000000ull;
		return 0;
	case K_BOOL:
		if (!cJSON_IsBool(v))
			FAIL("must be true or false");
		*(bool *)(base + k->off) = cJSON_IsTrue(v);
		return 0;
	case K_STR:
		if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) >= CONFIG_STR)
			FAIL("must be a non-empty string shorter than %d bytes", CONFIG_STR);
		snprintf(base + k->off, CONFIG_STR, "%s", v->valuestring);
		return 0;
	case K_PORTS: {
		const cJSON *e;
		if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > CONFIG_MAX_PORTS)
			FAIL("must be an array of at most %d ports", CONFIG_MAX_PORTS);
		c->capture.nports = 0;
		cJSON_ArrayForEach(e, v) {
			if (get_uint(e, 1, 65535, &u))
				FAIL("ports are integers in [1, 65535]");
			c->capture.ports[c->capture.nports++] = (uint16_t)u;
		}
		return 0;
	}
	case K_COMMS: {
		const cJSON *e;
		if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > CONFIG_MAX_COMMS)
			FAIL("must be an array of at most %d process names", CONFIG_MAX_COMMS);
		c->capture.ncomms = 0;
		cJSON_ArrayForEach(e, v) {
			if (!cJSON_IsString(e) || !e->valuestring[0] || strlen(e->valuestring) > 15)
				FAIL("process names are 1 to 15 bytes (the kernel's comm)");
			snprintf(c->capture.exclude_comms[c->capture.ncomms++], 16, "%s", e->valuestring);
		}
		return 0;
	}
	case K_DOUBLE:
		if (!cJSON_IsNumber(v) || v->valuedouble < (double)k->min || v->valuedouble > (double)k->max)
			FAIL("must be a number in [%llu, %llu]", (unsigned long long)k->min, (unsigned long long)k->max);
		*(double *)(base + k->off) = v->valuedouble;
		return 0;
	case K_FACILITY: {
		int f = cJSON_IsString(v) ? sink_syslog_facility(v->valuestring) : -1;
		if (f < 0)
			FAIL("must be a syslog facility name (authpriv, auth, daemon, user, local0 ... local7)");
		snprintf(base + k->off, 32, "%s", v->valuestring);
		c->alerts.facility_value = f;
		return 0;
	}
	case K_ONFULL:
		if (!cJSON_IsString(v) || (strcmp(v->valuestring, "continue") && strcmp(v->valuestring, "stop")))
			FAIL("must be \"continue\" or \"stop\"");
		snprintf(base + k->off, 16, "%s", v->valuestring);
		return 0;
	case K_STRLIST: {
		const cJSON *e;
		size_t n = 0;
		if (!cJSON_IsArray(v) || (uint64_t)cJSON_GetArraySize(v) > k->min)
			FAIL("must be an array of at most %llu strings", (unsigned long long)k->min);
		cJSON_ArrayForEach(e, v) {
			if (!cJSON_IsString(e) || !e->valuestring[0] || strlen(e->valuestring) >= k->max)
				FAIL("entries are non-empty strings shorter than %llu bytes", (unsigned long long)k->max);
			if (k->check && !k->check(e->valuestring))
				FAIL("\"%s\" is not a valid value", e->valuestring);
			char *slot = base + k->off + n * k->max;
			snprintf(slot, k->max, "%s", e->valuestring);
			((const char **)(base + k->off2))[n] = slot;
			n++;
		}
		*(size_t *)(base + k->off3) = n;
		return 0;
	}
	}
	FAIL("internal: unhandled type");
}

static int walk(struct config *c, const cJSON *obj, const char *prefix, const char *name, char *err, size_t errlen)
{
	const cJSON *v;

	cJSON_ArrayForEach(v, obj) {
		char path[256];
		if (!v->string)
			continue;
		snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] ? "." : "", v->string);
		const struct key *k = find_key(path);
		if (k) {
			int rc = set_key(c, k, v, name, path, err, errlen);
			if (rc)
				return rc;
			continue;
		}
		if (cJSON_IsObject(v) && is_section(path)) {
			int rc = walk(c, v, path, name, err, errlen);
			if (rc)
				return rc;
			continue;
		}
		FAIL("unknown key");
	}
	return 0;
}

int config_parse(struct config *c, const char *name, const char *text, size_t len, char *err, size_t errlen)
{
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
	int rc;

	if (!root) {
		size_t at = end && end >= text ? (size_t)(end - text) : 0;
		snprintf(err, errlen, "%s: not valid JSON (near byte %zu)", name, at);
		return -EINVAL;
	}
	if (!cJSON_IsObject(root)) {
		snprintf(err, errlen, "%s: the top level must be a JSON object", name);
		cJSON_Delete(root);
		return -EINVAL;
	}
	rc = walk(c, root, "", name, err, errlen);
	cJSON_Delete(root);
	if (rc)
		return rc;
	const char *dkey, *dwhy;
	if (detect_opts_validate(&c->detect, &dkey, &dwhy) != 0) {
		snprintf(err, errlen, "%s: key \"%s\": %s", name, dkey, dwhy);
		return -EINVAL;
	}
	{
		struct sockaddr_storage ss;
		socklen_t sl;
		bool lo;
		char merr[200];
		if (metrics_listen_parse(c->metrics.listen, &ss, &sl, &lo, merr, sizeof(merr)) != 0) {
			snprintf(err, errlen, "%s: key \"metrics.listen\": %s", name, merr);
			return -EINVAL;
		}
	}
	if (c->identity.nclaims == 0) {
		snprintf(err, errlen, "%s: key \"identity.claims\": must name at least one claim", name);
		return -EINVAL;
	}
	/* Templates are compiled now so that a bad one stops the start. */
	char rerr[256];
	struct resource_ctx *rc2 = resource__new(&c->resource, rerr, sizeof(rerr));
	if (!rc2) {
		snprintf(err, errlen, "%s: key \"resource.templates\": %s", name, rerr);
		return -EINVAL;
	}
	resource__free(rc2);
	return 0;
}

int config_load(struct config *c, const char *path, bool must_exist, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int rc;

	if (!f) {
		if (errno == ENOENT && !must_exist)
			return 0;
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			if (cap > (1u << 20)) {
				snprintf(err, errlen, "%s: larger than 1 MiB", path);
				free(buf);
				fclose(f);
				return -EFBIG;
			}
			char *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				return -ENOMEM;
			}
			buf = nb;
		}
		size_t n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
	}
	fclose(f);
	rc = config_parse(c, path, buf ? buf : "", len, err, errlen);
	free(buf);
	if (!rc)
		snprintf(c->path, sizeof(c->path), "%s", path);
	return rc;
}
