/* cmd.h — subcommands of the phiwatch binary; each returns the process exit status. */
#ifndef PHIWATCH_CMD_H
#define PHIWATCH_CMD_H

#include "pipeline.h"

int cmd_run(int argc, char **argv);
int cmd_replay(int argc, char **argv);

/* Prints "phiwatch: stats {...}" (one JSON line) on stderr. */
struct audit_stats;
/* as: NULL when there is no audit trail (replay). */
void cmd_print_stats(const struct pipeline_stats *ps, uint64_t ring_events, uint64_t bad_events, uint64_t lines,
		     uint64_t write_errors, const struct audit_stats *as);
int cmd_audit(int argc, char **argv);
int cmd_inventory(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_status(int argc, char **argv);

#endif
