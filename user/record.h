/* record.h — the capture file of `run --record` and `replay`: a header, then raw records back to back.
 * Each record starts with struct pw_hdr whose size field gives its length.
 */
#ifndef PHIWATCH_RECORD_H
#define PHIWATCH_RECORD_H

#include <stdint.h>
#include <stdio.h>

#define RECORD_MAGIC "PHIWREC1"

struct record_header {
	char magic[8];
	uint32_t abi_version;
	uint32_t capture_bytes;
	int64_t realtime_offset_ns;
};

/* Writes the header; returns 0 or -errno. */
int record_write_header(FILE *f, int64_t realtime_offset_ns);
int record_write(FILE *f, const void *rec, size_t len);

struct record_reader {
	FILE *f;
	struct record_header hdr;
	uint64_t offset;        /* of the next record */
	unsigned char buf[65536];
};

/* Opens and validates the header. Returns 0, or -errno with a message in err. */
int record_reader_open(struct record_reader *r, FILE *f, char *err, size_t errlen);
/* Next record: 1 with rec and len set (valid until the next call), 0 at a
 * clean end, -EINVAL on a torn or malformed record (err says where). */
int record_reader_next(struct record_reader *r, const void **rec, size_t *len, char *err, size_t errlen);

#endif
