/* What the OTLP readers of afterfix.ingest._otlpjson share: the JSON walker (_otlpjson.c) and
   the protobuf reader (_otlppb.c) fill the same rows the same way. */
#ifndef AFTERFIX_OTLP_H
#define AFTERFIX_OTLP_H

#include "_native.h"

#define WALK_DEPTH 64  /* nesting of arrayValue / kvlistValue the walker reads itself */
#define WALK_ATTRIBUTES 256 /* entries of one attribute list the walker reads itself (repeated
                               keys are found by comparing with every earlier one) */

/* Length of the valid UTF-8 sequence at s (lead byte >= 0x80), or 0: strict as Python's
   decoder is (no overlong forms, no surrogates, nothing past U+10FFFF). */
static inline int utf8_seq(const unsigned char *s, const unsigned char *end) {
    unsigned char c = s[0];
    if (c >= 0xC2 && c <= 0xDF) return (end - s >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (end - s < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && s[1] > 0x9F) return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (end - s < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0; /* overlong */
        if (c == 0xF4 && s[1] > 0x8F) return 0; /* past U+10FFFF */
        return 4;
    }
    return 0;
}

/* -- set up once from Python ------------------------------------------------------------- */

#define N_HOT 13 /* mapping.HOT_COLUMNS */
#define MAX_HOT_KEYS 4
enum { H_OP = 0, H_RUN = 2, H_INCIDENT = 3, H_TIN = 10, H_TOUT = 11 };

typedef struct {
    const char *s;
    Py_ssize_t n;
} Str;

struct globals {
    int ready;
    Str keys[N_HOT][MAX_HOT_KEYS]; /* per column, its attribute keys in order */
    int nkeys[N_HOT];
    PyObject *key_objs[N_HOT][MAX_HOT_KEYS]; /* the same as str, for resource dict look-ups */
    Str oi_kind;                             /* openinference.span.kind */
    PyObject *oi_ops;                        /* OI_KIND_TO_OPERATION */
    PyObject *as_text, *count;               /* mapping.as_text, mapping._count */
    PyObject *dumps;                         /* orjson.dumps, for doubles */
    PyObject *kinds[6], *kind_names[6];      /* "UNSPECIFIED"..., "SPAN_KIND_UNSPECIFIED"... */
    PyObject *codes[3], *code_names[3];
    PyObject *s_true, *s_false, *s_resource_json, *s_scope, *s_spans, *s_events, *s_limits;
    PyObject *s_max_attribute_bytes, *s_max_depth, *s_max_attributes, *s_max_body_bytes, *s_upper, *s_mark, *s_rollback;
};
extern struct globals G; /* set up once from Python: setup() */

/* -- strings and attribute values read from the line --------------------------------------- */

/* A string read from the line: its text in the line itself when it has no escapes (`raw`),
   else decoded into P.scratch at `off` (an offset: scratch moves as it grows). */
typedef struct {
    const char *raw;
    size_t off, len;
    int ascii;
} SV;

#define SV_PTR(p, v) ((v)->raw ? (v)->raw : (p)->scratch.b + (v)->off)

enum { V_NONE = 0, V_STR, V_INT, V_DOUBLE, V_BOOL, V_LIST, V_DICT };

/* One attribute value, as hot_columns needs it. */
typedef struct {
    int type;
    SV s; /* V_STR */
    long long i;
    double d;
} Val;

/* -- the reader ---------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *p, *end;
    Buf scratch;  /* decoded strings kept while a span is read (keys, hot values) */
    const char *key_s; /* the key just read by obj_next: in the line, or in `key` */
    size_t key_n;
    Buf key;
    Buf out;      /* JSON text being written */
    /* key hashes of the attribute lists being read, innermost last (duplicate detection) */
    uint64_t *hashes;
    size_t nhash, caphash;
    size_t small;          /* Limits.max_attribute_bytes >> 2 */
    size_t max_attr_bytes; /* Limits.max_attribute_bytes */
    long max_depth;        /* Limits.max_depth */
    size_t max_attributes; /* Limits.max_attributes */
    PyObject *rows, *spans, *events;
    Columns *span_cols, *event_cols; /* the same two, as what they are */
} P;

/* what a span's rows need of its resource and scope */
typedef struct {
    PyObject *res_json, *res, *service, *scope;
} Ctx;

/* One span's row as both readers append it: ids as lowercase hex (32, 16, 16 characters;
   psid NULL when there is no parent), msg NULL for no status message, links NULL for none,
   events a list of (name, time_us, attributes) tuples or NULL. */
typedef struct {
    const char *tid, *sid, *psid, *name;
    size_t name_len;
    int kind, code;
    unsigned long long start, end;
    const char *msg;
    size_t msg_len;
    const Val *vals;
    int (*hot)[MAX_HOT_KEYS];
    const Val *oi;
    const Buf *attrs, *links;
    PyObject *events;
} SpanRow;

PyObject *new_str(const char *s, size_t n, int ascii);
int put_escaped(Buf *b, const char *s, size_t n);
int put_double(Buf *b, double d);
int note_key(P *p, size_t first, const char *k, size_t n);
void note_hot(const char *k, size_t n, const Val *val, Val *vals, int (*hot)[MAX_HOT_KEYS], Val *oi);
int hot_columns(P *p, Col *cols, const Val *vals, int (*hot)[MAX_HOT_KEYS], const Val *oi, PyObject *res,
                const char *tid);
int append_span(P *p, Ctx *ctx, const SpanRow *s);
int make_scope(P *p, Ctx *ctx, PyObject *name);
int make_resource(P *p, PyObject **got, Ctx *ctx, int have_attrs);
int open_reader(P *p, PyObject *rows, long long *max_line);
void close_reader(P *p);

/* _otlppb.c */
PyObject *walk_protobuf(PyObject *self, PyObject *args);

#endif
