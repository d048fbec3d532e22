/* inventory.c — API surface from transactions: fold paths into endpoint templates, group, summarise (see
 * inventory.h). Reads the audit trail only through audit_query; writes nothing but the caller's buffer.
 */
#include "inventory.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "audit.h"
#include "phiwatch/events.h"
#include "resource.h"
#include "siphash.h"
#include "txn_read.h"

#define MAX_OTHER_METHODS 4
#define MAX_TYPES 16
#define MAX_PORTS 8

static const char *const known_methods[] = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
					      "CONNECT" };
#define N_KNOWN_METHODS (sizeof(known_methods) / sizeof(known_methods[0]))
static const char *const auth_names[] = { "bearer", "basic", "apikey", "none", "other" };
#define N_AUTH (sizeof(auth_names) / sizeof(auth_names[0]))
static const char *const status_names[] = { "none", "1xx", "2xx", "3xx", "4xx", "5xx", "other" };
#define N_STATUS (sizeof(status_names) / sizeof(status_names[0]))

struct group {
	char *key;                      /* role byte, name NUL, executable NUL, template NUL (owned) */
	const char *name, *exe, *tmpl;  /* into key */
	int role;
	uint64_t hash;
	uint64_t calls, anonymous, tls_yes, tls_no;
	uint64_t first_ns, last_ns;
	uint64_t status[N_STATUS];
	uint32_t methods;               /* bit i: known_methods[i] */
	char other_methods[MAX_OTHER_METHODS][TXN_METHOD_MAX];
	size_t n_other_methods;
	bool more_methods;
	uint8_t auth;                   /* bit i: auth_names[i] */
	char types[MAX_TYPES][RESOURCE_TYPE_MAX + 1];
	size_t n_types;
	bool more_types;
	uint16_t ports[MAX_PORTS];
	size_t n_ports;
	bool more_ports;
	uint64_t *principals;           /* open-addressed set of principal hashes (0: empty slot) */
	size_t pcap, pn;
	bool pcapped;
};

struct inventory {
	unsigned roles;
	size_t max_groups;
	struct siphash_key sk;
	struct group **g;               /* in insertion order */
	size_t ng, gcap;
	size_t *slots;                  /* open-addressed: index + 1 into g, 0 empty */
	size_t nslots;
	size_t principals_total;
	struct inventory_stats st;
	struct txn_owned to;            /* one parsed line */
	struct resource_ctx *fhir;      /* FHIR type table (resource.c), for the folding rules */
	char tmpl[INVENTORY_TEMPLATE_MAX + 1];
};

/* ---- folding ---- */

static inline bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static inline bool is_hex(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool all_digits(const char *s, size_t n)
{
	if (!n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_digit(s[i]))
			return false;
	return true;
}

static bool is_uuid(const char *s, size_t n)
{
	if (n != 36)
		return false;
	for (size_t i = 0; i < n; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-' : !is_hex(s[i]))
			return false;
	}
	return true;
}

static bool long_hex(const char *s, size_t n)
{
	if (n < 16)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_hex(s[i]))
			return false;
	return true;
}

/* FHIR id: [A-Za-z0-9.-]{1,64}, not "." or "..". */
static bool fhir_id(const char *s, size_t n)
{
	if (n < 1 || n > 64 || (s[0] == '.' && (n == 1 || (n == 2 && s[1] == '.'))))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' || c == '.'))
			return false;
	}
	return true;
}

/* The FHIR type table lives in resource.c: ask it whether "/seg" addresses a known type. Built once. */
static bool fhir_type(const char *s, size_t n)
{
	static struct resource_ctx *rc;
	static bool failed;
	char path[RESOURCE_TYPE_MAX + 2];
	struct resource r;

	if (n < 4 || n > RESOURCE_TYPE_MAX || s[0] < 'A' || s[0] > 'Z')
		return false;
	if (!rc && !failed) {
		struct resource_opts o;
		resource_opts_default(&o);
		rc = resource__new(&o, NULL, 0);
		failed = rc == NULL;
	}
	if (!rc)
		return false;
	path[0] = '/';
	memcpy(path + 1, s, n);
	if (resource__extract(rc, path, n + 1, NULL, 0, &r) < 0)
		return false;
	return strlen(r.type) == n && memcmp(r.type, s, n) == 0;
}

size_t inventory_fold_path(const char *path, size_t len, char *out, size_t cap)
{
	size_t o = 0, nseg = 0;
	bool after_type = false, after_history = false;

	if (!cap)
		return 0;
	cap--; /* room for the NUL */
	for (size_t i = 0; i <= len;) {
		size_t e = i;
		while (e < len && path[e] != '/')
			e++;
		const char *s = path + i;
		size_t n = e - i;
		const char *w = s;
		size_t wn = n;
		bool id = all_digits(s, n) || is_uuid(s, n) || long_hex(s, n) ||
			  ((after_type || after_history) && fhir_id(s, n));
		if (id) {
			w = "{id}";
			wn = 4;
		}
		/* the next segment is an id position after a type, or after "_history" (a version) */
		after_history = n == 8 && memcmp(s, "_history", 8) == 0;
		after_type = !id && fhir_type(s, n);
		if (++nseg > INVENTORY_MAX_SEGMENTS || o + wn + 1 + 4 > cap) {
			/* cut: "/..." (or "..." when the template so far ends in '/') */
			const char *cut = o && out[o - 1] == '/' ? "..." : "/...";
			size_t cn = strlen(cut);
			if (o + cn > cap)
				o = cap - cn;
			memcpy(out + o, cut, cn);
			o += cn;
			break;
		}
		memcpy(out + o, w, wn);
		o += wn;
		if (e >= len)
			break;
		out[o++] = '/';
		i = e + 1;
	}
	out[o] = '\0';
	return o;
}

/* ---- groups ---- */

struct inventory *inventory__new(const struct inventory_opts *o)
{
	struct inventory *inv = calloc(1, sizeof(*inv));

	if (!inv) {
		errno = ENOMEM;
		return NULL;
	}
	inv->roles = o && o->roles ? o->roles : INVENTORY_ROLE_SERVER;
	inv->max_groups = o && o->max_groups ? o->max_groups : INVENTORY_MAX_GROUPS;
	/* principals and paths are chosen by whoever calls the API: a random hash key */
	if (getrandom(&inv->sk, sizeof(inv->sk), GRND_NONBLOCK) != (ssize_t)sizeof(inv->sk)) {
		inv->sk.k0 = (uint64_t)time(NULL) ^ 0x9e3779b97f4a7c15ull;
		inv->sk.k1 = (uint64_t)(uintptr_t)inv;
	}
	return inv;
}

void inventory__free(struct inventory *inv)
{
	if (!inv)
		return;
	for (size_t i = 0; i < inv->ng; i++) {
		free(inv->g[i]->key);
		free(inv->g[i]->principals);
		free(inv->g[i]);
	}
	free(inv->g);
	free(inv->slots);
	free(inv);
}

static int grow_slots(struct inventory *inv)
{
	size_t n = inv->nslots ? inv->nslots * 2 : 1024;
	size_t *s = calloc(n, sizeof(*s));

	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < inv->ng; i++) {
		size_t k = inv->g[i]->hash & (n - 1);
		while (s[k])
			k = (k + 1) & (n - 1);
		s[k] = i + 1;
	}
	free(inv->slots);
	inv->slots = s;
	inv->nslots = n;
	return 0;
}

static size_t make_key(char *buf, size_t cap, int role, const char *name, const char *exe, const char *tmpl)
{
	size_t nn = strlen(name), en = strlen(exe), tn = strlen(tmpl);

	if (3 + nn + en + tn + 1 > cap)
		return 0;
	buf[0] = (char)('0' + role);
	memcpy(buf + 1, name, nn + 1);
	memcpy(buf + 2 + nn, exe, en + 1);
	memcpy(buf + 3 + nn + en, tmpl, tn + 1);
	return 3 + nn + en + tn;
}

/* The group for the key, created when new. Past max_groups a new group is made only when past_cap (the
 * "{other}" endpoints), and never past twice max_groups: NULL with *full set. NULL also when out of memory. */
static struct group *group_get(struct inventory *inv, int role, const char *name, const char *exe, const char *tmpl,
			       bool past_cap, bool *full)
{
	char key[64 + 256 + INVENTORY_TEMPLATE_MAX + 8];
	size_t klen = make_key(key, sizeof(key), role, name, exe, tmpl);
	uint64_t h;

	*full = false;
	if (!klen)
		return NULL;
	h = siphash24(&inv->sk, key, klen);
	if (inv->nslots) {
		for (size_t k = h & (inv->nslots - 1); inv->slots[k]; k = (k + 1) & (inv->nslots - 1)) {
			struct group *g = inv->g[inv->slots[k] - 1];
			if (g->hash == h && memcmp(g->key, key, klen + 1) == 0)
				return g;
		}
	}
	if (inv->ng >= inv->max_groups && (!past_cap || inv->ng >= 2 * inv->max_groups)) {
		*full = true;
		return NULL;
	}
	if ((inv->ng + 1) * 2 > inv->nslots && grow_slots(inv) != 0)
		return NULL;
	if (inv->ng == inv->gcap) {
		size_t nc = inv->gcap ? inv->gcap * 2 : 256;
		struct group **ng = realloc(inv->g, nc * sizeof(*ng));
		if (!ng)
			return NULL;
		inv->g = ng;
		inv->gcap = nc;
	}
	struct group *g = calloc(1, sizeof(*g));
	char *kc = malloc(klen + 1);
	if (!g || !kc) {
		free(g);
		free(kc);
		return NULL;
	}
	memcpy(kc, key, klen + 1);
	g->key = kc;
	g->role = role;
	g->name = kc + 1;
	g->exe = g->name + strlen(g->name) + 1;
	g->tmpl = g->exe + strlen(g->exe) + 1;
	g->hash = h;
	size_t k = h & (inv->nslots - 1);
	while (inv->slots[k])
		k = (k + 1) & (inv->nslots - 1);
	inv->slots[k] = inv->ng + 1;
	inv->g[inv->ng++] = g;
	return g;
}

static void add_principal(struct inventory *inv, struct group *g, const char *user)
{
	uint64_t h = siphash24(&inv->sk, user, strlen(user));

	if (!h)
		h = 1;
	if (g->pcapped)
		return;
	if ((g->pn + 1) * 2 > g->pcap) {
		size_t nc = g->pcap ? g->pcap * 2 : 16;
		if (inv->principals_total + nc / 2 > INVENTORY_MAX_PRINCIPALS) {
			g->pcapped = true;
			return;
		}
		uint64_t *np = calloc(nc, sizeof(*np));
		if (!np) {
			g->pcapped = true;
			return;
		}
		for (size_t i = 0; i < g->pcap; i++) {
			if (!g->principals[i])
				continue;
			size_t k = g->principals[i] & (nc - 1);
			while (np[k])
				k = (k + 1) & (nc - 1);
			np[k] = g->principals[i];
		}
		inv->principals_total += nc / 2 - g->pcap / 2;
		free(g->principals);
		g->principals = np;
		g->pcap = nc;
	}
	size_t k = h & (g->pcap - 1);
	while (g->principals[k]) {
		if (g->principals[k] == h)
			return;
		k = (k + 1) & (g->pcap - 1);
	}
	g->principals[k] = h;
	g->pn++;
}

static void add_method(struct group *g, const char *m)
{
	for (size_t i = 0; i < N_KNOWN_METHODS; i++)
		if (strcmp(m, known_methods[i]) == 0) {
			g->methods |= 1u << i;
			return;
		}
	for (size_t i = 0; i < g->n_other_methods; i++)
		if (strcmp(m, g->other_methods[i]) == 0)
			return;
	if (g->n_other_methods == MAX_OTHER_METHODS) {
		g->more_methods = true;
		return;
	}
	snprintf(g->other_methods[g->n_other_methods++], TXN_METHOD_MAX, "%s", m);
}

static void add_type(struct group *g, const char *t)
{
	for (size_t i = 0; i < g->n_types; i++)
		if (strcmp(t, g->types[i]) == 0)
			return;
	if (g->n_types == MAX_TYPES) {
		g->more_types = true;
		return;
	}
	snprintf(g->types[g->n_types++], sizeof(g->types[0]), "%s", t);
}

static void add_port(struct group *g, uint16_t p)
{
	for (size_t i = 0; i < g->n_ports; i++)
		if (g->ports[i] == p)
			return;
	if (g->n_ports == MAX_PORTS) {
		g->more_ports = true;
		return;
	}
	g->ports[g->n_ports++] = p;
}

static unsigned role_bit(int role)
{
	return role == PW_ROLE_SERVER ? INVENTORY_ROLE_SERVER
	       : role == PW_ROLE_CLIENT ? INVENTORY_ROLE_CLIENT
					: INVENTORY_ROLE_UNKNOWN;
}

int inventory__add_txn(struct inventory *inv, const struct txn *t)
{
	const char *path, *query;
	size_t plen, qlen;
	bool hq, full;
	int role = t->role == PW_ROLE_SERVER || t->role == PW_ROLE_CLIENT ? t->role : PW_ROLE_UNKNOWN;

	inv->st.lines++;
	if (!(role_bit(role) & inv->roles)) {
		inv->st.skipped_role[role == PW_ROLE_SERVER ? 0 : role == PW_ROLE_CLIENT ? 1 : 2]++;
		return 0;
	}
	txn_split_target(t->target ? t->target : "", t->target ? t->target_len : 0, &path, &plen, &query, &qlen, &hq);
	inventory_fold_path(path, plen, inv->tmpl, sizeof(inv->tmpl));
	const char *name = t->comm ? t->comm : "", *exe = t->exe ? t->exe : "";
	struct group *g = group_get(inv, role, name, exe, inv->tmpl, false, &full);
	if (!g && full) {
		g = group_get(inv, role, name, exe, "{other}", true, &full);
		if (g)
			inv->st.overflowed++;
	}
	if (!g) {
		inv->st.dropped++;
		return -ENOMEM;
	}
	if (!g->calls)
		g->first_ns = t->ts_start;
	g->calls++;
	inv->st.counted++;
	if (t->ts_start < g->first_ns)
		g->first_ns = t->ts_start;
	if (t->ts_start > g->last_ns)
		g->last_ns = t->ts_start;
	if (!inv->st.first_ns || t->ts_start < inv->st.first_ns)
		inv->st.first_ns = t->ts_start;
	if (t->ts_start > inv->st.last_ns)
		inv->st.last_ns = t->ts_start;
	add_method(g, t->method);
	const char *auth = t->auth ? t->auth : "none";
	size_t ai = N_AUTH - 1;
	for (size_t i = 0; i < N_AUTH - 1; i++)
		if (strcmp(auth, auth_names[i]) == 0)
			ai = i;
	g->auth |= (uint8_t)(1u << ai);
	if (t->tls)
		g->tls_yes++;
	else
		g->tls_no++;
	if (t->resource_type && *t->resource_type)
		add_type(g, t->resource_type);
	if (!t->user || !*t->user || strcmp(t->user, "-") == 0)
		g->anonymous++;
	else
		add_principal(inv, g, t->user);
	int s = t->status;
	g->status[s == 0 ? 0 : (s >= 100 && s < 600) ? (size_t)(s / 100) : N_STATUS - 1]++;
	add_port(g, t->dst_port);
	return 0;
}

int inventory__add_json(struct inventory *inv, const char *line, size_t len)
{
	char err[160];

	if (txn_read_json(line, len, NULL, &inv->to, err, sizeof(err)) != 0) {
		inv->st.lines++;
		if (!inv->st.bad_lines++)
			snprintf(inv->st.first_bad, sizeof(inv->st.first_bad), "%s", err);
		return -EINVAL;
	}
	return inventory__add_txn(inv, &inv->to.t);
}

void inventory__stats(const struct inventory *inv, struct inventory_stats *out)
{
	*out = inv->st;
	out->groups = 0;
	out->services = 0;
	for (size_t i = 0; i < inv->ng; i++) {
		const struct group *g = inv->g[i];
		if (!g->calls)
			continue;
		out->groups++;
		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++) {
			const struct group *h = inv->g[j];
			seen = h->calls && h->role == g->role && !strcmp(h->name, g->name) && !strcmp(h->exe, g->exe);
		}
		out->services += !seen;
	}
}

/* ---- output ---- */

static const char *role_name(int role)
{
	return role == PW_ROLE_SERVER ? "server" : role == PW_ROLE_CLIENT ? "client" : "unknown";
}

/* server, client, unknown */
static int role_rank(int role)
{
	return role == PW_ROLE_SERVER ? 0 : role == PW_ROLE_CLIENT ? 1 : 2;
}

static int cmp_group(const void *a, const void *b)
{
	const struct group *x = *(const struct group *const *)a, *y = *(const struct group *const *)b;
	int r;

	if (x->role != y->role)
		return role_rank(x->role) - role_rank(y->role);
	if ((r = strcmp(x->name, y->name)) || (r = strcmp(x->exe, y->exe)))
		return r;
	return strcmp(x->tmpl, y->tmpl);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_u16(const void *a, const void *b)
{
	return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

/* The groups with calls, sorted; NULL when there are none or no memory (*n says which). */
static const struct group **sorted(const struct inventory *inv, size_t *n)
{
	const struct group **v = inv->ng ? malloc(inv->ng * sizeof(*v)) : NULL;

	*n = 0;
	if (!v)
		return NULL;
	for (size_t i = 0; i < inv->ng; i++)
		if (inv->g[i]->calls)
			v[(*n)++] = inv->g[i];
	qsort(v, *n, sizeof(*v), cmp_group);
	return v;
}

static const char *tls_word(const struct group *g)
{
	return g->tls_yes && g->tls_no ? "mixed" : g->tls_yes ? "yes" : "no";
}

/* Sorted type names of g into v (MAX_TYPES). */
static size_t type_list(const struct group *g, const char **v)
{
	for (size_t i = 0; i < g->n_types; i++)
		v[i] = g->types[i];
	qsort(v, g->n_types, sizeof(*v), cmp_str);
	return g->n_types;
}

static void time_s(char out[32], uint64_t ns)
{
	time_t sec = (time_t)(ns / 1000000000ull);
	struct tm tm;

	gmtime_r(&sec, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void inventory__render_jsonl(const struct inventory *inv, struct jbuf *out)
{
	size_t n;
	const struct group **v = sorted(inv, &n);
	const char *types[MAX_TYPES];
	char ts[40];

	if (!v && n) {
		out->oom = true;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct group *g = v[i];
		out->need_comma = false;
		json_obj_open(out, NULL);
		json_cstr(out, "role", role_name(g->role));
		json_obj_open(out, "service");
		json_cstr(out, "name", g->name);
		json_cstr(out, "executable", g->exe);
		json_obj_close(out);
		json_cstr(out, "endpoint", g->tmpl);
		json_arr_open(out, "methods");
		for (size_t k = 0; k < N_KNOWN_METHODS; k++)
			if (g->methods & (1u << k))
				json_cstr(out, NULL, known_methods[k]);
		for (size_t k = 0; k < g->n_other_methods; k++)
			json_cstr(out, NULL, g->other_methods[k]);
		json_arr_close(out);
		if (g->more_methods)
			json_bool(out, "methods_capped", true);
		json_u64(out, "calls", g->calls);
		json_arr_open(out, "auth");
		for (size_t k = 0; k < N_AUTH; k++)
			if (g->auth & (1u << k))
				json_cstr(out, NULL, auth_names[k]);
		json_arr_close(out);
		json_cstr(out, "tls", tls_word(g));
		json_arr_open(out, "phi_resource_types");
		size_t nt = type_list(g, types);
		for (size_t k = 0; k < nt; k++)
			json_cstr(out, NULL, types[k]);
		json_arr_close(out);
		if (g->more_types)
			json_bool(out, "phi_resource_types_capped", true);
		json_u64(out, "principals", g->pn);
		if (g->pcapped)
			json_bool(out, "principals_capped", true);
		json_u64(out, "anonymous_calls", g->anonymous);
		json_obj_open(out, "status");
		for (size_t k = 0; k < N_STATUS; k++)
			if (g->status[k])
				json_u64(out, status_names[k], g->status[k]);
		json_obj_close(out);
		uint16_t ports[MAX_PORTS];
		memcpy(ports, g->ports, sizeof(ports));
		qsort(ports, g->n_ports, sizeof(ports[0]), cmp_u16);
		json_arr_open(out, "ports");
		for (size_t k = 0; k < g->n_ports; k++)
			json_u64(out, NULL, ports[k]);
		json_arr_close(out);
		json_time_rfc3339(ts, sizeof(ts), g->first_ns);
		json_cstr(out, "first_seen", ts);
		json_time_rfc3339(ts, sizeof(ts), g->last_ns);
		json_cstr(out, "last_seen", ts);
		json_obj_close(out);
		jbuf_put(out, "\n", 1);
	}
	out->need_comma = false;
	free(v);
}

/* ---- the table ---- */

enum { C_ROLE, C_SERVICE, C_EXE, C_ENDPOINT, C_METHODS, C_CALLS, C_AUTH, C_TLS, C_TYPES, C_PRINC, C_LAST, NCOL };
static const char *const col_title[NCOL] = { "ROLE", "SERVICE", "EXECUTABLE", "ENDPOINT", "METHODS", "CALLS",
					     "AUTH", "TLS", "PHI TYPES", "PRINCIPALS", "LAST SEEN" };
static const size_t col_max[NCOL] = { 7, 16, 40, 60, 24, 12, 24, 5, 40, 12, 20 };
static const bool col_right[NCOL] = { [C_CALLS] = true, [C_PRINC] = true };

/* Escaped (control bytes as \uXXXX: a process name or path cannot move the cursor) and cut to max columns. */
static char *cell(const char *s, size_t max)
{
	struct jbuf b;
	char *r;

	jbuf_init(&b);
	json_escape(&b, s, strlen(s));
	if (b.oom) {
		jbuf_free(&b);
		return NULL;
	}
	r = b.p ? b.p : strdup("");
	if (r && b.len > max) {
		/* cut on a UTF-8 boundary */
		size_t cut = max - 3;
		while (cut > 0 && ((unsigned char)r[cut] & 0xc0) == 0x80)
			cut--;
		memcpy(r + cut, "...", 4);
	}
	return r;
}

/* Display width: UTF-8 code points (escaping left only printable text). */
static size_t width(const char *s)
{
	size_t w = 0;
	for (; *s; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

static void put_cell(struct jbuf *out, const char *s, size_t w, bool right, bool last)
{
	size_t sw = width(s);
	static const char spaces[] = "                                                                        ";

	if (right)
		jbuf_put(out, spaces, w > sw ? w - sw : 0);
	jbuf_puts(out, s);
	if (!right && !last)
		jbuf_put(out, spaces, w > sw ? w - sw : 0);
	if (!last)
		jbuf_put(out, "  ", 2);
}

void inventory__render_table(const struct inventory *inv, const char *source, struct jbuf *out)
{
	struct inventory_stats st;
	size_t n;
	const struct group **v = sorted(inv, &n);
	char line[512], a[32], b[32];

	inventory__stats(inv, &st);
	jbuf_puts(out, "phiwatch inventory: the API surface seen in ");
	char *src = cell(source ? source : "-", 200);
	jbuf_puts(out, src ? src : "-");
	free(src);
	jbuf_puts(out, "\n");
	if (inv->roles == INVENTORY_ROLE_SERVER)
		jbuf_puts(out, "Server-side transactions only (the APIs this host serves); the calls its processes make "
			       "to other APIs are left out (--role client or all).\n");
	else if (inv->roles == INVENTORY_ROLE_CLIENT)
		jbuf_puts(out, "Client-side transactions only (the APIs this host's processes call).\n");
	else
		jbuf_puts(out, "Transactions of every role: server (the APIs this host serves), client (the APIs it "
			       "calls) and unknown (sockets older than the agent).\n");
	if (st.counted) {
		time_s(a, st.first_ns);
		time_s(b, st.last_ns);
		snprintf(line, sizeof(line), "%s to %s: %llu transactions, %llu endpoints in %llu services", a, b,
			 (unsigned long long)st.counted, (unsigned long long)st.groups,
			 (unsigned long long)st.services);
	} else {
		snprintf(line, sizeof(line), "no transactions");
	}
	jbuf_puts(out, line);
	uint64_t skipped = st.skipped_role[0] + st.skipped_role[1] + st.skipped_role[2];
	if (skipped) {
		snprintf(line, sizeof(line), " (%llu of other roles not counted)", (unsigned long long)skipped);
		jbuf_puts(out, line);
	}
	jbuf_puts(out, ".\n");
	if (st.overflowed || st.dropped || st.bad_lines) {
		snprintf(line, sizeof(line),
			 "Note: %llu calls folded into {other} (too many endpoints), %llu not counted (memory), "
			 "%llu unreadable lines.\n",
			 (unsigned long long)st.overflowed, (unsigned long long)st.dropped,
			 (unsigned long long)st.bad_lines);
		jbuf_puts(out, line);
	}
	if (!n) {
		free(v);
		return;
	}
	jbuf_puts(out, "\n");

	bool show_role = inv->roles != INVENTORY_ROLE_SERVER && inv->roles != INVENTORY_ROLE_CLIENT &&
			 inv->roles != INVENTORY_ROLE_UNKNOWN;
	char **cells = calloc(n * NCOL, sizeof(*cells));
	size_t w[NCOL];
	if (!cells) {
		out->oom = true;
		free(v);
		return;
	}
	for (size_t c = 0; c < NCOL; c++)
		w[c] = width(col_title[c]);
	for (size_t i = 0; i < n; i++) {
		const struct group *g = v[i];
		char buf[512];
		size_t o = 0;
		const char *types[MAX_TYPES];

		cells[i * NCOL + C_ROLE] = cell(role_name(g->role), col_max[C_ROLE]);
		cells[i * NCOL + C_SERVICE] = cell(g->name, col_max[C_SERVICE]);
		cells[i * NCOL + C_EXE] = cell(g->exe[0] ? g->exe : "-", col_max[C_EXE]);
		cells[i * NCOL + C_ENDPOINT] = cell(g->tmpl, col_max[C_ENDPOINT]);
		buf[0] = '\0';
		for (size_t k = 0; k < N_KNOWN_METHODS; k++)
			if (g->methods & (1u << k))
				o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s", o ? "," : "", known_methods[k]);
		for (size_t k = 0; k < g->n_other_methods && o < sizeof(buf); k++)
			o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s", o ? "," : "", g->other_methods[k]);
		cells[i * NCOL + C_METHODS] = cell(buf, col_max[C_METHODS]);
		snprintf(buf, sizeof(buf), "%llu", (unsigned long long)g->calls);
		cells[i * NCOL + C_CALLS] = cell(buf, col_max[C_CALLS]);
		o = 0;
		buf[0] = '\0';
		for (size_t k = 0; k < N_AUTH; k++)
			if (g->auth & (1u << k))
				o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s", o ? "," : "", auth_names[k]);
		cells[i * NCOL + C_AUTH] = cell(buf, col_max[C_AUTH]);
		cells[i * NCOL + C_TLS] = cell(tls_word(g), col_max[C_TLS]);
		o = 0;
		buf[0] = '\0';
		size_t nt = type_list(g, types);
		for (size_t k = 0; k < nt && o < sizeof(buf); k++)
			o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s", o ? "," : "", types[k]);
		cells[i * NCOL + C_TYPES] = cell(nt ? buf : "-", col_max[C_TYPES]);
		snprintf(buf, sizeof(buf), "%s%llu", g->pcapped ? ">=" : "", (unsigned long long)g->pn);
		cells[i * NCOL + C_PRINC] = cell(buf, col_max[C_PRINC]);
		time_s(buf, g->last_ns);
		cells[i * NCOL + C_LAST] = cell(buf, col_max[C_LAST]);
		for (size_t c = 0; c < NCOL; c++) {
			if (!cells[i * NCOL + c])
				out->oom = true;
			else if (width(cells[i * NCOL + c]) > w[c])
				w[c] = width(cells[i * NCOL + c]);
		}
	}
	for (size_t c = show_role ? 0 : 1; c < NCOL; c++)
		put_cell(out, col_title[c], w[c], col_right[c], c == NCOL - 1);
	jbuf_puts(out, "\n");
	for (size_t i = 0; i < n && !out->oom; i++) {
		for (size_t c = show_role ? 0 : 1; c < NCOL; c++)
			put_cell(out, cells[i * NCOL + c], w[c], col_right[c], c == NCOL - 1);
		jbuf_puts(out, "\n");
	}
	for (size_t i = 0; i < n * NCOL; i++)
		free(cells[i]);
	free(cells);
	free(v);
}

/* ---- the audit trail ---- */

/* audit_query writes JSON lines to a FILE*; this one hands each whole line to the inventory as it comes, so a
 * trail of any size is read in bounded memory. */
struct line_sink {
	struct inventory *inv;
	char *buf;
	size_t len, cap;
	bool skipping;                  /* inside a line longer than AUDIT_MAX_BODY: dropped as bad */
};

static void sink_line(struct line_sink *ls, const char *p, size_t n)
{
	while (n && (p[n - 1] == '\r'))
		n--;
	if (n)
		inventory__add_json(ls->inv, p, n);
}

static ssize_t sink_write(void *cookie, const char *data, size_t size)
{
	struct line_sink *ls = cookie;
	size_t done = 0;

	while (done < size) {
		const char *nl = memchr(data + done, '\n', size - done);
		size_t n = nl ? (size_t)(nl - (data + done)) : size - done;
		if (!ls->skipping) {
			if (!ls->len && nl) {
				sink_line(ls, data + done, n); /* whole line in this chunk: no copy */
			} else if (ls->len + n > AUDIT_MAX_BODY + 1) {
				ls->skipping = true;
				ls->len = 0;
				ls->inv->st.lines++;
				if (!ls->inv->st.bad_lines++)
					snprintf(ls->inv->st.first_bad, sizeof(ls->inv->st.first_bad), "line over %u bytes",
						 AUDIT_MAX_BODY);
			} else {
				if (ls->len + n > ls->cap) {
					size_t nc = ls->cap ? ls->cap : 4096;
					while (nc < ls->len + n)
						nc *= 2;
					char *nb = realloc(ls->buf, nc);
					if (!nb) {
						errno = ENOMEM;
						return -1;
					}
					ls->buf = nb;
					ls->cap = nc;
				}
				memcpy(ls->buf + ls->len, data + done, n);
				ls->len += n;
				if (nl) {
					sink_line(ls, ls->buf, ls->len);
					ls->len = 0;
				}
			}
		}
		if (nl)
			ls->skipping = false;
		done += n + (nl ? 1 : 0);
	}
	return (ssize_t)size;
}

int inventory_from_audit(struct inventory *inv, const char *dir, const uint8_t *enc_key,
			 struct audit_query_result *r)
{
	struct line_sink ls = { .inv = inv };
	cookie_io_functions_t io = { .write = sink_write };
	struct audit_query q = { 0 };   /* every transaction */

	memset(r, 0, sizeof(*r));
	FILE *f = fopencookie(&ls, "w", io);
	if (!f) {
		snprintf(r->reason, sizeof(r->reason), "out of memory");
		return -ENOMEM;
	}
	int rc = audit_query(dir, enc_key, &q, f, r);
	if (fclose(f) != 0 && rc >= 0) {
		snprintf(r->reason, sizeof(r->reason), "out of memory reading the trail");
		rc = -ENOMEM;
	}
	if (ls.len && !ls.skipping)
		sink_line(&ls, ls.buf, ls.len);   /* a last line without its newline */
	free(ls.buf);
	return rc;
}
