/* sink_jsonl.h — transaction output: JSON lines to a file/stdout, or a readable line per call on a terminal. */
#ifndef PHIWATCH_SINK_JSONL_H
#define PHIWATCH_SINK_JSONL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "json.h"
#include "txn.h"

struct sink_jsonl {
	FILE *f;
	bool owned;          /* fclose on close */
	bool human;          /* terminal view instead of JSON */
	struct jbuf jb;
	uint64_t lines;
	uint64_t write_errors;
};

/* path "-" or NULL is stdout; human is honoured only for stdout on a terminal.
 * Returns 0 or -errno. */
int sink_jsonl_open(struct sink_jsonl *s, const char *path, bool human);
void sink_jsonl_txn(void *ctx, const struct txn *t);   /* pipeline_txn_fn */
/* A transaction already formatted as its JSON line (no newline); on a
 * terminal the readable view of t is written instead. */
void sink_jsonl_txn_line(struct sink_jsonl *s, const struct txn *t, const char *json, size_t len);
struct alert;
void sink_jsonl_alert(void *ctx, const struct alert *a); /* alert_fn: one alert per line */
void sink_jsonl_flush(struct sink_jsonl *s);
/* Returns 0, or -EIO when any write failed (disk full...). */
int sink_jsonl_close(struct sink_jsonl *s);

#endif
