/* test_audit.c — cmocka tests for user/audit.c: tamper detection (every bit flip; modify, delete, insert, reorder,
 * re-seal, drop a segment, truncate), crash recovery, write failures, compression + encryption, retention, query.
 * The frame parser and re-hashing here follow the format documented in audit.h, independently of audit.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "audit.h"
#include "log.h"

#define T0 1700000000000000000ull /* 2023-11-14T22:13:20Z */
#define SEC 1000000000ull

/* ------------------------------------------------------------------ fixtures */

struct tlog {
	char root[64], dir[96], key[96], ek[96];
	uint8_t k0[AUDIT_KEY_LEN], ekb[AUDIT_KEY_LEN];
	bool enc;
	uint64_t now;
};

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
	(void)sb;
	(void)flag;
	(void)f;
	return remove(p);
}

static void tlog_init(struct tlog *t, bool enc)
{
	memset(t, 0, sizeof(*t));
	const char *tmp = getenv("TMPDIR");
	snprintf(t->root, sizeof(t->root), "%.30s/pw-audit-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(t->root));
	snprintf(t->dir, sizeof(t->dir), "%s/audit", t->root);
	snprintf(t->key, sizeof(t->key), "%s/initial.key", t->root);
	snprintf(t->ek, sizeof(t->ek), "%s/enc.key", t->root);
	t->enc = enc;
	t->now = T0;
	if (enc) {
		for (int i = 0; i < AUDIT_KEY_LEN; i++)
			t->ekb[i] = (uint8_t)(0xa5 ^ (i * 7));
		FILE *f = fopen(t->ek, "w");
		assert_non_null(f);
		for (int i = 0; i < AUDIT_KEY_LEN; i++)
			fprintf(f, "%02x", t->ekb[i]);
		fputc('\n', f);
		fclose(f);
	}
}

static void tlog_free(struct tlog *t)
{
	nftw(t->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Opens t's trail with o as set by the caller (dir, keys, 10 s segments filled in); loads k0. */
static struct audit *topen_set(struct tlog *t, struct audit_opts *o)
{
	char err[512] = "";

	o->dir = t->dir;
	o->initial_key_path = t->key;
	o->enc_key_path = t->enc ? t->ek : NULL;
	o->segment_max_age_s = 10;
	struct audit *a = audit__open(o, t->now, err, sizeof(err));
	if (!a)
		fail_msg("audit__open: %s", err);
	char e2[256];
	assert_int_equal(audit_key_load(t->key, t->k0, e2, sizeof(e2)), 0);
	return a;
}

static struct audit *topen_opts(struct tlog *t, int compress, unsigned fsync_ms, struct audit_opts *o)
{
	audit_opts_default(o);
	o->fsync_interval_ms = fsync_ms;
	o->compress_level = compress;
	return topen_set(t, o);
}

static struct audit *topen(struct tlog *t, int compress)
{
	struct audit_opts o;

	return topen_opts(t, compress, 1000, &o);
}

static void txn(struct audit *a, uint64_t ts, const char *user, const char *patient, int n)
{
	char line[512], tsb[40];
	time_t s = (time_t)(ts / SEC);
	struct tm tm;

	gmtime_r(&s, &tm);
	strftime(tsb, sizeof(tsb), "%Y-%m-%dT%H:%M:%S", &tm);
	int len = snprintf(line, sizeof(line),
			   "{\"@timestamp\":\"%s.%06uZ\",\"event\":{\"kind\":\"event\",\"sequence\":%d},\"user\":{\"id\":"
			   "\"%s\"},\"url\":{\"path\":\"/fhir/Patient/%s\"},\"phiwatch\":{\"resource\":{\"type\":"
			   "\"Patient\",\"id\":\"%s\"}}}",
			   tsb, (unsigned)(ts % SEC / 1000), n, user, patient, patient);
	assert_int_equal(audit__append_txn(a, ts, line, (size_t)len), 0);
}

/* nseg segments of per transactions each, rotated by age; closed (sealed) unless keep_open */
static void build(struct tlog *t, int compress, int nseg, int per)
{
	struct audit *a = topen(t, compress);
	int n = 0;

	for (int s = 0; s < nseg; s++) {
		for (int i = 0; i < per; i++, n++) {
			char p[16];
			snprintf(p, sizeof(p), "%d", 100 + n % 5);
			txn(a, t->now, n % 2 ? "alice" : "bob", p, n);
			t->now += SEC / 10;
		}
		if (s + 1 < nseg) {
			t->now += 11 * SEC;
			audit__tick(a, t->now); /* age rotation; compresses the sealed segment */
		}
	}
	audit__tick(a, t->now);
	audit__close(a, t->now);
}

static int tverify(struct tlog *t, struct audit_verify_result *r)
{
	return audit_verify(t->dir, t->k0, t->enc ? t->ekb : NULL, r);
}

static void expect_ok(struct tlog *t)
{
	struct audit_verify_result r;
	int rc = tverify(t, &r);

	if (rc != 0)
		fail_msg("verify: segment %llu record %lld: %s", (unsigned long long)r.segment, (long long)r.record,
			 r.reason);
}

static void expect_fail(struct tlog *t, enum audit_fail code, uint64_t seg, int64_t rec)
{
	struct audit_verify_result r;
	int rc = tverify(t, &r);

	if (rc != 1 || r.fail != code || r.segment != seg || r.record != rec)
		fail_msg("verify rc %d: got code %d segment %llu record %lld (%s), want code %d segment %llu record %lld",
			 rc, r.fail, (unsigned long long)r.segment, (long long)r.record, r.reason, code,
			 (unsigned long long)seg, (long long)rec);
}

static char *seg_path(struct tlog *t, uint64_t idx, const char *suffix)
{
	static char p[160];

	snprintf(p, sizeof(p), "%s/seg-%016llu%s", t->dir, (unsigned long long)idx, suffix);
	return p;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *p = malloc((size_t)n + 1);
	assert_non_null(p);
	assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return p;
}

/* Rewrites a file in place (no truncate-and-rewrite: ext4 would start writeback on every close). */
static void spit(const char *path, const uint8_t *p, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, p, len, 0), (ssize_t)len);
	assert_int_equal(ftruncate(fd, (off_t)len), 0);
	close(fd);
}

/* ---- the documented frame format, parsed here without audit.c */

struct tframe {
	size_t off, len;
	uint64_t seq;
	uint8_t type;
	uint32_t body_len;
};

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static size_t frames(const uint8_t *b, size_t len, struct tframe *f, size_t max)
{
	size_t n = 0, off = 0;

	while (off + 32 <= len && n < max) {
		assert_memory_equal(b + off, "PWA1", 4);
		uint32_t stored = le32(b + off + 4);
		f[n] = (struct tframe){ .off = off, .len = 32 + stored + 32, .seq = le64(b + off + 8), .type = b[off + 24],
					.body_len = stored };
		off += f[n].len;
		n++;
	}
	assert_int_equal(off, len);
	return n;
}

static void sha256(const void *a, size_t al, const void *b, size_t bl, const void *c, size_t cl, uint8_t *out)
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	EVP_DigestInit_ex(m, EVP_sha256(), NULL);
	EVP_DigestUpdate(m, a, al);
	EVP_DigestUpdate(m, b, bl);
	EVP_DigestUpdate(m, c, cl);
	EVP_DigestFinal_ex(m, out, NULL);
	EVP_MD_CTX_free(m);
}

/* Recomputes every hash from frame `from` on (plaintext frames), as someone editing the file would. */
static void rehash(uint8_t *b, struct tframe *f, size_t n, size_t from)
{
	for (size_t i = from; i < n; i++) {
		const uint8_t *prev = b + f[i - 1].off + f[i - 1].len - 32;
		uint8_t *h = b + f[i].off + 32 + f[i].body_len;
		sha256(prev, 32, b + f[i].off, 32, b + f[i].off + 32, f[i].body_len, h);
	}
}

static void hexs(char *out, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", p[i]);
}

/* ------------------------------------------------------------------ basics */

static void test_roundtrip(void **state)
{
	(void)state;
	struct tlog t;
	struct audit_stats st;
	struct audit_verify_result r;

	tlog_init(&t, false);
	struct audit *a = topen(&t, 6);
	for (int i = 0; i < 10; i++)
		txn(a, t.now + (uint64_t)i, "alice", "123", i);
	assert_int_equal(audit__gap(a, t.now, "capture_drop", "{\"ringbuf\":3}"), 0);
	assert_int_equal(audit__note(a, t.now, "forensic_dump", "{\"sha256\":\"ab\"}"), 0);
	audit__stats(a, &st);
	assert_true(st.unsynced > 0);
	assert_int_equal(st.last_seq, 13); /* open, start, 10 txns, gap, note */
	assert_int_equal(audit__sync(a, t.now), 0);
	audit__stats(a, &st);
	assert_int_equal(st.unsynced, 0);
	assert_int_equal(st.synced_seq, 13);
	/* bad input is refused, not chained */
	assert_int_equal(audit__append_txn(a, t.now, "{\"a\":1}\n", 8), -EINVAL);
	assert_int_equal(audit__append_txn(a, t.now, "not json", 8), -EINVAL);
	assert_int_equal(audit__gap(a, t.now, "Bad Kind", NULL), -EINVAL);
	assert_int_equal(audit__gap(a, t.now, "x", "[1]"), -EINVAL);
	/* one writer per directory */
	char err[256];
	struct audit_opts o;
	audit_opts_default(&o);
	o.dir = t.dir;
	o.initial_key_path = t.key;
	assert_null(audit__open(&o, t.now, err, sizeof(err)));
	assert_non_null(strstr(err, "another process"));
	audit__close(a, t.now);

	assert_int_equal(tverify(&t, &r), 0);
	assert_int_equal(r.txns, 10);
	assert_int_equal(r.gaps, 1);
	assert_int_equal(r.seals_checked, 1);
	assert_false(r.open_tail);
	/* files and directory modes; the initial key is hex, seal.key holds k[1] and not k[0] */
	struct stat sb;
	assert_int_equal(stat(t.dir, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	assert_int_equal(stat(seg_path(&t, 0, ".log"), &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(stat(t.key, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	size_t kl;
	char kp[128];
	snprintf(kp, sizeof(kp), "%s/seal.key", t.dir);
	uint8_t *ks = slurp(kp, &kl), k1[32];
	assert_int_equal(kl, 80);
	assert_int_equal(le64(ks + 8), 1);
	sha256(t.k0, 32, NULL, 0, NULL, 0, k1);
	assert_memory_equal(ks + 16, k1, 32);
	assert_null(memmem(ks, kl, t.k0, 32));
	free(ks);
	/* without the key: chain checked, seals not */
	assert_int_equal(audit_verify(t.dir, NULL, NULL, &r), 0);
	assert_true(r.seals_unchecked);
	/* another key: reported as such */
	uint8_t other[32];
	memcpy(other, t.k0, 32);
	other[0] ^= 1;
	assert_int_equal(audit_verify(t.dir, other, NULL, &r), 1);
	assert_int_equal(r.fail, AUDIT_F_KEY_ID);
	tlog_free(&t);
}

/* ------------------------------------------------------------------ every bit flip */

struct flipfile {
	char path[160];
	uint64_t seg;
	bool compressed;
};

static void flip_all(struct tlog *t, struct flipfile *ff, size_t nf)
{
	struct audit_verify_result r;
	size_t total = 0;

	expect_ok(t);
	for (size_t i = 0; i < nf; i++) {
		size_t len;
		uint8_t *b = slurp(ff[i].path, &len);
		struct tframe fr[256];
		size_t nfr = ff[i].compressed ? 0 : frames(b, len, fr, 256);
		for (size_t byte = 0; byte < len; byte++) {
			for (int bit = 0; bit < 8; bit++) {
				b[byte] ^= (uint8_t)(1u << bit);
				spit(ff[i].path, b, len);
				int rc = tverify(t, &r);
				if (rc != 1)
					fail_msg("%s: flip of byte %zu bit %d not detected (rc %d)", ff[i].path, byte, bit, rc);
				if (ff[i].compressed) {
					/* the gzip/GCM layer, or the digest chained in the next segment */
					if (r.segment != ff[i].seg && r.segment != ff[i].seg + 1)
						fail_msg("%s: byte %zu: reported in segment %llu", ff[i].path, byte,
							 (unsigned long long)r.segment);
				} else {
					size_t k = 0;
					while (k + 1 < nfr && fr[k + 1].off <= byte)
						k++;
					if (r.segment != ff[i].seg || r.record != (int64_t)k)
						fail_msg("%s: byte %zu bit %d (record %zu): reported segment %llu record "
							 "%lld: %s",
							 ff[i].path, byte, bit, k, (unsigned long long)r.segment,
							 (long long)r.record, r.reason);
				}
				b[byte] ^= (uint8_t)(1u << bit);
				total++;
			}
		}
		spit(ff[i].path, b, len);
		free(b);
	}
	expect_ok(t);
	print_message("    %zu bit flips, every one detected\n", total);
}

static void test_every_bit_flip_plain(void **state)
{
	(void)state;
	struct tlog t;

	tlog_init(&t, false);
	build(&t, -1, 3, 3);
	struct flipfile ff[3];
	for (int i = 0; i < 3; i++) {
		snprintf(ff[i].path, sizeof(ff[i].path), "%s", seg_path(&t, (uint64_t)i, ".log"));
		ff[i].seg = (uint64_t)i;
		ff[i].compressed = false;
	}
	flip_all(&t, ff, 3);
	tlog_free(&t);
}

static void test_every_bit_flip_compressed_encrypted(void **state)
{
	(void)state;
	struct tlog t;

	tlog_init(&t, true);
	build(&t, 6, 3, 3);
	struct stat sb;
	assert_int_equal(stat(seg_path(&t, 0, ".log.gz.aes"), &sb), 0);
	assert_int_equal(stat(seg_path(&t, 1, ".log.gz.aes"), &sb), 0);
	assert_int_equal(stat(seg_path(&t, 2, ".log"), &sb), 0); /* sealed at stop, compressed by the next start */
	struct flipfile ff[3] = { { .seg = 0, .compressed = true }, { .seg = 1, .compressed = true },
				  { .seg = 2, .compressed = false } };
	snprintf(ff[0].path, sizeof(ff[0].path), "%s", seg_path(&t, 0, ".log.gz.aes"));
	snprintf(ff[1].path, sizeof(ff[1].path), "%s", seg_path(&t, 1, ".log.gz.aes"));
	snprintf(ff[2].path, sizeof(ff[2].path), "%s", seg_path(&t, 2, ".log"));
	flip_all(&t, ff, 3);
	tlog_free(&t);
}

static void test_every_bit_flip_gzip(void **state)
{
	(void)state;
	struct tlog t;

	tlog_init(&t, false);
	build(&t, 9, 3, 2);
	struct flipfile ff[2] = { { .seg = 0, .compressed = true }, { .seg = 1, .compressed = true } };
	snprintf(ff[0].path, sizeof(ff[0].path), "%s", seg_path(&t, 0, ".log.gz"));
	snprintf(ff[1].path, sizeof(ff[1].path), "%s", seg_path(&t, 1, ".log.gz"));
	flip_all(&t, ff, 2);
	tlog_free(&t);
}

/* ------------------------------------------------------------------ record-level tampering */

struct seg_copy {
	uint8_t *b;
	size_t len, n;
	struct tframe f[64];
	char path[160];
};

static void seg_load(struct tlog *t, uint64_t idx, struct seg_copy *s)
{
	snprintf(s->path, sizeof(s->path), "%s", seg_path(t, idx, ".log"));
	s->b = slurp(s->path, &s->len);
	s->n = frames(s->b, s->len, s->f, 64);
}

static void seg_restore(struct seg_copy *s)
{
	spit(s->path, s->b, s->len);
}

static void test_modify_record(void **state)
{
	(void)state;
	struct tlog t;
	struct seg_copy s;

	tlog_init(&t, false);
	build(&t, -1, 3, 4);
	seg_load(&t, 1, &s);
	/* record 3 is a transaction: change the patient id in place */
	uint8_t *c = malloc(s.len);
	memcpy(c, s.b, s.len);
	uint8_t *p = memmem(c + s.f[3].off, s.f[3].len, "\"id\":\"10", 8);
	assert_non_null(p);
	p[7] = '9';
	spit(s.path, c, s.len);
	expect_fail(&t, AUDIT_F_HASH, 1, 3);
	/* the same edit with every later hash recomputed: the seal no longer describes the segment */
	rehash(c, s.f, s.n, 3);
	spit(s.path, c, s.len);
	expect_fail(&t, AUDIT_F_SEAL, 1, (int64_t)s.n - 1);
	free(c);
	seg_restore(&s);
	expect_ok(&t);
	free(s.b);
	tlog_free(&t);
}

/* Removes frame i (or inserts a copy of frame j before i, or swaps i and i+1) and writes the segment back. */
static void seg_splice(struct seg_copy *s, int op, size_t i, size_t j)
{
	uint8_t *c = malloc(s->len + s->f[j].len);
	size_t o = 0;

	for (size_t k = 0; k < s->n; k++) {
		if (op == 1 && k == i)
			continue;
		if (op == 2 && k == i) {
			memcpy(c + o, s->b + s->f[j].off, s->f[j].len);
			o += s->f[j].len;
		}
		size_t src = k;
		if (op == 3 && k == i)
			src = i + 1;
		else if (op == 3 && k == i + 1)
			src = i;
		memcpy(c + o, s->b + s->f[src].off, s->f[src].len);
		o += s->f[src].len;
	}
	spit(s->path, c, o);
	free(c);
}

static void test_delete_insert_reorder(void **state)
{
	(void)state;
	struct tlog t;
	struct seg_copy s;

	tlog_init(&t, false);
	build(&t, -1, 3, 5);
	seg_load(&t, 1, &s);
	assert_int_equal(s.f[4].type, AUDIT_REC_TXN);
	seg_splice(&s, 1, 4, 0); /* delete record 4 */
	expect_fail(&t, AUDIT_F_SEQ_GAP, 1, 4);
	seg_splice(&s, 2, 4, 2); /* insert a copy of record 2 before record 4 */
	expect_fail(&t, AUDIT_F_SEQ_BACK, 1, 4);
	seg_splice(&s, 3, 3, 0); /* swap records 3 and 4 */
	expect_fail(&t, AUDIT_F_REORDERED, 1, 3);
	seg_restore(&s);
	expect_ok(&t);
	free(s.b);
	tlog_free(&t);
}

static void test_reseal_with_later_key(void **state)
{
	(void)state;
	struct tlog t;
	struct seg_copy s;
	uint8_t k[32], head[32], mac[32];
	char hx[65];

	tlog_init(&t, false);
	build(&t, -1, 4, 3);
	seg_load(&t, 1, &s);
	/* someone who took the host holds k[3] (segment 3 is the newest): rewrite segment 1 and re-seal it */
	uint8_t *c = malloc(s.len);
	memcpy(c, s.b, s.len);
	uint8_t *p = memmem(c + s.f[2].off, s.f[2].len, "alice", 5);
	if (!p)
		p = memmem(c + s.f[2].off, s.f[2].len, "bob", 3);
	assert_non_null(p);
	p[0] = 'X';
	rehash(c, s.f, s.n - 1, 2);
	size_t si = s.n - 1;
	assert_int_equal(s.f[si].type, AUDIT_REC_SEAL);
	memcpy(head, c + s.f[si - 1].off + s.f[si - 1].len - 32, 32);
	memcpy(k, t.k0, 32);
	for (int i = 0; i < 3; i++)
		sha256(k, 32, NULL, 0, NULL, 0, k); /* k[3] */
	cJSON *j = cJSON_ParseWithLength((const char *)c + s.f[si].off + 32, s.f[si].body_len);
	assert_non_null(j);
	uint8_t m[22 + 24 + 32];
	memcpy(m, "phiwatch-audit-seal-v1", 22);
	uint64_t v[3] = { 1, (uint64_t)cJSON_GetObjectItem(j, "first_seq")->valuedouble, s.f[si].seq };
	for (int i = 0; i < 3; i++)
		for (int b = 0; b < 8; b++)
			m[22 + 8 * i + b] = (uint8_t)(v[i] >> (8 * b));
	memcpy(m + 46, head, 32);
	unsigned ml = 32;
	HMAC(EVP_sha256(), k, 32, m, sizeof(m), mac, &ml);
	hexs(hx, head, 32);
	cJSON_ReplaceItemInObject(j, "head", cJSON_CreateString(hx));
	hexs(hx, mac, 32);
	cJSON_ReplaceItemInObject(j, "hmac", cJSON_CreateString(hx));
	char *nb = cJSON_PrintUnformatted(j);
	assert_int_equal(strlen(nb), s.f[si].body_len);
	memcpy(c + s.f[si].off + 32, nb, s.f[si].body_len);
	free(nb);
	cJSON_Delete(j);
	rehash(c, s.f, s.n, si);
	spit(s.path, c, s.len);
	expect_fail(&t, AUDIT_F_RESEALED, 1, (int64_t)si);
	/* and the genuine seal of a later segment cannot be moved onto it either: forged */
	free(c);
	seg_restore(&s);
	expect_ok(&t);
	free(s.b);
	tlog_free(&t);
}

static void test_drop_reorder_truncate_segments(void **state)
{
	(void)state;
	struct tlog t;
	size_t len;
	char p1[160], p2[160];

	tlog_init(&t, false);
	build(&t, -1, 4, 3);
	/* drop a middle segment */
	snprintf(p1, sizeof(p1), "%s", seg_path(&t, 2, ".log"));
	snprintf(p2, sizeof(p2), "%s/hidden", t.root);
	assert_int_equal(rename(p1, p2), 0);
	expect_fail(&t, AUDIT_F_MISSING_SEGMENT, 2, -1);
	assert_int_equal(rename(p2, p1), 0);
	/* swap two segments' files */
	char p3[160];
	snprintf(p3, sizeof(p3), "%s", seg_path(&t, 1, ".log"));
	assert_int_equal(rename(p3, p2), 0);
	assert_int_equal(rename(p1, p3), 0);
	assert_int_equal(rename(p2, p1), 0);
	expect_fail(&t, AUDIT_F_OPEN, 1, 0);
	assert_int_equal(rename(p1, p2), 0);
	assert_int_equal(rename(p3, p1), 0);
	assert_int_equal(rename(p2, p3), 0);
	expect_ok(&t);
	/* drop the first segment: no deletion record accounts for it */
	snprintf(p1, sizeof(p1), "%s", seg_path(&t, 0, ".log"));
	assert_int_equal(rename(p1, p2), 0);
	expect_fail(&t, AUDIT_F_NO_DELETE, 1, 0);
	assert_int_equal(rename(p2, p1), 0);
	/* truncate a middle segment at a record boundary (its seal) and inside a record */
	struct seg_copy s;
	seg_load(&t, 1, &s);
	assert_int_equal(truncate(s.path, (off_t)s.f[s.n - 1].off), 0);
	expect_fail(&t, AUDIT_F_UNSEALED, 1, (int64_t)s.n - 1);
	assert_int_equal(truncate(s.path, (off_t)(s.f[2].off + 40)), 0);
	expect_fail(&t, AUDIT_F_TORN, 1, 2);
	seg_restore(&s);
	free(s.b);
	/* truncate the tail of the last segment: inside a record, then exactly before its seal (seal.key has moved
	 * past it, so the cut seal is noticed) */
	seg_load(&t, 3, &s);
	assert_int_equal(truncate(s.path, (off_t)(s.len - 10)), 0);
	struct audit_verify_result r;
	assert_int_equal(tverify(&t, &r), 1);
	assert_int_equal(r.fail, AUDIT_F_TORN);
	assert_int_equal(r.segment, 3);
	assert_int_equal(r.record, (int64_t)s.n - 1);
	assert_int_equal(r.torn_bytes, s.f[s.n - 1].len - 10);
	assert_int_equal(truncate(s.path, (off_t)s.f[s.n - 1].off), 0);
	expect_fail(&t, AUDIT_F_UNSEALED, 3, (int64_t)s.n - 1);
	seg_restore(&s);
	free(s.b);
	expect_ok(&t);
	(void)len;
	tlog_free(&t);
}

/* ------------------------------------------------------------------ crash recovery */

static void child_appends_and_dies(struct tlog *t, int n)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct audit *a = topen(t, -1);
		for (int i = 0; i < n; i++)
			txn(a, t->now + (uint64_t)i, "carol", "777", i);
		audit__sync(a, t->now + (uint64_t)n);
		_exit(0); /* as kill -9: no close, no stop record, no seal */
	}
	int st;
	char err[256];
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(audit_key_load(t->key, t->k0, err, sizeof(err)), 0);
}

static void test_crash_torn_tail(void **state)
{
	(void)state;
	struct tlog t;
	struct audit_verify_result r;
	struct audit_query q = { .gaps = true };
	struct audit_query_result qr;

	tlog_init(&t, false);
	child_appends_and_dies(&t, 5);
	assert_int_equal(tverify(&t, &r), 0);
	assert_true(r.open_tail);
	/* a power loss: half a record at the end */
	size_t len;
	uint8_t *b = slurp(seg_path(&t, 0, ".log"), &len);
	struct tframe f[32];
	size_t n = frames(b, len, f, 32);
	FILE *fp = fopen(seg_path(&t, 0, ".log"), "ab");
	fwrite(b + f[n - 1].off, 1, 50, fp);
	fclose(fp);
	assert_int_equal(tverify(&t, &r), 1);
	assert_int_equal(r.fail, AUDIT_F_TORN);
	assert_int_equal(r.record, (int64_t)n);
	assert_int_equal(r.torn_bytes, 50);
	/* restart: the tail is kept aside, cut, and the chain continues with a restart record naming it */
	t.now += SEC;
	struct audit *a = topen(&t, -1);
	txn(a, t.now, "dave", "778", 99);
	audit__close(a, t.now);
	assert_int_equal(tverify(&t, &r), 0);
	assert_int_equal(r.restarts, 1);
	char *out;
	size_t olen;
	FILE *m = open_memstream(&out, &olen);
	assert_int_equal(audit_query(t.dir, NULL, &q, m, &qr), 0);
	fclose(m);
	assert_non_null(strstr(out, "\"type\":\"restart\""));
	assert_non_null(strstr(out, "\"torn_bytes\":50"));
	assert_non_null(strstr(out, "\"last_good_seq\":6"));
	char tp[200];
	snprintf(tp, sizeof(tp), "%s/seg-0000000000000000.torn-%zu", t.dir, len);
	size_t tl;
	uint8_t *tb = slurp(tp, &tl);
	assert_int_equal(tl, 50);
	assert_memory_equal(tb, b + f[n - 1].off, 50);
	free(tb);
	free(out);
	free(b);
	/* a crash with no torn tail still leaves a restart record */
	child_appends_and_dies(&t, 3);
	t.now += SEC;
	a = topen(&t, -1);
	audit__close(a, t.now);
	assert_int_equal(tverify(&t, &r), 0);
	assert_int_equal(r.restarts, 2);
	tlog_free(&t);
}

static void test_cut_seal_then_restart(void **state)
{
	(void)state;
	struct tlog t;
	struct seg_copy s;
	struct audit_query q = { .gaps = true };
	struct audit_query_result qr;

	tlog_init(&t, false);
	build(&t, -1, 2, 3);
	/* the last segment was sealed at stop; its seal is cut off before the next start */
	seg_load(&t, 1, &s);
	assert_int_equal(truncate(s.path, (off_t)s.f[s.n - 1].off), 0);
	t.now += SEC;
	struct audit *a = topen(&t, -1); /* goes on, in a new segment, and says why */
	txn(a, t.now, "alice", "5", 1);
	audit__close(a, t.now);
	expect_fail(&t, AUDIT_F_UNSEALED, 1, (int64_t)s.n - 1);
	char *out;
	size_t olen;
	FILE *m = open_memstream(&out, &olen);
	audit_query(t.dir, NULL, &q, m, &qr);
	fclose(m);
	assert_non_null(strstr(out, "seal is missing or damaged"));
	free(out);
	/* the damaged segment was left as found (nothing cut, no .torn file), and the new segment chains to its last
	 * good record: putting the seal back shows a fork, not a valid trail */
	struct stat sb;
	assert_int_equal(stat(s.path, &sb), 0);
	assert_int_equal((size_t)sb.st_size, s.f[s.n - 1].off);
	char tp[200];
	snprintf(tp, sizeof(tp), "%s/seg-0000000000000001.torn-%zu", t.dir, s.f[s.n - 1].off);
	assert_int_not_equal(stat(tp, &sb), 0);
	seg_restore(&s);
	expect_fail(&t, AUDIT_F_LINK, 2, 0);
	free(s.b);
	tlog_free(&t);
}

/* ------------------------------------------------------------------ write failures (disk full) */

static void test_write_failure(void **state)
{
	(void)state;
	struct tlog t;
	struct audit_opts o;
	struct audit_stats st;
	struct rlimit old, lim;
	struct audit_verify_result r;

	for (int mode = 0; mode < 2; mode++) {
		tlog_init(&t, false);
		struct audit *a = topen_opts(&t, -1, 0, &o); /* fdatasync every record */
		audit__close(a, t.now);
		o.on_full = mode ? AUDIT_FULL_STOP : AUDIT_FULL_CONTINUE;
		char err[256];
		a = audit__open(&o, t.now, err, sizeof(err));
		assert_non_null(a);
		struct stat sb;
		assert_int_equal(stat(seg_path(&t, 1, ".log"), &sb), 0);
		/* RLIMIT_FSIZE makes writes past a size fail (EFBIG) as a full disk would (ENOSPC) */
		signal(SIGXFSZ, SIG_IGN);
		getrlimit(RLIMIT_FSIZE, &old);
		lim = old;
		lim.rlim_cur = (rlim_t)sb.st_size + 3000;
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
		int refused = 0;
		for (int i = 0; i < 40; i++) {
			char line[400];
			int len = snprintf(line, sizeof(line),
					   "{\"user\":{\"id\":\"u\"},\"n\":%d,\"pad\":\"%0200d\"}", i, 0);
			int e = audit__append_txn(a, t.now, line, (size_t)len);
			if (e)
				refused++;
		}
		audit__stats(a, &st);
		assert_int_equal(st.write_error, EFBIG);
		assert_true(st.records_lost > 0);
		assert_int_equal(refused, mode ? (int)st.records_lost : 0);
		uint64_t lost = st.records_lost;
		/* the segment holds whole records only */
		assert_int_equal(tverify(&t, &r), 0);
		/* space comes back: the retry chains a records_lost gap */
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
		t.now += 2 * SEC;
		audit__tick(a, t.now);
		audit__stats(a, &st);
		assert_int_equal(st.write_error, 0);
		txn(a, t.now, "alice", "1", 1);
		audit__close(a, t.now);
		assert_int_equal(tverify(&t, &r), 0);
		assert_int_equal(r.gaps, 1);
		struct audit_query q = { .gaps = true };
		struct audit_query_result qr;
		char *out;
		size_t olen;
		char want[64];
		FILE *m = open_memstream(&out, &olen);
		assert_int_equal(audit_query(t.dir, NULL, &q, m, &qr), 0);
		fclose(m);
		snprintf(want, sizeof(want), "\"records\":%llu", (unsigned long long)lost);
		assert_non_null(strstr(out, "\"kind\":\"records_lost\""));
		assert_non_null(strstr(out, want));
		free(out);
		tlog_free(&t);
	}
	signal(SIGXFSZ, SIG_DFL);
}

/* ------------------------------------------------------------------ encryption at rest */

static void test_encrypted(void **state)
{
	(void)state;
	struct tlog t;
	struct audit_verify_result r;

	tlog_init(&t, true);
	build(&t, 6, 4, 5);
	/* reopen: the last sealed segment gets compressed by the next start */
	t.now += SEC;
	struct audit *a = topen(&t, 6);
	txn(a, t.now, "eve", "424242", 1);
	audit__sync(a, t.now);
	audit__tick(a, t.now);
	struct stat sb;
	assert_int_equal(stat(seg_path(&t, 3, ".log.gz.aes"), &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_not_equal(stat(seg_path(&t, 3, ".log"), &sb), 0);
	/* neither the open segment nor the closed files hold the patient id in the clear */
	for (int i = 0; i <= 4; i++) {
		size_t len;
		uint8_t *b = slurp(seg_path(&t, (uint64_t)i, i == 4 ? ".log" : ".log.gz.aes"), &len);
		assert_null(memmem(b, len, "424242", 6));
		assert_null(memmem(b, len, "alice", 5));
		free(b);
	}
	audit__close(a, t.now);
	assert_int_equal(tverify(&t, &r), 0);
	assert_int_equal(r.segments_compressed, 4);
	assert_int_equal(r.txns, 21);
	assert_int_equal(audit_verify(t.dir, t.k0, NULL, &r), 1);
	assert_int_equal(r.fail, AUDIT_F_NEED_ENC_KEY);
	uint8_t other[32];
	memcpy(other, t.ekb, 32);
	other[5] ^= 0x10;
	assert_int_equal(audit_verify(t.dir, t.k0, other, &r), 1);
	assert_int_equal(r.fail, AUDIT_F_NEED_ENC_KEY);
	/* query reads compressed and encrypted segments */
	struct audit_query q = { .patient = "424242" };
	struct audit_query_result qr;
	char *out;
	size_t olen;
	FILE *m = open_memstream(&out, &olen);
	assert_int_equal(audit_query(t.dir, t.ekb, &q, m, &qr), 0);
	fclose(m);
	assert_int_equal(qr.matched, 1);
	assert_non_null(strstr(out, "\"eve\""));
	free(out);
	q.patient = "101";
	m = open_memstream(&out, &olen);
	assert_int_equal(audit_query(t.dir, t.ekb, &q, m, &qr), 0);
	fclose(m);
	assert_int_equal(qr.matched, 4);
	free(out);
	tlog_free(&t);
}

/* ------------------------------------------------------------------ retention */

static void test_retention(void **state)
{
	(void)state;
	struct tlog t;
	struct audit_opts o;
	struct audit_verify_result r;
	char err[256];

	tlog_init(&t, true);
	build(&t, 6, 5, 2); /* segments 0..3 compressed (mtime = their seal time), 4 sealed at stop */
	t.now += 2 * 86400 * SEC;
	struct audit *a = topen_opts(&t, 6, 1000, &o);
	audit__close(a, t.now);
	o.retention_days = 1;
	/* 1 day after the last seal of the first build: segments 0..4 are all older than a day */
	t.now += SEC;
	a = audit__open(&o, t.now, err, sizeof(err));
	assert_non_null(a);
	audit__tick(a, t.now);     /* compresses segment 4 (mtime = its seal time), then applies retention */
	audit__tick(a, t.now + 1); /* compresses segment 5, younger than a day */
	struct audit_stats st;
	audit__stats(a, &st);
	assert_int_equal(st.segments_deleted, 5);
	struct stat sb;
	assert_int_not_equal(stat(seg_path(&t, 0, ".log.gz.aes"), &sb), 0);
	assert_int_not_equal(stat(seg_path(&t, 4, ".log.gz.aes"), &sb), 0);
	assert_int_equal(stat(seg_path(&t, 5, ".log.gz.aes"), &sb), 0);
	txn(a, t.now, "alice", "1", 1);
	audit__close(a, t.now);
	assert_int_equal(tverify(&t, &r), 0);
	assert_int_equal(r.segments_deleted, 5);
	assert_int_equal(r.segments, 2);
	/* the deletions are chain records, and a segment removed without one is caught */
	struct audit_query q = { .gaps = true };
	struct audit_query_result qr;
	char *out;
	size_t olen;
	FILE *m = open_memstream(&out, &olen);
	assert_int_equal(audit_query(t.dir, t.ekb, &q, m, &qr), 0);
	fclose(m);
	int deletes = 0;
	for (char *p = out; (p = strstr(p, "\"type\":\"delete\"")); p++)
		deletes++;
	assert_int_equal(deletes, 5);
	assert_non_null(strstr(out, "\"reason\":\"retention\""));
	free(out);
	assert_int_equal(unlink(seg_path(&t, 5, ".log.gz.aes")), 0);
	expect_fail(&t, AUDIT_F_NO_DELETE, 6, 0);
	tlog_free(&t);
}

/* ------------------------------------------------------------------ query against a known log */

static void tx(struct audit *a, const char *ts, const char *user, const char *res)
{
	char line[512];
	uint64_t ns;

	assert_int_equal(audit_parse_time(ts, 0, &ns), 0);
	int len = snprintf(line, sizeof(line), "{\"@timestamp\":\"%s\",\"user\":{\"id\":\"%s\"},\"phiwatch\":{%s}}", ts,
			   user, res);
	assert_int_equal(audit__append_txn(a, ns, line, (size_t)len), 0);
}

static char *run_query(struct tlog *t, struct audit_query *q, struct audit_query_result *qr)
{
	char *out;
	size_t olen;
	FILE *m = open_memstream(&out, &olen);

	assert_int_equal(audit_query(t->dir, NULL, q, m, qr), 0);
	fclose(m);
	return out;
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

static void test_query(void **state)
{
	(void)state;
	struct tlog t;
	struct audit_query_result qr;

	tlog_init(&t, false);
	t.now = 1767200000ull * SEC; /* 2025-12-31 */
	struct audit *a = topen(&t, 6);
	tx(a, "2026-01-01T10:00:00.000001Z", "alice", "\"resource\":{\"type\":\"Patient\",\"id\":\"123\"}");
	tx(a, "2026-01-02T10:00:00.000000Z", "bob", "\"resource\":{\"type\":\"Patient\",\"id\":\"456\"}");
	uint64_t gap_ts;
	audit_parse_time("2026-01-02T12:00:00Z", 0, &gap_ts);
	assert_int_equal(audit__gap(a, gap_ts, "capture_drop", "{\"events\":7}"), 0);
	/* rotate in the middle: the report spans segments, compressed ones included */
	audit__tick(a, 1767300000ull * SEC);
	tx(a, "2026-01-03T10:00:00.000000Z", "alice",
	   "\"resource\":{\"type\":\"Bundle\",\"ids\":[\"789\",\"123\"]}");
	tx(a, "2026-01-05T10:00:00.000000Z", "carol", "\"resource\":{\"type\":\"Patient\",\"id\":\"1234\"}");
	tx(a, "2026-01-06T10:00:00.000000Z", "a\\\"q", "\"resource\":{\"type\":\"Patient\",\"id\":\"9\"}");
	audit__tick(a, 1767300000ull * SEC);
	audit__close(a, 1767800000ull * SEC);

	struct audit_query q = { .patient = "123" };
	char *out = run_query(&t, &q, &qr);
	assert_string_equal(out, "{\"@timestamp\":\"2026-01-01T10:00:00.000001Z\",\"user\":{\"id\":\"alice\"},"
				 "\"phiwatch\":{\"resource\":{\"type\":\"Patient\",\"id\":\"123\"}}}\n"
				 "{\"@timestamp\":\"2026-01-03T10:00:00.000000Z\",\"user\":{\"id\":\"alice\"},"
				 "\"phiwatch\":{\"resource\":{\"type\":\"Bundle\",\"ids\":[\"789\",\"123\"]}}}\n");
	assert_int_equal(qr.segments, 2);
	free(out);
	q = (struct audit_query){ .user = "bob" };
	out = run_query(&t, &q, &qr);
	assert_int_equal(count_lines(out), 1);
	assert_non_null(strstr(out, "\"456\""));
	free(out);
	q = (struct audit_query){ .user = "a\"q" };
	out = run_query(&t, &q, &qr);
	assert_int_equal(count_lines(out), 1);
	free(out);
	q = (struct audit_query){ .patient = "12" };
	out = run_query(&t, &q, &qr);
	assert_int_equal(count_lines(out), 0);
	free(out);
	/* time window [since, until) on @timestamp; the gap inside it is counted */
	q = (struct audit_query){ 0 };
	assert_int_equal(audit_parse_time("2026-01-02", 0, &q.since_ns), 0);
	assert_int_equal(audit_parse_time("2026-01-03T10:00:00Z", 0, &q.until_ns), 0);
	out = run_query(&t, &q, &qr);
	assert_int_equal(count_lines(out), 1);
	assert_non_null(strstr(out, "\"bob\""));
	assert_int_equal(qr.gaps_in_range, 1);
	free(out);
	q.until_ns += 1000;
	q.patient = "123";
	out = run_query(&t, &q, &qr);
	assert_int_equal(count_lines(out), 1);
	assert_non_null(strstr(out, "\"789\""));
	free(out);
	q = (struct audit_query){ .gaps = true };
	out = run_query(&t, &q, &qr);
	assert_non_null(strstr(out, "\"kind\":\"capture_drop\",\"detail\":{\"events\":7}"));
	free(out);
	/* an altered record is never reported, and the query says so */
	struct audit_verify_result r;
	assert_int_equal(tverify(&t, &r), 0);
	struct seg_copy s;
	seg_load(&t, 1, &s);
	uint8_t *c = malloc(s.len);
	memcpy(c, s.b, s.len);
	uint8_t *p = memmem(c, s.len, "carol", 5);
	assert_non_null(p);
	p[0] = 'k';
	spit(s.path, c, s.len);
	q = (struct audit_query){ .user = "karol" };
	char *o2;
	size_t ol;
	FILE *m = open_memstream(&o2, &ol);
	assert_int_equal(audit_query(t.dir, NULL, &q, m, &qr), 1);
	fclose(m);
	assert_int_equal(qr.matched, 0);
	assert_int_equal(qr.problems, 1);
	free(o2);
	free(c);
	free(s.b);
	tlog_free(&t);
}

static void test_parse_time(void **state)
{
	(void)state;
	uint64_t v, now = 1767225600ull * SEC; /* 2026-01-01T00:00:00Z */

	assert_int_equal(audit_parse_time("2026-01-01T00:00:00Z", 0, &v), 0);
	assert_int_equal(v, now);
	assert_int_equal(audit_parse_time("2026-01-01T01:00:00.5+01:00", 0, &v), 0);
	assert_int_equal(v, now + SEC / 2);
	assert_int_equal(audit_parse_time("2025-12-31T23:00:00-01:00", 0, &v), 0);
	assert_int_equal(v, now);
	assert_int_equal(audit_parse_time("2026-01-01", 0, &v), 0);
	assert_int_equal(v, now);
	assert_int_equal(audit_parse_time("7d", now, &v), 0);
	assert_int_equal(v, now - 7 * 86400 * SEC);
	assert_int_equal(audit_parse_time("90s", now, &v), 0);
	assert_int_equal(v, now - 90 * SEC);
	assert_int_equal(audit_parse_time("now", now, &v), 0);
	assert_int_equal(v, now);
	const char *bad[] = { "", "7x", "2026-13-01", "2026-02-30", "2026-01-01T25:00:00Z", "2026-01-01T00:00:00",
			      "2026-01-01T00:00:00Zjunk", "d", "-1d", "2026-1-1" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (audit_parse_time(bad[i], now, &v) == 0)
			fail_msg("accepted \"%s\"", bad[i]);
}

static void test_key_files(void **state)
{
	(void)state;
	struct tlog t;
	uint8_t k[32];
	char err[256], p[128];

	tlog_init(&t, false);
	snprintf(p, sizeof(p), "%s/raw", t.root);
	uint8_t raw[32];
	for (int i = 0; i < 32; i++)
		raw[i] = (uint8_t)i;
	spit(p, raw, 32);
	assert_int_equal(audit_key_load(p, k, err, sizeof(err)), 0);
	assert_memory_equal(k, raw, 32);
	spit(p, (const uint8_t *)"00112233", 8);
	assert_int_equal(audit_key_load(p, k, err, sizeof(err)), -EINVAL);
	assert_int_equal(audit_key_load("/nonexistent/x", k, err, sizeof(err)), -ENOENT);
	/* a trail whose seal.key is gone cannot be continued silently */
	build(&t, -1, 1, 1);
	snprintf(p, sizeof(p), "%s/seal.key", t.dir);
	unlink(p);
	struct audit_opts o;
	audit_opts_default(&o);
	o.dir = t.dir;
	o.initial_key_path = t.key;
	assert_null(audit__open(&o, t.now, err, sizeof(err)));
	assert_non_null(strstr(err, "seal.key"));
	tlog_free(&t);
}

/* ------------------------------------------------------------------ compression in the worker thread */

/* Ticks until the trail has nothing left to compress (bounded: the worker is checked, not slept on). */
static void wait_compressed(struct audit *a, struct tlog *t)
{
	for (int i = 0; i < 20000 && audit__compress_busy(a); i++) {
		audit__tick(a, t->now);
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	assert_false(audit__compress_busy(a));
}

static bool any_tmp(const struct tlog *t)
{
	DIR *d = opendir(t->dir);
	struct dirent *e;
	bool found = false;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (strstr(e->d_name, ".tmp"))
			found = true;
	closedir(d);
	return found;
}

static void test_compress_thread(void **state)
{
	(void)state;
	for (int enc = 0; enc < 2; enc++) {
		struct tlog t;
		struct audit_opts o;
		struct audit_stats st;
		struct audit_verify_result r;
		char err[512] = "";
		struct stat sb;
		/* plaintext records are compressed while written, one gzip member per MiB: 2.6 MiB segments make
		 * several; encrypted ones by the job from the .log */
		int per = enc ? 200 : 10000;

		tlog_init(&t, enc);
		audit_opts_default(&o);
		o.compress_level = 6;
		o.compress_thread = true;
		struct audit *a = topen_set(&t, &o);
		int n = 0;
		for (int s = 0; s < 4; s++) {
			for (int i = 0; i < per; i++, n++) {
				txn(a, t.now, n % 2 ? "alice" : "bob", "4711", n);
				t.now += SEC / 100000;
			}
			t.now += 11 * SEC;
			audit__tick(a, t.now); /* rotation: the worker finishes (or the job compresses) the sealed segment */
		}
		wait_compressed(a, &t);
		audit__stats(a, &st);
		assert_int_equal(st.segments_compressed, 4);
		assert_int_equal(st.segments_streamed, enc ? 0 : 4);
		assert_int_equal(st.write_errors, 0);
		for (uint64_t i = 0; i < 4; i++) {
			assert_int_equal(stat(seg_path(&t, i, enc ? ".log.gz.aes" : ".log.gz"), &sb), 0);
			assert_int_not_equal(stat(seg_path(&t, i, ".log"), &sb), 0);
		}
		/* a stop right after a rotation: whatever the worker had not finished is dropped with its .tmp and
		 * the .log stays for the next start */
		txn(a, t.now, "carol", "99", n++);
		t.now += 11 * SEC;
		audit__tick(a, t.now);
		audit__close(a, t.now);
		assert_false(any_tmp(&t));
		assert_int_equal(tverify(&t, &r), 0);
		assert_int_equal(r.txns, (uint64_t)n);
		assert_true(r.segments_compressed >= 4);
		/* the next start finishes the work */
		a = audit__open(&o, t.now, err, sizeof(err));
		assert_non_null(a);
		audit__tick(a, t.now);
		wait_compressed(a, &t);
		audit__close(a, t.now);
		assert_int_equal(tverify(&t, &r), 0);
		assert_int_equal(r.txns, (uint64_t)n);
		assert_int_equal(r.segments_compressed, 6);
		assert_false(any_tmp(&t));
		if (!enc) {
			/* a streamed file holds several members; one byte changed anywhere in it is caught */
			size_t len;
			uint8_t *b = slurp(seg_path(&t, 1, ".log.gz"), &len);
			assert_true(len > 4096);
			size_t members = 0;
			for (size_t i = 0; i + 4 <= len; i++)
				members += b[i] == 0x1f && b[i + 1] == 0x8b && b[i + 2] == 8 && b[i + 3] == 2;
			assert_true(members >= 3);
			const size_t at[] = { 0, 11, len / 3, len / 2, len - 5, len - 1 };
			for (size_t k = 0; k < sizeof(at) / sizeof(at[0]); k++) {
				b[at[k]] ^= 0x40;
				spit(seg_path(&t, 1, ".log.gz"), b, len);
				assert_int_equal(tverify(&t, &r), 1);
				b[at[k]] ^= 0x40;
			}
			spit(seg_path(&t, 1, ".log.gz"), b, len);
			assert_int_equal(tverify(&t, &r), 0);
			free(b);
		}
		tlog_free(&t);
	}
}

/* A stream that fails (here its .tmp cannot be created) leaves its segment to the job, which compresses the .log:
 * nothing is lost, the other segments still stream. */
static void test_stream_fallback(void **state)
{
	(void)state;
	struct tlog t;
	struct audit_opts o;
	struct audit_stats st;
	struct audit_verify_result r;
	char blocker[256];
	struct stat sb;

	tlog_init(&t, false);
	audit_opts_default(&o);
	o.compress_thread = true;
	struct audit *a = topen_set(&t, &o);
	/* segment 1's stream file name is taken by a directory */
	snprintf(blocker, sizeof(blocker), "%s.stream.tmp", seg_path(&t, 1, ".log.gz"));
	assert_int_equal(mkdir(blocker, 0700), 0);
	int n = 0;
	for (int s = 0; s < 3; s++) {
		for (int i = 0; i < 300; i++, n++) {
			txn(a, t.now, "alice", "7", n);
			t.now += SEC / 1000;
		}
		t.now += 11 * SEC;
		audit__tick(a, t.now);
	}
	wait_compressed(a, &t);
	audit__stats(a, &st);
	assert_int_equal(st.segments_compressed, 3);
	assert_int_equal(st.segments_streamed, 2);
	assert_int_equal(st.write_errors, 0);
	for (uint64_t i = 0; i < 3; i++)
		assert_int_equal(stat(seg_path(&t, i, ".log.gz"), &sb), 0);
	audit__close(a, t.now);
	assert_int_equal(rmdir(blocker), 0);
	assert_false(any_tmp(&t));
	assert_int_equal(tverify(&t, &r), 0);
	assert_int_equal(r.txns, (uint64_t)n);
	assert_int_equal(r.segments_compressed, 3);
	tlog_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_every_bit_flip_plain),
		cmocka_unit_test(test_every_bit_flip_compressed_encrypted),
		cmocka_unit_test(test_every_bit_flip_gzip),
		cmocka_unit_test(test_modify_record),
		cmocka_unit_test(test_delete_insert_reorder),
		cmocka_unit_test(test_reseal_with_later_key),
		cmocka_unit_test(test_drop_reorder_truncate_segments),
		cmocka_unit_test(test_crash_torn_tail),
		cmocka_unit_test(test_cut_seal_then_restart),
		cmocka_unit_test(test_write_failure),
		cmocka_unit_test(test_compress_thread),
		cmocka_unit_test(test_stream_fallback),
		cmocka_unit_test(test_encrypted),
		cmocka_unit_test(test_retention),
		cmocka_unit_test(test_query),
		cmocka_unit_test(test_parse_time),
		cmocka_unit_test(test_key_files),
	};

	log_level = -1; /* expected errors (write failures) would clutter the output */
	if (getenv("AUDIT_TEST_FILTER"))
		cmocka_set_test_filter(getenv("AUDIT_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
