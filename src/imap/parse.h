/* parse.h: incremental parser for IMAP server responses (RFC 3501, RFC 9051).
 * Bytes go in as they arrive; whole responses come out as small trees; message bodies go to an fd.
 */
#ifndef OFS_IMAP_PARSE_H
#define OFS_IMAP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ofsync.h"

typedef enum imap_vtype {
    IMAP_V_ATOM,     /* atom, number, flag (\Seen), BODY[...]<0> section atom */
    IMAP_V_STRING,   /* quoted string (unescaped) or literal kept in memory */
    IMAP_V_NIL,      /* NIL */
    IMAP_V_LIST,     /* parenthesized list */
    IMAP_V_STREAMED, /* literal written to the fd chosen by the literal callback */
} imap_vtype;

typedef struct imap_value {
    imap_vtype type;
    char *str;  /* ATOM, STRING: NUL-terminated (a ~{n} literal may hold NULs: use len) */
    size_t len; /* ATOM, STRING */
    struct imap_value *items; /* LIST */
    size_t n;                 /* LIST */
    uint64_t size;            /* STREAMED: bytes written to the fd */
    int fd;                   /* STREAMED: the fd they were written to */
} imap_value;

typedef enum imap_rtype { IMAP_R_UNTAGGED, IMAP_R_TAGGED, IMAP_R_CONTINUATION } imap_rtype;

typedef enum imap_status {
    IMAP_S_NONE, /* a data response (FETCH, LIST, ...) */
    IMAP_S_OK,
    IMAP_S_NO,
    IMAP_S_BAD,
    IMAP_S_PREAUTH,
    IMAP_S_BYE,
} imap_status;

/* One complete server response.
 *   "* 23 EXISTS"                       untagged, number=23, name="EXISTS"
 *   "* 5 FETCH (UID 9 FLAGS (\Seen))"    untagged, number=5, name="FETCH", args=[LIST]
 *   "* LIST (\Noselect) "/" foo"         untagged, name="LIST", args=[LIST, STRING, ATOM]
 *   "* OK [UIDVALIDITY 3] ok"            untagged, status=OK, name="OK", code=[ATOM UIDVALIDITY,
 * ATOM 3], text="ok" "a1 NO [TRYCREATE] no such mailbox"  tagged, tag="a1", status=NO, code=[...],
 * text=...
 *   "+ go ahead"                         continuation, text="go ahead"
 * name is upper-cased. args, code and text are empty (n=0, "") when absent. */
typedef struct imap_response {
    imap_rtype type;
    char *tag;
    imap_status status;
    bool has_number;
    uint32_t number;
    char *name;
    bool has_code;
    imap_value code; /* a LIST: the code's atom first, then its arguments */
    char *text;
    imap_value args; /* a LIST of the tokens after name (data responses) */
} imap_response;

typedef struct imap_parse_limits {
    size_t max_line;             /* bytes of response text outside literals (default 4 MiB) */
    size_t max_literal_mem;      /* bytes of one literal kept in memory (default 1 MiB) */
    uint64_t max_literal_stream; /* bytes of one streamed literal (default 2 GiB) */
    size_t max_depth;            /* list nesting (default 64) */
} imap_parse_limits;

/* Decides where a literal goes, called after its {n} header and before its bytes.
 * `atom` is the atom just before the literal in the same list (e.g. "BODY[]"), or "".
 * Returns an fd >= 0 to stream the literal there, -1 to keep it in memory, -2 to fail (err set). */
typedef int (*imap_literal_fn)(void *ctx, const char *atom, uint64_t size, ofs_error *err);

typedef struct imap_parser imap_parser;

imap_parser *imap_parser_new(const imap_parse_limits *lim); /* NULL: defaults */
void imap_parser_free(imap_parser *p);
void imap_parser_set_literal_fn(imap_parser *p, imap_literal_fn fn, void *ctx);

/* Consumes bytes until one complete response is ready or the data runs out.
 * Returns how many bytes were consumed, or -1 with err (OFS_E_PROTO for malformed input,
 * OFS_E_LIMIT for a limit, OFS_E_IO for a failed write to a literal's fd). After an error
 * the parser is unusable: the connection must be dropped. */
long imap_parser_feed(imap_parser *p, const char *data, size_t len, ofs_error *err);

/* Returns the ready response (owned by the parser, valid until the next feed), or NULL. */
const imap_response *imap_parser_response(imap_parser *p);

/* Strict number readers: digits only, no sign, no overflow. Return false otherwise. */
bool imap_value_u32(const imap_value *v, uint32_t *out);
bool imap_value_u64(const imap_value *v, uint64_t *out);
/* True for an ATOM equal to s, case-insensitively. */
bool imap_value_is(const imap_value *v, const char *s);
/* ATOM or STRING contents, or NULL for NIL/LIST/STREAMED. */
const char *imap_value_str(const imap_value *v);

#endif
