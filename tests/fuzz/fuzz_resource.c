/* fuzz_resource.c — libFuzzer target for user/resource.c: request-targets and templates, invariants on results. */
/*
 * Input: [0] flags (bit0: FHIR off, bit1: compile the first line as a
 * template), then the request-target ("path?query"), split at the first '?'.
 * With bit1 the first line (up to '\n') is a template: when resource__new
 * accepts it, it must follow the template rules. Every result must hold
 * distinct valid FHIR ids only, and be the same when run again.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resource.h"

#define CHECK(c)                                                                    \
	do {                                                                        \
		if (!(c)) {                                                         \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c); \
			abort();                                                    \
		}                                                                   \
	} while (0)

static struct resource_ctx *rc_fhir, *rc_tmpl;

static void init(void)
{
	struct resource_opts o;
	resource_opts_default(&o);
	o.templates[0] = "/api/v1/patients/{patient}/records";
	o.templates[1] = "/api/v1/patients/{patient}";
	o.templates[2] = "/p/{patient}";
	o.ntemplates = 3;
	rc_fhir = resource__new(&o, NULL, 0);
	o.fhir = false;
	rc_tmpl = resource__new(&o, NULL, 0);
	CHECK(rc_fhir && rc_tmpl);
}

static bool id_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

static void check(const struct resource_ctx *rc, const char *p, size_t pl, const char *q, size_t ql)
{
	struct resource r, r2;
	memset(&r, 0x5a, sizeof(r));
	int n = resource__extract(rc, p, pl, q, ql, &r);
	CHECK(n >= 0 && (size_t)n == r.n_ids);
	CHECK(r.n_ids <= RESOURCE_MAX_IDS);
	if (r.ids_truncated)
		CHECK(r.n_ids == RESOURCE_MAX_IDS);
	CHECK(memchr(r.type, '\0', sizeof(r.type)) != NULL);
	for (const char *t = r.type; *t; t++)
		CHECK((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z'));
	if (r.n_ids)
		CHECK(r.type[0] != '\0');
	for (size_t i = 0; i < r.n_ids; i++) {
		const char *id = r.ids[i];
		CHECK(memchr(id, '\0', RESOURCE_ID_MAX + 1) != NULL);
		size_t l = strlen(id);
		CHECK(l >= 1 && l <= RESOURCE_ID_MAX);
		for (size_t k = 0; k < l; k++)
			CHECK(id_char(id[k]));
		CHECK(strcmp(id, ".") != 0 && strcmp(id, "..") != 0);
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(id, r.ids[j]) != 0);
	}
	memset(&r2, 0xa5, sizeof(r2));
	CHECK(resource__extract(rc, p, pl, q, ql, &r2) == n);
	CHECK(strcmp(r.type, r2.type) == 0 && r.is_export == r2.is_export && r.ids_truncated == r2.ids_truncated);
	for (size_t i = 0; i < r.n_ids; i++)
		CHECK(strcmp(r.ids[i], r2.ids[i]) == 0);
}

static void try_template(const uint8_t *d, size_t n, const uint8_t *rest, size_t rn)
{
	char *t = malloc(n + 1);
	CHECK(t);
	memcpy(t, d, n);
	t[n] = '\0';
	struct resource_opts o;
	resource_opts_default(&o);
	o.templates[0] = t;
	o.ntemplates = 1;
	char err[128];
	struct resource_ctx *rc = resource__new(&o, err, sizeof(err));
	if (rc) {
		/* accepted: starts with '/', one whole {patient} segment, nothing else in braces */
		CHECK(t[0] == '/' && strlen(t) <= n);
		const char *pp = strstr(t, "{patient}");
		CHECK(pp && !strstr(pp + 1, "{patient}"));
		CHECK(pp[-1] == '/' && (pp[9] == '/' || pp[9] == '\0'));
		CHECK(!strchr(t, '?') && !strchr(t, '#'));
		check(rc, (const char *)rest, rn, NULL, 0);
		resource__free(rc);
	} else {
		CHECK(memchr(err, '\0', sizeof(err)) && err[0]);
	}
	free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!rc_fhir)
		init();
	if (size < 1 || size > 65536)
		return 0;
	uint8_t flags = data[0];
	const uint8_t *d = data + 1;
	size_t n = size - 1;

	if (flags & 2) {
		const uint8_t *nl = memchr(d, '\n', n);
		size_t tl = nl ? (size_t)(nl - d) : n;
		size_t skip = nl ? tl + 1 : tl;
		try_template(d, tl, d + skip, n - skip);
		return 0;
	}

	/* exact-size copies: ASan flags any read past the path or the query */
	const uint8_t *qm = memchr(d, '?', n);
	size_t pl = qm ? (size_t)(qm - d) : n;
	size_t ql = qm ? n - pl - 1 : 0;
	char *p = malloc(pl ? pl : 1), *q = malloc(ql ? ql : 1);
	CHECK(p && q);
	memcpy(p, d, pl);
	if (ql)
		memcpy(q, qm + 1, ql);
	check(flags & 1 ? rc_tmpl : rc_fhir, p, pl, q, ql);
	free(p);
	free(q);
	return 0;
}
