/* cli.h: what the command-line commands share: common options, config loading, error exit.
 * Each command lives in its own cmd_NAME.c and is listed once in main.c's command table. */
#ifndef OFS_CLI_CLI_H
#define OFS_CLI_CLI_H

#include <getopt.h>
#include <stdbool.h>

#include "ofsync.h"

typedef struct cli_opts {
    const char *config; /* --config FILE */
    int verbosity;      /* -q: -1, default 0, -v: 1, -vv: 2 (protocol trace) */
    bool json;          /* --json: newline-delimited JSON events on stdout */
} cli_opts;

/* Options every command accepts, wherever they stand on the line. Commands append their own
 * to these (CLI_COMMON_LONGOPTS first, then theirs, then the {0} terminator). */
#define CLI_COMMON_SHORTOPTS "c:vqh"
#define CLI_COMMON_LONGOPTS                                                                        \
    {"config", required_argument, NULL, 'c'}, {"verbose", no_argument, NULL, 'v'},                 \
        {"quiet", no_argument, NULL, 'q'}, {"json", no_argument, NULL, 'J'},                       \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }

/* Handles a common option. Returns 1 when handled, 0 when ch is not common, and
 * -1 for --help (the caller prints its usage and exits 0). */
int cli_common_option(cli_opts *o, int ch, const char *arg);

/* Prints "ofsync: MESSAGE" on stderr and returns the exit status for err. */
int cli_fail(const ofs_error *err);
int cli_usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cli_load_config(const cli_opts *o, ofs_config **out);

int cmd_sync(cli_opts *o, int argc, char **argv);
int cmd_status(cli_opts *o, int argc, char **argv);
int cmd_init(cli_opts *o, int argc, char **argv);
int cmd_check(cli_opts *o, int argc, char **argv);
int cmd_watch(cli_opts *o, int argc, char **argv);

#endif
