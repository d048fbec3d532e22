/* record.c — capture file writer and reader (see record.h). */
#include "record.h"

#include <errno.h>
#include <string.h>

#include "phiwatch/events.h"

int record_write_header(FILE *f, int64_t off)
{
	struct record_header h = { .abi_version = PHIWATCH_ABI_VERSION, .capture_bytes = PHIWATCH_CAPTURE_BYTES,
				   .realtime_offset_ns = off };

	memcpy(h.magic, RECORD_MAGIC, sizeof(h.magic));
	return fwrite(&h, sizeof(h), 1, f) == 1 ? 0 : -EIO;
}

int record_write(FILE *f, const void *rec, size_t len)
{
	return fwrite(rec, 1, len, f) == len ? 0 : -EIO;
}

int record_reader_open(struct record_reader *r, FILE *f, char *err, size_t errlen)
{
	memset(&r->hdr, 0, sizeof(r->hdr));
	r->f = f;
	r->offset = sizeof(r->hdr);
	if (fread(&r->hdr, sizeof(r->hdr), 1, f) != 1) {
		snprintf(err, errlen, "too short for a capture header");
		return -EINVAL;
	}
	if (memcmp(r->hdr.magic, RECORD_MAGIC, sizeof(r->hdr.magic)) != 0) {
		snprintf(err, errlen, "not a phiwatch capture (bad magic)");
		return -EINVAL;
	}
	if (r->hdr.abi_version != PHIWATCH_ABI_VERSION) {
		snprintf(err, errlen, "capture ABI version %u, this phiwatch reads %u", r->hdr.abi_version,
			 PHIWATCH_ABI_VERSION);
		return -EINVAL;
	}
	return 0;
}

int record_reader_next(struct record_reader *r, const void **rec, size_t *len, char *err, size_t errlen)
{
	struct pw_hdr h;
	size_t n = fread(&h, 1, sizeof(h), r->f);

	if (n == 0 && feof(r->f))
		return 0;
	if (n != sizeof(h)) {
		snprintf(err, errlen, "torn record header at offset %llu", (unsigned long long)r->offset);
		return -EINVAL;
	}
	if (h.size < sizeof(h)) {
		snprintf(err, errlen, "record at offset %llu has size %u", (unsigned long long)r->offset, h.size);
		return -EINVAL;
	}
	memcpy(r->buf, &h, sizeof(h));
	if (fread(r->buf + sizeof(h), 1, h.size - sizeof(h), r->f) != h.size - sizeof(h)) {
		snprintf(err, errlen, "torn record at offset %llu", (unsigned long long)r->offset);
		return -EINVAL;
	}
	r->offset += h.size;
	*rec = r->buf;
	*len = h.size;
	return 1;
}
