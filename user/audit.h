/* audit.h — the tamper-evident, encrypted audit trail: every transaction and every gap, hash-chained and sealed.
 * Not the live --events stream and not syslog: its own files under one directory, read back by verify/query.
 *
 * ON-DISK FORMAT (version 1). All integers little-endian. All timestamps CLOCK_REALTIME ns.
 *
 * Directory DIR (0700, created if missing; wider modes are tightened), files 0600, created with O_EXCL|O_NOFOLLOW:
 *   seg-NNNNNNNNNNNNNNNN.log          segment N (16 decimal digits) as written: open, or sealed but not yet compressed
 *   seg-NNNNNNNNNNNNNNNN.log.gz       closed segment, the .log's records re-framed in plaintext, gzip: one or more
 *                                     members (RFC 1952, header CRC set), read with zlib's inflate (wbits 31)
 *   seg-NNNNNNNNNNNNNNNN.log.gz.aes   the same, then AES-256-GCM when an encryption key is configured
 *   seg-NNNNNNNNNNNNNNNN.torn-OFFSET  bytes cut from a torn tail at restart (kept as evidence, named by a chain record)
 *   seal.key                          the current evolving seal key k[n] (only the current one; see below)
 *   lock                              flock()ed by the writer: one agent per directory
 *   *.tmp                             incomplete work, deleted at the next start
 *
 * Record frame (32-byte header, body, 32-byte hash):
 *    0  4  magic "PWA1"
 *    4  4  stored_len   body bytes on disk
 *    8  8  seq          chain position, 0 for the first record ever, +1 per record across all segments
 *   16  8  ts_ns        wall clock when the record was appended
 *   24  1  type         enum audit_rec_type
 *   25  1  flags        bit 0: body encrypted; other bits 0
 *   26  2  reserved     0
 *   28  4  plain_len    body bytes in plaintext (== stored_len unless encrypted; bodies are at most 1 MiB)
 *   32     body         JSON text (for a transaction: the --events line verbatim)
 *                       encrypted: nonce[12] | AES-256-GCM(plaintext) | tag[16], AAD = the 32-byte header as stored,
 *                       key = HMAC-SHA256(enc_key, "phiwatch-audit-record-key-v1" | u64 segment | salt[16]),
 *                       salt from the segment's OPEN record; nonce = 12 random bytes drawn each time the segment
 *                       is opened, with a counter in its low 8 bytes (never repeated, across restarts too); the
 *                       header (seq, time, type, length) stays in the clear
 *    +     hash[32]     SHA-256(prev_hash | header' | plaintext body), header' = the header with flags 0 and
 *                       stored_len = plain_len (the plaintext form, so re-framing at close keeps every hash);
 *                       prev_hash = hash of the record with seq-1 (32 zero bytes before seq 0)
 * A torn write leaves a frame that is short or fails its hash: it is the tail, cut at restart. verify names the
 * first failing record by segment, index in the segment (0 = the OPEN record), seq and byte offset.
 *
 * Record bodies (JSON objects; encrypted when a key is configured, except OPEN which holds the salt):
 *   OPEN     first record of every segment: {"format":1,"segment":N,"created":RFC3339,"key_id":hex16,
 *            "enc_key_id":hex16|null,"salt":hex32 (when encrypted),"prev_head":hex64,"prev_last_seq":S|null}
 *   START    agent start {"pid","fsync_interval_ms","segment_max_bytes","retention_days","encrypted"}
 *   STOP     clean stop {"records_written","records_lost","write_errors"}
 *   RESTART  crash detected at start {"reason","torn_bytes","torn_file","torn_sha256","last_good_seq"}
 *   TXN      the transaction line
 *   GAP      {"kind":K,"detail":{...}}: capture drops, "records_lost" after a disk-full or write error, ...
 *   NOTE     {"kind":K,"detail":{...}}: other facts chained into the trail (e.g. a forensic dump's sha256)
 *   SEGFILE  {"segment":M,"file","bytes","sha256"}: digest of closed segment M's compressed file, written when the
 *            compression finished (in a later segment), before the .log is unlinked: every byte of a .gz/.aes is
 *            bound to the chain, including gzip header fields and padding bits that gzip itself does not check
 *   DELETE   {"segment":M,"file","bytes","sha256","first_seq","last_seq","head","reason":"retention",...}:
 *            written and fsynced before retention unlinks segment M (oldest first, never the open segment)
 *   SEAL     last record of a closed segment: {"segment":N,"first_seq","records","head":hex64,"hmac":hex64},
 *            hmac = HMAC-SHA256(k[N], "phiwatch-audit-seal-v1" | u64 N | u64 first_seq | u64 seal_seq | head),
 *            head = hash of the record before the seal (it covers every earlier record of every segment)
 *
 * Keys. k[0] = 32 random bytes, written once at first start to initial_key_path (64 hex chars + newline, 0600) for
 * the operator to move off the host; k[n+1] = SHA-256(k[n]); segment N is sealed with k[N]. seal.key holds
 * "PWAK0001" | u64 n | k[n] | SHA-256 of the preceding 48 bytes, replaced by write-tmp + fsync + rename, and the
 * replaced inode is overwritten with zeros through a descriptor kept open across the rename, so only the current
 * key exists on the host (best effort: journaling and flash remapping may keep old blocks). Someone who takes the
 * host at segment N holds k[N] and later keys only: they cannot re-seal segments < N. "key_id" = first 8 bytes of
 * SHA-256("phiwatch-audit-key-id" | k[0]) in every OPEN lets verify tell a wrong --key from a forged log.
 *
 * Closed file .aes: "PWAGCM01" | u64 segment | enc_key_id[8] | nonce[12] | AES-256-GCM(gzip bytes) | tag[16],
 * AAD = the 36 header bytes (so a file cannot be renamed to another index), key = the configured key, nonce random.
 *
 * Lifecycle. audit__open recovers: the last segment, if open, is scanned; a torn tail is copied to a .torn file,
 * cut, and a RESTART record names its size and digest (a clean-looking tail without STOP also gets a RESTART).
 * audit__close writes STOP and seals the open segment (the next start opens a new one), so a stopped agent leaves
 * nothing re-sealable behind. Sealed segments are compressed (and encrypted) oldest first, one per audit__tick from
 * the .log (one gzip member). With compress_thread, a worker at nice +10 does it instead: plaintext segments while
 * they are written (it deflates copies of the batches just written to the .log, a member per MiB, and renames the
 * .gz at the seal; anything that goes wrong ends that stream and the .log is compressed as before), encrypted ones
 * and those left by a restart from the .log. The worker shares nothing with the owner but its queue and results;
 * the owner's audit__tick chains each finished file's SEGFILE.
 * Writes are buffered and group-committed: a crash loses at most the records after the last fdatasync
 * (fsync_interval_ms; 0 = every record). On a write error the segment is truncated back to its last whole record,
 * the buffered records are counted lost, and a GAP "records_lost" is chained in when writing works again.
 *
 * A restart finds seal.key at k[L] (L open) or k[L+1] (L sealed) and moves it forward if a crash left it behind;
 * a key ahead of the trail, or a trail without seal.key, is refused (audit__open fails with the reason).
 * Retention (every minute, in audit__tick) deletes the oldest closed segments whose file mtime (set to the seal
 * time at compression) is older than retention_days, each after its DELETE record is fsynced.
 *
 * verify checks: segment numbering (no holes; a missing prefix needs a DELETE for the segment just before the
 * first present one, whose head/last_seq must match that segment's OPEN), every frame, seq continuity, every
 * hash, OPEN (index, prev_head link, key ids), each non-last segment ends with a valid SEAL (HMAC under k[N]
 * derived from --key; a match under a later key is reported as a re-seal) and nothing follows it, each compressed
 * file's GCM tag, gzip CRC and SEGFILE digest, and seal.key when present (derived from k[0]; past the last
 * segment means that segment was sealed, so a cut-off seal is caught).
 * Limits (by design): the open segment is protected by the chain only (its key is on the host), and cutting it at
 * a record boundary is indistinguishable from a crash before those records were written; record headers (seq,
 * time, type, length) are not encrypted; one encryption key per trail (changing it needs the old one to read).
 * Not thread-safe: one thread owns a struct audit (the compression worker shares nothing with it but the job). verify/query may run beside a live writer (a file compressed
 * or deleted between listing and reading is reported; run again).
 */
#ifndef PHIWATCH_AUDIT_H
#define PHIWATCH_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define AUDIT_KEY_LEN 32
#define AUDIT_HASH_LEN 32
#define AUDIT_HDR_LEN 32
#define AUDIT_MAX_BODY (1u << 20)
#define AUDIT_MAX_SEGMENT_BYTES (1ull << 30)

enum audit_rec_type {
	AUDIT_REC_OPEN = 1,
	AUDIT_REC_START = 2,
	AUDIT_REC_STOP = 3,
	AUDIT_REC_RESTART = 4,
	AUDIT_REC_TXN = 5,
	AUDIT_REC_GAP = 6,
	AUDIT_REC_NOTE = 7,
	AUDIT_REC_SEGFILE = 8,
	AUDIT_REC_DELETE = 9,
	AUDIT_REC_SEAL = 10,
};

/* "open", "txn", ...; "?" for an unknown value. */
const char *audit_rec_type_name(int type);

enum audit_full_action {
	AUDIT_FULL_CONTINUE = 0, /* keep capturing: appends return 0, records are counted lost, retried each second */
	AUDIT_FULL_STOP,         /* refuse appends with -errno (still counted lost) until a retry succeeds */
};

struct audit_opts {
	const char *dir;              /* e.g. /var/lib/phiwatch/audit */
	const char *initial_key_path; /* written once at first start (0600), for the operator to move off-host */
	const char *enc_key_path;     /* NULL: no encryption; else a file holding a 32-byte key (raw or 64 hex) */
	uint64_t segment_max_bytes;   /* default 64 MiB, at most AUDIT_MAX_SEGMENT_BYTES */
	uint64_t segment_max_age_s;   /* default 86400 */
	unsigned fsync_interval_ms;   /* default 1000; 0 = fdatasync every record */
	unsigned retention_days;      /* default 2192; 0 = keep forever */
	enum audit_full_action on_full;
	int compress_level;           /* zlib level 1..9; 0: the default (6); -1: leave closed segments as .log */
	bool compress_thread;         /* compress in a worker thread at a lower priority (the agent); default false:
				       * one segment per audit__tick in the caller's thread (deterministic, for tests) */
};

void audit_opts_default(struct audit_opts *o);

/* Opens (creating) the trail: dirs 0700, first-start key, torn-tail recovery (RESTART record), START record,
 * all fsynced before it returns. now_ns: CLOCK_REALTIME. NULL with errno set and a reason in err on failure. */
struct audit *audit__open(const struct audit_opts *o, uint64_t now_ns, char *err, size_t errlen);

/* json: one transaction line (no newline) as written to --events, at most AUDIT_MAX_BODY bytes; -EINVAL if it is
 * not one JSON object line. Returns 0 when chained (durable at the next group commit), or when lost under
 * AUDIT_FULL_CONTINUE (counted); -errno under AUDIT_FULL_STOP while writes fail. */
int audit__append_txn(struct audit *a, uint64_t ts_ns, const char *json, size_t len);
/* kind: short name ("capture_drop"); detail_json: a JSON object text or NULL. Same returns as append_txn. */
int audit__gap(struct audit *a, uint64_t ts_ns, const char *kind, const char *detail_json);
int audit__note(struct audit *a, uint64_t ts_ns, const char *kind, const char *detail_json);

/* Call at least every 100 ms: group-commit fdatasync when due, rotation by age, compression of a sealed segment (or collecting the worker's),
 * retention (checked every minute), retry after a write error. */
void audit__tick(struct audit *a, uint64_t now_ns);
/* True while sealed segments wait for compression or a compression job is in flight. */
bool audit__compress_busy(const struct audit *a);
/* Flush and fdatasync now (e.g. before acknowledging something). 0 or -errno. */
int audit__sync(struct audit *a, uint64_t now_ns);

struct audit_stats {
	uint64_t records_written;  /* records chained (all types), including ones still buffered */
	uint64_t records_synced;   /* of those, acknowledged by fdatasync */
	uint64_t records_lost;     /* accepted or refused while writing failed, or dropped from the buffer by it */
	uint64_t bytes_written;    /* frame bytes written to segment files */
	uint64_t segments_closed;  /* sealed */
	uint64_t segments_compressed;
	uint64_t segments_streamed;  /* of those, compressed while written (no read-back) */
	uint64_t compress_pending; /* sealed segments still .log, the one being compressed included */
	uint64_t segments_deleted; /* by retention */
	uint64_t write_errors;     /* failed write/fsync/rename calls */
	uint64_t unsynced;         /* records chained but not yet fdatasync'ed */
	uint64_t last_seq;         /* seq of the last record chained */
	uint64_t synced_seq;       /* every record with seq <= this is fdatasync'ed (UINT64_MAX: none yet) */
	uint64_t segment;          /* index of the open segment */
	int write_error;           /* errno of the failure being retried, 0 when healthy */
};

void audit__stats(const struct audit *a, struct audit_stats *out);

/* Writes STOP, seals the open segment, fdatasyncs, evolves the key; logs how many records were not synced.
 * Frees a (NULL is a no-op). */
void audit__close(struct audit *a, uint64_t now_ns);

/* ---- reading: verify and query (also used by `phiwatch audit`) ---- */

/* Reads a 32-byte key: raw 32 bytes, or 64 hex chars (optionally followed by a newline). 0 or -errno. */
int audit_key_load(const char *path, uint8_t key[AUDIT_KEY_LEN], char *err, size_t errlen);

enum audit_fail {
	AUDIT_F_NONE = 0,
	AUDIT_F_IO,              /* a file could not be read */
	AUDIT_F_EMPTY,           /* no segments */
	AUDIT_F_MISSING_SEGMENT, /* a hole in the numbering */
	AUDIT_F_NO_DELETE,       /* segments missing at the start without a DELETE record */
	AUDIT_F_FILE,            /* unexpected files for one index (e.g. .gz and .gz.aes) */
	AUDIT_F_DECRYPT,         /* closed file or record body failed authentication */
	AUDIT_F_NEED_ENC_KEY,    /* encrypted data, no or another --enc-key */
	AUDIT_F_DECOMPRESS,
	AUDIT_F_TORN,            /* the segment ends inside a record */
	AUDIT_F_FRAME,           /* bad magic, length, flags or reserved bits */
	AUDIT_F_SEQ_GAP,         /* seq above the expected one: records deleted */
	AUDIT_F_SEQ_BACK,        /* seq below: a record inserted or duplicated */
	AUDIT_F_REORDERED,       /* two records swapped */
	AUDIT_F_HASH,            /* record altered */
	AUDIT_F_OPEN,            /* first record is not this segment's OPEN */
	AUDIT_F_LINK,            /* OPEN does not chain to the previous segment */
	AUDIT_F_KEY_ID,          /* --key is not the initial key of this log */
	AUDIT_F_SEAL,            /* seal HMAC or head wrong */
	AUDIT_F_RESEALED,        /* seal made with a later key */
	AUDIT_F_UNSEALED,        /* a segment other than the last ends without a seal */
	AUDIT_F_AFTER_SEAL,      /* records after a seal */
	AUDIT_F_FILE_DIGEST,     /* compressed file's digest missing from, or different from, its SEGFILE record */
	AUDIT_F_RECORD,          /* malformed body of a chain-control record */
};

struct audit_verify_result {
	enum audit_fail fail;
	uint64_t segment;       /* failing segment index */
	char file[64];          /* its file name ("" if none) */
	int64_t record;         /* index in the segment, -1 for the file as a whole */
	uint64_t seq;           /* seq of the failing record, when known */
	uint64_t offset;        /* byte offset in the (decompressed) segment */
	uint64_t torn_bytes;    /* bytes from the failing record to the end of its segment: what a restart cuts when
				 * the failure is in the open segment (AUDIT_F_TORN: the torn tail) */
	char reason[256];
	/* counts over what was checked */
	uint64_t segments, segments_deleted, segments_compressed, records, txns, gaps, restarts, seals_checked;
	uint64_t first_seq, last_seq, bytes;
	bool open_tail;         /* last segment is not sealed (agent running, or crashed before restart) */
	bool seals_unchecked;   /* no initial key given */
};

/* 0: OK; 1: a failure described in r; -errno: DIR unreadable (r->reason says why). Keys may be NULL. */
int audit_verify(const char *dir, const uint8_t *initial_key, const uint8_t *enc_key, struct audit_verify_result *r);

struct audit_query {
	const char *patient;     /* phiwatch.resource.id == ID or ID in phiwatch.resource.ids */
	const char *user;        /* user.id == ID */
	uint64_t since_ns;       /* @timestamp >= since (0: no bound) */
	uint64_t until_ns;       /* @timestamp < until (0: no bound) */
	bool gaps;               /* print START/STOP/RESTART/GAP/DELETE records (in the time range) instead of txns */
	bool records;            /* print every record as {"seq","ts","type","segment","data"} */
};

struct audit_query_result {
	uint64_t matched, scanned, segments, gaps_in_range;
	uint64_t problems;       /* segments where reading stopped early (integrity failure); see reason */
	char reason[256];
};

/* Writes matching transaction lines (JSONL) to out. 0, 1 if some segment failed its checks (what could be read
 * was still reported), -ENOKEY if a segment is encrypted and enc_key is NULL or another key, -errno if DIR is
 * unreadable; r->reason says why. */
int audit_query(const char *dir, const uint8_t *enc_key, const struct audit_query *q, FILE *out,
		struct audit_query_result *r);

/* Parses RFC 3339 ("2026-01-02T03:04:05[.frac](Z|+hh:mm)", or a date "2026-01-02" = midnight UTC) or a relative
 * time before now ("90s", "15m", "12h", "7d", "2w", "now"). 0 or -EINVAL. */
int audit_parse_time(const char *s, uint64_t now_ns, uint64_t *out_ns);

#endif
