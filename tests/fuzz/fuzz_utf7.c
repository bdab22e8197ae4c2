/* fuzz_utf7.c: libFuzzer harness for the modified UTF-7 codec (src/imap/utf7.c).
 * Both directions are strict, so every accepted input must round-trip to itself exactly. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imap/utf7.h"
#include "maildir/names.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    ofs_error err;
    char *utf8 = NULL, *back = NULL;
    /* Server bytes -> UTF-8 -> server bytes: one wire form per name. */
    if (imap_utf7_decode(s, &utf8, &err) == 0) {
        if (names_utf8_valid(utf8, strlen(utf8)) != 0)
            abort();
        if (imap_utf7_encode(utf8, &back, &err) != 0 || strcmp(back, s) != 0)
            abort();
        free(back);
        back = NULL;
    } else if (err.code != OFS_E_NAME) {
        abort();
    }
    free(utf8);
    utf8 = NULL;
    /* UTF-8 -> server bytes -> UTF-8. */
    bool valid = names_utf8_valid(s, strlen(s)) == 0;
    if (imap_utf7_encode(s, &utf8, &err) == 0) {
        if (!valid)
            abort();
        for (const char *p = utf8; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                abort();
        if (imap_utf7_decode(utf8, &back, &err) != 0 || strcmp(back, s) != 0)
            abort();
        free(back);
    } else if (valid && strlen(s) == size) {
        abort(); /* valid UTF-8 must encode (NUL-free: a C string cannot hold more) */
    }
    free(utf8);
    /* The single-sequence decoder agrees with the validator. */
    size_t i = 0;
    unsigned long cp;
    int n;
    while (s[i] && (n = imap_utf8_next(s + i, &cp)) > 0)
        i += (size_t)n;
    if ((s[i] == '\0') != valid)
        abort();
    free(s);
    return 0;
}
