/* ssn.h — streaming scanner for US Social Security Numbers ("ddd-dd-dddd") in response body
 * bytes fed in chunks of any size: a value split across chunks is found.
 * It never keeps a value: only the count, the body offset of the first one and
 * its masked form "***-**-1234". Not a PII classifier beyond this one shape.
 */
#ifndef PHIWATCH_SSN_H
#define PHIWATCH_SSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SSN_MASKED_LEN 12        /* "***-**-1234" + NUL */

/* A match is "ddd-dd-dddd" (ASCII digits) with a boundary on both sides: the
 * byte before and the byte after are not a letter, digit, '_' or '-' (so parts
 * of longer numbers, dates and dashed codes are not taken), and it follows the
 * SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000. */
struct ssn_scan {
	uint64_t offset;          /* bytes fed so far */
	uint32_t count;           /* values found */
	uint64_t first_offset;    /* body offset of the first value's first digit */
	char masked[SSN_MASKED_LEN]; /* first value masked, "" when none */
	/* matcher state: pattern position, and the digits of the current
	 * candidate only until it is decided */
	uint8_t pos;              /* bytes of the pattern matched, 0..11 */
	bool prev_boundary;       /* the last byte allows a match to start */
	uint16_t area, group, serial;
	uint64_t cand_offset;
};

void ssn_scan_init(struct ssn_scan *s);
/* Scans the next len bytes of the body. */
void ssn_scan_feed(struct ssn_scan *s, const void *buf, size_t len);
/* End of the body (or of the captured part): a value at the very end counts. */
void ssn_scan_finish(struct ssn_scan *s);

#endif
