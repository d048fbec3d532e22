/* fuzz_audit.c — the audit segment reader behind `verify` and `query`: any segment bytes give a verdict, never a crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char dir[] = "/tmp/phiwatch-fuzz-audit-XXXXXX";
	static bool made;
	char path[128];

	if (!made) {
		CHECK(mkdtemp(dir));
		made = true;
	}
	/* first byte picks the file's kind: a plain segment or a compressed one */
	const char *suffix = size && (data[0] & 1) ? ".log.gz" : ".log";
	snprintf(path, sizeof(path), "%s/seg-0000000000000000.log", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/seg-0000000000000000.log.gz", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/seg-0000000000000000%s", dir, suffix);
	FILE *f = fopen(path, "w");
	CHECK(f);
	if (size > 1)
		fwrite(data + 1, 1, size - 1, f);
	fclose(f);

	struct audit_verify_result r;
	memset(&r, 0, sizeof(r));
	int rc = audit_verify(dir, NULL, NULL, &r);
	CHECK(rc == 0 || rc == 1 || rc < 0);

	struct audit_query q;
	memset(&q, 0, sizeof(q));
	q.records = true; /* every record, every segment */
	FILE *out = fopen("/dev/null", "w");
	struct audit_query_result qr;
	memset(&qr, 0, sizeof(qr));
	audit_query(dir, NULL, &q, out, &qr);
	fclose(out);
	return 0;
}
