/* resource.h — which patient a request touches: FHIR REST paths and queries, plus configured route templates. */
/* Not a router or a FHIR validator: bytes in, ids out; no I/O, no state beyond the compiled templates. */
#ifndef PHIWATCH_RESOURCE_H
#define PHIWATCH_RESOURCE_H

#include <stdbool.h>
#include <stddef.h>

#define RESOURCE_MAX_IDS 16
#define RESOURCE_ID_MAX 64
#define RESOURCE_TYPE_MAX 40		/* longest FHIR type is 34 ("BiologicallyDerivedProductDispense") */
#define RESOURCE_MAX_TEMPLATES 32
#define RESOURCE_TEMPLATE_MAX 512	/* bytes of one template */
#define RESOURCE_EXPORT_COUNT 1000	/* _count at or above this is an export */

struct resource_opts {
	bool fhir;				/* FHIR REST forms (default true) */
	const char *templates[RESOURCE_MAX_TEMPLATES];	/* e.g. "/api/v1/patients/{patient}/records" */
	size_t ntemplates;
};

/* fhir = true, no templates. */
void resource_opts_default(struct resource_opts *o);

struct resource_ctx;	/* compiled templates; read-only after __new, so shareable between threads */

/*
 * Compiles o (the template strings are copied). A template starts with '/',
 * holds exactly one "{patient}" which fills one whole path segment, no other
 * '{' or '}', no '?' or '#', at most RESOURCE_TEMPLATE_MAX bytes. Returns NULL
 * and sets errno (EINVAL with a one-line reason naming the template in err,
 * when err is not NULL; ENOMEM).
 */
struct resource_ctx *resource__new(const struct resource_opts *o, char *err, size_t errlen);
/* NULL ok. */
void resource__free(struct resource_ctx *rc);

struct resource {
	char type[RESOURCE_TYPE_MAX + 1];	/* FHIR type the path addresses ("Observation" for
						 * /Observation?patient=1, the compartment type for
						 * /Patient/1/Observation), "Patient" for a template
						 * match; "" when none */
	char ids[RESOURCE_MAX_IDS][RESOURCE_ID_MAX + 1];	/* patient ids; only [0, n_ids) are written */
	size_t n_ids;			/* distinct patient ids, in order of appearance */
	bool ids_truncated;		/* more than RESOURCE_MAX_IDS distinct ids were seen */
	bool is_export;			/* a path segment "$export" or "export", or _count >= 1000 */
};

/*
 * The patient ids of one request, from path[0..plen) and query[0..qlen) (the
 * request-target split at '?', query without it; either may be NULL when its
 * length is 0). Segments and query parts are percent-decoded before they are
 * compared; empty segments ("//", a trailing '/') are skipped. An id is
 * [A-Za-z0-9.-]{1,64}, not "." or ".."; anything else is not an id.
 * FHIR (opts.fhir), with any base path before the type (a known R4/R4B/R5
 * resource type, case-sensitive):
 *   .../Patient/{id}[/...]   (_history, $operations, compartments under it)
 *   ?patient=, ?patient:Patient=, ?subject:Patient=  {id} or a reference to Patient/{id}
 *   ?subject=  only a reference to Patient/{id} (relative or absolute, versioned or not)
 *   Patient?_id=  (only when the path's type is Patient)
 * each value a comma list. The query is only read when the path has a FHIR type
 * (and for _count). Templates: "{patient}" matches one segment, the other
 * segments literally, the whole path; ids of every matching template count.
 * Returns n_ids (>= 0), or -EINVAL when rc or out is NULL.
 */
int resource__extract(const struct resource_ctx *rc, const char *path, size_t plen, const char *query, size_t qlen,
		      struct resource *out);

#endif
