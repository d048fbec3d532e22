/* fuzz_config.c — the configuration loader: any bytes give a loaded config or a message naming the file. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config c;
	char err[512] = "";

	config_init(&c);
	int rc = config_parse(&c, "fuzz.json", (const char *)data, size, err, sizeof(err));
	if (rc) {
		CHECK(strncmp(err, "fuzz.json: ", 11) == 0);
		return 0;
	}
	config_finish(&c);
	CHECK(c.identity.nclaims >= 1 && c.identity.nclaims <= IDENTITY_MAX_CLAIMS);
	for (size_t i = 0; i < c.identity.nclaims; i++)
		CHECK(c.identity.claims[i] && c.identity.claims[i][0]);
	CHECK(c.capture.nports <= CONFIG_MAX_PORTS && c.capture.ncomms <= CONFIG_MAX_COMMS);
	CHECK(c.capture.ringbuf_mb >= 1 && c.limits.pipeline_max >= 1);
	CHECK(c.audit.o.dir && c.audit.o.initial_key_path);
	return 0;
}
