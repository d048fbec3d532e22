/* test_resource.c — cmocka tests for user/resource.c: FHIR path and search forms, route templates, ids, exports. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resource.h"

static struct resource_ctx *fhir_ctx;

static int group_setup(void **state)
{
	(void)state;
	struct resource_opts o;
	resource_opts_default(&o);
	fhir_ctx = resource__new(&o, NULL, 0);
	return fhir_ctx ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	resource__free(fhir_ctx);
	return 0;
}

/* Runs a request-target ("path?query") through rc; the path/query split is done here. */
static int run(const struct resource_ctx *rc, const char *target, struct resource *r)
{
	const char *q = strchr(target, '?');
	size_t plen = q ? (size_t)(q - target) : strlen(target);
	/* exact-size copies so ASan sees any read past the end */
	char *p = malloc(plen + 1), *qq = NULL;
	memcpy(p, target, plen);
	size_t qlen = 0;
	if (q) {
		qlen = strlen(q + 1);
		qq = malloc(qlen + 1);
		memcpy(qq, q + 1, qlen);
	}
	memset(r, 0x5a, sizeof(*r));
	int n = resource__extract(rc, p, plen, qq, qlen, r);
	free(p);
	free(qq);
	assert_int_equal(n, (int)r->n_ids);
	assert_true(r->n_ids <= RESOURCE_MAX_IDS);
	return n;
}

/* Expects type and the ids (a NULL-terminated list). */
static void expect(const struct resource_ctx *rc, const char *target, const char *type, ...)
{
	struct resource r;
	run(rc, target, &r);
	if (strcmp(r.type, type) != 0)
		fail_msg("%s: type \"%s\", want \"%s\"", target, r.type, type);
	va_list ap;
	va_start(ap, type);
	size_t i = 0;
	for (const char *id; (id = va_arg(ap, const char *)); i++) {
		if (i >= r.n_ids)
			fail_msg("%s: %zu ids, want more (next \"%s\")", target, r.n_ids, id);
		if (strcmp(r.ids[i], id) != 0)
			fail_msg("%s: id %zu \"%s\", want \"%s\"", target, i, r.ids[i], id);
	}
	va_end(ap);
	if (i != r.n_ids)
		fail_msg("%s: %zu ids, want %zu (first extra \"%s\")", target, r.n_ids, i, r.ids[i]);
	assert_false(r.ids_truncated);
}

static void test_fhir_read(void **state)
{
	(void)state;
	const struct resource_ctx *c = fhir_ctx;
	expect(c, "/Patient/123", "Patient", "123", NULL);
	expect(c, "/fhir/R4/Patient/123", "Patient", "123", NULL);
	expect(c, "/baseR4/Patient/pat-01.a", "Patient", "pat-01.a", NULL);
	expect(c, "/a/b/c/d/Patient/A1", "Patient", "A1", NULL);
	expect(c, "/Patient/123/", "Patient", "123", NULL);
	expect(c, "//fhir//Patient//123", "Patient", "123", NULL);
	expect(c, "/Patient/123/_history/2", "Patient", "123", NULL);
	expect(c, "/Patient/123/$everything", "Patient", "123", NULL);
	expect(c, "/Patient/123/Observation", "Observation", "123", NULL);
	expect(c, "/fhir/Patient/123/MedicationRequest?status=active", "MedicationRequest", "123", NULL);
	expect(c, "/Patient/123/*", "Patient", "123", NULL);
	expect(c, "/Patient", "Patient", NULL);
	expect(c, "/Patient/_search", "Patient", NULL);
	expect(c, "/Patient/$match", "Patient", NULL);
	/* percent-decoded ids and types */
	expect(c, "/Patient/12%2D3", "Patient", "12-3", NULL);
	expect(c, "/Pati%65nt/9", "Patient", "9", NULL);
	/* 64 is the longest id */
	char t[200];
	snprintf(t, sizeof(t), "/Patient/%064d", 7);
	struct resource r;
	assert_int_equal(run(c, t, &r), 1);
	assert_int_equal(strlen(r.ids[0]), 64);
	/* other resource types: the type, no patient id */
	expect(c, "/Observation/obs-1", "Observation", NULL);
	expect(c, "/fhir/Encounter/e1/_history/3", "Encounter", NULL);
	expect(c, "/Observation/Patient", "Observation", NULL);	/* "Patient" is that Observation's id */
	expect(c, "/BiologicallyDerivedProductDispense/1", "BiologicallyDerivedProductDispense", NULL);
	expect(c, "/MedicinalProductUndesirableEffect/1", "MedicinalProductUndesirableEffect", NULL);
	expect(c, "/Account", "Account", NULL);
	expect(c, "/VisionPrescription", "VisionPrescription", NULL);
	expect(c, "/metadata", "", NULL);
	expect(c, "/", "", NULL);
	expect(c, "", "", NULL);
}

static void test_fhir_negative(void **state)
{
	(void)state;
	const struct resource_ctx *c = fhir_ctx;
	expect(c, "/Patients/1", "", NULL);
	expect(c, "/PatientX/1", "", NULL);
	expect(c, "/patient/1", "", NULL);
	expect(c, "/PATIENT/1", "", NULL);
	expect(c, "/XPatient/1", "", NULL);
	expect(c, "/Patient/12_3", "Patient", NULL);
	expect(c, "/Patient/abc!", "Patient", NULL);
	expect(c, "/Patient/a b", "Patient", NULL);
	expect(c, "/Patient/a%20b", "Patient", NULL);
	expect(c, "/Patient/a%2Fb", "Patient", NULL);
	expect(c, "/Patient/%zz", "Patient", NULL);
	expect(c, "/Patient/12%", "Patient", NULL);
	expect(c, "/Patient/%C3%A9", "Patient", NULL);
	expect(c, "/Patient/.", "Patient", NULL);
	expect(c, "/Patient/..", "Patient", NULL);
	expect(c, "/Patient/...", "Patient", "...", NULL);	/* valid by the FHIR id rule */
	char t[200];
	snprintf(t, sizeof(t), "/Patient/%065d", 7);
	expect(c, t, "Patient", NULL);
	/* the id must follow the type directly */
	expect(c, "/Patient/_history/5", "Patient", NULL);
	expect(c, "/Observation/1/Patient/2", "Patient", NULL);	/* compartment type, 2 is not its id */
	/* an id-looking segment in the base path is not an id */
	expect(c, "/123/Patient", "Patient", NULL);
}

static void test_fhir_search(void **state)
{
	(void)state;
	const struct resource_ctx *c = fhir_ctx;
	expect(c, "/Observation?patient=123", "Observation", "123", NULL);
	expect(c, "/fhir/Observation?code=1234-5&patient=Patient/123&_sort=date", "Observation", "123", NULL);
	expect(c, "/Observation?patient=Patient%2F77", "Observation", "77", NULL);
	expect(c, "/Condition?subject=Patient/123", "Condition", "123", NULL);
	expect(c, "/Condition?subject=https://ehr.example/fhir/Patient/5/_history/2", "Condition", "5", NULL);
	expect(c, "/Condition?subject=123", "Condition", NULL);	/* subject must reference Patient */
	expect(c, "/Condition?subject=Group/123", "Condition", NULL);
	expect(c, "/Condition?subject=Patient/", "Condition", NULL);
	expect(c, "/Condition?patient=Group/9", "Condition", NULL);
	expect(c, "/Observation?patient:Patient=8", "Observation", "8", NULL);
	expect(c, "/Observation?subject:Patient=4", "Observation", "4", NULL);
	expect(c, "/Observation?subject%3APatient=Patient/4", "Observation", "4", NULL);
	expect(c, "/Observation?patient.identifier=x|1", "Observation", NULL);
	expect(c, "/Observation?patient:missing=true", "Observation", NULL);
	expect(c, "/Observation?patient=", "Observation", NULL);
	expect(c, "/Observation?patient", "Observation", NULL);
	expect(c, "/Observation?patient=1,2&patient=3", "Observation", "1", "2", "3", NULL);
	expect(c, "/Observation?patient=1&patient=1&subject=Patient/1", "Observation", "1", NULL);
	expect(c, "/Observation?patient=a_b,c", "Observation", "c", NULL);
	/* _id lists count only on Patient */
	expect(c, "/Patient?_id=1,2,3", "Patient", "1", "2", "3", NULL);
	expect(c, "/fhir/Patient?_id=p1&_elements=name", "Patient", "p1", NULL);
	expect(c, "/Patient/_search?_id=4", "Patient", "4", NULL);
	expect(c, "/Observation?_id=5", "Observation", NULL);
	expect(c, "/Patient?_id=Patient/5", "Patient", NULL);
	expect(c, "/Patient?identifier=http://hospital|12345", "Patient", NULL);
	expect(c, "/Patient?identifier=12345", "Patient", NULL);
	expect(c, "/Patient?name=Smith&birthdate=1970", "Patient", NULL);
	/* percent-encoded commas separate; a FHIR-escaped comma makes a non-id */
	expect(c, "/Patient?_id=1%2C2%2c3", "Patient", "1", "2", "3", NULL);
	expect(c, "/Patient?_id=1\\,2", "Patient", NULL);
	expect(c, "/Patient?_id=%31", "Patient", "1", NULL);
	/* path id first, then query ids; duplicates once */
	expect(c, "/Patient/1?_id=2,1", "Patient", "1", "2", NULL);
	expect(c, "/Patient/1/Observation?patient=2", "Observation", "1", "2", NULL);
	/* no FHIR type in the path: the query is not read */
	expect(c, "/search?patient=123", "", NULL);
	expect(c, "/?_id=1", "", NULL);
}

static void test_truncated(void **state)
{
	(void)state;
	char t[1024];
	int n = snprintf(t, sizeof(t), "/Patient?_id=");
	for (int i = 1; i <= 20; i++)
		n += snprintf(t + n, sizeof(t) - n, "%s%d", i > 1 ? "%2C" : "", i);
	struct resource r;
	assert_int_equal(run(fhir_ctx, t, &r), RESOURCE_MAX_IDS);
	assert_true(r.ids_truncated);
	assert_string_equal(r.ids[0], "1");
	assert_string_equal(r.ids[15], "16");

	/* exactly 16 distinct (with repeats) is not truncated */
	n = snprintf(t, sizeof(t), "/Patient/1?_id=");
	for (int i = 1; i <= 16; i++)
		n += snprintf(t + n, sizeof(t) - n, "%d,%d,", i, i);
	assert_int_equal(run(fhir_ctx, t, &r), 16);
	assert_false(r.ids_truncated);

	/* a very long value: long items are skipped, the rest still counts */
	static char big[20000];
	n = snprintf(big, sizeof(big), "/Observation?subject=");
	memset(big + n, 'x', 5000);
	n += 5000;
	snprintf(big + n, sizeof(big) - n, "/Patient/1,Patient/2");
	expect(fhir_ctx, big, "Observation", "2", NULL);
}

static void test_export(void **state)
{
	(void)state;
	static const char *yes[] = { "/$export", "/fhir/$export", "/Patient/$export", "/Group/g1/$export",
				     "/api/v1/export", "/fhir/%24export", "/Patient?_count=1000",
				     "/Observation?patient=1&_count=50000", "/x?_count=99999999999999999999",
				     "/export/", "/Patient?_count=%31000", "/api/v1/export?x=1/../" };
	static const char *no[] = { "/Patient", "/Patient?_count=999", "/Patient?_count=1e5", "/exports",
				    "/$export-poll-status", "/Patient?_count=", "/Patient?count=5000",
				    "/Patient?_count=-1000" };
	struct resource r;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		run(fhir_ctx, yes[i], &r);
		if (!r.is_export)
			fail_msg("%s: not an export", yes[i]);
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		run(fhir_ctx, no[i], &r);
		if (r.is_export)
			fail_msg("%s: an export", no[i]);
	}
	run(fhir_ctx, "/Patient/$export", &r);
	assert_string_equal(r.type, "Patient");
	assert_int_equal(r.n_ids, 0);
}

static void test_templates(void **state)
{
	(void)state;
	struct resource_opts o;
	resource_opts_default(&o);
	o.templates[0] = "/api/v1/patients/{patient}/records";
	o.templates[1] = "/api/v1/patients/{patient}";
	o.templates[2] = "/charts/{patient}/notes/%7Bdraft%7D";
	o.ntemplates = 3;
	char err[256] = "x";
	struct resource_ctx *c = resource__new(&o, err, sizeof(err));
	assert_non_null(c);
	assert_string_equal(err, "");

	expect(c, "/api/v1/patients/42/records", "Patient", "42", NULL);
	expect(c, "/api/v1/patients/42/records/", "Patient", "42", NULL);
	expect(c, "/api/v1/patients/42", "Patient", "42", NULL);
	expect(c, "/api/v1/patients/p%2D9", "Patient", "p-9", NULL);
	expect(c, "/charts/7/notes/{draft}", "Patient", "7", NULL);
	expect(c, "/charts/7/notes/%7Bdraft%7D", "Patient", "7", NULL);
	expect(c, "/api/v1/patients/42/records/x", "", NULL);
	expect(c, "/api/v1/patients", "", NULL);
	expect(c, "/api/v2/patients/42", "", NULL);
	expect(c, "/API/v1/patients/42", "", NULL);
	expect(c, "/x/api/v1/patients/42", "", NULL);
	expect(c, "/api/v1/patients/4_2", "", NULL);
	expect(c, "/api/v1/patients/..", "", NULL);
	/* the query is never read for a template match */
	expect(c, "/api/v1/patients/42?patient=43&_id=44", "Patient", "42", NULL);
	/* FHIR forms still work next to templates */
	expect(c, "/fhir/Patient/5", "Patient", "5", NULL);
	resource__free(c);

	/* FHIR off: templates only */
	o.fhir = false;
	o.templates[0] = "/v2/{patient}";
	o.ntemplates = 1;
	c = resource__new(&o, err, sizeof(err));
	assert_non_null(c);
	expect(c, "/v2/abc", "Patient", "abc", NULL);
	expect(c, "/Patient/1", "", NULL);
	expect(c, "/Observation?patient=1", "", NULL);
	expect(c, "/Patient?_id=1", "", NULL);
	struct resource r;
	run(c, "/v2/export", &r);	/* "export" is also an id here */
	assert_true(r.is_export);
	assert_int_equal(r.n_ids, 1);
	run(c, "/v2/x?_count=5000", &r);
	assert_false(r.is_export);
	resource__free(c);
}

static void expect_bad_template(const char *t, const char *why)
{
	struct resource_opts o;
	resource_opts_default(&o);
	o.templates[0] = "/ok/{patient}";
	o.templates[1] = t;
	o.ntemplates = 2;
	char err[256] = "";
	errno = 0;
	struct resource_ctx *c = resource__new(&o, err, sizeof(err));
	if (c)
		fail_msg("template \"%s\" accepted", t ? t : "(null)");
	assert_int_equal(errno, EINVAL);
	if (!strstr(err, why) || !strstr(err, "template 2"))
		fail_msg("template \"%s\": message \"%s\", want \"%s\"", t ? t : "(null)", err, why);
}

static void test_template_errors(void **state)
{
	(void)state;
	expect_bad_template("api/{patient}", "must start with '/'");
	expect_bad_template("/api/patients", "exactly one {patient}");
	expect_bad_template("/a/{patient}/b/{patient}", "exactly one {patient}");
	expect_bad_template("/a/{id}", "only {patient}");
	expect_bad_template("/a/p{patient}", "only {patient}");
	expect_bad_template("/a/{patient", "only {patient}");
	expect_bad_template("/a/{patient}?x=1", "path only");
	expect_bad_template("/a/{patient}#f", "path only");
	expect_bad_template("/a/%zz/{patient}", "percent");
	expect_bad_template("", "empty");
	expect_bad_template(NULL, "empty");
	char longt[600];
	memset(longt, 'a', sizeof(longt) - 1);
	longt[0] = '/';
	memcpy(longt + 1, "{patient}/", 10);
	longt[sizeof(longt) - 1] = '\0';
	expect_bad_template(longt, "longer than");

	struct resource_opts o;
	resource_opts_default(&o);
	o.ntemplates = RESOURCE_MAX_TEMPLATES + 1;
	char err[128];
	errno = 0;
	assert_null(resource__new(&o, err, sizeof(err)));
	assert_int_equal(errno, EINVAL);
	assert_null(resource__new(NULL, NULL, 0));
	resource__free(NULL);

	/* 32 templates are fine; a NULL err is fine */
	o.ntemplates = RESOURCE_MAX_TEMPLATES;
	for (size_t i = 0; i < o.ntemplates; i++)
		o.templates[i] = "/t/{patient}";
	struct resource_ctx *c = resource__new(&o, NULL, 0);
	assert_non_null(c);
	expect(c, "/t/1", "Patient", "1", NULL);
	resource__free(c);
}

static void test_args(void **state)
{
	(void)state;
	struct resource r;
	assert_int_equal(resource__extract(NULL, "/", 1, NULL, 0, &r), -EINVAL);
	assert_int_equal(resource__extract(fhir_ctx, "/", 1, NULL, 0, NULL), -EINVAL);
	assert_int_equal(resource__extract(fhir_ctx, NULL, 5, NULL, 7, &r), 0);
	assert_string_equal(r.type, "");
	assert_false(r.is_export);
	/* a path with NUL bytes is just bytes */
	static const char p[] = "/Patient/1\0/x";
	assert_int_equal(resource__extract(fhir_ctx, p, sizeof(p) - 1, NULL, 0, &r), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fhir_read),
		cmocka_unit_test(test_fhir_negative),
		cmocka_unit_test(test_fhir_search),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_export),
		cmocka_unit_test(test_templates),
		cmocka_unit_test(test_template_errors),
		cmocka_unit_test(test_args),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
