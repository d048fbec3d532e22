/* slice.h — a borrowed view of bytes; never owns, never NUL-terminated. */
#ifndef PHIWATCH_SLICE_H
#define PHIWATCH_SLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

struct slice {
	const char *p;
	size_t len;
};

#define SLICE_LIT(s) ((struct slice){ (s), sizeof(s) - 1 })

static inline bool slice_eq(struct slice a, const char *lit)
{
	size_t n = strlen(lit);
	return a.len == n && (n == 0 || memcmp(a.p, lit, n) == 0);
}

/* ASCII case-insensitive comparison with a NUL-terminated literal. */
static inline bool slice_ieq(struct slice a, const char *lit)
{
	size_t n = strlen(lit);
	return a.len == n && (n == 0 || strncasecmp(a.p, lit, n) == 0);
}

#endif
