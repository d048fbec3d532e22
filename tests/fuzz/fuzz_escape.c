/* fuzz_escape.c — the one escaper: whatever the bytes, one valid JSON line and one syslog message. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alert.h"
#include "json.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct jbuf b;
	char principal[256];

	jbuf_init(&b);
	json_obj_open(&b, NULL);
	json_str(&b, "v", (const char *)data, size);
	json_obj_close(&b);
	CHECK(!b.oom && memchr(b.p, '\n', b.len) == NULL && memchr(b.p, '\r', b.len) == NULL);
	cJSON *j = cJSON_ParseWithLength(b.p, b.len);
	CHECK(j && cJSON_IsString(cJSON_GetObjectItem(j, "v")));
	cJSON_Delete(j);

	/* a hostile principal and message through the alert writers */
	size_t n = size < sizeof(principal) - 1 ? size : sizeof(principal) - 1;
	memcpy(principal, data, n);
	principal[n] = '\0';
	struct alert a = { .ts_ns = 1, .severity = 3, .rule = "rate_limit_exceeded", .principal = principal,
			   .pid = 1, .message = principal, .count = 101, .threshold = 100, .window_s = 60 };
	jbuf_reset(&b);
	alert_to_json(&a, &b);
	CHECK(memchr(b.p, '\n', b.len) == NULL);
	j = cJSON_ParseWithLength(b.p, b.len);
	CHECK(j && cJSON_IsObject(j));
	cJSON_Delete(j);
	jbuf_reset(&b);
	alert_to_syslog_msg(&a, &b);
	for (size_t i = 0; i < b.len; i++)
		CHECK((unsigned char)b.p[i] >= 0x20 && b.p[i] != 0x7f);
	jbuf_free(&b);
	return 0;
}
