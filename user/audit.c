/* audit.c — the audit trail: hash-chained, sealed, compressed and encrypted segments (format in audit.h).
 * Not a formatter: bodies arrive as JSON text; not a reporter: cmd_audit.c prints what audit_verify finds.
 */
#include "audit.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <libdeflate.h>
#include <zlib.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "json.h"
#include "log.h"

#define MAGIC "PWA1"
#define KEYSTATE_MAGIC "PWAK0001"
#define AESFILE_MAGIC "PWAGCM01"
#define AESFILE_HDR 36
#define NONCE_LEN 12
#define TAG_LEN 16
#define ENC_OVERHEAD (NONCE_LEN + TAG_LEN)
#define FLAG_ENC 0x01
#define SALT_LEN 16
#define ID_LEN 8
#define KEYSTATE_LEN 80
#define SEAL_KEY_FILE "seal.key"
#define LOCK_FILE "lock"
#define NAME_MAX_LEN 64
#define BUF_FLUSH_BYTES (256u << 10)
#define NS_PER_S 1000000000ull
#define RETRY_NS NS_PER_S
#define RETENTION_EVERY_NS (60 * NS_PER_S)
#define JOB_RETRY_NS (60 * NS_PER_S)
/* a segment file may exceed segment_max_bytes by one record and the seal */
#define SEGMENT_FILE_CAP (AUDIT_MAX_SEGMENT_BYTES + 2 * (AUDIT_MAX_BODY + 1024))

enum seg_kind { SEG_LOG = 1, SEG_GZ = 2, SEG_AES = 4 };

/* ------------------------------------------------------------------ bytes, hex, names */

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
	return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/* out holds 2n+1 bytes */
static void hex_encode(char *out, const uint8_t *in, size_t n)
{
	static const char hx[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hx[in[i] >> 4];
		out[2 * i + 1] = hx[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hex_val(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* s[0..slen) must be exactly 2n hex digits */
static bool hex_decode(const char *s, size_t slen, uint8_t *out, size_t n)
{
	if (slen != 2 * n)
		return false;
	for (size_t i = 0; i < n; i++) {
		int h = hex_val((unsigned char)s[2 * i]), l = hex_val((unsigned char)s[2 * i + 1]);
		if (h < 0 || l < 0)
			return false;
		out[i] = (uint8_t)(h << 4 | l);
	}
	return true;
}

static const char *kind_suffix(unsigned kind)
{
	switch (kind) {
	case SEG_LOG: return ".log";
	case SEG_GZ: return ".log.gz";
	case SEG_AES: return ".log.gz.aes";
	default: return "";
	}
}

static void seg_name(char *out, size_t n, uint64_t idx, unsigned kind)
{
	snprintf(out, n, "seg-%016" PRIu64 "%s", idx, kind_suffix(kind));
}

/* "seg-" 16 digits then a suffix: returns the kind (and idx), 0 for anything else. torn: "seg-N.torn-..." */
static unsigned parse_seg_name(const char *name, uint64_t *idx, bool *torn)
{
	uint64_t v = 0;

	*torn = false;
	if (strncmp(name, "seg-", 4) != 0)
		return 0;
	for (int i = 4; i < 20; i++) {
		if (name[i] < '0' || name[i] > '9')
			return 0;
		v = v * 10 + (uint64_t)(name[i] - '0');
	}
	*idx = v;
	const char *s = name + 20;
	if (!strcmp(s, ".log"))
		return SEG_LOG;
	if (!strcmp(s, ".log.gz"))
		return SEG_GZ;
	if (!strcmp(s, ".log.gz.aes"))
		return SEG_AES;
	if (!strncmp(s, ".torn-", 6))
		*torn = true;
	return 0;
}

static void time_str(char *out, size_t n, uint64_t ns)
{
	json_time_rfc3339(out, n, ns);
}

/* ------------------------------------------------------------------ crypto (all through libcrypto) */

struct crypto {
	EVP_MD *sha;
	EVP_CIPHER *gcm;
	EVP_MD_CTX *md;
	EVP_CIPHER_CTX *cc;
};

static int crypto_init(struct crypto *c)
{
	memset(c, 0, sizeof(*c));
	c->sha = EVP_MD_fetch(NULL, "SHA2-256", NULL);
	c->gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	c->md = EVP_MD_CTX_new();
	c->cc = EVP_CIPHER_CTX_new();
	return c->sha && c->gcm && c->md && c->cc ? 0 : -ENOMEM;
}

static void crypto_free(struct crypto *c)
{
	EVP_MD_CTX_free(c->md);
	EVP_CIPHER_CTX_free(c->cc);
	EVP_MD_free(c->sha);
	EVP_CIPHER_free(c->gcm);
	memset(c, 0, sizeof(*c));
}

/* SHA-256 over up to three parts (NULL/0 parts skipped). */
static int sha3parts(struct crypto *c, const void *a, size_t al, const void *b, size_t bl, const void *d, size_t dl,
		     uint8_t out[AUDIT_HASH_LEN])
{
	if (!EVP_DigestInit_ex2(c->md, c->sha, NULL) || (al && !EVP_DigestUpdate(c->md, a, al)) ||
	    (bl && !EVP_DigestUpdate(c->md, b, bl)) || (dl && !EVP_DigestUpdate(c->md, d, dl)) ||
	    !EVP_DigestFinal_ex(c->md, out, NULL))
		return -EIO;
	return 0;
}

static void hmac256(const uint8_t *key, size_t klen, const uint8_t *msg, size_t n, uint8_t out[AUDIT_HASH_LEN])
{
	unsigned int ol = AUDIT_HASH_LEN;

	if (!HMAC(EVP_sha256(), key, (int)klen, msg, n, out, &ol))
		memset(out, 0, AUDIT_HASH_LEN);
}

/* k[n+1] = SHA-256(k[n]); the old value is overwritten in place. */
static void key_next(struct crypto *c, uint8_t k[AUDIT_KEY_LEN])
{
	uint8_t t[AUDIT_HASH_LEN];

	sha3parts(c, k, AUDIT_KEY_LEN, NULL, 0, NULL, 0, t);
	memcpy(k, t, AUDIT_KEY_LEN);
	OPENSSL_cleanse(t, sizeof(t));
}

static void key_id(struct crypto *c, const char *label, const uint8_t k[AUDIT_KEY_LEN], uint8_t id[ID_LEN])
{
	uint8_t t[AUDIT_HASH_LEN];

	sha3parts(c, label, strlen(label), k, AUDIT_KEY_LEN, NULL, 0, t);
	memcpy(id, t, ID_LEN);
}

static void segment_key(const uint8_t ek[AUDIT_KEY_LEN], uint64_t seg, const uint8_t salt[SALT_LEN],
			uint8_t out[AUDIT_KEY_LEN])
{
	static const char label[] = "phiwatch-audit-record-key-v1";
	uint8_t m[sizeof(label) - 1 + 8 + SALT_LEN];

	memcpy(m, label, sizeof(label) - 1);
	put_le64(m + sizeof(label) - 1, seg);
	memcpy(m + sizeof(label) - 1 + 8, salt, SALT_LEN);
	hmac256(ek, AUDIT_KEY_LEN, m, sizeof(m), out);
}

static void seal_mac(const uint8_t k[AUDIT_KEY_LEN], uint64_t seg, uint64_t first_seq, uint64_t seal_seq,
		     const uint8_t head[AUDIT_HASH_LEN], uint8_t out[AUDIT_HASH_LEN])
{
	static const char label[] = "phiwatch-audit-seal-v1";
	uint8_t m[sizeof(label) - 1 + 24 + AUDIT_HASH_LEN];
	size_t o = sizeof(label) - 1;

	memcpy(m, label, o);
	put_le64(m + o, seg);
	put_le64(m + o + 8, first_seq);
	put_le64(m + o + 16, seal_seq);
	memcpy(m + o + 24, head, AUDIT_HASH_LEN);
	hmac256(k, AUDIT_KEY_LEN, m, sizeof(m), out);
}

/* 0, or -EBADMSG when the tag does not authenticate (out then holds garbage). */
static int gcm_decrypt(struct crypto *c, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
		       const uint8_t *in, size_t n, uint8_t *out, const uint8_t *tag)
{
	int l;

	if (!EVP_DecryptInit_ex(c->cc, c->gcm, NULL, key, nonce) ||
	    (aadlen && !EVP_DecryptUpdate(c->cc, NULL, &l, aad, (int)aadlen)) ||
	    (n && !EVP_DecryptUpdate(c->cc, out, &l, in, (int)n)) ||
	    !EVP_CIPHER_CTX_ctrl(c->cc, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)tag))
		return -EIO;
	if (EVP_DecryptFinal_ex(c->cc, out + n, &l) <= 0)
		return -EBADMSG;
	return 0;
}

/* ------------------------------------------------------------------ growable byte buffer */

struct bbuf {
	uint8_t *p;
	size_t len, cap;
};

static int bbuf_reserve(struct bbuf *b, size_t extra)
{
	if (b->len + extra <= b->cap)
		return 0;
	size_t ncap = b->cap ? b->cap : 4096;
	while (ncap < b->len + extra)
		ncap *= 2;
	uint8_t *np = realloc(b->p, ncap);
	if (!np)
		return -ENOMEM;
	b->p = np;
	b->cap = ncap;
	return 0;
}

static void bbuf_free(struct bbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* ------------------------------------------------------------------ files */

static int write_full(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t w = write(fd, b, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -ENOSPC;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Reads all of dfd/name (a regular file of at most cap bytes; prefix > 0: only its first prefix bytes). */
static int read_all(int dfd, const char *name, size_t cap, size_t prefix, uint8_t **out, size_t *len)
{
	struct stat st;
	int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	*out = NULL;
	*len = 0;
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		int e = S_ISREG(st.st_mode) ? -errno : -EINVAL;
		close(fd);
		return e;
	}
	size_t want = (size_t)st.st_size;
	if ((uint64_t)st.st_size > cap && !prefix) {
		close(fd);
		return -EFBIG;
	}
	if (prefix && want > prefix)
		want = prefix;
	uint8_t *p = malloc(want ? want : 1);
	if (!p) {
		close(fd);
		return -ENOMEM;
	}
	size_t got = 0;
	while (got < want) {
		ssize_t r = read(fd, p + got, want - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	*out = p;
	*len = got;
	return 0;
}

/* ------------------------------------------------------------------ keys */

int audit_key_load(const char *path, uint8_t key[AUDIT_KEY_LEN], char *err, size_t errlen)
{
	uint8_t *p;
	size_t n;
	int e = read_all(AT_FDCWD, path, 4096, 0, &p, &n);

	if (e) {
		snprintf(err, errlen, "%s: %s", path, e == -EFBIG ? "too large for a key file" : strerror(-e));
		return e;
	}
	size_t t = n;
	while (t && (p[t - 1] == '\n' || p[t - 1] == '\r'))
		t--;
	if (t == 2 * AUDIT_KEY_LEN && hex_decode((const char *)p, t, key, AUDIT_KEY_LEN)) {
		e = 0;
	} else if (n == AUDIT_KEY_LEN) {
		memcpy(key, p, AUDIT_KEY_LEN);
		e = 0;
	} else {
		snprintf(err, errlen, "%s: not a key (want 32 raw bytes or 64 hex digits, got %zu bytes)", path, n);
		e = -EINVAL;
	}
	OPENSSL_cleanse(p, n);
	free(p);
	return e;
}

static int fsync_dir_of(const char *path)
{
	char d[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 1;

	if (n >= sizeof(d))
		return -ENAMETOOLONG;
	if (slash) {
		memcpy(d, path, n ? n : 1);
		d[n ? n : 1] = '\0';
	} else {
		d[0] = '.';
		d[1] = '\0';
	}
	int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int e = fsync(fd) ? -errno : 0;
	close(fd);
	return e;
}

/* Writes k0 (hex) to a new file, 0600, refusing to follow a symlink or replace anything. */
static int initial_key_write(const char *path, const uint8_t k[AUDIT_KEY_LEN])
{
	char hx[2 * AUDIT_KEY_LEN + 2];
	int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);

	if (fd < 0)
		return -errno;
	hex_encode(hx, k, AUDIT_KEY_LEN);
	hx[2 * AUDIT_KEY_LEN] = '\n';
	int e = write_full(fd, hx, 2 * AUDIT_KEY_LEN + 1);
	if (!e && fsync(fd) != 0)
		e = -errno;
	close(fd);
	OPENSSL_cleanse(hx, sizeof(hx));
	if (e) {
		unlink(path);
		return e;
	}
	return fsync_dir_of(path);
}

static void keystate_encode(struct crypto *c, uint8_t b[KEYSTATE_LEN], uint64_t n, const uint8_t k[AUDIT_KEY_LEN])
{
	memset(b, 0, KEYSTATE_LEN);
	memcpy(b, KEYSTATE_MAGIC, 8);
	put_le64(b + 8, n);
	memcpy(b + 16, k, AUDIT_KEY_LEN);
	sha3parts(c, b, 48, NULL, 0, NULL, 0, b + 48);
}

/* -ENOENT when absent, -EBADMSG when damaged. */
static int keystate_read(struct crypto *c, int dfd, uint64_t *n, uint8_t k[AUDIT_KEY_LEN])
{
	uint8_t *p, chk[AUDIT_HASH_LEN];
	size_t len;
	int e = read_all(dfd, SEAL_KEY_FILE, 4096, 0, &p, &len);

	if (e)
		return e;
	e = -EBADMSG;
	if (len == KEYSTATE_LEN && !memcmp(p, KEYSTATE_MAGIC, 8)) {
		sha3parts(c, p, 48, NULL, 0, NULL, 0, chk);
		if (!CRYPTO_memcmp(chk, p + 48, AUDIT_HASH_LEN)) {
			*n = get_le64(p + 8);
			memcpy(k, p + 16, AUDIT_KEY_LEN);
			e = 0;
		}
	}
	OPENSSL_cleanse(p, len);
	free(p);
	return e;
}

/* Replaces seal.key atomically, then zeroes the replaced inode through a descriptor opened before the rename:
 * after this returns, k[n-1] is gone from the file system as far as it can be erased. */
static int keystate_write(struct crypto *c, int dfd, uint64_t n, const uint8_t k[AUDIT_KEY_LEN])
{
	static const char tmp[] = SEAL_KEY_FILE ".tmp";
	uint8_t b[KEYSTATE_LEN];
	int e = 0;

	unlinkat(dfd, tmp, 0);
	int fd = openat(dfd, tmp, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	keystate_encode(c, b, n, k);
	e = write_full(fd, b, sizeof(b));
	OPENSSL_cleanse(b, sizeof(b));
	if (!e && fdatasync(fd) != 0)
		e = -errno;
	close(fd);
	if (e) {
		unlinkat(dfd, tmp, 0);
		return e;
	}
	int old = openat(dfd, SEAL_KEY_FILE, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (renameat(dfd, tmp, dfd, SEAL_KEY_FILE) != 0) {
		e = -errno;
		unlinkat(dfd, tmp, 0);
		if (old >= 0)
			close(old);
		return e;
	}
	if (fsync(dfd) != 0)
		e = -errno;
	if (old >= 0) {
		memset(b, 0, sizeof(b));
		if (pwrite(old, b, sizeof(b), 0) != (ssize_t)sizeof(b) || fdatasync(old) != 0)
			log_warn("audit: could not overwrite the previous seal key: %s", strerror(errno));
		close(old);
	}
	return e;
}

/* ------------------------------------------------------------------ record frames */

struct frame {
	uint64_t seq, ts;
	uint8_t type, flags;
	uint32_t stored_len, plain_len;
	const uint8_t *hdr;   /* the 32 stored header bytes */
	const uint8_t *body;  /* stored body */
	const uint8_t *hash;  /* stored hash */
	size_t len;           /* whole frame */
};

enum { FR_OK, FR_END, FR_TORN, FR_BAD };

static void hdr_build(uint8_t h[AUDIT_HDR_LEN], uint32_t stored, uint64_t seq, uint64_t ts, uint8_t type,
		      uint8_t flags, uint32_t plain)
{
	memcpy(h, MAGIC, 4);
	put_le32(h + 4, stored);
	put_le64(h + 8, seq);
	put_le64(h + 16, ts);
	h[24] = type;
	h[25] = flags;
	h[26] = h[27] = 0;
	put_le32(h + 28, plain);
}

/* Structure only (no crypto): FR_END at the end, FR_TORN if the bytes left cannot hold the frame. */
static int frame_parse(const uint8_t *buf, size_t len, size_t off, struct frame *f, char *why, size_t wl)
{
	if (off >= len)
		return FR_END;
	const uint8_t *p = buf + off;
	size_t left = len - off;
	if (left < AUDIT_HDR_LEN) {
		snprintf(why, wl, "%zu bytes, too short for a record header", left);
		return FR_TORN;
	}
	if (memcmp(p, MAGIC, 4) != 0) {
		snprintf(why, wl, "bad record magic");
		return FR_BAD;
	}
	f->hdr = p;
	f->stored_len = get_le32(p + 4);
	f->seq = get_le64(p + 8);
	f->ts = get_le64(p + 16);
	f->type = p[24];
	f->flags = p[25];
	f->plain_len = get_le32(p + 28);
	if (f->plain_len > AUDIT_MAX_BODY) {
		snprintf(why, wl, "body length %u over the %u-byte limit", f->plain_len, AUDIT_MAX_BODY);
		return FR_BAD;
	}
	if ((f->flags & ~FLAG_ENC) || p[26] || p[27]) {
		snprintf(why, wl, "reserved header bits set");
		return FR_BAD;
	}
	if (f->stored_len != f->plain_len + (f->flags & FLAG_ENC ? ENC_OVERHEAD : 0)) {
		snprintf(why, wl, "stored length %u does not match plain length %u", f->stored_len, f->plain_len);
		return FR_BAD;
	}
	f->len = AUDIT_HDR_LEN + (size_t)f->stored_len + AUDIT_HASH_LEN;
	if (left < f->len) {
		snprintf(why, wl, "%zu bytes left for a %zu-byte record", left, f->len);
		return FR_TORN;
	}
	f->body = p + AUDIT_HDR_LEN;
	f->hash = f->body + f->stored_len;
	return FR_OK;
}

/* The open segment's record cipher: keyed once per segment; nonce = a random base (drawn at each open of the
 * segment) with a counter in its low 64 bits, so nonces never repeat under one segment key, across restarts too. */
struct recenc {
	EVP_CIPHER_CTX *cc;
	uint8_t base[NONCE_LEN];
	uint64_t ctr;
};

static int recenc_setup(struct recenc *re, struct crypto *c, const uint8_t key[AUDIT_KEY_LEN])
{
	if (!re->cc && !(re->cc = EVP_CIPHER_CTX_new()))
		return -ENOMEM;
	if (!EVP_EncryptInit_ex(re->cc, c->gcm, NULL, key, NULL) || RAND_bytes(re->base, NONCE_LEN) != 1)
		return -EIO;
	re->ctr = 0;
	return 0;
}

/* Appends one frame to b and computes its chain hash (prev -> out_hash). re NULL: plaintext body. */
static int frame_append(struct crypto *c, struct bbuf *b, uint64_t seq, uint64_t ts, uint8_t type, const void *body,
			size_t len, struct recenc *re, const uint8_t prev[AUDIT_HASH_LEN],
			uint8_t out_hash[AUDIT_HASH_LEN])
{
	uint8_t hp[AUDIT_HDR_LEN];
	size_t stored = len + (re ? ENC_OVERHEAD : 0);

	if (len > AUDIT_MAX_BODY)
		return -E2BIG;
	if (bbuf_reserve(b, AUDIT_HDR_LEN + stored + AUDIT_HASH_LEN))
		return -ENOMEM;
	hdr_build(hp, (uint32_t)len, seq, ts, type, 0, (uint32_t)len);
	if (sha3parts(c, prev, AUDIT_HASH_LEN, hp, AUDIT_HDR_LEN, body, len, out_hash))
		return -EIO;
	uint8_t *p = b->p + b->len;
	if (!re) {
		memcpy(p, hp, AUDIT_HDR_LEN);
		if (len)
			memcpy(p + AUDIT_HDR_LEN, body, len);
	} else {
		uint8_t *nonce = p + AUDIT_HDR_LEN, *ct = nonce + NONCE_LEN;
		int l;
		hdr_build(p, (uint32_t)stored, seq, ts, type, FLAG_ENC, (uint32_t)len);
		memcpy(nonce, re->base, NONCE_LEN);
		for (int i = 0; i < 8; i++)
			nonce[4 + i] ^= (uint8_t)(re->ctr >> (8 * i));
		re->ctr++;
		if (!EVP_EncryptInit_ex(re->cc, NULL, NULL, NULL, nonce) ||
		    !EVP_EncryptUpdate(re->cc, NULL, &l, p, AUDIT_HDR_LEN) ||
		    (len && !EVP_EncryptUpdate(re->cc, ct, &l, body, (int)len)) ||
		    !EVP_EncryptFinal_ex(re->cc, ct + len, &l) ||
		    !EVP_CIPHER_CTX_ctrl(re->cc, EVP_CTRL_GCM_GET_TAG, TAG_LEN, ct + len))
			return -EIO;
	}
	memcpy(p + AUDIT_HDR_LEN + stored, out_hash, AUDIT_HASH_LEN);
	b->len += AUDIT_HDR_LEN + stored + AUDIT_HASH_LEN;
	return 0;
}

/* ------------------------------------------------------------------ JSON bodies */

static bool j_u64(const cJSON *o, const char *k, uint64_t *v)
{
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
	double d;

	if (!cJSON_IsNumber(x))
		return false;
	d = x->valuedouble;
	if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(uint64_t)d)
		return false;
	*v = (uint64_t)d;
	return true;
}

static bool j_hex(const cJSON *o, const char *k, uint8_t *out, size_t n)
{
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsString(x) && hex_decode(x->valuestring, strlen(x->valuestring), out, n);
}

static const char *j_str(const cJSON *o, const char *k)
{
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsString(x) ? x->valuestring : NULL;
}

static void jb_hex(struct jbuf *b, const char *key, const uint8_t *v, size_t n)
{
	char hx[2 * AUDIT_HASH_LEN + 1];

	hex_encode(hx, v, n);
	json_cstr(b, key, hx);
}

struct open_info {
	uint64_t segment;
	uint8_t key_id[ID_LEN];
	bool enc;
	uint8_t enc_key_id[ID_LEN];
	uint8_t salt[SALT_LEN];
	uint8_t prev_head[AUDIT_HASH_LEN];
	bool has_prev_last;
	uint64_t prev_last_seq;
};

static int parse_open(const uint8_t *body, size_t len, struct open_info *oi, char *why, size_t wl)
{
	cJSON *j = cJSON_ParseWithLength((const char *)body, len);
	uint64_t fmt;
	int rc = -EINVAL;

	memset(oi, 0, sizeof(*oi));
	if (!cJSON_IsObject(j)) {
		snprintf(why, wl, "OPEN body is not a JSON object");
		goto out;
	}
	if (!j_u64(j, "format", &fmt) || fmt != 1) {
		snprintf(why, wl, "OPEN record: unknown format");
		goto out;
	}
	if (!j_u64(j, "segment", &oi->segment) || !j_hex(j, "key_id", oi->key_id, ID_LEN) ||
	    !j_hex(j, "prev_head", oi->prev_head, AUDIT_HASH_LEN)) {
		snprintf(why, wl, "OPEN record lacks segment, key_id or prev_head");
		goto out;
	}
	const cJSON *eid = cJSON_GetObjectItemCaseSensitive(j, "enc_key_id");
	if (cJSON_IsString(eid)) {
		if (!j_hex(j, "enc_key_id", oi->enc_key_id, ID_LEN) || !j_hex(j, "salt", oi->salt, SALT_LEN)) {
			snprintf(why, wl, "OPEN record: bad enc_key_id or salt");
			goto out;
		}
		oi->enc = true;
	} else if (!cJSON_IsNull(eid)) {
		snprintf(why, wl, "OPEN record lacks enc_key_id");
		goto out;
	}
	const cJSON *pl = cJSON_GetObjectItemCaseSensitive(j, "prev_last_seq");
	if (cJSON_IsNull(pl)) {
		oi->has_prev_last = false;
	} else if (j_u64(j, "prev_last_seq", &oi->prev_last_seq)) {
		oi->has_prev_last = true;
	} else {
		snprintf(why, wl, "OPEN record: bad prev_last_seq");
		goto out;
	}
	rc = 0;
out:
	cJSON_Delete(j);
	return rc;
}

/* ------------------------------------------------------------------ walking a segment's records */

struct rec {
	uint64_t seq, ts, index;
	uint8_t type;
	const uint8_t *body;  /* plaintext, valid until the next record */
	size_t len;
	size_t off;           /* frame offset in the segment */
	const uint8_t *hash;
	const uint8_t *prev;  /* hash of the record before */
};

typedef int (*rec_cb)(void *ctx, const struct rec *r, struct audit_verify_result *vr);

struct walker {
	struct crypto *c;
	bool frames_only;       /* structure, sequence and links only: record hashes are not recomputed */
	const uint8_t *k0;      /* NULL: key ids not checked */
	uint8_t k0_id[ID_LEN];
	const uint8_t *ek;      /* NULL: encrypted records cannot be read */
	uint8_t ek_id[ID_LEN];
	bool have_prev;         /* prev/next_seq known from the previous segment */
	uint8_t prev[AUDIT_HASH_LEN];
	uint64_t next_seq;
	/* the segment being walked */
	struct open_info oi;
	uint8_t seg_key[AUDIT_KEY_LEN];
	bool seg_key_ok;
	uint64_t index;         /* records accepted */
	size_t good_end;        /* offset after the last accepted record */
	bool sealed;
	uint8_t last_type, prev_type;
	uint64_t open_ts, first_seq;
	struct bbuf scratch;
};

static void walker_init(struct walker *w, struct crypto *c, const uint8_t *k0, const uint8_t *ek)
{
	memset(w, 0, sizeof(*w));
	w->c = c;
	w->k0 = k0;
	w->ek = ek;
	if (k0)
		key_id(c, "phiwatch-audit-key-id", k0, w->k0_id);
	if (ek)
		key_id(c, "phiwatch-audit-enc-key-id", ek, w->ek_id);
}

static void walker_free(struct walker *w)
{
	if (w->scratch.p)
		OPENSSL_cleanse(w->scratch.p, w->scratch.cap);
	bbuf_free(&w->scratch);
	OPENSSL_cleanse(w->seg_key, sizeof(w->seg_key));
}

static void __attribute__((format(printf, 3, 4))) vfail(struct audit_verify_result *vr, enum audit_fail code,
							 const char *fmt, ...)
{
	va_list ap;

	vr->fail = code;
	va_start(ap, fmt);
	vsnprintf(vr->reason, sizeof(vr->reason), fmt, ap);
	va_end(ap);
}

/* Names the failing record; torn_bytes: from it to the end of the segment (what a restart cuts). */
static int walk_fail_at(struct audit_verify_result *vr, size_t len, uint64_t seg, uint64_t index, uint64_t seq,
			size_t off)
{
	vr->torn_bytes = len - off;
	vr->segment = seg;
	vr->record = (int64_t)index;
	vr->seq = seq;
	vr->offset = off;
	return 1;
}

/* Checks the records of segment seg in buf (plaintext-frame form or .log as written): framing, seq, hash chain,
 * the OPEN record, decryption. cb (may be NULL) sees each good record and may fail it. Returns 0 when every byte
 * was a good record, 1 at the first failure (vr filled: code, location, reason), -errno on internal failure.
 * w->good_end, w->prev, w->next_seq, w->index, w->sealed describe the good prefix either way. */
static int walk_segment(struct walker *w, uint64_t seg, const uint8_t *buf, size_t len, rec_cb cb, void *ctx,
			struct audit_verify_result *vr)
{
	char why[sizeof(((struct audit_verify_result *)0)->reason)];
	size_t off = 0;

	w->index = 0;
	w->good_end = 0;
	w->sealed = false;
	w->seg_key_ok = false;
	w->last_type = w->prev_type = 0;
	for (;;) {
		struct frame f;
		uint8_t hp[AUDIT_HDR_LEN], h[AUDIT_HASH_LEN];
		const uint8_t *plain;
		int st = frame_parse(buf, len, off, &f, why, sizeof(why));

		if (st == FR_END)
			return 0;
		if (st == FR_TORN) {
			vfail(vr, AUDIT_F_TORN, "torn tail: the last %zu bytes do not form a whole record (%s)", len - off,
			      why);
			return walk_fail_at(vr, len, seg, w->index, w->next_seq, off);
		}
		if (st == FR_BAD && !memmem(buf + off + 1, len - off - 1, MAGIC, 4)) {
			/* nothing that looks like a record follows: a damaged tail, as a power loss leaves */
			vfail(vr, AUDIT_F_TORN, "torn tail: the last %zu bytes hold no whole record (%s)", len - off, why);
			return walk_fail_at(vr, len, seg, w->index, w->next_seq, off);
		}
		if (st == FR_BAD) {
			vfail(vr, AUDIT_F_FRAME, "%s", why);
			return walk_fail_at(vr, len, seg, w->index, w->next_seq, off);
		}
		if (w->sealed) {
			vfail(vr, AUDIT_F_AFTER_SEAL, "%s record after the seal", audit_rec_type_name(f.type));
			return walk_fail_at(vr, len, seg, w->index, f.seq, off);
		}
		if (w->index == 0) {
			if (f.type != AUDIT_REC_OPEN || f.flags) {
				vfail(vr, AUDIT_F_OPEN, "first record is %s, not the segment's open record",
				      audit_rec_type_name(f.type));
				return walk_fail_at(vr, len, seg, 0, f.seq, off);
			}
			if (parse_open(f.body, f.plain_len, &w->oi, why, sizeof(why))) {
				/* an altered OPEN body is first a hash failure; say so when the hash is wrong */
				if (w->have_prev) {
					hdr_build(hp, f.plain_len, f.seq, f.ts, f.type, 0, f.plain_len);
					sha3parts(w->c, w->prev, AUDIT_HASH_LEN, hp, AUDIT_HDR_LEN, f.body, f.plain_len, h);
					if (CRYPTO_memcmp(h, f.hash, AUDIT_HASH_LEN)) {
						vfail(vr, AUDIT_F_HASH, "hash mismatch: record altered");
						return walk_fail_at(vr, len, seg, 0, f.seq, off);
					}
				}
				vfail(vr, AUDIT_F_OPEN, "%s", why);
				return walk_fail_at(vr, len, seg, 0, f.seq, off);
			}
			if (w->oi.segment != seg) {
				vfail(vr, AUDIT_F_OPEN,
				      "open record names segment %" PRIu64 ": file renamed or segments reordered",
				      w->oi.segment);
				return walk_fail_at(vr, len, seg, 0, f.seq, off);
			}
			if (w->have_prev) {
				if (f.seq != w->next_seq) {
					vfail(vr, AUDIT_F_LINK,
					      "segment starts at seq %" PRIu64 ", the previous one ended at %" PRIu64,
					      f.seq, w->next_seq - 1);
					return walk_fail_at(vr, len, seg, 0, f.seq, off);
				}
				if (CRYPTO_memcmp(w->oi.prev_head, w->prev, AUDIT_HASH_LEN)) {
					vfail(vr, AUDIT_F_LINK, "does not chain to the previous segment's last record");
					return walk_fail_at(vr, len, seg, 0, f.seq, off);
				}
			} else {
				static const uint8_t zero[AUDIT_HASH_LEN];
				bool ok = w->oi.has_prev_last ? f.seq == w->oi.prev_last_seq + 1
							      : f.seq == 0 && !memcmp(w->oi.prev_head, zero, AUDIT_HASH_LEN);
				if (!ok) {
					vfail(vr, AUDIT_F_OPEN, "open record's seq does not follow its prev_last_seq");
					return walk_fail_at(vr, len, seg, 0, f.seq, off);
				}
				memcpy(w->prev, w->oi.prev_head, AUDIT_HASH_LEN);
				w->next_seq = f.seq;
				w->have_prev = true;
			}
			w->open_ts = f.ts;
			w->first_seq = f.seq;
		} else if (f.seq != w->next_seq) {
			struct frame g;
			if (f.seq < w->next_seq) {
				vfail(vr, AUDIT_F_SEQ_BACK,
				      "seq %" PRIu64 " where %" PRIu64 " was expected: a record was inserted or duplicated",
				      f.seq, w->next_seq);
			} else if (frame_parse(buf, len, off + f.len, &g, why, sizeof(why)) == FR_OK &&
				   g.seq == w->next_seq) {
				vfail(vr, AUDIT_F_REORDERED,
				      "seq %" PRIu64 " before seq %" PRIu64 ": records reordered", f.seq, g.seq);
			} else {
				vfail(vr, AUDIT_F_SEQ_GAP,
				      "seq %" PRIu64 " where %" PRIu64 " was expected: %" PRIu64 " record(s) deleted",
				      f.seq, w->next_seq, f.seq - w->next_seq);
			}
			return walk_fail_at(vr, len, seg, w->index, f.seq, off);
		}
		plain = f.body;
		if (f.flags & FLAG_ENC) {
			if (!w->seg_key_ok) {
				char id[2 * ID_LEN + 1] = "none";
				if (w->oi.enc)
					hex_encode(id, w->oi.enc_key_id, ID_LEN);
				if (!w->oi.enc)
					vfail(vr, AUDIT_F_FRAME, "encrypted record in a segment opened without encryption");
				else if (!w->ek)
					vfail(vr, AUDIT_F_NEED_ENC_KEY, "records are encrypted (key id %s): pass --enc-key", id);
				else
					vfail(vr, AUDIT_F_NEED_ENC_KEY, "records are encrypted with another key (key id %s)",
					      id);
				return walk_fail_at(vr, len, seg, w->index, f.seq, off);
			}
			if (bbuf_reserve(&w->scratch, f.plain_len + 16))
				return -ENOMEM;
			if (gcm_decrypt(w->c, w->seg_key, f.body, f.hdr, AUDIT_HDR_LEN, f.body + NONCE_LEN, f.plain_len,
					w->scratch.p, f.body + NONCE_LEN + f.plain_len)) {
				vfail(vr, AUDIT_F_DECRYPT, "body does not authenticate (AES-GCM tag): record altered");
				return walk_fail_at(vr, len, seg, w->index, f.seq, off);
			}
			plain = w->scratch.p;
		}
		hdr_build(hp, f.plain_len, f.seq, f.ts, f.type, 0, f.plain_len);
		if (!w->frames_only && sha3parts(w->c, w->prev, AUDIT_HASH_LEN, hp, AUDIT_HDR_LEN, plain, f.plain_len, h))
			return -EIO;
		if (!w->frames_only && CRYPTO_memcmp(h, f.hash, AUDIT_HASH_LEN)) {
			vfail(vr, AUDIT_F_HASH, "hash mismatch: record altered");
			return walk_fail_at(vr, len, seg, w->index, f.seq, off);
		}
		if (f.type < AUDIT_REC_OPEN || f.type > AUDIT_REC_SEAL || (w->index > 0 && f.type == AUDIT_REC_OPEN)) {
			vfail(vr, AUDIT_F_RECORD, "unexpected record type %u", f.type);
			return walk_fail_at(vr, len, seg, w->index, f.seq, off);
		}
		if (w->index == 0) {
			if (w->k0 && CRYPTO_memcmp(w->oi.key_id, w->k0_id, ID_LEN)) {
				char a[2 * ID_LEN + 1], b[2 * ID_LEN + 1];
				hex_encode(a, w->k0_id, ID_LEN);
				hex_encode(b, w->oi.key_id, ID_LEN);
				vfail(vr, AUDIT_F_KEY_ID,
				      "the initial key given (id %s) is not this log's (id %s): wrong --key, or the log was "
				      "re-created",
				      a, b);
				return walk_fail_at(vr, len, seg, 0, f.seq, off);
			}
			if (w->oi.enc && w->ek && !CRYPTO_memcmp(w->oi.enc_key_id, w->ek_id, ID_LEN)) {
				segment_key(w->ek, seg, w->oi.salt, w->seg_key);
				w->seg_key_ok = true;
			}
		}
		/* cb may move bytes of buf (re-framing in place): keep the hash */
		uint8_t fh[AUDIT_HASH_LEN];
		memcpy(fh, f.hash, AUDIT_HASH_LEN);
		struct rec r = { .seq = f.seq, .ts = f.ts, .index = w->index, .type = f.type, .body = plain,
				 .len = f.plain_len, .off = off, .hash = fh, .prev = w->prev };
		if (cb) {
			int e = cb(ctx, &r, vr);
			if (e < 0)
				return e;
			if (e > 0)
				return walk_fail_at(vr, len, seg, w->index, f.seq, off);
		}
		memcpy(w->prev, fh, AUDIT_HASH_LEN);
		w->next_seq = f.seq + 1;
		w->index++;
		off += f.len;
		w->good_end = off;
		w->prev_type = w->last_type;
		w->last_type = f.type;
		if (f.type == AUDIT_REC_SEAL)
			w->sealed = true;
	}
}

const char *audit_rec_type_name(int type)
{
	static const char *const n[] = { "?",   "open", "start",   "stop",   "restart", "txn",
					 "gap", "note", "segfile", "delete", "seal" };

	return type >= 0 && type <= AUDIT_REC_SEAL ? n[type] : "?";
}

/* ------------------------------------------------------------------ reading segment files */

/* Inflates a gzip stream. prefix > 0: stop after that much output, and running out of input is not an error. */
static int gunzip(const uint8_t *in, size_t inlen, size_t cap, size_t prefix, struct bbuf *out, char *why, size_t wl)
{
	z_stream z;
	int zr, rc = 1;

	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, 31) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)in;
	out->len = 0;
	for (;;) {
		size_t chunk = inlen < (1u << 20) ? 65536 : (1u << 20);
		if (bbuf_reserve(out, chunk)) {
			rc = -ENOMEM;
			break;
		}
		size_t in_left = inlen - (size_t)((const uint8_t *)z.next_in - in);
		z.avail_in = in_left > UINT_MAX ? UINT_MAX : (uInt)in_left;
		z.next_out = out->p + out->len;
		z.avail_out = (uInt)(out->cap - out->len);
		zr = inflate(&z, Z_NO_FLUSH);
		out->len = out->cap - z.avail_out;
		if (prefix && out->len >= prefix) {
			rc = 0;
			break;
		}
		if (zr == Z_STREAM_END) {
			/* a file may hold several members (segments compressed while written: one per MiB) */
			if (prefix || (const uint8_t *)z.next_in == in + inlen) {
				rc = 0;
				break;
			}
			if (inflateReset(&z) != Z_OK) {
				snprintf(why, wl, "gzip: cannot restart after a member");
				break;
			}
			continue;
		}
		if (zr == Z_BUF_ERROR && z.avail_in == 0) {
			if (prefix)
				rc = 0;
			else
				snprintf(why, wl, "gzip stream truncated");
			break;
		}
		if (zr != Z_OK && zr != Z_BUF_ERROR) {
			snprintf(why, wl, "gzip: %s", z.msg ? z.msg : "data error");
			break;
		}
		if (out->len > cap) {
			snprintf(why, wl, "decompresses to more than %zu bytes", cap);
			break;
		}
	}
	inflateEnd(&z);
	return rc;
}

/* Reads segment idx from its file of the given kind into out as plaintext frames (a .log as written).
 * file_sha/file_bytes: digest and size of the file itself (NULL: not computed). prefix > 0: only the first bytes,
 * not authenticated (to copy OPEN fields into a DELETE record). Returns 0; 1 with vr->fail/reason set when the
 * file is unreadable, damaged or needs a key; -ENOMEM. */
static int load_segment(int dfd, uint64_t idx, unsigned kind, struct crypto *c, const uint8_t *ek, size_t prefix,
			struct bbuf *out, uint8_t *file_sha, uint64_t *file_bytes, struct audit_verify_result *vr)
{
	char name[NAME_MAX_LEN], why[200] = "";
	uint8_t *raw = NULL;
	size_t rlen = 0;
	int rc;

	seg_name(name, sizeof(name), idx, kind);
	size_t rprefix = prefix ? (kind == SEG_LOG ? prefix : prefix + 65536) : 0;
	rc = read_all(dfd, name, SEGMENT_FILE_CAP, rprefix, &raw, &rlen);
	if (rc) {
		if (rc == -ENOMEM)
			return rc;
		vfail(vr, AUDIT_F_IO, "%s: %s", name, rc == -EFBIG ? "larger than any segment can be" : strerror(-rc));
		return 1;
	}
	if (file_sha)
		sha3parts(c, raw, rlen, NULL, 0, NULL, 0, file_sha);
	if (file_bytes)
		*file_bytes = rlen;
	if (kind == SEG_LOG) {
		bbuf_free(out);
		out->p = raw;
		out->len = out->cap = rlen;
		return 0;
	}
	const uint8_t *gz = raw;
	size_t gzlen = rlen, declen = 0;
	uint8_t *dec = NULL;
	if (kind == SEG_AES) {
		uint8_t eid[ID_LEN];
		rc = 1;
		if (rlen < AESFILE_HDR + (prefix ? 0 : TAG_LEN) || memcmp(raw, AESFILE_MAGIC, 8)) {
			vfail(vr, AUDIT_F_DECRYPT, "not an encrypted segment file (bad header)");
			goto out;
		}
		if (get_le64(raw + 8) != idx) {
			vfail(vr, AUDIT_F_DECRYPT, "encrypted file is segment %" PRIu64 ", named %" PRIu64,
			      get_le64(raw + 8), idx);
			goto out;
		}
		if (ek)
			key_id(c, "phiwatch-audit-enc-key-id", ek, eid);
		if (!ek || CRYPTO_memcmp(eid, raw + 16, ID_LEN)) {
			char id[2 * ID_LEN + 1];
			hex_encode(id, raw + 16, ID_LEN);
			vfail(vr, AUDIT_F_NEED_ENC_KEY, "encrypted (key id %s): %s", id,
			      ek ? "the --enc-key given is another key" : "pass --enc-key");
			goto out;
		}
		size_t ctlen = rlen - AESFILE_HDR - (prefix ? 0 : TAG_LEN);
		dec = malloc(ctlen + 16);
		declen = ctlen + 16;
		if (!dec) {
			rc = -ENOMEM;
			goto out;
		}
		if (prefix) {
			/* unauthenticated prefix: the caller only copies fields that verify checks later */
			int l;
			if (!EVP_DecryptInit_ex(c->cc, c->gcm, NULL, ek, raw + 24) ||
			    !EVP_DecryptUpdate(c->cc, NULL, &l, raw, AESFILE_HDR) ||
			    (ctlen && !EVP_DecryptUpdate(c->cc, dec, &l, raw + AESFILE_HDR, (int)ctlen))) {
				vfail(vr, AUDIT_F_DECRYPT, "decryption failed");
				goto out;
			}
		} else if (gcm_decrypt(c, ek, raw + 24, raw, AESFILE_HDR, raw + AESFILE_HDR, ctlen, dec,
				       raw + rlen - TAG_LEN)) {
			vfail(vr, AUDIT_F_DECRYPT, "file does not authenticate (AES-GCM tag): altered or truncated");
			goto out;
		}
		gz = dec;
		gzlen = ctlen;
	}
	rc = gunzip(gz, gzlen, SEGMENT_FILE_CAP, prefix, out, why, sizeof(why));
	if (rc == 1)
		vfail(vr, AUDIT_F_DECOMPRESS, "%s", why);
out:
	if (dec) {
		OPENSSL_cleanse(dec, declen);
		free(dec);
	}
	free(raw);
	return rc;
}

/* ------------------------------------------------------------------ directory listing */

struct seg_ent {
	uint64_t idx;
	unsigned kinds;
	unsigned torn;  /* number of .torn files */
};

static int seg_cmp(const void *a, const void *b)
{
	const struct seg_ent *x = a, *y = b;

	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Lists segments (sorted, one entry per index with a bitmask of the files present). */
static int scan_segments(int dfd, struct seg_ent **out, size_t *n)
{
	int fd = dup(dfd);
	DIR *d;
	struct dirent *de;
	struct seg_ent *v = NULL;
	size_t cnt = 0, cap = 0;

	*out = NULL;
	*n = 0;
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	while ((de = readdir(d))) {
		uint64_t idx;
		bool torn;
		unsigned k = parse_seg_name(de->d_name, &idx, &torn);
		if (!k && !torn)
			continue;
		if (cnt == cap) {
			size_t nc = cap ? cap * 2 : 64;
			struct seg_ent *nv = realloc(v, nc * sizeof(*v));
			if (!nv) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
			cap = nc;
		}
		v[cnt++] = (struct seg_ent){ .idx = idx, .kinds = k, .torn = torn };
	}
	closedir(d);
	if (cnt)
		qsort(v, cnt, sizeof(*v), seg_cmp);
	/* merge the files of one index; drop indexes that only have .torn files */
	size_t j = 0;
	for (size_t i = 0; i < cnt;) {
		struct seg_ent e = v[i++];
		while (i < cnt && v[i].idx == e.idx) {
			e.kinds |= v[i].kinds;
			e.torn += v[i].torn;
			i++;
		}
		if (e.kinds)
			v[j++] = e;
	}
	*out = v;
	*n = j;
	return 0;
}

/* ------------------------------------------------------------------ the writer */

struct cjob {
	uint64_t seg;
	unsigned kind;            /* SEG_GZ or SEG_AES */
	int dfd, level;
	uint8_t ek[AUDIT_KEY_LEN], ek_id[ID_LEN];
	struct crypto c;          /* the job's own contexts: it may run in its worker */
	struct bbuf plain;        /* the segment re-framed in plaintext */
	size_t done;              /* plain bytes fed to deflate */
	uint64_t seal_ts;
	struct libdeflate_compressor *ld;
	int fd;
	char tmp[NAME_MAX_LEN], name[NAME_MAX_LEN];
	EVP_CIPHER_CTX *cc;
	EVP_MD_CTX *sha;
	uint64_t out_bytes;
	uint8_t digest[AUDIT_HASH_LEN];
	/* outcome: 2 done, 1 left uncompressed (why), -1 failed (what, err) */
	int result, err;
	const char *what;
	char why[sizeof(((struct audit_verify_result *)0)->reason)];
	/* the worker (compress_thread) */
	pthread_t th;
	bool thread;
	atomic_bool cancel, done_flag;
	uint8_t out[65536];
	uint8_t enc[65536 + 64];
};

struct audit {
	struct audit_opts o;
	char *dir, *key_path, *enc_path;
	int dfd, lockfd, fd;
	struct crypto c;
	uint8_t k[AUDIT_KEY_LEN];  /* k[k_index], the only seal key on the host */
	uint64_t k_index;
	bool k_dirty;              /* seal.key not yet rewritten for k_index */
	uint8_t key_id[ID_LEN];
	bool enc;
	uint8_t ek[AUDIT_KEY_LEN], ek_id[ID_LEN];
	/* the open segment (a->seg is the last segment, open when have_seg) */
	uint64_t seg;
	bool seg_exists, have_seg, seg_enc;
	uint64_t seg_created_ns, seg_first_seq, seg_records;
	struct recenc re;          /* keyed for the open segment when seg_enc */
	uint64_t file_len, file_records;
	/* chain after the last buffered record, and after the last record in the file */
	uint64_t next_seq, file_next_seq;
	uint8_t head[AUDIT_HASH_LEN], file_head[AUDIT_HASH_LEN];
	/* records framed but not yet written */
	struct bbuf buf;
	uint64_t brecords, buncounted, bfirst_ts;
	/* group commit */
	uint64_t now_ns, last_sync_ns, unsynced_file;
	/* write failure being retried */
	int werr;
	bool need_trunc;
	uint64_t lost_pending, lost_from_ns, lost_to_ns, next_retry_ns;
	/* compression queue (sealed segments still .log) and retention */
	uint64_t *pend;
	size_t npend, cpend;
	struct cjob *job;
	struct streamer *sm;       /* compress_thread: segments compressed while written */
	bool sm_failed;
	uint64_t job_retry_ns, next_retention_ns;
	struct audit_stats st;
	struct jbuf jb;
};

void audit_opts_default(struct audit_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->dir = "/var/lib/phiwatch/audit";
	o->initial_key_path = "/var/lib/phiwatch/audit-initial.key";
	o->enc_key_path = NULL;
	o->segment_max_bytes = 64ull << 20;
	o->segment_max_age_s = 86400;
	o->fsync_interval_ms = 1000;
	o->retention_days = 2192;
	o->on_full = AUDIT_FULL_CONTINUE;
	o->compress_level = 1; /* fastest: the trail must keep up with the traffic */
	o->compress_thread = false;
}

static void lost(struct audit *a, uint64_t ts, uint64_t n)
{
	if (!n)
		return;
	if (!a->lost_pending)
		a->lost_from_ns = ts;
	a->lost_to_ns = ts;
	a->lost_pending += n;
	a->st.records_lost += n;
}

/* Frames a record into the buffer and advances the chain. */
static void stream_begin(struct audit *a, uint64_t seg, const void *p, size_t n);
static void stream_push(struct audit *a, const void *p, size_t n);
static void stream_seal(struct audit *a, uint64_t seg, uint64_t ts);
static void stream_free(struct audit *a);
static void stream_abort(struct streamer *s);

static int chain_add(struct audit *a, uint8_t type, uint64_t ts, const void *body, size_t len)
{
	uint8_t h[AUDIT_HASH_LEN];
	size_t before = a->buf.len;
	int e = frame_append(&a->c, &a->buf, a->next_seq, ts, type, body, len, a->seg_enc ? &a->re : NULL,
			     a->head, h);

	if (e) {
		a->buf.len = before;
		return e;
	}
	if (!a->brecords)
		a->bfirst_ts = ts;
	a->brecords++;
	a->seg_records++;
	a->next_seq++;
	memcpy(a->head, h, AUDIT_HASH_LEN);
	a->st.records_written++;
	a->st.last_seq = a->next_seq - 1;
	return 0;
}

/* A write failed: cut the file back to its last whole record (so the segment never holds a partial frame), drop
 * the buffered records (counted lost), rewind the chain to the file, and retry from audit__tick. */
static int fail_write(struct audit *a, int err)
{
	if (a->fd >= 0 && ftruncate(a->fd, (off_t)a->file_len) != 0)
		a->need_trunc = true;
	a->st.write_errors++;
	uint64_t counted = a->brecords - a->buncounted;
	if (!a->werr)
		log_error("audit: writing segment %" PRIu64 " in %s failed: %s; %s", a->seg, a->dir, strerror(err),
			  a->o.on_full == AUDIT_FULL_STOP ? "appends are refused until a retry succeeds"
							  : "records are counted lost and writing is retried");
	lost(a, a->bfirst_ts, counted);
	a->st.records_written -= a->brecords;
	a->next_seq = a->file_next_seq;
	memcpy(a->head, a->file_head, AUDIT_HASH_LEN);
	a->seg_records = a->file_records;
	a->st.last_seq = a->next_seq ? a->next_seq - 1 : 0;
	a->buf.len = 0;
	a->brecords = a->buncounted = 0;
	a->werr = err;
	a->next_retry_ns = a->now_ns + RETRY_NS;
	return -err;
}

static int flush(struct audit *a)
{
	size_t done = 0;

	if (!a->buf.len)
		return 0;
	if (a->fd < 0)
		return fail_write(a, a->werr ? a->werr : EBADF);
	if (a->need_trunc) {
		if (ftruncate(a->fd, (off_t)a->file_len) != 0)
			return fail_write(a, errno);
		a->need_trunc = false;
	}
	while (done < a->buf.len) {
		ssize_t n = pwrite(a->fd, a->buf.p + done, a->buf.len - done, (off_t)(a->file_len + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return fail_write(a, n < 0 ? errno : ENOSPC);
		done += (size_t)n;
	}
	stream_push(a, a->buf.p, a->buf.len);
	a->file_len += a->buf.len;
	a->st.bytes_written += a->buf.len;
	a->file_records += a->brecords;
	a->unsynced_file += a->brecords;
	a->file_next_seq = a->next_seq;
	memcpy(a->file_head, a->head, AUDIT_HASH_LEN);
	a->buf.len = 0;
	a->brecords = a->buncounted = 0;
	return 0;
}

/* Writes the buffer and fdatasyncs: on success every chained record is durable. */
static int commit(struct audit *a)
{
	int e = flush(a);

	if (e)
		return e;
	if (!a->unsynced_file)
		return 0;
	if (fdatasync(a->fd) != 0) {
		/* durability unknown: nothing is acknowledged, the next commit tries again */
		e = errno;
		if (!a->st.write_errors++)
			log_error("audit: fdatasync of segment %" PRIu64 " failed: %s", a->seg, strerror(e));
		return -e;
	}
	a->st.records_synced += a->unsynced_file;
	a->unsynced_file = 0;
	a->st.synced_seq = a->file_next_seq - 1;
	a->last_sync_ns = a->now_ns;
	return 0;
}

static void persist_key(struct audit *a)
{
	int e = keystate_write(&a->c, a->dfd, a->k_index, a->k);

	if (e) {
		if (!a->k_dirty)
			log_error("audit: %s/%s: %s; the previous seal key stays on disk until this succeeds", a->dir,
				  SEAL_KEY_FILE, strerror(-e));
		a->st.write_errors++;
		a->k_dirty = true;
		return;
	}
	a->k_dirty = false;
}

/* Moves the seal key forward to index n (one way). */
static void key_advance(struct audit *a, uint64_t n)
{
	if (a->k_index >= n)
		return;
	while (a->k_index < n) {
		key_next(&a->c, a->k);
		a->k_index++;
	}
	persist_key(a);
}

/* Creates segment idx holding its OPEN record (written to a .tmp, fsynced, renamed: a .log always starts with a
 * whole OPEN) and makes it the open segment. */
static int segment_create(struct audit *a, uint64_t idx, uint64_t now)
{
	char name[NAME_MAX_LEN], tmp[NAME_MAX_LEN + 8], ts[40];
	uint8_t salt[SALT_LEN], h[AUDIT_HASH_LEN];
	struct bbuf fb = { 0 };
	struct jbuf *b = &a->jb;
	int e, fd = -1;

	if (a->enc && RAND_bytes(salt, SALT_LEN) != 1)
		return -EIO;
	time_str(ts, sizeof(ts), now);
	jbuf_reset(b);
	json_obj_open(b, NULL);
	json_u64(b, "format", 1);
	json_u64(b, "segment", idx);
	json_cstr(b, "created", ts);
	jb_hex(b, "key_id", a->key_id, ID_LEN);
	if (a->enc) {
		jb_hex(b, "enc_key_id", a->ek_id, ID_LEN);
		jb_hex(b, "salt", salt, SALT_LEN);
	} else {
		json_key(b, "enc_key_id");
		jbuf_puts(b, "null");
	}
	jb_hex(b, "prev_head", a->head, AUDIT_HASH_LEN);
	if (a->next_seq) {
		json_u64(b, "prev_last_seq", a->next_seq - 1);
	} else {
		json_key(b, "prev_last_seq");
		jbuf_puts(b, "null");
	}
	json_obj_close(b);
	if (b->oom)
		return -ENOMEM;
	if (a->enc) {
		/* the previous segment is sealed and flushed: the record cipher is free to take the new key */
		uint8_t k[AUDIT_KEY_LEN];
		segment_key(a->ek, idx, salt, k);
		e = recenc_setup(&a->re, &a->c, k);
		OPENSSL_cleanse(k, sizeof(k));
		if (e)
			goto out;
	}
	e = frame_append(&a->c, &fb, a->next_seq, now, AUDIT_REC_OPEN, b->p, b->len, NULL, a->head, h);
	if (e)
		goto out;
	seg_name(name, sizeof(name), idx, SEG_LOG);
	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	unlinkat(a->dfd, tmp, 0);
	if (faccessat(a->dfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		e = -EEXIST;
		goto out;
	}
	fd = openat(a->dfd, tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		e = -errno;
		goto out;
	}
	e = write_full(fd, fb.p, fb.len);
	if (!e && fdatasync(fd) != 0)
		e = -errno;
	if (!e && renameat(a->dfd, tmp, a->dfd, name) != 0)
		e = -errno;
	if (!e && fsync(a->dfd) != 0)
		e = -errno;
	if (e) {
		close(fd);
		fd = -1;
		unlinkat(a->dfd, tmp, 0);
		a->st.write_errors++;
		goto out;
	}
	a->fd = fd;
	a->have_seg = a->seg_exists = true;
	a->seg = idx;
	a->seg_enc = a->enc;
	a->seg_created_ns = now;
	a->seg_first_seq = a->next_seq;
	a->seg_records = a->file_records = 1;
	a->file_len = fb.len;
	a->next_seq++;
	memcpy(a->head, h, AUDIT_HASH_LEN);
	a->file_next_seq = a->next_seq;
	memcpy(a->file_head, h, AUDIT_HASH_LEN);
	a->st.records_written++;
	a->st.records_synced++;
	a->st.bytes_written += fb.len;
	a->st.last_seq = a->st.synced_seq = a->next_seq - 1;
	a->st.segment = idx;
	stream_begin(a, idx, fb.p, fb.len);
out:
	bbuf_free(&fb);
	return e;
}

static void queue_compress(struct audit *a, uint64_t idx)
{
	if (a->o.compress_level <= 0)
		return;
	for (size_t i = 0; i < a->npend; i++)
		if (a->pend[i] == idx)
			return;
	if (a->npend == a->cpend) {
		size_t nc = a->cpend ? a->cpend * 2 : 16;
		uint64_t *np = realloc(a->pend, nc * sizeof(*np));
		if (!np)
			return; /* stays .log: readable and chained, just not compressed */
		a->pend = np;
		a->cpend = nc;
	}
	size_t i = a->npend++;
	while (i > 0 && a->pend[i - 1] > idx) {
		a->pend[i] = a->pend[i - 1];
		i--;
	}
	a->pend[i] = idx;
}

static void unqueue(struct audit *a, uint64_t idx)
{
	for (size_t i = 0; i < a->npend; i++)
		if (a->pend[i] == idx) {
			memmove(a->pend + i, a->pend + i + 1, (a->npend - i - 1) * sizeof(*a->pend));
			a->npend--;
			return;
		}
}

/* Seals the open segment (SEAL record, fdatasync), evolves the key, and with reopen creates the next segment. */
static int rotate(struct audit *a, uint64_t now, bool reopen)
{
	uint8_t mac[AUDIT_HASH_LEN];
	struct jbuf *b = &a->jb;
	int e;

	if (!a->have_seg || a->werr)
		return -EAGAIN;
	e = commit(a);
	if (e)
		return e;
	seal_mac(a->k, a->seg, a->seg_first_seq, a->next_seq, a->head, mac);
	jbuf_reset(b);
	json_obj_open(b, NULL);
	json_u64(b, "segment", a->seg);
	json_u64(b, "first_seq", a->seg_first_seq);
	json_u64(b, "records", a->seg_records);
	jb_hex(b, "head", a->head, AUDIT_HASH_LEN);
	jb_hex(b, "hmac", mac, AUDIT_HASH_LEN);
	json_obj_close(b);
	if (b->oom)
		return -ENOMEM;
	e = chain_add(a, AUDIT_REC_SEAL, now, b->p, b->len);
	if (e)
		return e;
	e = commit(a);
	if (a->file_next_seq != a->next_seq)
		return e; /* the seal was not written: this segment stays open */
	close(a->fd);
	a->fd = -1;
	a->have_seg = false;
	a->st.segments_closed++;
	queue_compress(a, a->seg);
	stream_seal(a, a->seg, now);
	key_advance(a, a->seg + 1);
	if (!reopen)
		return 0;
	e = segment_create(a, a->seg + 1, now);
	if (e) {
		if (!a->werr)
			log_error("audit: cannot create segment %" PRIu64 " in %s: %s; records are counted lost until it "
				  "can",
				  a->seg + 1, a->dir, strerror(-e));
		a->werr = -e;
		a->next_retry_ns = now + RETRY_NS;
	}
	return e;
}

static int rec_append(struct audit *a, uint8_t type, uint64_t ts, const void *body, size_t len)
{
	int e;

	if (a->werr || !a->have_seg) {
		lost(a, ts, 1);
		return a->o.on_full == AUDIT_FULL_STOP ? -(a->werr ? a->werr : EIO) : 0;
	}
	e = chain_add(a, type, ts, body, len);
	if (e) {
		lost(a, ts, 1);
		return e;
	}
	if (!a->o.fsync_interval_ms)
		e = commit(a);
	else if (a->buf.len >= BUF_FLUSH_BYTES)
		e = flush(a);
	if (e)
		return a->o.on_full == AUDIT_FULL_STOP ? e : 0;
	if (a->file_len + a->buf.len >= a->o.segment_max_bytes)
		rotate(a, ts > a->now_ns ? ts : a->now_ns, true);
	return 0;
}

int audit__append_txn(struct audit *a, uint64_t ts_ns, const char *json, size_t len)
{
	if (!a || !json || len < 2 || len > AUDIT_MAX_BODY || json[0] != '{' || json[len - 1] != '}')
		return -EINVAL;
	/* one line, no NUL: a transaction is one JSONL line as written to --events */
	if (memchr(json, '\n', len) || memchr(json, '\r', len) || memchr(json, '\0', len))
		return -EINVAL;
	return rec_append(a, AUDIT_REC_TXN, ts_ns, json, len);
}

static bool kind_ok(const char *k)
{
	size_t n = k ? strlen(k) : 0;

	if (!n || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '_' || k[i] == '-' ||
		      k[i] == '.'))
			return false;
	return true;
}

static int kind_record(struct audit *a, uint8_t type, uint64_t ts, const char *kind, const char *detail_json)
{
	struct jbuf *b = &a->jb;
	cJSON *d = NULL;
	char *dtxt = NULL;
	int e;

	if (!a || !kind_ok(kind))
		return -EINVAL;
	if (detail_json) {
		d = cJSON_Parse(detail_json);
		if (!cJSON_IsObject(d)) {
			cJSON_Delete(d);
			return -EINVAL;
		}
		dtxt = cJSON_PrintUnformatted(d); /* one line, whatever the caller's layout */
		cJSON_Delete(d);
		if (!dtxt)
			return -ENOMEM;
	}
	jbuf_reset(b);
	json_obj_open(b, NULL);
	json_cstr(b, "kind", kind);
	json_key(b, "detail");
	jbuf_puts(b, dtxt ? dtxt : "{}");
	json_obj_close(b);
	free(dtxt);
	if (b->oom)
		return -ENOMEM;
	if (b->len > AUDIT_MAX_BODY)
		return -E2BIG;
	e = rec_append(a, type, ts, b->p, b->len);
	return e;
}

int audit__gap(struct audit *a, uint64_t ts_ns, const char *kind, const char *detail_json)
{
	return kind_record(a, AUDIT_REC_GAP, ts_ns, kind, detail_json);
}

int audit__note(struct audit *a, uint64_t ts_ns, const char *kind, const char *detail_json)
{
	return kind_record(a, AUDIT_REC_NOTE, ts_ns, kind, detail_json);
}

int audit__sync(struct audit *a, uint64_t now_ns)
{
	if (!a)
		return -EINVAL;
	a->now_ns = now_ns;
	if (a->werr || !a->have_seg)
		return -(a->werr ? a->werr : EIO);
	return commit(a);
}

void audit__stats(const struct audit *a, struct audit_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!a)
		return;
	*out = a->st;
	out->unsynced = a->brecords + a->unsynced_file;
	out->compress_pending = a->npend;
	out->write_error = a->werr;
	out->segment = a->seg;
}

/* While writes fail: retry each second with a GAP "records_lost" that names what was lost. */
static void retry(struct audit *a, uint64_t now)
{
	char from[40], to[40];
	struct jbuf *b = &a->jb;

	a->next_retry_ns = now + RETRY_NS;
	if (a->need_trunc && a->fd >= 0) {
		if (ftruncate(a->fd, (off_t)a->file_len) != 0)
			return;
		a->need_trunc = false;
	}
	if (!a->have_seg && segment_create(a, a->seg_exists ? a->seg + 1 : 0, now) != 0)
		return;
	time_str(from, sizeof(from), a->lost_from_ns);
	time_str(to, sizeof(to), a->lost_to_ns);
	jbuf_reset(b);
	json_obj_open(b, NULL);
	json_cstr(b, "kind", "records_lost");
	json_obj_open(b, "detail");
	json_u64(b, "records", a->lost_pending);
	if (a->lost_pending) {
		json_cstr(b, "from", from);
		json_cstr(b, "to", to);
	}
	json_cstr(b, "error", strerror(a->werr ? a->werr : EIO));
	json_obj_close(b);
	json_obj_close(b);
	if (b->oom || chain_add(a, AUDIT_REC_GAP, now, b->p, b->len))
		return;
	a->buncounted++;
	/* a->werr stays set meanwhile, so a new failure is not logged again */
	commit(a);
	if (a->buf.len || a->file_next_seq != a->next_seq)
		return; /* fail_write rewound the chain and scheduled the next retry */
	log_info("audit: writing works again; %" PRIu64 " records were lost (chained as a records_lost gap)",
		 a->lost_pending);
	a->werr = 0;
	a->lost_pending = 0;
}

/* ---- compression of sealed segments: one per tick, or in a worker thread */

struct reframe {
	struct bbuf *b;
	size_t w;           /* write offset: re-framed records are compacted in place */
	uint64_t seal_ts;
};

static int reframe_cb(void *ctx, const struct rec *r, struct audit_verify_result *vr)
{
	struct reframe *rf = ctx;
	uint8_t hp[AUDIT_HDR_LEN];

	(void)vr;
	hdr_build(hp, (uint32_t)r->len, r->seq, r->ts, r->type, 0, (uint32_t)r->len);
	/* the plaintext frame is never longer than the stored one and w <= r->off: moving never overtakes */
	memmove(rf->b->p + rf->w + AUDIT_HDR_LEN, r->body, r->len);
	memcpy(rf->b->p + rf->w, hp, AUDIT_HDR_LEN);
	memcpy(rf->b->p + rf->w + AUDIT_HDR_LEN + r->len, r->hash, AUDIT_HASH_LEN);
	rf->w += AUDIT_HDR_LEN + r->len + AUDIT_HASH_LEN;
	if (r->type == AUDIT_REC_SEAL)
		rf->seal_ts = r->ts;
	return 0;
}

static void job_free(struct audit *a, bool remove_tmp)
{
	struct cjob *j = a->job;

	if (!j)
		return;
	if (j->thread) {
		/* a running worker is told to stop (it leaves its .tmp behind for us to remove) */
		atomic_store_explicit(&j->cancel, true, memory_order_relaxed);
		pthread_join(j->th, NULL);
		j->thread = false;
	}
	libdeflate_free_compressor(j->ld);
	if (j->fd >= 0)
		close(j->fd);
	if (remove_tmp && j->tmp[0])
		unlinkat(a->dfd, j->tmp, 0);
	EVP_CIPHER_CTX_free(j->cc);
	EVP_MD_CTX_free(j->sha);
	crypto_free(&j->c);
	if (j->plain.p)
		OPENSSL_cleanse(j->plain.p, j->plain.cap);
	bbuf_free(&j->plain);
	OPENSSL_cleanse(j->out, sizeof(j->out));
	OPENSSL_cleanse(j->ek, sizeof(j->ek));
	free(j);
	a->job = NULL;
}

/* The job's steps below touch only the job (its own libcrypto contexts, the directory fd, copies of the keys):
 * they run in the agent's thread (compress_thread off) or in the job's worker. They return 0, 1 (start: the
 * segment is left uncompressed, why in j->why; step: all input consumed) or -1 (j->what, j->err say why). */
static int job_fail(struct cjob *j, const char *what, int err)
{
	j->what = what;
	j->err = err ? err : EIO;
	return -1;
}

/* Writes compressed bytes out (encrypted when configured) and hashes what reaches the file. */
static int job_emit(struct cjob *j, const uint8_t *p, size_t n)
{
	int l = 0;

	if (!n)
		return 0;
	if (j->cc) {
		if (!EVP_EncryptUpdate(j->cc, j->enc, &l, p, (int)n))
			return -EIO;
		p = j->enc;
		n = (size_t)l;
	}
	if (!EVP_DigestUpdate(j->sha, p, n))
		return -EIO;
	j->out_bytes += n;
	return write_full(j->fd, p, n);
}

static int job_start(struct cjob *j)
{
	struct audit_verify_result vr;
	struct walker w;
	int rc;

	memset(&vr, 0, sizeof(vr));
	if (crypto_init(&j->c))
		return job_fail(j, "libcrypto", ENOMEM);
	rc = load_segment(j->dfd, j->seg, SEG_LOG, &j->c, NULL, 0, &j->plain, NULL, NULL, &vr);
	if (rc) {
		snprintf(j->why, sizeof(j->why), "%s", rc > 0 ? vr.reason : "");
		return 1;
	}
	/* check the framing before compressing: a damaged segment stays as it is, for verify to report. Record hashes
	 * are not recomputed (half the job's CPU): the compressed file keeps every record and its hash, and SEGFILE
	 * binds the file, so an altered record is reported by verify from the .gz exactly as from the .log. */
	walker_init(&w, &j->c, NULL, j->kind == SEG_AES ? j->ek : NULL);
	w.frames_only = true;
	struct reframe rf = { .b = &j->plain };
	rc = walk_segment(&w, j->seg, j->plain.p, j->plain.len, reframe_cb, &rf, &vr);
	bool sealed = w.sealed;
	walker_free(&w);
	if (rc || !sealed) {
		snprintf(j->why, sizeof(j->why), "%s", rc < 0 ? "" : rc ? vr.reason : "it has no seal");
		return 1;
	}
	j->plain.len = rf.w;
	j->seal_ts = rf.seal_ts;
	seg_name(j->name, sizeof(j->name), j->seg, j->kind);
	snprintf(j->tmp, sizeof(j->tmp), "%.50s.tmp", j->name);
	unlinkat(j->dfd, j->tmp, 0);
	j->fd = openat(j->dfd, j->tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (j->fd < 0)
		return job_fail(j, "create", errno);
	j->sha = EVP_MD_CTX_new();
	if (!j->sha || !EVP_DigestInit_ex2(j->sha, j->c.sha, NULL))
		return job_fail(j, "sha256", ENOMEM);
	if (!(j->ld = libdeflate_alloc_compressor(j->level)))
		return job_fail(j, "libdeflate", ENOMEM);
	if (j->kind == SEG_AES) {
		uint8_t h[AESFILE_HDR];
		int l;
		memcpy(h, AESFILE_MAGIC, 8);
		put_le64(h + 8, j->seg);
		memcpy(h + 16, j->ek_id, ID_LEN);
		j->cc = EVP_CIPHER_CTX_new();
		if (!j->cc || RAND_bytes(h + 24, NONCE_LEN) != 1 ||
		    !EVP_EncryptInit_ex(j->cc, j->c.gcm, NULL, j->ek, h + 24) ||
		    !EVP_EncryptUpdate(j->cc, NULL, &l, h, AESFILE_HDR))
			return job_fail(j, "AES-GCM", EIO);
		if (!EVP_DigestUpdate(j->sha, h, AESFILE_HDR) || (rc = write_full(j->fd, h, AESFILE_HDR)))
			return job_fail(j, "write", rc ? -rc : EIO);
		j->out_bytes += AESFILE_HDR;
	}
	return 0;
}

/* One gzip member (RFC 1952) of in[0..n) into *buf (grown as needed): a header carrying a CRC (FHCRC, so inflate
 * checks the header fields too), DEFLATE data from libdeflate (the format zlib writes, about 1.8 times as fast at
 * level 1 on audit records), CRC-32 and length of the plaintext. Readers use zlib's inflate. Returns the length,
 * 0 when out of memory. */
static size_t gz_member(struct libdeflate_compressor *ld, const uint8_t *in, size_t n, uint8_t **buf, size_t *cap)
{
	static const uint8_t hdr[10] = { 0x1f, 0x8b, 8, 0x02 /* FHCRC */, 0, 0, 0, 0, 0, 3 /* unix */ };
	size_t need = 12 + libdeflate_deflate_compress_bound(ld, n) + 8, z;

	if (need > *cap) {
		uint8_t *p = realloc(*buf, need);
		if (!p)
			return 0;
		*buf = p;
		*cap = need;
	}
	uint8_t *o = *buf;
	uint32_t hc = (uint32_t)libdeflate_crc32(0, hdr, sizeof(hdr));
	memcpy(o, hdr, sizeof(hdr));
	o[10] = (uint8_t)hc;
	o[11] = (uint8_t)(hc >> 8);
	z = libdeflate_deflate_compress(ld, in, n, o + 12, need - 20);
	if (!z)
		return 0;
	put_le32(o + 12 + z, (uint32_t)libdeflate_crc32(0, in, n));
	put_le32(o + 16 + z, (uint32_t)n);
	return 12 + z + 8;
}

/* Compresses the whole segment as one member (one call: a 64 MiB segment takes about 0.1 s). */
static int job_step(struct cjob *j)
{
	uint8_t *out = NULL;
	size_t cap = 0, n = gz_member(j->ld, j->plain.p, j->plain.len, &out, &cap);
	int e = n ? 0 : -ENOMEM;

	for (size_t off = 0; !e && off < n; off += sizeof(j->out))
		e = job_emit(j, out + off, n - off < sizeof(j->out) ? n - off : sizeof(j->out));
	free(out);
	if (e)
		return job_fail(j, n ? "write" : "compress", -e);
	j->done = j->plain.len;
	return 1;
}

/* Ends the file and puts it in place (fsynced, renamed); its digest goes to j->digest. */
static int job_end(struct cjob *j)
{
	uint8_t tag[TAG_LEN];
	int l;

	if (j->cc) {
		if (!EVP_EncryptFinal_ex(j->cc, j->enc, &l) ||
		    !EVP_CIPHER_CTX_ctrl(j->cc, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag))
			return job_fail(j, "AES-GCM", EIO);
		if (!EVP_DigestUpdate(j->sha, tag, TAG_LEN) || write_full(j->fd, tag, TAG_LEN))
			return job_fail(j, "write", EIO);
		j->out_bytes += TAG_LEN;
	}
	EVP_DigestFinal_ex(j->sha, j->digest, NULL);
	/* mtime = seal time: retention ages closed files by it */
	struct timespec tm[2] = { { .tv_sec = (time_t)(j->seal_ts / NS_PER_S), .tv_nsec = (long)(j->seal_ts % NS_PER_S) } };
	tm[1] = tm[0];
	if (futimens(j->fd, tm) != 0 || fsync(j->fd) != 0)
		return job_fail(j, "fsync", errno);
	close(j->fd);
	j->fd = -1;
	if (renameat(j->dfd, j->tmp, j->dfd, j->name) != 0 || fsync(j->dfd) != 0)
		return job_fail(j, "rename", errno);
	j->tmp[0] = '\0';
	return 0;
}

/* A compression thread runs 10 nice levels below the agent: the watched API comes first. */
static void worker_nice(void)
{
	errno = 0;
	int prio = getpriority(PRIO_PROCESS, 0);
	if (errno == 0)
		setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), prio + 10 > 19 ? 19 : prio + 10);
}

/* The worker: the whole job at a lower priority than the agent's thread (the watched API comes first; a backlog
 * of sealed .log segments waits for idle CPU). Told to stop, it stops before compressing or before the rename. */
static void *job_worker(void *arg)
{
	struct cjob *j = arg;
	int rc;

	worker_nice();
	rc = job_start(j);
	while (rc == 0) {
		if (atomic_load_explicit(&j->cancel, memory_order_relaxed)) {
			rc = job_fail(j, "stopped", ECANCELED);
			break;
		}
		rc = job_step(j);
		if (rc == 1)
			rc = atomic_load_explicit(&j->cancel, memory_order_relaxed) ? job_fail(j, "stopped", ECANCELED)
			     : job_end(j) ? -1 : 2;
	}
	j->result = rc;
	atomic_store_explicit(&j->done_flag, true, memory_order_release);
	return NULL;
}

/* In the agent's thread: binds a compressed file to the chain, then drops the .log. */
static void segfile_commit(struct audit *a, uint64_t seg, const char *name, uint64_t bytes, uint64_t plain_bytes,
			   const uint8_t digest[AUDIT_HASH_LEN])
{
	char log_name[NAME_MAX_LEN];
	struct jbuf *b = &a->jb;

	jbuf_reset(b);
	json_obj_open(b, NULL);
	json_u64(b, "segment", seg);
	json_cstr(b, "file", name);
	json_u64(b, "bytes", bytes);
	json_u64(b, "plain_bytes", plain_bytes);
	jb_hex(b, "sha256", digest, AUDIT_HASH_LEN);
	json_obj_close(b);
	seg_name(log_name, sizeof(log_name), seg, SEG_LOG);
	unqueue(a, seg);
	if (!b->oom && !chain_add(a, AUDIT_REC_SEGFILE, a->now_ns, b->p, b->len) && !commit(a)) {
		unlinkat(a->dfd, log_name, 0);
		fsync(a->dfd);
		a->st.segments_compressed++;
	}
	/* else: both files stay; the next start keeps the .log and compresses again */
}

static void job_commit(struct audit *a)
{
	struct cjob *j = a->job;

	segfile_commit(a, j->seg, j->name, j->out_bytes, j->plain.len, j->digest);
	job_free(a, false);
}

/* In the agent's thread: what a job that did not finish leaves (skip: the .log stays as it is; error: retried). */
static void job_settle(struct audit *a, int rc)
{
	struct cjob *j = a->job;

	if (rc > 0) {
		if (j->why[0])
			log_error("audit: segment %" PRIu64 " left uncompressed: %s", j->seg, j->why);
		unqueue(a, j->seg);
		job_free(a, false);
		return;
	}
	a->st.write_errors++;
	log_warn("audit: compressing segment %" PRIu64 ": %s: %s; retried in a minute", j->seg, j->what,
		 strerror(j->err));
	job_free(a, true);
	a->job_retry_ns = a->now_ns + JOB_RETRY_NS;
}

static struct cjob *job_new(struct audit *a, uint64_t idx)
{
	struct cjob *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->fd = -1;
	j->seg = idx;
	j->dfd = a->dfd;
	j->kind = a->enc ? SEG_AES : SEG_GZ;
	j->level = a->o.compress_level;
	if (a->enc) {
		memcpy(j->ek, a->ek, sizeof(j->ek));
		memcpy(j->ek_id, a->ek_id, sizeof(j->ek_id));
	}
	return j;
}

/* ---- streamed compression (compress_thread, plaintext records): the worker compresses a segment while it is
 * written, from copies of the batches the agent's thread has just written to the .log (so it never reads the file
 * back, never holds it whole in memory, and needs no frame check: the bytes are exactly the .log's). One gzip member
 * per MiB; at the seal the worker puts seg-N.log.gz in place and the owner chains its SEGFILE. Whatever goes wrong
 * (queue over STREAM_QUEUE_MAX, an allocation, a write) ends the stream: the segment is then compressed from its
 * .log by the job, as after a restart. */

#define STREAM_CHUNK (1u << 20)
#define STREAM_QUEUE_MAX (32u << 20)
#define STREAM_SEALED_MAX 16

enum { SB_DATA, SB_SEAL, SB_ABORT };

struct sbatch {
	struct sbatch *next;
	uint64_t seg, ts;
	int op;
	size_t len;
	uint8_t data[];
};

struct sresult {
	uint64_t seg, out_bytes, plain_bytes;
	int rc;                  /* 2: the .gz is in place; -1: failed (what, err) */
	const char *what;
	int err;
	char name[NAME_MAX_LEN];
	uint8_t digest[AUDIT_HASH_LEN];
};

struct streamer {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* shared, under mu */
	struct sbatch *head, *tail;
	size_t queued;           /* DATA bytes not yet taken by the worker */
	bool stop;
	struct sresult res[STREAM_SEALED_MAX];
	size_t nres;
	/* the owner's */
	uint64_t seg;
	bool active;             /* seg is being streamed (opened here, not sealed or aborted) */
	uint64_t sealed[STREAM_SEALED_MAX];
	size_t nsealed;
	/* the worker's */
	int dfd, level;
	struct libdeflate_compressor *ld;
	struct crypto c;
	EVP_MD_CTX *sha;
	uint64_t wseg, out_bytes, plain_bytes;
	bool wopen, wfailed;
	const char *what;
	int err, fd;
	char tmp[NAME_MAX_LEN + 16], name[NAME_MAX_LEN];
	uint8_t *chunk, *zout;
	size_t clen, zcap;
};

static void sw_fail(struct streamer *s, const char *what, int err)
{
	if (!s->wfailed) {
		s->wfailed = true;
		s->what = what;
		s->err = err ? err : EIO;
	}
}

static void sw_close(struct streamer *s, bool remove_tmp)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	if (remove_tmp && s->tmp[0])
		unlinkat(s->dfd, s->tmp, 0);
	s->tmp[0] = '\0';
	s->wopen = false;
	s->clen = 0;
}

static void sw_write(struct streamer *s, const uint8_t *p, size_t n)
{
	int e;

	if (s->wfailed)
		return;
	if (!EVP_DigestUpdate(s->sha, p, n)) {
		sw_fail(s, "sha256", EIO);
		return;
	}
	if ((e = write_full(s->fd, p, n)))
		sw_fail(s, "write", -e);
	else
		s->out_bytes += n;
}

static void sw_member(struct streamer *s)
{
	size_t n;

	if (!s->wfailed && s->clen) {
		n = gz_member(s->ld, s->chunk, s->clen, &s->zout, &s->zcap);
		if (n)
			sw_write(s, s->zout, n);
		else
			sw_fail(s, "compress", ENOMEM);
	}
	s->clen = 0;
}

static void sw_open(struct streamer *s, uint64_t seg)
{
	s->wseg = seg;
	s->wopen = true;
	s->wfailed = false;
	s->out_bytes = s->plain_bytes = 0;
	s->clen = 0;
	seg_name(s->name, sizeof(s->name), seg, SEG_GZ);
	snprintf(s->tmp, sizeof(s->tmp), "%.50s.stream.tmp", s->name);
	unlinkat(s->dfd, s->tmp, 0);
	s->fd = openat(s->dfd, s->tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (s->fd < 0) {
		s->tmp[0] = '\0';
		sw_fail(s, "create", errno);
		return;
	}
	if (!EVP_DigestInit_ex2(s->sha, s->c.sha, NULL))
		sw_fail(s, "sha256", EIO);
}

static void sw_data(struct streamer *s, const struct sbatch *b)
{
	if (!s->wopen || s->wseg != b->seg) {
		if (s->wopen)
			sw_close(s, true); /* its seal never came: the job compresses it */
		sw_open(s, b->seg);
	}
	for (size_t off = 0; off < b->len && !s->wfailed;) {
		size_t take = STREAM_CHUNK - s->clen < b->len - off ? STREAM_CHUNK - s->clen : b->len - off;
		memcpy(s->chunk + s->clen, b->data + off, take);
		s->clen += take;
		s->plain_bytes += take;
		off += take;
		if (s->clen == STREAM_CHUNK)
			sw_member(s);
	}
}

static void sw_seal(struct streamer *s, const struct sbatch *b)
{
	struct sresult r = { .seg = b->seg, .rc = -1, .what = "stream", .err = EIO };

	if (s->wopen && s->wseg == b->seg) {
		sw_member(s);
		/* mtime = seal time: retention ages closed files by it */
		struct timespec tm[2] = { { .tv_sec = (time_t)(b->ts / NS_PER_S), .tv_nsec = (long)(b->ts % NS_PER_S) } };
		tm[1] = tm[0];
		if (!s->wfailed && (futimens(s->fd, tm) != 0 || fsync(s->fd) != 0))
			sw_fail(s, "fsync", errno);
		if (!s->wfailed && (renameat(s->dfd, s->tmp, s->dfd, s->name) != 0 || fsync(s->dfd) != 0))
			sw_fail(s, "rename", errno);
		if (!s->wfailed) {
			s->tmp[0] = '\0';
			EVP_DigestFinal_ex(s->sha, r.digest, NULL);
			r.rc = 2;
			r.out_bytes = s->out_bytes;
			r.plain_bytes = s->plain_bytes;
			snprintf(r.name, sizeof(r.name), "%s", s->name);
		} else {
			r.what = s->what;
			r.err = s->err;
		}
		sw_close(s, true);
	}
	pthread_mutex_lock(&s->mu);
	if (s->nres < STREAM_SEALED_MAX)
		s->res[s->nres++] = r;
	pthread_mutex_unlock(&s->mu);
}

static void *stream_worker(void *arg)
{
	struct streamer *s = arg;

	worker_nice();
	for (;;) {
		pthread_mutex_lock(&s->mu);
		while (!s->head && !s->stop)
			pthread_cond_wait(&s->cv, &s->mu);
		if (s->stop) {
			pthread_mutex_unlock(&s->mu);
			break;
		}
		struct sbatch *b = s->head;
		if (!(s->head = b->next))
			s->tail = NULL;
		if (b->op == SB_DATA)
			s->queued -= b->len;
		pthread_mutex_unlock(&s->mu);
		if (b->op == SB_DATA)
			sw_data(s, b);
		else if (b->op == SB_SEAL)
			sw_seal(s, b);
		else if (s->wopen && s->wseg == b->seg)
			sw_close(s, true);
		free(b);
	}
	if (s->wopen)
		sw_close(s, true);
	return NULL;
}

static void stream_free(struct audit *a)
{
	struct streamer *s = a->sm;

	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	s->stop = true;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->th, NULL);
	for (struct sbatch *b = s->head, *n; b; b = n) {
		n = b->next;
		free(b);
	}
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	libdeflate_free_compressor(s->ld);
	EVP_MD_CTX_free(s->sha);
	crypto_free(&s->c);
	free(s->chunk);
	free(s->zout);
	free(s);
	a->sm = NULL;
}

/* The owner's side. The streamer exists when compress_thread is on, records are not encrypted and segments are
 * compressed at all; it is started with the first segment this process creates. */
static struct streamer *stream_get(struct audit *a)
{
	struct streamer *s;

	if (a->sm || a->sm_failed || !a->o.compress_thread || a->enc || a->o.compress_level <= 0)
		return a->sm;
	s = calloc(1, sizeof(*s));
	if (s) {
		s->fd = -1;
		s->dfd = a->dfd;
		s->level = a->o.compress_level;
		s->ld = libdeflate_alloc_compressor(s->level);
		s->sha = EVP_MD_CTX_new();
		s->chunk = malloc(STREAM_CHUNK);
	}
	if (!s || !s->ld || !s->sha || !s->chunk || crypto_init(&s->c) || pthread_mutex_init(&s->mu, NULL) ||
	    pthread_cond_init(&s->cv, NULL) || pthread_create(&s->th, NULL, stream_worker, s)) {
		if (s) {
			libdeflate_free_compressor(s->ld);
			EVP_MD_CTX_free(s->sha);
			crypto_free(&s->c);
			free(s->chunk);
			free(s);
		}
		a->sm_failed = true;
		log_warn("audit: no streaming compression (%s): sealed segments are compressed from their .log",
			 strerror(errno ? errno : ENOMEM));
		return NULL;
	}
	a->sm = s;
	return s;
}

static bool stream_send(struct streamer *s, int op, uint64_t seg, uint64_t ts, const void *p, size_t n)
{
	struct sbatch *b = malloc(sizeof(*b) + n);

	if (!b)
		return false;
	b->next = NULL;
	b->seg = seg;
	b->ts = ts;
	b->op = op;
	b->len = n;
	if (n)
		memcpy(b->data, p, n);
	pthread_mutex_lock(&s->mu);
	if (s->tail)
		s->tail->next = b;
	else
		s->head = b;
	s->tail = b;
	if (op == SB_DATA)
		s->queued += n;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return true;
}

static void stream_abort(struct streamer *s)
{
	if (s->active)
		stream_send(s, SB_ABORT, s->seg, 0, NULL, 0);
	s->active = false;
}

/* A new segment's first bytes (its OPEN record, already in the file). */
static void stream_begin(struct audit *a, uint64_t seg, const void *p, size_t n)
{
	struct streamer *s = stream_get(a);

	if (!s)
		return;
	stream_abort(s);
	if (s->nsealed >= STREAM_SEALED_MAX || !stream_send(s, SB_DATA, seg, 0, p, n))
		return;
	s->seg = seg;
	s->active = true;
}

/* Bytes just written to the open segment's file. */
static void stream_push(struct audit *a, const void *p, size_t n)
{
	struct streamer *s = a->sm;
	size_t queued;

	if (!s || !s->active || s->seg != a->seg)
		return;
	pthread_mutex_lock(&s->mu);
	queued = s->queued;
	pthread_mutex_unlock(&s->mu);
	if (queued + n > STREAM_QUEUE_MAX || !stream_send(s, SB_DATA, s->seg, 0, p, n))
		stream_abort(s);
}

/* The segment's seal is in its file: the worker finishes the .gz. */
static void stream_seal(struct audit *a, uint64_t seg, uint64_t ts)
{
	struct streamer *s = a->sm;

	if (!s || !s->active || s->seg != seg)
		return;
	if (!stream_send(s, SB_SEAL, seg, ts, NULL, 0)) {
		stream_abort(s);
		return;
	}
	s->active = false;
	s->sealed[s->nsealed++] = seg;
}

/* For compress_tick: 0 seg was not streamed (or its stream failed): compress it from the .log; 1 its stream is
 * still being finished; 2 its .gz was committed. */
static int stream_collect(struct audit *a, uint64_t seg)
{
	struct streamer *s = a->sm;
	struct sresult r;
	bool got = false;
	size_t i;

	if (!s)
		return 0;
	for (i = 0; i < s->nsealed && s->sealed[i] != seg; i++)
		;
	if (i == s->nsealed)
		return 0;
	pthread_mutex_lock(&s->mu);
	for (size_t k = 0; k < s->nres; k++)
		if (s->res[k].seg == seg) {
			r = s->res[k];
			s->res[k] = s->res[--s->nres];
			got = true;
			break;
		}
	pthread_mutex_unlock(&s->mu);
	if (!got)
		return 1;
	s->sealed[i] = s->sealed[--s->nsealed];
	if (r.rc != 2) {
		log_warn("audit: compressing segment %" PRIu64 " while it was written: %s: %s; compressing it from its "
			 ".log instead", seg, r.what, strerror(r.err));
		return 0;
	}
	segfile_commit(a, seg, r.name, r.out_bytes, r.plain_bytes, r.digest);
	a->st.segments_streamed++;
	return 2;
}

static void compress_tick(struct audit *a, uint64_t now)
{
	struct cjob *j = a->job;
	int rc;

	if (!j && a->npend && now >= a->job_retry_ns) {
		if (stream_collect(a, a->pend[0]))
			return;
		if (!(j = a->job = job_new(a, a->pend[0])))
			return;
		if (a->o.compress_thread) {
			if (pthread_create(&j->th, NULL, job_worker, j) == 0) {
				j->thread = true;
				return;
			}
			log_warn("audit: no compression thread (%s): compressing in the agent's thread", strerror(errno));
		}
		if ((rc = job_start(j))) {
			job_settle(a, rc);
			return;
		}
	}
	if (!j)
		return;
	if (j->thread) {
		if (!atomic_load_explicit(&j->done_flag, memory_order_acquire))
			return;
		pthread_join(j->th, NULL);
		j->thread = false;
		if (j->result == 2)
			job_commit(a);
		else
			job_settle(a, j->result);
		return;
	}
	rc = job_step(j);
	if (rc == 1)
		rc = job_end(j) ? -1 : 2;
	if (rc == 2)
		job_commit(a);
	else if (rc < 0)
		job_settle(a, rc);
}

bool audit__compress_busy(const struct audit *a)
{
	return a && (a->job || a->npend);
}

/* ---- retention */

static int file_digest(struct crypto *c, int dfd, const char *name, uint8_t out[AUDIT_HASH_LEN], uint64_t *bytes)
{
	uint8_t blk[65536];
	int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	int e = 0;

	*bytes = 0;
	if (fd < 0)
		return -errno;
	if (!EVP_DigestInit_ex2(c->md, c->sha, NULL))
		e = -EIO;
	for (;;) {
		ssize_t r = read(fd, blk, sizeof(blk));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			e = -errno;
		if (r <= 0 || e)
			break;
		EVP_DigestUpdate(c->md, blk, (size_t)r);
		*bytes += (uint64_t)r;
	}
	close(fd);
	if (!e && !EVP_DigestFinal_ex(c->md, out, NULL))
		e = -EIO;
	return e;
}

static unsigned pick_kind(unsigned kinds)
{
	return kinds & SEG_LOG ? SEG_LOG : kinds & SEG_AES ? SEG_AES : SEG_GZ;
}

/* First frame of segment idx (its OPEN), read without authentication. */
static int read_open(struct audit *a, uint64_t idx, unsigned kind, struct frame *f, struct open_info *oi,
		     struct bbuf *tmp)
{
	struct audit_verify_result vr;
	char why[sizeof(((struct audit_verify_result *)0)->reason)];

	memset(&vr, 0, sizeof(vr));
	if (load_segment(a->dfd, idx, kind, &a->c, a->enc ? a->ek : NULL, 8192, tmp, NULL, NULL, &vr))
		return -EIO;
	if (frame_parse(tmp->p, tmp->len, 0, f, why, sizeof(why)) != FR_OK || f->type != AUDIT_REC_OPEN ||
	    parse_open(f->body, f->plain_len, oi, why, sizeof(why)) || oi->segment != idx)
		return -EBADMSG;
	return 0;
}

static int delete_segment(struct audit *a, const struct seg_ent *e, const struct seg_ent *next, uint64_t mtime_ns)
{
	char name[NAME_MAX_LEN], closed[40], prefix[32];
	uint8_t digest[AUDIT_HASH_LEN];
	uint64_t bytes;
	struct frame f, nf;
	struct open_info oi, noi;
	struct bbuf t1 = { 0 }, t2 = { 0 };
	struct jbuf *b = &a->jb;
	unsigned kind = pick_kind(e->kinds);
	int rc = -EIO;

	seg_name(name, sizeof(name), e->idx, kind);
	if (file_digest(&a->c, a->dfd, name, digest, &bytes) ||
	    read_open(a, e->idx, kind, &f, &oi, &t1) ||
	    read_open(a, next->idx, next->idx == a->seg ? SEG_LOG : pick_kind(next->kinds), &nf, &noi, &t2) ||
	    !noi.has_prev_last) {
		log_error("audit: retention: cannot read segment %" PRIu64 " or %" PRIu64 "; not deleting", e->idx,
			  next->idx);
		goto out;
	}
	time_str(closed, sizeof(closed), mtime_ns);
	jbuf_reset(b);
	json_obj_open(b, NULL);
	json_u64(b, "segment", e->idx);
	json_cstr(b, "file", name);
	json_u64(b, "bytes", bytes);
	jb_hex(b, "sha256", digest, AUDIT_HASH_LEN);
	json_u64(b, "first_seq", f.seq);
	json_u64(b, "last_seq", noi.prev_last_seq);
	jb_hex(b, "head", noi.prev_head, AUDIT_HASH_LEN);
	json_cstr(b, "closed", closed);
	json_cstr(b, "reason", "retention");
	json_u64(b, "retention_days", a->o.retention_days);
	json_u64(b, "torn_files", e->torn);
	json_obj_close(b);
	if (b->oom || chain_add(a, AUDIT_REC_DELETE, a->now_ns, b->p, b->len) || commit(a))
		goto out; /* never delete what the chain does not record */
	/* the segment's files, then its .torn evidence */
	for (unsigned k = SEG_LOG; k <= SEG_AES; k <<= 1)
		if (e->kinds & k) {
			seg_name(name, sizeof(name), e->idx, k);
			unlinkat(a->dfd, name, 0);
		}
	if (e->torn) {
		int fd = dup(a->dfd);
		DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
		struct dirent *de;
		snprintf(prefix, sizeof(prefix), "seg-%016" PRIu64 ".torn-", e->idx);
		if (!d && fd >= 0)
			close(fd);
		if (d) {
			rewinddir(d);
			while ((de = readdir(d)))
				if (!strncmp(de->d_name, prefix, strlen(prefix)))
					unlinkat(a->dfd, de->d_name, 0);
			closedir(d);
		}
	}
	fsync(a->dfd);
	a->st.segments_deleted++;
	log_info("audit: retention: deleted segment %" PRIu64 " (seq %" PRIu64 "..%" PRIu64 ", closed %s)", e->idx,
		 f.seq, noi.prev_last_seq, closed);
	rc = 0;
out:
	bbuf_free(&t1);
	bbuf_free(&t2);
	return rc;
}

static void retention_run(struct audit *a, uint64_t now)
{
	struct seg_ent *v;
	size_t n;
	uint64_t keep_ns = (uint64_t)a->o.retention_days * 86400ull * NS_PER_S;

	a->next_retention_ns = now + RETENTION_EVERY_NS;
	if (!a->o.retention_days || a->werr || !a->have_seg || now < keep_ns)
		return;
	if (scan_segments(a->dfd, &v, &n))
		return;
	/* oldest first, stop at the first one to keep: the present segments always stay contiguous */
	for (size_t i = 0; i + 1 < n && v[i].idx < a->seg; i++) {
		char name[NAME_MAX_LEN];
		struct stat st;
		unsigned kind = pick_kind(v[i].kinds);
		if ((a->job && a->job->seg == v[i].idx) || ((v[i].kinds & SEG_LOG) && v[i].kinds != SEG_LOG) ||
		    v[i + 1].idx != v[i].idx + 1)
			break;
		seg_name(name, sizeof(name), v[i].idx, kind);
		if (fstatat(a->dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			break;
		uint64_t mt = (uint64_t)st.st_mtim.tv_sec * NS_PER_S + (uint64_t)st.st_mtim.tv_nsec;
		if (mt + keep_ns > now)
			break;
		if (kind == SEG_LOG)
			unqueue(a, v[i].idx);
		if (delete_segment(a, &v[i], &v[i + 1], mt))
			break;
	}
	free(v);
}

void audit__tick(struct audit *a, uint64_t now)
{
	if (!a)
		return;
	a->now_ns = now;
	if (a->werr || !a->have_seg) {
		if (now >= a->next_retry_ns)
			retry(a, now);
		if (a->werr || !a->have_seg)
			return;
	}
	uint64_t iv = (uint64_t)a->o.fsync_interval_ms * 1000000ull;
	if ((a->buf.len || a->unsynced_file) && (now < a->last_sync_ns || now - a->last_sync_ns >= iv))
		commit(a);
	if (a->o.segment_max_age_s && now > a->seg_created_ns &&
	    now - a->seg_created_ns >= a->o.segment_max_age_s * NS_PER_S)
		rotate(a, now, true);
	if (a->k_dirty)
		persist_key(a);
	if (a->werr || !a->have_seg)
		return;
	compress_tick(a, now);
	if (now >= a->next_retention_ns)
		retention_run(a, now);
}

/* ---- open, recovery, close */

static int mkdir_p(const char *path)
{
	char p[PATH_MAX];
	size_t n = strlen(path);

	if (!n || n >= sizeof(p))
		return -ENAMETOOLONG;
	memcpy(p, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (p[i] != '/' && p[i] != '\0')
			continue;
		char c = p[i];
		p[i] = '\0';
		if (mkdir(p, 0700) != 0 && errno != EEXIST)
			return -errno;
		p[i] = c;
	}
	return 0;
}

static int open_dir(struct audit *a, char *err, size_t errlen)
{
	struct stat st;
	int e = mkdir_p(a->dir);

	if (e) {
		snprintf(err, errlen, "%s: cannot create: %s", a->dir, strerror(-e));
		return e;
	}
	a->dfd = open(a->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (a->dfd < 0 || fstat(a->dfd, &st) != 0) {
		e = -errno;
		snprintf(err, errlen, "%s: %s", a->dir, strerror(-e));
		return e;
	}
	if (st.st_uid != geteuid()) {
		snprintf(err, errlen, "%s: owned by uid %u, not by this process (uid %u)", a->dir, (unsigned)st.st_uid,
			 (unsigned)geteuid());
		return -EPERM;
	}
	if ((st.st_mode & 077) && fchmod(a->dfd, 0700) == 0)
		log_warn("audit: %s was mode %04o; now 0700", a->dir, (unsigned)(st.st_mode & 07777));
	a->lockfd = openat(a->dfd, LOCK_FILE, O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (a->lockfd < 0 || flock(a->lockfd, LOCK_EX | LOCK_NB) != 0) {
		e = -errno;
		snprintf(err, errlen, "%s: %s", a->dir,
			 e == -EWOULDBLOCK ? "another process is writing this audit trail" : strerror(-e));
		return e;
	}
	return 0;
}

static void remove_tmp_files(struct audit *a)
{
	int fd = dup(a->dfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	rewinddir(d);
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		if (n > 4 && !strcmp(de->d_name + n - 4, ".tmp"))
			unlinkat(a->dfd, de->d_name, 0);
	}
	closedir(d);
}

static int first_key(struct audit *a, char *err, size_t errlen)
{
	struct stat st;
	int e;

	if (stat(a->key_path, &st) == 0) {
		/* provided by the operator, or left by a first start that stopped before writing seal.key */
		e = audit_key_load(a->key_path, a->k, err, errlen);
		if (e)
			return e;
		log_info("audit: using the existing initial key %s", a->key_path);
	} else {
		char parent[PATH_MAX];
		const char *slash = strrchr(a->key_path, '/');
		if (RAND_priv_bytes(a->k, AUDIT_KEY_LEN) != 1) {
			snprintf(err, errlen, "no randomness for the initial key");
			return -EIO;
		}
		if (slash && slash != a->key_path && (size_t)(slash - a->key_path) < sizeof(parent)) {
			memcpy(parent, a->key_path, (size_t)(slash - a->key_path));
			parent[slash - a->key_path] = '\0';
			mkdir_p(parent);
		}
		e = initial_key_write(a->key_path, a->k);
		if (e) {
			snprintf(err, errlen, "%s: cannot write the initial key: %s", a->key_path, strerror(-e));
			return e;
		}
		log_info("audit: wrote the initial seal key to %s: move it off this host, `phiwatch audit verify --key` "
			 "needs it",
			 a->key_path);
	}
	key_id(&a->c, "phiwatch-audit-key-id", a->k, a->key_id);
	a->k_index = 0;
	e = keystate_write(&a->c, a->dfd, 0, a->k);
	if (e)
		snprintf(err, errlen, "%s/%s: %s", a->dir, SEAL_KEY_FILE, strerror(-e));
	return e;
}

struct recovery {
	uint64_t *segfiles, *deletes;
	size_t nsf, ndel, csf, cdel;
	uint64_t torn_bytes;
	char torn_file[NAME_MAX_LEN + 24];
	uint8_t torn_sha[AUDIT_HASH_LEN];
	char why[256];
	bool sealed;
	bool damaged;           /* sealed (seal.key moved past it) yet no valid seal: left as found */
	uint64_t damaged_bytes; /* bytes after its last good record */
	uint8_t before_seal;
};

static int push_u64(uint64_t **v, size_t *n, size_t *cap, uint64_t x)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		uint64_t *nv = realloc(*v, nc * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = nc;
	}
	(*v)[(*n)++] = x;
	return 0;
}

static bool has_u64(const uint64_t *v, size_t n, uint64_t x)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == x)
			return true;
	return false;
}

static int recover_cb(void *ctx, const struct rec *r, struct audit_verify_result *vr)
{
	struct recovery *rv = ctx;
	uint64_t seg;
	int e = 0;

	(void)vr;
	if (r->type != AUDIT_REC_SEGFILE && r->type != AUDIT_REC_DELETE)
		return 0;
	cJSON *j = cJSON_ParseWithLength((const char *)r->body, r->len);
	if (j && j_u64(j, "segment", &seg))
		e = r->type == AUDIT_REC_SEGFILE ? push_u64(&rv->segfiles, &rv->nsf, &rv->csf, seg)
						 : push_u64(&rv->deletes, &rv->ndel, &rv->cdel, seg);
	cJSON_Delete(j);
	return e;
}

/* Keeps the bytes after the last whole record as evidence, then cuts them. */
static int cut_tail(struct audit *a, uint64_t idx, int fd, const uint8_t *buf, size_t len, size_t good_end,
		    struct recovery *rv, uint64_t now)
{
	int tfd, e;

	snprintf(rv->torn_file, sizeof(rv->torn_file), "seg-%016" PRIu64 ".torn-%zu", idx, good_end);
	tfd = openat(a->dfd, rv->torn_file, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (tfd < 0 && errno == EEXIST) {
		snprintf(rv->torn_file, sizeof(rv->torn_file), "seg-%016" PRIu64 ".torn-%zu-%" PRIu64, idx, good_end,
			 now);
		tfd = openat(a->dfd, rv->torn_file, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
	}
	if (tfd < 0)
		return -errno;
	e = write_full(tfd, buf + good_end, len - good_end);
	if (!e && fsync(tfd) != 0)
		e = -errno;
	close(tfd);
	if (e)
		return e;
	sha3parts(&a->c, buf + good_end, len - good_end, NULL, 0, NULL, 0, rv->torn_sha);
	rv->torn_bytes = len - good_end;
	if (ftruncate(fd, (off_t)good_end) != 0 || fdatasync(fd) != 0 || fsync(a->dfd) != 0)
		return -errno;
	return 0;
}

/* Reads the last segment: chain head, sealed or not, torn tail (saved and cut), SEGFILE/DELETE named in it. */
static int recover_last(struct audit *a, const struct seg_ent *e, uint64_t now, struct recovery *rv, char *err,
			size_t errlen)
{
	/* seal.key past this segment: it was sealed, whatever its tail looks like now */
	bool was_sealed = a->k_index > e->idx;
	struct audit_verify_result vr;
	struct walker w;
	struct bbuf buf = { 0 };
	char name[NAME_MAX_LEN];
	unsigned kind = pick_kind(e->kinds);
	int rc, fd = -1;

	memset(&vr, 0, sizeof(vr));
	seg_name(name, sizeof(name), e->idx, kind);
	rc = load_segment(a->dfd, e->idx, kind, &a->c, a->enc ? a->ek : NULL, 0, &buf, NULL, NULL, &vr);
	if (rc) {
		snprintf(err, errlen, "%s/%s: %s", a->dir, name, rc > 0 ? vr.reason : strerror(-rc));
		bbuf_free(&buf);
		return rc > 0 ? -EBADMSG : rc;
	}
	walker_init(&w, &a->c, NULL, a->enc ? a->ek : NULL);
	rc = walk_segment(&w, e->idx, buf.p, buf.len, recover_cb, rv, &vr);
	if (rc < 0) {
		snprintf(err, errlen, "%s/%s: %s", a->dir, name, strerror(-rc));
		goto out;
	}
	if (rc > 0 && (w.index == 0 || vr.fail == AUDIT_F_NEED_ENC_KEY || kind != SEG_LOG)) {
		snprintf(err, errlen,
			 "%s/%s: record %" PRId64 ": %s; not continuing this trail (run `phiwatch audit verify`, then "
			 "move the directory aside)",
			 a->dir, name, vr.record, vr.reason);
		rc = -EBADMSG;
		goto out;
	}
	if (kind == SEG_LOG) {
		fd = openat(a->dfd, name, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0 || fdatasync(fd) != 0) {
			rc = -errno;
			snprintf(err, errlen, "%s/%s: %s", a->dir, name, strerror(-rc));
			goto out;
		}
	}
	if (!w.sealed && was_sealed) {
		/* its seal was cut off or damaged: evidence for verify, not a torn tail; the trail goes on in a new
		 * segment chained to its last good record, and the restart record says so */
		rv->damaged = true;
		rv->damaged_bytes = buf.len - w.good_end;
		snprintf(rv->why, sizeof(rv->why), "%s", rc > 0 ? vr.reason : "segment ends without its seal");
		log_error("audit: %s was sealed but its seal is missing or damaged (%s); left as found for `phiwatch "
			  "audit verify`, continuing in a new segment",
			  name, rv->why);
		rc = 0;
	}
	if (rc > 0) {
		snprintf(rv->why, sizeof(rv->why), "%s", vr.reason);
		rc = cut_tail(a, e->idx, fd, buf.p, buf.len, w.good_end, rv, now);
		if (rc) {
			snprintf(err, errlen, "%s/%s: cannot save and cut its torn tail: %s", a->dir, name, strerror(-rc));
			goto out;
		}
		log_warn("audit: %s: torn tail of %" PRIu64 " bytes after seq %" PRIu64 " (%s) moved to %s", name,
			 rv->torn_bytes, w.next_seq - 1, rv->why, rv->torn_file);
	}
	memcpy(a->key_id, w.oi.key_id, ID_LEN);
	a->seg = e->idx;
	a->seg_exists = true;
	a->next_seq = a->file_next_seq = w.next_seq;
	memcpy(a->head, w.prev, AUDIT_HASH_LEN);
	memcpy(a->file_head, w.prev, AUDIT_HASH_LEN);
	a->st.last_seq = a->st.synced_seq = w.next_seq - 1;
	rv->sealed = w.sealed || rv->damaged;
	rv->before_seal = w.sealed ? w.prev_type : w.last_type;
	if (!rv->sealed) {
		if (w.oi.enc && (!a->enc || CRYPTO_memcmp(w.oi.enc_key_id, a->ek_id, ID_LEN))) {
			snprintf(err, errlen, "%s/%s: the open segment is encrypted with another key than enc_key_path",
				 a->dir, name);
			rc = -EKEYREJECTED;
			goto out;
		}
		a->seg_enc = w.oi.enc;
		if (a->seg_enc) {
			uint8_t k[AUDIT_KEY_LEN];
			segment_key(a->ek, e->idx, w.oi.salt, k);
			rc = recenc_setup(&a->re, &a->c, k);
			OPENSSL_cleanse(k, sizeof(k));
			if (rc) {
				snprintf(err, errlen, "AES-GCM setup failed");
				goto out;
			}
		}
		a->fd = fd;
		fd = -1;
		a->have_seg = true;
		a->seg_created_ns = w.open_ts;
		a->seg_first_seq = w.first_seq;
		a->seg_records = a->file_records = w.index;
		a->file_len = w.good_end;
		a->st.segment = e->idx;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	walker_free(&w);
	if (buf.p)
		OPENSSL_cleanse(buf.p, buf.cap);
	bbuf_free(&buf);
	return rc;
}

static void startup_cleanup(struct audit *a, const struct seg_ent *v, size_t n, const struct recovery *rv)
{
	char name[NAME_MAX_LEN];

	for (size_t i = 0; i < n; i++) {
		unsigned kinds = v[i].kinds;
		if (a->have_seg && v[i].idx == a->seg)
			continue;
		if (has_u64(rv->deletes, rv->ndel, v[i].idx)) {
			/* retention chained the DELETE but stopped before unlinking */
			for (unsigned k = SEG_LOG; k <= SEG_AES; k <<= 1)
				if (kinds & k) {
					seg_name(name, sizeof(name), v[i].idx, k);
					unlinkat(a->dfd, name, 0);
				}
			continue;
		}
		if ((kinds & SEG_LOG) && (kinds & (SEG_GZ | SEG_AES))) {
			/* compression finished; its SEGFILE decides which copy is the segment */
			bool recorded = has_u64(rv->segfiles, rv->nsf, v[i].idx);
			for (unsigned k = SEG_LOG; k <= SEG_AES; k <<= 1)
				if ((kinds & k) && (recorded ? k == SEG_LOG : k != SEG_LOG)) {
					seg_name(name, sizeof(name), v[i].idx, k);
					unlinkat(a->dfd, name, 0);
				}
			kinds = recorded ? kinds & ~SEG_LOG : SEG_LOG;
		}
		if (kinds == SEG_LOG && v[i].idx < a->seg + (a->have_seg ? 0 : 1))
			queue_compress(a, v[i].idx);
	}
	fsync(a->dfd);
}

static void free_audit(struct audit *a)
{
	stream_free(a); /* before the directory fd it writes through is closed */
	if (a->fd >= 0)
		close(a->fd);
	if (a->lockfd >= 0)
		close(a->lockfd);
	if (a->dfd >= 0)
		close(a->dfd);
	OPENSSL_cleanse(a->k, sizeof(a->k));
	OPENSSL_cleanse(a->ek, sizeof(a->ek));
	EVP_CIPHER_CTX_free(a->re.cc); /* clears its key schedule */
	if (a->buf.p)
		OPENSSL_cleanse(a->buf.p, a->buf.cap);
	bbuf_free(&a->buf);
	jbuf_free(&a->jb);
	crypto_free(&a->c);
	free(a->pend);
	free(a->dir);
	free(a->key_path);
	free(a->enc_path);
	free(a);
}

static void write_start_records(struct audit *a, const struct recovery *rv, bool restart, uint64_t now)
{
	struct jbuf *b = &a->jb;

	if (restart) {
		jbuf_reset(b);
		json_obj_open(b, NULL);
		json_cstr(b, "reason",
			  rv->damaged	 ? "the last segment was sealed but its seal is missing or damaged: left as found"
			  : rv->torn_bytes ? "torn tail cut"
			  : rv->sealed	 ? "no stop record before the seal"
					 : "no stop record: the agent did not stop cleanly");
		if (rv->torn_bytes || rv->damaged)
			json_cstr(b, "detail", rv->why);
		if (rv->damaged)
			json_u64(b, "damaged_bytes", rv->damaged_bytes);
		json_u64(b, "segment", a->seg - (rv->sealed ? 1 : 0));
		json_u64(b, "torn_bytes", rv->torn_bytes);
		if (rv->torn_bytes) {
			json_cstr(b, "torn_file", rv->torn_file);
			jb_hex(b, "torn_sha256", rv->torn_sha, AUDIT_HASH_LEN);
		}
		json_u64(b, "last_good_seq", a->next_seq - 1 - (rv->sealed ? 1 : 0));
		json_obj_close(b);
		if (!b->oom)
			rec_append(a, AUDIT_REC_RESTART, now, b->p, b->len);
	}
	jbuf_reset(b);
	json_obj_open(b, NULL);
	json_u64(b, "pid", (uint64_t)getpid());
	json_u64(b, "fsync_interval_ms", a->o.fsync_interval_ms);
	json_u64(b, "segment_max_bytes", a->o.segment_max_bytes);
	json_u64(b, "segment_max_age_s", a->o.segment_max_age_s);
	json_u64(b, "retention_days", a->o.retention_days);
	json_bool(b, "encrypted", a->enc);
	json_cstr(b, "on_full", a->o.on_full == AUDIT_FULL_STOP ? "stop" : "continue");
	json_obj_close(b);
	if (!b->oom)
		rec_append(a, AUDIT_REC_START, now, b->p, b->len);
	commit(a);
}

struct audit *audit__open(const struct audit_opts *o, uint64_t now_ns, char *err, size_t errlen)
{
	struct audit *a;
	struct recovery rv;
	struct seg_ent *v = NULL;
	size_t n = 0;
	int e;

	memset(&rv, 0, sizeof(rv));
	if (!o || !o->dir || !*o->dir || !o->initial_key_path || !*o->initial_key_path) {
		snprintf(err, errlen, "audit: dir and initial_key_path are required");
		errno = EINVAL;
		return NULL;
	}
	if (o->segment_max_bytes < 4096 || o->segment_max_bytes > AUDIT_MAX_SEGMENT_BYTES ||
	    o->compress_level < -1 || o->compress_level > 9 || (unsigned)o->on_full > AUDIT_FULL_STOP) {
		snprintf(err, errlen, "audit: segment_max_bytes must be 4096..%llu and compress_level -1..9",
			 (unsigned long long)AUDIT_MAX_SEGMENT_BYTES);
		errno = EINVAL;
		return NULL;
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		snprintf(err, errlen, "out of memory");
		errno = ENOMEM;
		return NULL;
	}
	a->dfd = a->lockfd = a->fd = -1;
	a->o = *o;
	if (!a->o.compress_level)
		a->o.compress_level = 6;
	a->dir = strdup(o->dir);
	a->key_path = strdup(o->initial_key_path);
	a->enc_path = o->enc_key_path ? strdup(o->enc_key_path) : NULL;
	a->o.dir = a->dir;
	a->o.initial_key_path = a->key_path;
	a->o.enc_key_path = a->enc_path;
	a->st.synced_seq = UINT64_MAX;
	a->now_ns = a->last_sync_ns = now_ns;
	jbuf_init(&a->jb);
	if (!a->dir || !a->key_path || (o->enc_key_path && !a->enc_path) || crypto_init(&a->c)) {
		snprintf(err, errlen, "out of memory");
		e = -ENOMEM;
		goto fail;
	}
	e = open_dir(a, err, errlen);
	if (e)
		goto fail;
	if (a->enc_path) {
		e = audit_key_load(a->enc_path, a->ek, err, errlen);
		if (e)
			goto fail;
		key_id(&a->c, "phiwatch-audit-enc-key-id", a->ek, a->ek_id);
		a->enc = true;
	}
	remove_tmp_files(a);
	e = scan_segments(a->dfd, &v, &n);
	if (e) {
		snprintf(err, errlen, "%s: %s", a->dir, strerror(-e));
		goto fail;
	}
	e = keystate_read(&a->c, a->dfd, &a->k_index, a->k);
	if (n == 0) {
		if (e == -ENOENT) {
			e = first_key(a, err, errlen);
			if (e)
				goto fail;
		} else if (e || a->k_index != 0) {
			snprintf(err, errlen,
				 e ? "%s/%s: damaged, and there are no segments"
				   : "%s/%s: the key has evolved but there are no segments: the trail was deleted",
				 a->dir, SEAL_KEY_FILE);
			e = -EBADMSG;
			goto fail;
		} else {
			/* seal.key written by a first start that stopped before segment 0 */
			key_id(&a->c, "phiwatch-audit-key-id", a->k, a->key_id);
		}
		e = segment_create(a, 0, now_ns);
		if (e) {
			snprintf(err, errlen, "%s: cannot create the first segment: %s", a->dir, strerror(-e));
			goto fail;
		}
		write_start_records(a, &rv, false, now_ns);
	} else {
		if (e) {
			snprintf(err, errlen, "%s/%s: %s; this trail cannot be continued (its seal key is lost)", a->dir,
				 SEAL_KEY_FILE, e == -ENOENT ? "missing" : "damaged");
			goto fail;
		}
		const struct seg_ent *last = &v[n - 1];
		e = recover_last(a, last, now_ns, &rv, err, errlen);
		if (e)
			goto fail;
		uint64_t want = rv.sealed ? last->idx + 1 : last->idx;
		if (a->k_index > want) {
			snprintf(err, errlen,
				 "%s/%s holds k[%" PRIu64 "] but the trail needs k[%" PRIu64 "]: segments were removed "
				 "or the key replaced",
				 a->dir, SEAL_KEY_FILE, a->k_index, want);
			e = -EKEYREJECTED;
			goto fail;
		}
		key_advance(a, want);
		if (rv.sealed) {
			e = segment_create(a, last->idx + 1, now_ns);
			if (e) {
				log_error("audit: cannot create segment %" PRIu64 ": %s; retrying", last->idx + 1,
					  strerror(-e));
				a->werr = -e;
				a->next_retry_ns = now_ns + RETRY_NS;
			}
		}
		startup_cleanup(a, v, n, &rv);
		write_start_records(a, &rv,
				    !rv.sealed || rv.damaged || rv.torn_bytes || rv.before_seal != AUDIT_REC_STOP, now_ns);
	}
	free(v);
	free(rv.segfiles);
	free(rv.deletes);
	return a;
fail:
	free(v);
	free(rv.segfiles);
	free(rv.deletes);
	free_audit(a);
	errno = e < 0 ? -e : EIO;
	return NULL;
}

void audit__close(struct audit *a, uint64_t now_ns)
{
	struct jbuf *b;

	if (!a)
		return;
	b = &a->jb;
	a->now_ns = now_ns;
	if (a->werr || !a->have_seg)
		retry(a, now_ns);
	uint64_t pending = a->brecords + a->unsynced_file;
	/* the segment sealed now stays a .log (no SEGFILE can follow its STOP): nothing streams it to a .gz */
	if (a->sm)
		stream_abort(a->sm);
	if (!a->werr && a->have_seg) {
		jbuf_reset(b);
		json_obj_open(b, NULL);
		json_u64(b, "records_written", a->st.records_written + 1);
		json_u64(b, "records_lost", a->st.records_lost);
		json_u64(b, "write_errors", a->st.write_errors);
		json_u64(b, "unsynced_at_stop", pending);
		json_obj_close(b);
		if (!b->oom && !chain_add(a, AUDIT_REC_STOP, now_ns, b->p, b->len))
			rotate(a, now_ns, false);
	}
	if (a->have_seg)
		commit(a);
	if (a->k_dirty)
		persist_key(a);
	stream_free(a); /* a stream not finished stays a .log: the next start compresses it */
	job_free(a, true);
	uint64_t unsynced = a->brecords + a->unsynced_file;
	if (unsynced || a->werr)
		log_error("audit: stopped with %" PRIu64 " records not synced and %" PRIu64 " lost (%s)", unsynced,
			  a->st.records_lost, a->werr ? strerror(a->werr) : "fdatasync failed");
	else
		log_info("audit: stopped at seq %" PRIu64 ": %" PRIu64 " records chained this run, %" PRIu64
			 " lost, %" PRIu64 " were unsynced at stop and are now synced; segment %" PRIu64 " sealed",
			 a->st.last_seq, a->st.records_written, a->st.records_lost, pending, a->seg);
	free_audit(a);
}

/* ------------------------------------------------------------------ verify */

struct digest_ent {
	uint64_t seg, bytes;
	uint8_t sha[AUDIT_HASH_LEN];
	bool matched;
};

struct vstate {
	struct crypto *c;
	struct walker *w;
	struct audit_verify_result *r;
	const uint8_t *k0;
	uint8_t kn[AUDIT_KEY_LEN];  /* k[cur] when k0 is known */
	uint64_t cur, max_idx;
	struct digest_ent *dg;
	size_t ndg, cdg;
	bool need_delete, found_delete, any_delete, need_has_last;
	uint64_t need_seg, need_last_seq, last_deleted;
	uint8_t need_head[AUDIT_HASH_LEN];
};

static int verify_seal(struct vstate *vs, const struct rec *rec, cJSON *j, struct audit_verify_result *vr)
{
	uint64_t seg, first, records;
	uint8_t head[AUDIT_HASH_LEN], mac[AUDIT_HASH_LEN], want[AUDIT_HASH_LEN], k[AUDIT_KEY_LEN];

	if (!j_u64(j, "segment", &seg) || !j_u64(j, "first_seq", &first) || !j_u64(j, "records", &records) ||
	    !j_hex(j, "head", head, AUDIT_HASH_LEN) || !j_hex(j, "hmac", mac, AUDIT_HASH_LEN)) {
		vfail(vr, AUDIT_F_RECORD, "malformed seal record");
		return 1;
	}
	if (seg != vs->cur || first != vs->w->first_seq || records != rec->index ||
	    CRYPTO_memcmp(head, rec->prev, AUDIT_HASH_LEN)) {
		vfail(vr, AUDIT_F_SEAL, "seal does not describe this segment (segment, first seq, record count or head)");
		return 1;
	}
	if (!vs->k0) {
		vs->r->seals_unchecked = true;
		return 0;
	}
	seal_mac(vs->kn, seg, first, rec->seq, head, want);
	if (!CRYPTO_memcmp(want, mac, AUDIT_HASH_LEN)) {
		vs->r->seals_checked++;
		return 0;
	}
	/* tell a re-seal with a key taken from the host later from any other forgery */
	memcpy(k, vs->kn, AUDIT_KEY_LEN);
	for (uint64_t m = seg + 1; m <= vs->max_idx + 1; m++) {
		key_next(vs->c, k);
		seal_mac(k, seg, first, rec->seq, head, want);
		if (!CRYPTO_memcmp(want, mac, AUDIT_HASH_LEN)) {
			OPENSSL_cleanse(k, sizeof(k));
			vfail(vr, AUDIT_F_RESEALED,
			      "seal made with k[%" PRIu64 "], a later key than this segment's k[%" PRIu64
			      "]: re-sealed after the fact",
			      m, seg);
			return 1;
		}
	}
	OPENSSL_cleanse(k, sizeof(k));
	vfail(vr, AUDIT_F_SEAL, "seal HMAC does not match k[%" PRIu64 "]: forged, or the segment changed after sealing",
	      seg);
	return 1;
}

static int verify_cb(void *ctx, const struct rec *rec, struct audit_verify_result *vr)
{
	struct vstate *vs = ctx;
	cJSON *j;
	uint64_t m;
	int rc = 0;

	switch (rec->type) {
	case AUDIT_REC_TXN:
		vs->r->txns++;
		return 0;
	case AUDIT_REC_GAP:
		vs->r->gaps++;
		return 0;
	case AUDIT_REC_RESTART:
		vs->r->restarts++;
		return 0;
	case AUDIT_REC_SEAL:
	case AUDIT_REC_SEGFILE:
	case AUDIT_REC_DELETE:
		break;
	default:
		return 0;
	}
	j = cJSON_ParseWithLength((const char *)rec->body, rec->len);
	if (!cJSON_IsObject(j)) {
		vfail(vr, AUDIT_F_RECORD, "%s record body is not a JSON object", audit_rec_type_name(rec->type));
		rc = 1;
		goto out;
	}
	if (rec->type == AUDIT_REC_SEAL) {
		rc = verify_seal(vs, rec, j, vr);
	} else if (rec->type == AUDIT_REC_SEGFILE) {
		uint8_t sha[AUDIT_HASH_LEN];
		uint64_t bytes;
		if (!j_u64(j, "segment", &m) || !j_hex(j, "sha256", sha, AUDIT_HASH_LEN) || !j_u64(j, "bytes", &bytes) ||
		    m >= vs->cur) {
			vfail(vr, AUDIT_F_RECORD, "malformed segfile record");
			rc = 1;
			goto out;
		}
		for (size_t i = 0; i < vs->ndg; i++)
			if (vs->dg[i].seg == m) {
				if (CRYPTO_memcmp(vs->dg[i].sha, sha, AUDIT_HASH_LEN) || vs->dg[i].bytes != bytes) {
					vfail(vr, AUDIT_F_FILE_DIGEST,
					      "segment %" PRIu64 "'s compressed file differs from the digest chained here",
					      m);
					rc = 1;
					goto out;
				}
				vs->dg[i].matched = true;
			}
	} else {
		uint8_t head[AUDIT_HASH_LEN];
		uint64_t last;
		if (!j_u64(j, "segment", &m) || !j_hex(j, "head", head, AUDIT_HASH_LEN) || !j_u64(j, "last_seq", &last) ||
		    m >= vs->cur) {
			vfail(vr, AUDIT_F_RECORD, "malformed delete record");
			rc = 1;
			goto out;
		}
		if (vs->any_delete && m <= vs->last_deleted) {
			vfail(vr, AUDIT_F_RECORD, "deletion of segment %" PRIu64 " after segment %" PRIu64 ": out of order",
			      m, vs->last_deleted);
			rc = 1;
			goto out;
		}
		vs->any_delete = true;
		vs->last_deleted = m;
		if (vs->need_delete && m == vs->need_seg) {
			if (CRYPTO_memcmp(head, vs->need_head, AUDIT_HASH_LEN) || !vs->need_has_last ||
			    last != vs->need_last_seq) {
				vfail(vr, AUDIT_F_LINK,
				      "the deletion record of segment %" PRIu64
				      " does not match the first present segment's link",
				      m);
				rc = 1;
				goto out;
			}
			vs->found_delete = true;
		}
		vs->r->segments_deleted++;
	}
out:
	cJSON_Delete(j);
	return rc;
}

static void set_file(struct audit_verify_result *r, uint64_t idx, unsigned kind)
{
	seg_name(r->file, sizeof(r->file), idx, kind);
}

/* Opens a trail for reading (verify, query): the directory, libcrypto contexts, its segments in order. 0, or
 * -errno with the reason (naming dir) in reason. */
static int trail_open(const char *dir, int *dfd, struct crypto *c, struct seg_ent **v, size_t *n, char *reason,
		      size_t rlen)
{
	int rc;

	*v = NULL;
	*n = 0;
	*dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*dfd < 0) {
		rc = -errno;
		snprintf(reason, rlen, "%s: %s", dir, strerror(errno));
		return rc;
	}
	if (crypto_init(c)) {
		rc = -ENOMEM;
		snprintf(reason, rlen, "out of memory");
	} else if ((rc = scan_segments(*dfd, v, n))) {
		snprintf(reason, rlen, "%s: %s", dir, strerror(-rc));
	}
	if (rc) {
		crypto_free(c);
		close(*dfd);
		*dfd = -1;
	}
	return rc;
}

int audit_verify(const char *dir, const uint8_t *k0, const uint8_t *ek, struct audit_verify_result *r)
{
	struct crypto c;
	struct walker w;
	struct vstate vs;
	struct seg_ent *v;
	struct bbuf buf = { 0 };
	size_t n;
	int rc, dfd;

	memset(r, 0, sizeof(*r));
	r->record = -1;
	rc = trail_open(dir, &dfd, &c, &v, &n, r->reason, sizeof(r->reason));
	if (rc)
		return rc;
	walker_init(&w, &c, k0, ek);
	memset(&vs, 0, sizeof(vs));
	vs.c = &c;
	vs.w = &w;
	vs.r = r;
	vs.k0 = k0;
	if (!n) {
		vfail(r, AUDIT_F_EMPTY, "no segments in %s", dir);
		rc = 1;
		goto out;
	}
	vs.max_idx = v[n - 1].idx;
	if (k0) {
		memcpy(vs.kn, k0, AUDIT_KEY_LEN);
		for (uint64_t i = 0; i < v[0].idx; i++)
			key_next(&c, vs.kn);
	} else {
		r->seals_unchecked = true;
	}
	if (v[0].idx == 0) {
		w.have_prev = true; /* the chain starts at seq 0 from a zero head */
	} else {
		vs.need_delete = true;
		vs.need_seg = v[0].idx - 1;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t idx = v[i].idx;
		unsigned kind = pick_kind(v[i].kinds);
		bool comp = kind != SEG_LOG;
		struct digest_ent d = { .seg = idx };

		r->segment = idx;
		r->record = -1;
		if (i > 0 && idx != v[i - 1].idx + 1) {
			r->segment = v[i - 1].idx + 1;
			r->file[0] = '\0';
			vfail(r, AUDIT_F_MISSING_SEGMENT,
			      "segment %" PRIu64 " is missing: the trail jumps from segment %" PRIu64 " to %" PRIu64,
			      v[i - 1].idx + 1, v[i - 1].idx, idx);
			rc = 1;
			goto out;
		}
		set_file(r, idx, kind);
		if ((v[i].kinds & SEG_GZ) && (v[i].kinds & SEG_AES)) {
			vfail(r, AUDIT_F_FILE, "both a .gz and a .gz.aes file for this segment");
			rc = 1;
			goto out;
		}
		rc = load_segment(dfd, idx, kind, &c, ek, 0, &buf, comp ? d.sha : NULL, &d.bytes, r);
		if (rc)
			goto out;
		if (comp) {
			if (vs.ndg == vs.cdg) {
				size_t nc = vs.cdg ? vs.cdg * 2 : 16;
				struct digest_ent *nd = realloc(vs.dg, nc * sizeof(*nd));
				if (!nd) {
					rc = -ENOMEM;
					goto out;
				}
				vs.dg = nd;
				vs.cdg = nc;
			}
			vs.dg[vs.ndg++] = d;
			r->segments_compressed++;
		}
		r->bytes += buf.len;
		vs.cur = idx;
		rc = walk_segment(&w, idx, buf.p, buf.len, verify_cb, &vs, r);
		if (rc)
			goto out;
		if (i == 0) {
			r->first_seq = w.first_seq;
			memcpy(vs.need_head, w.oi.prev_head, AUDIT_HASH_LEN);
			vs.need_has_last = w.oi.has_prev_last;
			vs.need_last_seq = w.oi.prev_last_seq;
		}
		r->segments++;
		r->records += w.index;
		if (!w.sealed && i + 1 < n) {
			r->record = (int64_t)w.index;
			r->offset = w.good_end;
			r->seq = w.next_seq;
			vfail(r, AUDIT_F_UNSEALED, "segment ends after record %" PRIu64 " without a seal: truncated",
			      w.index - 1);
			rc = 1;
			goto out;
		}
		if (!w.sealed)
			r->open_tail = true;
		if (k0)
			key_next(&c, vs.kn);
	}
	r->last_seq = w.next_seq - 1;
	/* seal.key, when present: it must derive from k0, and a key past the last segment means that segment was
	 * sealed (cutting the seal off would otherwise pass as an open segment) */
	{
		uint8_t cur[AUDIT_KEY_LEN], kk[AUDIT_KEY_LEN];
		uint64_t kidx;
		if (keystate_read(&c, dfd, &kidx, cur) == 0) {
			uint64_t last = v[n - 1].idx;
			if (k0 && kidx <= vs.max_idx + 1) {
				memcpy(kk, k0, AUDIT_KEY_LEN);
				for (uint64_t i = 0; i < kidx; i++)
					key_next(&c, kk);
				if (CRYPTO_memcmp(kk, cur, AUDIT_KEY_LEN)) {
					r->segment = last;
					r->record = -1;
					r->file[0] = '\0';
					vfail(r, AUDIT_F_KEY_ID, "%s does not derive from the initial key: replaced",
					      SEAL_KEY_FILE);
					rc = 1;
				}
			}
			if (!rc && kidx > last + 1) {
				r->segment = last + 1;
				r->record = -1;
				r->file[0] = '\0';
				vfail(r, AUDIT_F_MISSING_SEGMENT,
				      "%s is at k[%" PRIu64 "]: segments after %" PRIu64 " were removed", SEAL_KEY_FILE, kidx,
				      last);
				rc = 1;
			} else if (!rc && r->open_tail && kidx > last) {
				r->segment = last;
				r->record = (int64_t)w.index;
				r->offset = w.good_end;
				r->seq = w.next_seq;
				r->torn_bytes = 0;
				set_file(r, last, pick_kind(v[n - 1].kinds));
				vfail(r, AUDIT_F_UNSEALED,
				      "segment ends after record %" PRIu64 " without its seal, but %s has moved to k[%" PRIu64
				      "]: the seal was cut off",
				      w.index - 1, SEAL_KEY_FILE, kidx);
				rc = 1;
			}
			OPENSSL_cleanse(cur, sizeof(cur));
			OPENSSL_cleanse(kk, sizeof(kk));
			if (rc)
				goto out;
		}
	}
	if (vs.need_delete && !vs.found_delete) {
		r->segment = v[0].idx;
		r->record = 0;
		r->seq = r->first_seq;
		set_file(r, v[0].idx, pick_kind(v[0].kinds));
		vfail(r, AUDIT_F_NO_DELETE,
		      "the trail starts at segment %" PRIu64 " and no chained deletion record accounts for segment %" PRIu64,
		      v[0].idx, v[0].idx - 1);
		rc = 1;
		goto out;
	}
	for (size_t i = 0; i < vs.ndg; i++)
		if (!vs.dg[i].matched) {
			r->segment = vs.dg[i].seg;
			r->record = -1;
			for (size_t k = 0; k < n; k++)
				if (v[k].idx == vs.dg[i].seg)
					set_file(r, v[k].idx, pick_kind(v[k].kinds));
			vfail(r, AUDIT_F_FILE_DIGEST, "compressed file not bound to the chain: no later segfile record names it");
			rc = 1;
			goto out;
		}
	r->fail = AUDIT_F_NONE;
	r->reason[0] = '\0';
	r->record = -1;
	rc = 0;
out:
	if (rc > 0 && r->fail == AUDIT_F_NONE)
		vfail(r, AUDIT_F_IO, "unknown failure");
	OPENSSL_cleanse(vs.kn, sizeof(vs.kn));
	free(vs.dg);
	walker_free(&w);
	if (buf.p)
		OPENSSL_cleanse(buf.p, buf.cap);
	bbuf_free(&buf);
	free(v);
	crypto_free(&c);
	close(dfd);
	return rc;
}

/* ------------------------------------------------------------------ query */

static bool digits(const char *s, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

/* RFC 3339 at s[0..n): full date-time, or a date alone (midnight UTC). */
static int parse_rfc3339(const char *s, size_t n, uint64_t *out)
{
	struct tm tm;
	int Y, M, D, h = 0, m = 0, sec = 0, off = 0;
	uint64_t frac = 0;
	size_t i = 10;

	memset(&tm, 0, sizeof(tm));
	if (n < 10 || !digits(s, 4, &Y) || s[4] != '-' || !digits(s + 5, 2, &M) || s[7] != '-' || !digits(s + 8, 2, &D))
		return -EINVAL;
	if (n > 10) {
		if (n < 20 || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(s + 11, 2, &h) || s[13] != ':' ||
		    !digits(s + 14, 2, &m) || s[16] != ':' || !digits(s + 17, 2, &sec))
			return -EINVAL;
		i = 19;
		if (i < n && s[i] == '.') {
			uint64_t scale = 100000000;
			i++;
			if (i >= n || s[i] < '0' || s[i] > '9')
				return -EINVAL;
			for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
				frac += (uint64_t)(s[i] - '0') * scale;
				scale /= 10;
			}
		}
		if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
			i++;
		} else if (i + 6 == n && (s[i] == '+' || s[i] == '-')) {
			int oh, om;
			if (!digits(s + i + 1, 2, &oh) || s[i + 3] != ':' || !digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
				return -EINVAL;
			off = (oh * 60 + om) * 60 * (s[i] == '+' ? 1 : -1);
			i += 6;
		} else {
			return -EINVAL;
		}
	}
	if (i != n || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
		return -EINVAL;
	tm.tm_year = Y - 1900;
	tm.tm_mon = M - 1;
	tm.tm_mday = D;
	tm.tm_hour = h;
	tm.tm_min = m;
	tm.tm_sec = sec;
	time_t t = timegm(&tm);
	if (t == (time_t)-1 || tm.tm_mday != D)
		return -EINVAL;
	int64_t secs = (int64_t)t - off;
	if (secs < 0)
		return -EINVAL;
	*out = (uint64_t)secs * NS_PER_S + frac;
	return 0;
}

int audit_parse_time(const char *s, uint64_t now_ns, uint64_t *out_ns)
{
	size_t n = s ? strlen(s) : 0;

	if (!n)
		return -EINVAL;
	if (!strcmp(s, "now")) {
		*out_ns = now_ns;
		return 0;
	}
	if (n >= 2 && strchr("smhdw", s[n - 1]) && n <= 12) {
		uint64_t v = 0, unit;
		for (size_t i = 0; i + 1 < n; i++) {
			if (s[i] < '0' || s[i] > '9')
				goto abs;
			v = v * 10 + (uint64_t)(s[i] - '0');
		}
		switch (s[n - 1]) {
		case 's': unit = 1; break;
		case 'm': unit = 60; break;
		case 'h': unit = 3600; break;
		case 'd': unit = 86400; break;
		default: unit = 7 * 86400; break;
		}
		if (v > UINT64_MAX / NS_PER_S / unit)
			return -EINVAL;
		v *= unit * NS_PER_S;
		*out_ns = v > now_ns ? 0 : now_ns - v;
		return 0;
	}
abs:
	return parse_rfc3339(s, n, out_ns);
}

struct qstate {
	const struct audit_query *q;
	FILE *out;
	struct audit_query_result *res;
	uint64_t seg;
	bool prefilter;
	const char *needle;
	struct jbuf jb;
};

static bool id_plain(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      strchr("-_.:@+", *s)))
			return false;
	return true;
}

static bool str_eq(const cJSON *x, const char *want)
{
	if (cJSON_IsString(x))
		return !strcmp(x->valuestring, want);
	if (cJSON_IsNumber(x) && x->valuedouble == (double)(int64_t)x->valuedouble) {
		char t[32];
		snprintf(t, sizeof(t), "%" PRId64, (int64_t)x->valuedouble);
		return !strcmp(t, want);
	}
	return false;
}

static bool in_range(const struct audit_query *q, uint64_t t)
{
	return (!q->since_ns || t >= q->since_ns) && (!q->until_ns || t < q->until_ns);
}

static bool txn_match(struct qstate *qs, const struct rec *r)
{
	const struct audit_query *q = qs->q;
	const char *b = (const char *)r->body;
	cJSON *j = NULL;
	bool ok = true;

	if (qs->prefilter && !memmem(b, r->len, qs->needle, strlen(qs->needle)))
		return false;
	if (q->since_ns || q->until_ns) {
		static const char pre[] = "{\"@timestamp\":\"";
		uint64_t t;
		const char *end;
		/* fast path for the --events layout; a quote cannot appear unescaped inside a string */
		if (r->len > sizeof(pre) && !memcmp(b, pre, sizeof(pre) - 1) &&
		    (end = memchr(b + sizeof(pre) - 1, '"', r->len - (sizeof(pre) - 1))) &&
		    !parse_rfc3339(b + sizeof(pre) - 1, (size_t)(end - b) - (sizeof(pre) - 1), &t)) {
			if (!in_range(q, t))
				return false;
		} else {
			j = cJSON_ParseWithLength(b, r->len);
			const char *ts = j_str(j, "@timestamp");
			if (!ts || parse_rfc3339(ts, strlen(ts), &t))
				t = r->ts; /* no usable @timestamp: the time it was chained */
			if (!in_range(q, t)) {
				cJSON_Delete(j);
				return false;
			}
		}
	}
	if (q->user || q->patient) {
		if (!j)
			j = cJSON_ParseWithLength(b, r->len);
		if (!j)
			return false;
		if (q->user) {
			const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "user");
			ok = str_eq(cJSON_GetObjectItemCaseSensitive(u, "id"), q->user);
		}
		if (ok && q->patient) {
			const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "phiwatch");
			const cJSON *res = cJSON_GetObjectItemCaseSensitive(p, "resource");
			const cJSON *ids = cJSON_GetObjectItemCaseSensitive(res, "ids"), *it;
			ok = str_eq(cJSON_GetObjectItemCaseSensitive(res, "id"), q->patient);
			if (!ok && cJSON_IsArray(ids))
				cJSON_ArrayForEach(it, ids) if (str_eq(it, q->patient)) {
					ok = true;
					break;
				}
		}
	}
	cJSON_Delete(j);
	return ok;
}

static void print_envelope(struct qstate *qs, const struct rec *r)
{
	struct jbuf *b = &qs->jb;
	char ts[40];
	cJSON *j = NULL;

	time_str(ts, sizeof(ts), r->ts);
	jbuf_reset(b);
	json_obj_open(b, NULL);
	json_u64(b, "seq", r->seq);
	json_cstr(b, "ts", ts);
	json_cstr(b, "type", audit_rec_type_name(r->type));
	json_u64(b, "segment", qs->seg);
	if (!memchr(r->body, '\n', r->len) && (j = cJSON_ParseWithLength((const char *)r->body, r->len))) {
		json_key(b, "data");
		jbuf_put(b, (const char *)r->body, r->len);
	} else {
		json_str(b, "data", (const char *)r->body, r->len);
	}
	cJSON_Delete(j);
	json_obj_close(b);
	jbuf_put(b, "\n", 1);
	if (!b->oom)
		fwrite(b->p, 1, b->len, qs->out);
}

static int query_cb(void *ctx, const struct rec *r, struct audit_verify_result *vr)
{
	struct qstate *qs = ctx;
	const struct audit_query *q = qs->q;

	(void)vr;
	qs->res->scanned++;
	if (q->records) {
		qs->res->matched++;
		print_envelope(qs, r);
		return 0;
	}
	switch (r->type) {
	case AUDIT_REC_TXN:
		if (!q->gaps && txn_match(qs, r)) {
			qs->res->matched++;
			fwrite(r->body, 1, r->len, qs->out);
			fputc('\n', qs->out);
		}
		break;
	case AUDIT_REC_START:
	case AUDIT_REC_STOP:
	case AUDIT_REC_RESTART:
	case AUDIT_REC_GAP:
	case AUDIT_REC_DELETE:
		if (!in_range(q, r->ts))
			break;
		if (r->type != AUDIT_REC_START && r->type != AUDIT_REC_STOP)
			qs->res->gaps_in_range++;
		if (q->gaps) {
			qs->res->matched++;
			print_envelope(qs, r);
		}
		break;
	default:
		break;
	}
	return 0;
}

int audit_query(const char *dir, const uint8_t *ek, const struct audit_query *q, FILE *out,
		struct audit_query_result *res)
{
	struct audit_verify_result vr;
	struct crypto c;
	struct walker w;
	struct qstate qs;
	struct seg_ent *v;
	struct bbuf buf = { 0 };
	size_t n;
	int rc, dfd;

	memset(res, 0, sizeof(*res));
	rc = trail_open(dir, &dfd, &c, &v, &n, res->reason, sizeof(res->reason));
	if (rc)
		return rc;
	memset(&qs, 0, sizeof(qs));
	qs.q = q;
	qs.out = out;
	qs.res = res;
	jbuf_init(&qs.jb);
	qs.needle = q->patient ? q->patient : q->user;
	qs.prefilter = qs.needle && !q->records && !q->gaps && id_plain(qs.needle) && *qs.needle;
	walker_init(&w, &c, NULL, ek);
	rc = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned kind = pick_kind(v[i].kinds);
		memset(&vr, 0, sizeof(vr));
		if (i > 0 && v[i].idx != v[i - 1].idx + 1) {
			if (!res->problems++)
				snprintf(res->reason, sizeof(res->reason), "segment %" PRIu64 " is missing", v[i - 1].idx + 1);
			w.have_prev = false;
		}
		qs.seg = v[i].idx;
		res->segments++;
		rc = load_segment(dfd, v[i].idx, kind, &c, ek, 0, &buf, NULL, NULL, &vr);
		if (rc == 0)
			rc = walk_segment(&w, v[i].idx, buf.p, buf.len, query_cb, &qs, &vr);
		if (rc < 0)
			break;
		if (rc > 0 && vr.fail == AUDIT_F_NEED_ENC_KEY) {
			snprintf(res->reason, sizeof(res->reason), "segment %" PRIu64 ": %.200s", v[i].idx, vr.reason);
			rc = -ENOKEY;
			break;
		}
		if (rc > 0) {
			char name[NAME_MAX_LEN];
			seg_name(name, sizeof(name), v[i].idx, kind);
			if (!res->problems++)
				snprintf(res->reason, sizeof(res->reason), "%s: record %" PRId64 ": %.180s", name, vr.record,
					 vr.reason);
			w.have_prev = false; /* resynchronise at the next segment's open record */
			rc = 0;
		}
	}
	if (rc == 0 && res->problems)
		rc = 1;
	if (rc < 0 && rc != -ENOKEY)
		snprintf(res->reason, sizeof(res->reason), "%s", strerror(-rc));
	fflush(out);
	walker_free(&w);
	jbuf_free(&qs.jb);
	if (buf.p)
		OPENSSL_cleanse(buf.p, buf.cap);
	bbuf_free(&buf);
	free(v);
	crypto_free(&c);
	close(dfd);
	return rc;
}
