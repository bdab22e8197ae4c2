/* cmd_check.c: `ofsync check [--repair] [ACCOUNT]`: the Maildir against the sync state.
 * Exit 0 when clean; 1 when something is left that the user should know (each found in a line). */
#include <stdio.h>

#include "cli/cli.h"
#include "ui/ui.h"

static const char usage[] =
    "usage: ofsync check [--config FILE] [-q] [--repair] [ACCOUNT]\n"
    "  --repair  fix what is safe: forget state of vanished files (the next sync downloads\n"
    "            them again), separate duplicate keys, add missing flag suffixes\n";

static uint64_t problems(const ofs_check_result *r)
{
    return r->missing + r->unknown + r->duplicates + r->bad_names + r->pending + r->missing_folders;
}

int cmd_check(cli_opts *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS, {"repair", no_argument, NULL, 'r'}, {NULL, 0, NULL, 0}};
    int repair = 0, ch;
    while ((ch = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
        if (ch == 'r') {
            repair = 1;
            continue;
        }
        int r = cli_common_option(o, ch, optarg);
        if (r < 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (r == 0)
            return cli_usage_error(usage, "unknown option for check");
    }
    if (argc - optind > 1)
        return cli_usage_error(usage, "check takes at most one ACCOUNT");
    const char *account = optind < argc ? argv[optind] : NULL;
    ofs_config *cfg = NULL;
    int rc = cli_load_config(o, &cfg);
    if (rc)
        return rc;
    ui u;
    ui_open(&u, stdout, o->verbosity, o->json);
    ofs_check_result res;
    ofs_error err = {0};
    rc = ofs_check_account(cfg, account, repair, ui_on_event, &u, &res, &err);
    uint64_t repaired = res.repaired;
    if (rc == 0 && repair) /* say what is left after the repairs */
        rc = ofs_check_account(cfg, account, 0, ui_on_event, &u, &res, &err);
    ui_close(&u);
    ofs_config_free(cfg);
    if (rc < 0)
        return cli_fail(&err);
    uint64_t left = problems(&res);
    if (o->verbosity >= 0 || left)
        printf("check: %llu folders, %llu messages: %s%llu problems%s\n",
               (unsigned long long)res.folders, (unsigned long long)res.messages,
               left ? "" : "clean, ", (unsigned long long)left,
               repair ? "" : (left ? " (ofsync check --repair fixes the safe ones)" : ""));
    if (repair && o->verbosity >= 0)
        printf("check: %llu repairs made\n", (unsigned long long)repaired);
    return left ? 1 : 0;
}
