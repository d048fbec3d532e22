/* main.c — the phiwatch command table; nothing else. */
#include <stdio.h>
#include <string.h>

#include "cmd.h"
#include "phiwatch/events.h"

#ifndef PHIWATCH_VERSION
#define PHIWATCH_VERSION "0.1.0"
#endif

static int cmd_version(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("phiwatch %s (capture ABI %d, %d-byte payload prefix)\n", PHIWATCH_VERSION, PHIWATCH_ABI_VERSION,
	       PHIWATCH_CAPTURE_BYTES);
	return 0;
}

static const struct cmd {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
} cmds[] = {
	{ "run", cmd_run, "watch HTTP API calls on this host (root)" },
	{ "replay", cmd_replay, "run the pipeline over a recorded capture or a transactions JSONL" },
	{ "audit", cmd_audit, "verify the audit trail, or query it (who accessed which patient)" },
	{ "dump", cmd_dump, "ask the running agent for a forensic dump (root)" },
	{ "status", cmd_status, "a summary of the running agent (root)" },
	{ "inventory", cmd_inventory, "the API surface seen in the audit trail" },
	{ "version", cmd_version, "print the version" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: phiwatch COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %-8s %s\n", cmds[i].name, cmds[i].help);
	fprintf(f, "\n`phiwatch COMMAND --help` for a command's options.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version"))
		return cmd_version(0, NULL);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "phiwatch: unknown command \"%s\"\n", argv[1]);
	usage(stderr);
	return 2;
}
