/* sink_jsonl.c — JSONL / terminal transaction output (see sink_jsonl.h). */
#include "sink_jsonl.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "alert.h"
#include "log.h"

int sink_jsonl_open(struct sink_jsonl *s, const char *path, bool human)
{
	memset(s, 0, sizeof(*s));
	jbuf_init(&s->jb);
	if (!path || strcmp(path, "-") == 0) {
		s->f = stdout;
		s->human = human && isatty(STDOUT_FILENO);
		return 0;
	}
	s->f = fopen(path, "we");
	if (!s->f)
		return -errno;
	s->owned = true;
	/* the agent flushes after every poll (at most 10 ms of lines): one write per poll, not one per 4 KiB */
	setvbuf(s->f, NULL, _IOFBF, 1u << 20);
	return 0;
}

static void put_line(struct sink_jsonl *s, const char *p, size_t n)
{
	if (fwrite(p, 1, n, s->f) != n || fputc('\n', s->f) == EOF) {
		if (!s->write_errors++)
			log_error("writing a transaction failed: %s (further failures are counted)", strerror(errno));
		return;
	}
	s->lines++;
}

void sink_jsonl_txn_line(struct sink_jsonl *s, const struct txn *t, const char *json, size_t len)
{
	if (s->human) {
		sink_jsonl_txn(s, t);
		return;
	}
	put_line(s, json, len);
}

void sink_jsonl_txn(void *ctx, const struct txn *t)
{
	struct sink_jsonl *s = ctx;

	jbuf_reset(&s->jb);
	if (s->human)
		txn_to_line(t, &s->jb);
	else
		txn_to_json(t, &s->jb);
	jbuf_put(&s->jb, "\n", 1);
	if (s->jb.oom || fwrite(s->jb.p, 1, s->jb.len, s->f) != s->jb.len) {
		if (!s->write_errors++)
			log_error("writing a transaction failed: %s (further failures are counted)",
				  s->jb.oom ? "out of memory" : strerror(errno));
		return;
	}
	s->lines++;
}

void sink_jsonl_alert(void *ctx, const struct alert *a)
{
	struct sink_jsonl *s = ctx;

	jbuf_reset(&s->jb);
	alert_to_json(a, &s->jb);
	jbuf_put(&s->jb, "\n", 1);
	if (s->jb.oom || fwrite(s->jb.p, 1, s->jb.len, s->f) != s->jb.len) {
		if (!s->write_errors++)
			log_error("writing an alert failed: %s (further failures are counted)",
				  s->jb.oom ? "out of memory" : strerror(errno));
		return;
	}
	s->lines++;
	fflush(s->f); /* alerts are few and urgent */
}

void sink_jsonl_flush(struct sink_jsonl *s)
{
	if (fflush(s->f) != 0 && !s->write_errors++)
		log_error("writing transactions failed: %s", strerror(errno));
}

int sink_jsonl_close(struct sink_jsonl *s)
{
	int err = 0;

	if (s->f) {
		if (fflush(s->f) != 0)
			s->write_errors++;
		if (s->owned && fclose(s->f) != 0)
			s->write_errors++;
	}
	s->f = NULL;
	jbuf_free(&s->jb);
	if (s->write_errors)
		err = -EIO;
	return err;
}
