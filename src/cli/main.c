/* main.c: the ofsync command line: options, the config, one command, one exit status.
 * Errors reach here as one ofs_error and are printed as one line on stderr. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ofsync.h"
#include "ui/ui.h"

static const char usage[] =
    "usage: ofsync [--config FILE] [-v | -q] COMMAND [ARGS]\n"
    "\n"
    "Keeps local Maildir folders and IMAP server folders in sync, both ways.\n"
    "\n"
    "commands:\n"
    "  sync [ACCOUNT]     one two-way pass over ACCOUNT (default: every account)\n"
    "\n"
    "options:\n"
    "  -c, --config FILE  config file (default: $XDG_CONFIG_HOME/ofsync/config)\n"
    "  -v, --verbose      also report folders that were already in sync\n"
    "  -q, --quiet        print errors only\n"
    "  -h, --help         this text\n"
    "  -V, --version      the version\n"
    "\n"
    "exit status: 0 success, 1 some folders failed, 2 usage, 3 config, 4 network,\n"
    "5 authentication, 6 protocol, 7 server refused, 8 local I/O, 9 disk full,\n"
    "10 state database, 11 limit exceeded, 12 unsafe folder name.\n";

typedef struct cli {
    const char *config;
    int verbosity;
} cli;

static int fail(const ofs_error *err)
{
    fprintf(stderr, "ofsync: %s\n", err->message);
    return err->code > 0 ? err->code : 1;
}

static int cmd_sync(const cli *o, int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "ofsync: sync takes at most one ACCOUNT\n%s", usage);
        return OFS_E_USAGE;
    }
    ofs_error err = {0};
    ofs_config *cfg = NULL;
    if (ofs_config_load(o->config, &cfg, &err) < 0)
        return fail(&err);
    ui u;
    ui_init(&u, stdout, o->verbosity);
    ofs_sync_stats stats;
    int rc = ofs_sync_account(cfg, argc ? argv[0] : NULL, ui_on_event, &u, &stats, &err);
    ofs_config_free(cfg);
    return rc < 0 ? fail(&err) : 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
    };
    cli o = {0};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:vqhV", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            o.config = optarg;
            break;
        case 'v':
            o.verbosity = 1;
            break;
        case 'q':
            o.verbosity = -1;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        case 'V':
            printf("ofsync %s\n", OFS_VERSION);
            return 0;
        default:
            fputs(usage, stderr);
            return OFS_E_USAGE;
        }
    }
    if (optind >= argc) {
        fputs(usage, stderr);
        return OFS_E_USAGE;
    }
    const char *cmd = argv[optind];
    if (!strcmp(cmd, "sync"))
        return cmd_sync(&o, argc - optind - 1, argv + optind + 1);
    if (!strcmp(cmd, "help")) {
        fputs(usage, stdout);
        return 0;
    }
    fprintf(stderr, "ofsync: unknown command '%s' (try ofsync --help)\n", cmd);
    return OFS_E_USAGE;
}
