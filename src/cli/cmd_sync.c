/* cmd_sync.c: `ofsync sync [ACCOUNT]`: one two-way pass over one or every account.
 * Exit 0 only when both sides ended in sync; otherwise one line says what failed and where. */
#include <stdio.h>

#include "cli/cli.h"
#include "ui/ui.h"

static const char usage[] =
    "usage: ofsync sync [--config FILE] [-v | -q] [--json] [--dry-run] [ACCOUNT]\n"
    "  --dry-run  print what each folder would get; change nothing\n";

int cmd_sync(cli_opts *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS, {"dry-run", no_argument, NULL, 'n'}, {NULL, 0, NULL, 0}};
    ofs_sync_opts so = {0};
    int ch;
    while ((ch = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "n", longopts, NULL)) != -1) {
        if (ch == 'n') {
            so.dry_run = 1;
            continue;
        }
        int r = cli_common_option(o, ch, optarg);
        if (r < 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (r == 0)
            return cli_usage_error(usage, "unknown option for sync");
    }
    if (argc - optind > 1)
        return cli_usage_error(usage, "sync takes at most one ACCOUNT");
    ofs_config *cfg = NULL;
    int rc = cli_load_config(o, &cfg);
    if (rc)
        return rc;
    ofs_config_set_trace(cfg, o->verbosity >= 2);
    ui u;
    ui_open(&u, stdout, o->verbosity, o->json);
    ofs_sync_stats stats;
    ofs_error err = {0};
    rc = ofs_sync_account_opts(cfg, optind < argc ? argv[optind] : NULL, &so, ui_on_event, &u,
                               &stats, &err);
    ui_close(&u); /* the live lines go before the error line is printed */
    ofs_config_free(cfg);
    return rc < 0 ? cli_fail(&err) : 0;
}
