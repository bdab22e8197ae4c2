/* fuzz_config.c: libFuzzer harness for the config parser (cfg_parse); built with -DOFS_FUZZ=ON.
 * Seeds in tests/fuzz/corpus/config; `make fuzz` runs it long. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "sync/config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* Fixed values, so ~ expansion and default state paths behave the same on every host. */
    setenv("HOME", "/home/fuzz", 1);
    setenv("XDG_STATE_HOME", "/home/fuzz/.local/state", 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ofs_config *cfg = NULL;
    ofs_error err;
    if (cfg_parse("fuzz.conf", (const char *)data, size, &cfg, &err) == 0) {
        /* Exercise the lookup on what was parsed; never run pass-cmd from fuzz input. */
        for (size_t i = 0; i < cfg->n_accounts; i++)
            if (cfg_find_account(cfg, cfg->accounts[i].name) != &cfg->accounts[i])
                abort();
        ofs_config_free(cfg);
    }
    return 0;
}
