/* main.c: the ofsync command line: global options, then one command from the table below.
 * Errors reach here as one ofs_error and are printed as one line on stderr. */
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct cli_command {
    const char *name;
    int (*run)(cli_opts *o, int argc, char **argv);
    const char *summary;
} cli_command;

static const cli_command commands[] = {
    {"sync", cmd_sync, "sync [ACCOUNT]       one two-way pass over ACCOUNT (default: all)"},
    {"status", cmd_status,
     "status [ACCOUNT]     last sync, local changes waiting, state health (offline)"},
    {"init", cmd_init,
     "init [OPTIONS]       write a config for a new account, check the connection"},
    {"check", cmd_check, "check [ACCOUNT]      verify the Maildir against the sync state"},
    {"watch", cmd_watch, "watch [ACCOUNT]      keep ACCOUNT (default: all) in sync until stopped"},
};

static void print_usage(FILE *f)
{
    fputs("usage: ofsync [--config FILE] [-v | -q] [--json] COMMAND [ARGS]\n\n"
          "Keeps local Maildir folders and IMAP server folders in sync, both ways.\n\n"
          "commands:\n",
          f);
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %s\n", commands[i].summary);
    fputs("\noptions (before or after the command):\n"
          "  -c, --config FILE  config file (default: $XDG_CONFIG_HOME/ofsync/config)\n"
          "  -v, --verbose      also report folders that were already in sync;\n"
          "                     twice (-vv): the IMAP protocol trace on stderr, secrets masked\n"
          "  -q, --quiet        print errors only\n"
          "      --json         newline-delimited JSON events on stdout\n"
          "  -h, --help         this text (after a command: that command's usage)\n"
          "  -V, --version      the version\n"
          "\nexit status: 0 success, 1 some folders failed, 2 usage, 3 config, 4 network,\n"
          "5 authentication, 6 protocol, 7 server refused, 8 local I/O, 9 disk full,\n"
          "10 state database, 11 limit exceeded, 12 unsafe folder name.\n",
          f);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS, {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
    cli_opts o = {0};
    int ch;
#ifdef M_ARENA_MAX
    /* One malloc arena for all threads: the connections' threads wait on the network, not on
     * malloc, and an arena per thread keeps the high-water mark of the largest folder its
     * thread synced (at 100,000 messages and connections = 4: 2.4 MiB of peak RSS). */
    mallopt(M_ARENA_MAX, 1);
#endif
#ifdef M_MMAP_THRESHOLD
    /* Arrays of 128 KiB and more (a folder's listing, plan, Maildir table) stay in mappings of
     * their own: freed, they leave at once, and the slack of one that grew is never touched.
     * glibc would raise the threshold to the largest such block freed, after which they land
     * in the heap and its high-water mark stays resident (100,000 messages, connections = 4:
     * 0.8 MiB of peak RSS). Setting it keeps it. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
    /* '+': stop at the command name; the command parses the rest, common options included. */
    while ((ch = getopt_long(argc, argv, "+" CLI_COMMON_SHORTOPTS "V", longopts, NULL)) != -1) {
        int r = cli_common_option(&o, ch, optarg);
        if (ch == 'V') {
            printf("ofsync %s\n", OFS_VERSION);
            return 0;
        }
        if (r < 0) {
            print_usage(stdout);
            return 0;
        }
        if (r == 0) {
            print_usage(stderr);
            return OFS_E_USAGE;
        }
    }
    if (optind >= argc) {
        print_usage(stderr);
        return OFS_E_USAGE;
    }
    const char *name = argv[optind];
    if (!strcmp(name, "help")) {
        print_usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
        if (!strcmp(name, commands[i].name)) {
            int sub_argc = argc - optind;
            char **sub_argv = argv + optind;
            optind = 1; /* the command's own getopt starts after its name */
            return commands[i].run(&o, sub_argc, sub_argv);
        }
    }
    fprintf(stderr, "ofsync: unknown command '%s' (try ofsync --help)\n", name);
    return OFS_E_USAGE;
}
