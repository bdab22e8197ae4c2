/* cli.c: pieces every command uses: common options, loading the config, failing clearly.
 * One line on stderr per failure; the exit status is the error's category. */
#include "cli/cli.h"

#include <stdarg.h>
#include <stdio.h>

int cli_common_option(cli_opts *o, int ch, const char *arg)
{
    switch (ch) {
    case 'c':
        o->config = arg;
        return 1;
    case 'v': /* -vv: the protocol trace too */
        o->verbosity = o->verbosity < 1 ? 1 : 2;
        return 1;
    case 'q':
        o->verbosity = -1;
        return 1;
    case 'J':
        o->json = true;
        return 1;
    case 'h':
        return -1;
    default:
        return 0;
    }
}

int cli_fail(const ofs_error *err)
{
    fprintf(stderr, "ofsync: %s\n", err->message);
    return err->code > 0 ? err->code : 1;
}

int cli_usage_error(const char *usage, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ofsync: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fputs(usage, stderr);
    return OFS_E_USAGE;
}

int cli_load_config(const cli_opts *o, ofs_config **out)
{
    ofs_error err = {0};
    if (ofs_config_load(o->config, out, &err) < 0)
        return cli_fail(&err);
    return 0;
}
