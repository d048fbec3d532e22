/* forensics.h — forensic dumps: what a principal and a process did just before an alert (or on request), as one
 * .tar.gz per dump: manifest.json, transactions.jsonl and capture.pcap (see pcap.h), written atomically (temporary
 * name, fsync, rename, fsync of the directory), 0600 in a 0700 directory, rate-limited per (rule, principal) and
 * capped in total size. Returns each dump's SHA-256 for the audit chain. Encrypted like the audit trail's closed
 * files when an encryption key is given.
 * Not the history itself (history.h) and not the control socket (control.h). Archive writing uses zlib and a
 * small ustar writer of its own (no libarchive). Not thread-safe.
 *
 * Archive members, in order:
 *   manifest.json       {"format":1,"agent":{"name":"phiwatch","version"},"host":{"name","kernel"},"created",
 *                        "trigger":{"kind":"alert","alert":{alert JSON}} | {"kind":"request","request":{...}}
 *                                  | {"kind":"signal","signal":"SIGUSR1"},
 *                        "filter":{"principal","pid","since","until"},"time_range":{"first","last"} (null if empty),
 *                        "transactions":N,"history":{"entries","evicted","budget"},
 *                        "files":[{"name","bytes","sha256"}] (transactions.jsonl, capture.pcap),
 *                        "capture":{"packets","connections","duplicate_views"},
 *                        "processes":[{"pid","alive","exe","comm","cmdline":[...],"uid","euid","cgroup",
 *                                      "note" (when exited or reused),"tls":{"known","instrumented","libssl","note"},
 *                                      "transactions","connections":[{"source":{"ip","port"},
 *                                      "destination":{"ip","port"},"role","tls","transactions","first","last"}]}],
 *                        "processes_omitted":N}
 *   transactions.jsonl  the history's lines, oldest first (the live --events schema)
 *   capture.pcap        the plaintext calls as TCP/IP
 *
 * Encrypted dumps (enc_key set) are named .tar.gz.aes: "PWFGCM01" | enc_key_id[8] | nonce[12] |
 * AES-256-GCM(tar.gz) | tag[16], AAD = the 28 header bytes, key = the configured key, nonce random, enc_key_id =
 * the first 8 bytes of SHA-256("phiwatch-audit-enc-key-id" | key) (the audit trail's id of the same key).
 * forensics_decrypt() turns one back into the .tar.gz.
 */
#ifndef PHIWATCH_FORENSICS_H
#define PHIWATCH_FORENSICS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "alert.h"
#include "history.h"
#include "json.h"

#define FORENSICS_DEFAULT_DIR "/var/lib/phiwatch/forensics"
#define FORENSICS_KEY_LEN 32
#define FORENSICS_MAX_PROCESSES 256      /* processes described per manifest; the rest are counted */
#define FORENSICS_RATE_KEYS 4096         /* (rule, principal) pairs remembered for the rate limit */

/* What the capture side knows about a process's TLS (filled by the caller's proc_info_fn). */
struct forensics_proc_tls {
	bool known;                      /* the capture side has looked at this process */
	bool instrumented;               /* its OpenSSL calls are hooked */
	char libssl[PATH_MAX];           /* the libssl (or executable with a static OpenSSL) found; "" none */
	char note[128];                  /* e.g. why TLS is not instrumented; "" when nothing to say */
};

/* Fills out (zeroed before the call) for pid. Called during forensics__dump, once per process described. */
typedef void (*forensics_proc_info_fn)(void *ctx, uint32_t pid, struct forensics_proc_tls *out);

enum forensics_trigger_kind {
	FORENSICS_TRIGGER_ALERT = 1,
	FORENSICS_TRIGGER_REQUEST,       /* `phiwatch dump` through the control socket */
	FORENSICS_TRIGGER_SIGNAL,        /* SIGUSR1 */
};

struct forensics_trigger {
	enum forensics_trigger_kind kind;
	const struct alert *alert;       /* ALERT */
	const char *request_json;        /* REQUEST: the request as one JSON object text (inserted verbatim) */
	const char *signal_name;         /* SIGNAL, e.g. "SIGUSR1" */
};

/* One dump written (also what the on_dump callback gets). */
struct forensics_dump_info {
	char path[PATH_MAX];
	uint8_t sha256[32];              /* of the file as written (the ciphertext when encrypted) */
	uint64_t bytes;
	uint64_t transactions;
	uint64_t processes;
	uint64_t ts_ns;                  /* realtime ns when it was written */
};

typedef void (*forensics_dump_fn)(void *ctx, const struct forensics_trigger *t, const struct forensics_dump_info *d);

struct forensics_opts {
	const char *dir;                 /* FORENSICS_DEFAULT_DIR; created 0700 (wider modes tightened) */
	uint64_t max_total_bytes;        /* all dumps in dir together; default 1 GiB */
	unsigned per_key_interval_s;     /* at most one alert dump per (rule, principal) per interval; default 300 */
	int min_severity;                /* alerts below this do not dump; default 3 (high) */
	const char *agent_version;       /* manifest agent.version (copied); default PHIWATCH_VERSION or "unknown" */
	const uint8_t *enc_key;          /* NULL: plain; else FORENSICS_KEY_LEN bytes (copied) */
	int compress_level;              /* zlib 1..9; 0: 6 */
	const char *proc_root;           /* "/proc" (tests point it elsewhere) */
	forensics_proc_info_fn proc_info;/* NULL: TLS facts are reported unknown */
	void *proc_ctx;
	forensics_dump_fn on_dump;       /* NULL ok: told of every dump written (e.g. to chain it into the audit) */
	void *dump_ctx;
};

void forensics_opts_default(struct forensics_opts *o);

struct forensics_stats {
	uint64_t dumps;                  /* written */
	uint64_t bytes;                  /* written by this agent */
	uint64_t refused_rate_limit;     /* alert dumps refused: (rule, principal) dumped within the interval */
	uint64_t refused_size_cap;       /* dumps refused: the directory would exceed max_total_bytes */
	uint64_t below_severity;         /* alerts under min_severity (not a refusal) */
	uint64_t no_subject;             /* alerts with neither principal nor pid (agent-wide): nothing to dump */
	uint64_t errors;                 /* dumps that failed (I/O, memory) */
	uint64_t dir_bytes;              /* dumps in the directory at the last check */
};

struct forensics;

/* Creates the directory (0700) and removes temporary files a crash left (.tmp-*: never complete dumps).
 * NULL with errno and a reason in err. */
struct forensics *forensics__new(const struct forensics_opts *o, char *err, size_t errlen);
/* NULL ok. Wipes the key. */
void forensics__free(struct forensics *f);

/* Writes one dump of h's entries matching flt (NULL: all) for trigger t. path_out (may be NULL) gets the path,
 * sha256_out (may be NULL) the file's SHA-256; on_dump is called. No rate limit here (callers: alerts go
 * through forensics__on_alert). 0; -EDQUOT (size cap: counted and logged, nothing written); -EINVAL; -errno of
 * an I/O or memory failure (counted and logged; no file is left behind). */
int forensics__dump(struct forensics *f, const struct forensics_trigger *t, struct history *h,
		    const struct history_filter *flt, char *path_out, size_t n, uint8_t sha256_out[32]);

/* The alert path: below min_severity, without principal ("-") and pid, or when (rule, principal) already dumped
 * within per_key_interval_s of a->ts_ns (counted), nothing is written; else dumps the principal's and the
 * process's history (history_filter semantics: either matches). Returns 1 when a dump was written (path_out and
 * sha256_out filled as by forensics__dump, either may be NULL), 0 when none was due, -errno as forensics__dump. */
int forensics__on_alert(struct forensics *f, const struct alert *a, struct history *h, char *path_out, size_t n,
			uint8_t sha256_out[32]);

/* The control socket's "dump" command: req = {"cmd":"dump","user":U,"pid":P,"all":true,"last_s":S} (user and/or
 * pid, or all; last_s optional: only calls started in the last S seconds). Writes the response object to resp:
 * {"ok":true,"path","sha256","bytes","transactions"} or {"ok":false,"error":REASON}. Returns 0 when a dump was
 * written, -EINVAL for a bad request, else as forensics__dump. */
int forensics__handle_request(struct forensics *f, struct history *h, const cJSON *req, struct jbuf *resp);

void forensics__stats(const struct forensics *f, struct forensics_stats *out);

/* The audit NOTE detail for a dump: {"file","bytes","sha256","transactions","trigger":KIND[,"rule","principal",
 * "pid"]}; chain it with audit__note(a, d->ts_ns, "forensic_dump", b->p). */
void forensics_note_json(const struct forensics_trigger *t, const struct forensics_dump_info *d, struct jbuf *b);

/* Decrypts an encrypted dump in_path into out_path (0600, created; must not exist). 0, or -errno with a reason
 * in err (-EBADMSG: not such a file, another key, or altered). */
int forensics_decrypt(const char *in_path, const char *out_path, const uint8_t key[FORENSICS_KEY_LEN], char *err,
		      size_t errlen);

#endif
