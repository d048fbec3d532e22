/* log.c — stderr diagnostics with a level filter. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

int log_level = LOG_LVL_INFO;

void log_msg(int level, const char *fmt, ...)
{
	static const char *tag[] = { "error: ", "warning: ", "", "debug: " };
	va_list ap;

	if (level > log_level)
		return;
	fprintf(stderr, "phiwatch: %s", tag[level]);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
