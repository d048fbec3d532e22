/* fuzz_ssn.c — libFuzzer target for user/ssn.c: any bytes, fed whole and in chunks cut where
 * the input says, give the same count, offset and mask; the mask is always "***-**-dddd".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ssn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ssn_scan a, b;
	size_t off = 0, i = 0;

	ssn_scan_init(&a);
	ssn_scan_feed(&a, data, size);
	ssn_scan_finish(&a);
	ssn_scan_init(&b);
	/* chunk sizes from the data itself: 1..16 bytes */
	while (off < size) {
		size_t n = (size_t)(data[i++ % size] & 15) + 1;
		if (n > size - off)
			n = size - off;
		ssn_scan_feed(&b, data + off, n);
		off += n;
	}
	ssn_scan_finish(&b);
	if (a.count != b.count || a.first_offset != b.first_offset || strcmp(a.masked, b.masked))
		abort();
	if (a.count) {
		if (memcmp(a.masked, "***-**-", 7) != 0 || strlen(a.masked) != 11)
			abort();
		for (int k = 7; k < 11; k++)
			if (a.masked[k] < '0' || a.masked[k] > '9')
				abort();
		if (a.first_offset + 11 > size)
			abort();
		/* the value found is where it says, and ends with the masked digits */
		if (memcmp(data + a.first_offset + 7, a.masked + 7, 4) != 0)
			abort();
	} else if (a.masked[0]) {
		abort();
	}
	return 0;
}
