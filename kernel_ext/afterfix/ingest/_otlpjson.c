/* The fast path of OTLP/JSON decoding, in C: TracesData lines onto span and event rows.

   walk(text, rows) -> bool          one line (an OTLP/HTTP JSON body too)
   walk_protobuf(body, rows) -> bool a protobuf request, in _otlppb.c
   walk_lines(data, pos, index, rows) the lines of a chunk, up to the first it leaves
   count_newlines(data, start, end)  for ingest_paths, without copying
   setup(...)                        the hot keys and constants, from afterfix.ingest.otlp
   Columns                           the Arrow column builder (_columns.c)

   walk() appends to rows.spans and rows.events (Columns) exactly the rows that
   otlp_json.walk_fast appends for the same line (the Python module stays the reference this
   is tested against: tests/ingest/test_otlp_native.py), straight from the bytes it reads;
   calls rows.resource_json() once per resourceSpans entry and rows.scope() once per
   scopeSpans entry as walk_fast does; and returns True. For anything it does not read exactly
   as the Python path would (invalid JSON or UTF-8, a shape the typed structs refuse, a limit
   reached, a repeated key, a lone surrogate, a number out of range...) it returns False,
   possibly having appended rows: the caller rolls `rows` back and reads the line the Python way.

   How it reads: one pass, recursive descent, every function returning OK, NO (leave the line
   to Python) or ERR (a Python exception is set). Strings stay where they are in the line when
   they have no escapes (SV); the values hot_columns needs are kept aside (Val) while a span's
   attributes are written out as the JSON text orjson would write for them. Keys come in any
   order: what a span needs is gathered before its row is appended, and spans (or scopes)
   that come before their scope (or resource) are read again at the end of the object.

   Input is untrusted: every read is bounds-checked against the end of the buffer, nesting
   and list lengths are capped (beyond them Python reads the line), and no value is ever
   evaluated. Only JSON text that orjson writes is produced: strings escaped as orjson escapes
   them, doubles written by orjson itself.
*/
#include "_otlp.h"
#include <math.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define MORE 2 /* obj_next / arr_next: an item follows */

#define SKIP_DEPTH 256 /* nesting of skipped (unknown) values before the line goes to Python */
#define MAX_NUMBER 400 /* characters of a number we parse */

struct globals G;


static inline void ws(P *p) {
    while (p->p < p->end && (*p->p == ' ' || *p->p == '\t' || *p->p == '\n' || *p->p == '\r')) p->p++;
}

/* The first byte from s on that is '"', '\\', a control character or not ASCII (or end). */
static inline const unsigned char *scan_plain(const unsigned char *s, const unsigned char *end) {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
    while (end - s >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)s);
        /* signed: bytes >= 0x80 are negative, so "< 0x20" catches them with the controls */
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                   _mm_cmplt_epi8(v, space));
        int mask = _mm_movemask_epi8(hit);
        if (mask) return s + __builtin_ctz((unsigned)mask);
        s += 16;
    }
#endif
    while (s < end && *s >= 0x20 && *s < 0x80 && *s != '"' && *s != '\\') s++;
    return s;
}

static inline int hex4(const unsigned char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return NO;
    }
    *out = v;
    return OK;
}

static inline int put_utf8(Buf *b, unsigned cp) {
    char t[4];
    size_t n;
    if (cp < 0x80) { t[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { t[0] = (char)(0xC0 | (cp >> 6)); t[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12)); t[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); t[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        t[0] = (char)(0xF0 | (cp >> 18)); t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); t[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    return put(b, t, n);
}

/* The JSON string at p->p (a '"'), decoded and appended to b; *ascii tells whether every
   character was ASCII. With b NULL the string is only checked. */
static int read_string(P *p, Buf *b, int *ascii) {
    const unsigned char *s = p->p + 1, *end = p->end;
    int asc = 1;
    for (;;) {
        const unsigned char *run = s;
        s = scan_plain(s, end);
        if (b && s > run && put(b, run, s - run)) return ERR;
        if (s >= end) return NO;
        unsigned char c = *s;
        if (c == '"') {
            p->p = s + 1;
            if (ascii) *ascii = asc;
            return OK;
        }
        if (c < 0x20) return NO; /* a raw control character: not JSON */
        if (c == '\\') {
            if (end - s < 2) return NO;
            unsigned char e = s[1];
            char o;
            s += 2;
            switch (e) {
            case '"': o = '"'; break;
            case '\\': o = '\\'; break;
            case '/': o = '/'; break;
            case 'b': o = '\b'; break;
            case 'f': o = '\f'; break;
            case 'n': o = '\n'; break;
            case 'r': o = '\r'; break;
            case 't': o = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (end - s < 4 || hex4(s, &cp)) return NO;
                s += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF) return NO; /* a lone low surrogate */
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (end - s < 6 || s[0] != '\\' || s[1] != 'u' || hex4(s + 2, &lo)) return NO;
                    if (lo < 0xDC00 || lo > 0xDFFF) return NO;
                    s += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (cp >= 0x80) asc = 0;
                if (b && put_utf8(b, cp)) return ERR;
                continue;
            }
            default: return NO;
            }
            if (b && putc_(b, o)) return ERR;
            continue;
        }
        int n = utf8_seq(s, end);
        if (!n) return NO;
        if (b && put(b, s, n)) return ERR;
        s += n;
        asc = 0;
    }
}

/* The string at p->p (a '"'), checked; decoded into scratch only if it has escapes. */
static int sv_read(P *p, SV *v) {
    const unsigned char *start = p->p, *s = p->p + 1, *end = p->end;
    int asc = 1;
    for (;;) {
        s = scan_plain(s, end);
        if (s >= end) return NO;
        if (*s == '"') break;
        if (*s == '\\') { /* escapes: decode it */
            p->p = start;
            v->raw = NULL;
            v->off = p->scratch.len;
            int r = read_string(p, &p->scratch, &v->ascii);
            v->len = p->scratch.len - v->off;
            return r;
        }
        if (*s < 0x20) return NO;
        int n = utf8_seq(s, end);
        if (!n) return NO;
        s += n;
        asc = 0;
    }
    v->raw = (const char *)start + 1;
    v->len = s - (start + 1);
    v->ascii = asc;
    p->p = s + 1;
    return OK;
}

static inline int expect_sv(P *p, SV *v) {
    if (p->p >= p->end || *p->p != '"') return NO;
    return sv_read(p, v);
}

/* Decoded UTF-8 as JSON text the way orjson writes it: quotes, backslashes and control
   characters escaped, everything else as is. */
int put_escaped(Buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    if (putc_(b, '"')) return ERR;
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (i < n && (unsigned char)s[i] >= 0x20 && s[i] != '"' && s[i] != '\\') i++;
        if (i > run && put(b, s + run, i - run)) return ERR;
        if (i >= n) break;
        unsigned char c = (unsigned char)s[i++];
        char e[6] = {'\\', 0, 0, 0, 0, 0};
        size_t m = 2;
        switch (c) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\b': e[1] = 'b'; break;
        case '\f': e[1] = 'f'; break;
        case '\n': e[1] = 'n'; break;
        case '\r': e[1] = 'r'; break;
        case '\t': e[1] = 't'; break;
        default:
            e[1] = 'u'; e[2] = '0'; e[3] = '0'; e[4] = hex[c >> 4]; e[5] = hex[c & 15];
            m = 6;
        }
        if (put(b, e, m)) return ERR;
    }
    return putc_(b, '"');
}

/* A string as orjson writes it: text without escapes is already in that form (it holds no
   '"', '\\' or control character, and orjson leaves every other character as it is). */
static int put_sv(P *p, Buf *b, const SV *v) {
    if (!v->raw) return put_escaped(b, p->scratch.b + v->off, v->len);
    if (b->len + v->len + 2 > b->cap && buf_grow(b, v->len + 2)) return ERR;
    b->b[b->len++] = '"';
    memcpy(b->b + b->len, v->raw, v->len);
    b->len += v->len;
    b->b[b->len++] = '"';
    return OK;
}

/* A JSON number at p->p: checked against the grammar; *is_int when it has neither fraction
   nor exponent. */
static int scan_number(P *p, const unsigned char **start, size_t *len, int *is_int) {
    const unsigned char *s = p->p, *end = p->end;
    *start = s;
    int integer = 1;
    if (s < end && *s == '-') s++;
    if (s >= end) return NO;
    if (*s == '0') s++;
    else if (*s >= '1' && *s <= '9') while (s < end && *s >= '0' && *s <= '9') s++;
    else return NO;
    if (s < end && *s == '.') {
        integer = 0;
        s++;
        if (s >= end || *s < '0' || *s > '9') return NO;
        while (s < end && *s >= '0' && *s <= '9') s++;
    }
    if (s < end && (*s == 'e' || *s == 'E')) {
        integer = 0;
        s++;
        if (s < end && (*s == '+' || *s == '-')) s++;
        if (s >= end || *s < '0' || *s > '9') return NO;
        while (s < end && *s >= '0' && *s <= '9') s++;
    }
    *len = s - *start;
    *is_int = integer;
    p->p = s;
    return OK;
}

/* Decimal digits with an optional '-', as a 64-bit signed integer; NO if anything else or out
   of range. (Python: x.isascii() and (x.isdigit() or (x[:1] == "-" and x[1:].isdigit()))) */
static int parse_i64(const char *s, size_t n, long long *out) {
    int neg = 0;
    if (n && s[0] == '-') { neg = 1; s++; n--; }
    if (!n) return NO;
    unsigned long long v = 0, lim = neg ? 9223372036854775808ULL : 9223372036854775807ULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return NO;
        unsigned d = s[i] - '0';
        if (v > (lim - d) / 10) return NO;
        v = v * 10 + d;
    }
    *out = neg ? (long long)(0ULL - v) : (long long)v;
    return OK;
}

/* Nanoseconds: digits only, fewer than 20 of them when a string; (the Python path's `int(s)
   if s.isdigit() and len(s) < 20`, or _fast_nanos); any unsigned 64-bit value as a number. */
static int parse_u64_digits(const char *s, size_t n, unsigned long long *out) {
    if (!n) return NO;
    unsigned long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return NO;
        unsigned d = s[i] - '0';
        if (v > (18446744073709551615ULL - d) / 10) return NO;
        v = v * 10 + d;
    }
    *out = v;
    return OK;
}

static int skip_value(P *p, int depth);

/* Before the next item of an object or array being read (`close` is '}' or ']'; *n counts the
   items so far): MORE with p->p at the item, or OK past `close`. A trailing comma fails later,
   where the item cannot be read. */
static int next_item(P *p, size_t *n, char close) {
    ws(p);
    if (p->p >= p->end) return NO;
    if (*p->p == close) {
        p->p++;
        return OK;
    }
    if (*n) {
        if (*p->p != ',') return NO;
        p->p++;
        ws(p);
        if (p->p >= p->end) return NO;
    }
    (*n)++;
    return MORE;
}

/* Object iteration. After '{' call obj_next with *n = 0: MORE with the key in p->key_s/key_n
   and p->p at its value, or OK at the end ('}' read). */
static int obj_next(P *p, size_t *n) {
    int r = next_item(p, n, '}');
    if (r != MORE) return r;
    if (*p->p != '"') return NO;
    /* the key's text: in the line, or decoded into p->key when it has escapes */
    const unsigned char *start = p->p, *s = scan_plain(p->p + 1, p->end);
    if (s < p->end && *s == '"') {
        p->key_s = (const char *)start + 1;
        p->key_n = s - (start + 1);
        p->p = s + 1;
    } else {
        p->key.len = 0;
        if ((r = read_string(p, &p->key, NULL))) return r;
        p->key_s = p->key.b;
        p->key_n = p->key.len;
    }
    ws(p);
    if (p->p >= p->end || *p->p != ':') return NO;
    p->p++;
    ws(p);
    return MORE;
}

/* Array iteration, like obj_next: MORE with p->p at the next item, or OK at ']'. */
static int arr_next(P *p, size_t *n) { return next_item(p, n, ']'); }

static inline int key_is(P *p, const char *k, size_t n) {
    return p->key_n == n && memcmp(p->key_s, k, n) == 0;
}
#define KEY(p, lit) key_is(p, lit, sizeof(lit) - 1)

static inline int open_obj(P *p) {
    if (p->p >= p->end || *p->p != '{') return NO;
    p->p++;
    return OK;
}

static inline int open_arr(P *p) {
    if (p->p >= p->end || *p->p != '[') return NO;
    p->p++;
    return OK;
}

static inline int is_null(P *p) {
    if (p->end - p->p >= 4 && memcmp(p->p, "null", 4) == 0) {
        p->p += 4;
        return 1;
    }
    return 0;
}

static int skip_value(P *p, int depth) {
    int r;
    size_t n = 0;
    if (depth > SKIP_DEPTH || p->p >= p->end) return NO;
    switch (*p->p) {
    case '{':
        p->p++;
        while ((r = obj_next(p, &n)) == MORE)
            if ((r = skip_value(p, depth + 1))) return r;
        return r;
    case '[':
        p->p++;
        while ((r = arr_next(p, &n)) == MORE)
            if ((r = skip_value(p, depth + 1))) return r;
        return r;
    case '"': return read_string(p, NULL, NULL);
    case 't':
        if (p->end - p->p >= 4 && memcmp(p->p, "true", 4) == 0) { p->p += 4; return OK; }
        return NO;
    case 'f':
        if (p->end - p->p >= 5 && memcmp(p->p, "false", 5) == 0) { p->p += 5; return OK; }
        return NO;
    case 'n': return is_null(p) ? OK : NO;
    default: {
        const unsigned char *s;
        size_t len;
        int is_int;
        return scan_number(p, &s, &len, &is_int);
    }
    }
}

PyObject *new_str(const char *s, size_t n, int ascii) {
    if (ascii) {
        PyObject *o = PyUnicode_New((Py_ssize_t)n, 127);
        if (o) memcpy(PyUnicode_DATA(o), s, n);
        return o;
    }
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, NULL);
}

/* a double as orjson writes it */
int put_double(Buf *b, double d) {
    PyObject *f = PyFloat_FromDouble(d);
    if (!f) return ERR;
    PyObject *j = PyObject_CallOneArg(G.dumps, f);
    Py_DECREF(f);
    if (!j) return ERR;
    int r = put(b, PyBytes_AS_STRING(j), PyBytes_GET_SIZE(j));
    Py_DECREF(j);
    return r;
}

static inline uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* Notes a key of the attribute list that starts at hashes[first]; NO if it repeats an
   earlier one (a dict keeps the first place and the last value: left to Python). */
int note_key(P *p, size_t first, const char *k, size_t n) {
    uint64_t h = hash_bytes(k, n);
    for (size_t i = first; i < p->nhash; i++)
        if (p->hashes[i] == h) return NO; /* a repeat, or (rarely) a collision: Python decides */
    if (p->nhash == p->caphash) {
        size_t cap = p->caphash ? p->caphash * 2 : 64;
        uint64_t *nh = realloc(p->hashes, cap * sizeof *nh);
        if (!nh) {
            PyErr_NoMemory();
            return ERR;
        }
        p->hashes = nh;
        p->caphash = cap;
    }
    p->hashes[p->nhash++] = h;
    return OK;
}

/* Notes the value of an attribute whose key is one of the hot keys (or openinference.span.kind)
   in vals[] / hot[] (or *oi), for hot_columns. */
void note_hot(const char *k, size_t n, const Val *val, Val *vals, int (*hot)[MAX_HOT_KEYS], Val *oi) {
    for (int c = 0; c < N_HOT; c++)
        for (int j = 0; j < G.nkeys[c]; j++)
            if (G.keys[c][j].n == (Py_ssize_t)n && memcmp(G.keys[c][j].s, k, n) == 0) {
                vals[c * MAX_HOT_KEYS + j] = *val;
                hot[c][j] = 1;
            }
    if (oi && (Py_ssize_t)n == G.oi_kind.n && memcmp(G.oi_kind.s, k, n) == 0) *oi = *val;
}

static int any_value(P *p, Buf *out, long depth, Val *v);

/* A list of KeyValue (or null) written to `out` as a JSON object. With `hot` set, the values
   of the hot keys are noted in hot[] (indexes into vals[]). Python: _fast_attrs / the kvlist
   branch of _fast_value. */
static int key_values(P *p, Buf *out, long depth, Val *vals, int (*hot)[MAX_HOT_KEYS], Val *oi) {
    if (is_null(p)) return putc_(out, '{') || putc_(out, '}') ? ERR : OK;
    int r = open_arr(p);
    if (r) return r;
    size_t first = p->nhash, n = 0, scratch_mark = p->scratch.len;
    if (putc_(out, '{')) return ERR;
    while ((r = arr_next(p, &n)) == MORE) {
        if (n > p->max_attributes || n > WALK_ATTRIBUTES) return NO;
        if ((r = open_obj(p))) return r;
        size_t m = 0;
        SV key;
        int have_key = 0, have_value = 0, key_first = 0;
        Val val = {V_NONE};
        if (n > 1 && putc_(out, ',')) return ERR;
        size_t value_at = 0;
        while ((r = obj_next(p, &m)) == MORE) {
            if (KEY(p, "key")) {
                if (have_key++) return NO;
                if ((r = expect_sv(p, &key))) return r;
            } else if (KEY(p, "value")) {
                if (have_value++) return NO;
                if (have_key) { /* the usual order: "key": written before the value */
                    key_first = 1;
                    if (put_sv(p, out, &key) || putc_(out, ':')) return ERR;
                }
                value_at = out->len;
                if (is_null(p)) {
                    if (put(out, "null", 4)) return ERR;
                } else if ((r = any_value(p, out, depth, &val))) {
                    return r;
                }
            } else if ((r = skip_value(p, 0))) {
                return r;
            }
        }
        if (r) return r;
        if (!have_key) return NO;
        if (!have_value) {
            key_first = 1;
            if (put_sv(p, out, &key) || putc_(out, ':') || put(out, "null", 4)) return ERR;
        }
        const char *k = SV_PTR(p, &key);
        size_t key_len = key.len;
        if ((r = note_key(p, first, k, key_len))) return r;
        if (!key_first) { /* the value came first: append "key": and rotate it to the front */
            size_t vlen = out->len - value_at, before = out->len;
            if (put_sv(p, out, &key) || putc_(out, ':')) return ERR;
            size_t klen = out->len - before;
            if (out->len + vlen > out->cap && buf_grow(out, vlen)) return ERR;
            char *base = out->b + value_at;
            k = SV_PTR(p, &key);
            memcpy(out->b + out->len, base, vlen);        /* the value, past the end */
            memmove(base, base + vlen, klen);             /* "key": to the front */
            memcpy(base + klen, out->b + out->len, vlen); /* the value after it */
        }
        if (hot) note_hot(k, key_len, &val, vals, hot, oi);
    }
    if (r) return r;
    p->nhash = first;
    if (!hot) p->scratch.len = scratch_mark; /* keys and values no longer needed */
    return putc_(out, '}');
}

/* One AnyValue object at p->p, written to `out` as the Python value would be by orjson.
   Python: _fast_value. `v` receives what hot_columns needs (strings stay in scratch). */
static int any_value(P *p, Buf *out, long depth, Val *v) {
    int r = open_obj(p);
    if (r) return r;
    size_t n = 0;
    int fields = 0;
    v->type = V_NONE;
    while ((r = obj_next(p, &n)) == MORE) {
        if (KEY(p, "stringValue") || KEY(p, "bytesValue")) {
            SV sv;
            if (fields++) return NO;
            if ((r = expect_sv(p, &sv))) return r;
            if (sv.len > p->small) return NO;
            if (put_sv(p, out, &sv)) return ERR;
            v->type = V_STR;
            v->s = sv;
        } else if (KEY(p, "boolValue")) {
            if (fields++) return NO;
            if (p->end - p->p >= 4 && memcmp(p->p, "true", 4) == 0) { p->p += 4; v->i = 1; }
            else if (p->end - p->p >= 5 && memcmp(p->p, "false", 5) == 0) { p->p += 5; v->i = 0; }
            else return NO;
            v->type = V_BOOL;
            if (v->i ? put(out, "true", 4) : put(out, "false", 5)) return ERR;
        } else if (KEY(p, "intValue")) {
            long long x;
            if (fields++) return NO;
            if (p->p < p->end && *p->p == '"') {
                SV sv;
                if ((r = sv_read(p, &sv))) return r;
                r = parse_i64(SV_PTR(p, &sv), sv.len, &x);
                if (!sv.raw) p->scratch.len = sv.off;
                if (r) return NO;
            } else {
                const unsigned char *s;
                size_t len;
                int is_int;
                if ((r = scan_number(p, &s, &len, &is_int))) return r;
                if (!is_int || parse_i64((const char *)s, len, &x)) return NO;
            }
            char t[24];
            int m = snprintf(t, sizeof t, "%lld", x);
            if (put(out, t, m)) return ERR;
            v->type = V_INT; v->i = x;
        } else if (KEY(p, "doubleValue")) {
            const unsigned char *s;
            size_t len;
            int is_int;
            double d;
            if (fields++) return NO;
            if ((r = scan_number(p, &s, &len, &is_int))) return r; /* "NaN" and friends: Python */
            if (is_int) {
                long long x;
                if (parse_i64((const char *)s, len, &x)) return NO;
                d = (double)x;
            } else {
                char t[MAX_NUMBER + 1];
                if (len > MAX_NUMBER) return NO;
                memcpy(t, s, len);
                t[len] = 0;
                d = strtod(t, NULL);
                if (!isfinite(d)) return NO;
            }
            if (put_double(out, d)) return ERR;
            v->type = V_DOUBLE; v->d = d;
        } else if (KEY(p, "arrayValue") || KEY(p, "kvlistValue")) {
            int kv = KEY(p, "kvlistValue");
            /* nesting past WALK_DEPTH goes to Python too (which refuses it or recurses safely),
               whatever Limits.max_depth allows: this C stack stays bounded */
            if (fields++ || depth >= p->max_depth || depth >= WALK_DEPTH) return NO;
            if ((r = open_obj(p))) return r;
            size_t m = 0;
            int have_values = 0;
            size_t start = out->len;
            while ((r = obj_next(p, &m)) == MORE) {
                if (KEY(p, "values")) {
                    if (have_values++) return NO;
                    if (kv) {
                        if ((r = key_values(p, out, depth + 1, NULL, NULL, NULL))) return r;
                    } else if (is_null(p)) {
                        if (put(out, "[]", 2)) return ERR;
                    } else {
                        if ((r = open_arr(p))) return r;
                        size_t k = 0, scratch_mark = p->scratch.len;
                        if (putc_(out, '[')) return ERR;
                        while ((r = arr_next(p, &k)) == MORE) {
                            Val item;
                            if (k > 1 && putc_(out, ',')) return ERR;
                            if ((r = any_value(p, out, depth + 1, &item))) return r;
                        }
                        if (r) return r;
                        p->scratch.len = scratch_mark;
                        if (putc_(out, ']')) return ERR;
                    }
                } else if ((r = skip_value(p, 0))) {
                    return r;
                }
            }
            if (r) return r;
            if (!have_values && put(out, kv ? "{}" : "[]", 2)) return ERR;
            if (depth == 0 && out->len - start > p->max_attr_bytes) return NO;
            v->type = kv ? V_DICT : V_LIST;
        } else if ((r = skip_value(p, 0))) {
            return r;
        }
    }
    if (r) return r;
    if (!fields && put(out, "null", 4)) return ERR;
    return OK;
}

/* -- hot columns ----------------------------------------------------------------------------- */

/* mapping.as_text of a value read from the line, with hot_columns' shortcut for non-empty
   strings. New reference (Py_None included). */
static PyObject *val_text(P *p, const Val *v) {
    char t[24];
    switch (v->type) {
    case V_STR:
        if (!v->s.len) Py_RETURN_NONE;
        return new_str(SV_PTR(p, &v->s), v->s.len, v->s.ascii);
    case V_INT:
        snprintf(t, sizeof t, "%lld", v->i);
        return PyUnicode_FromString(t);
    case V_DOUBLE: {
        PyObject *f = PyFloat_FromDouble(v->d);
        if (!f) return NULL;
        PyObject *s = PyObject_Str(f);
        Py_DECREF(f);
        return s;
    }
    case V_BOOL: return Py_NewRef(v->i ? G.s_true : G.s_false);
    default: Py_RETURN_NONE;
    }
}

/* The same for a value of the resource's (a Python object). */
static PyObject *obj_text(PyObject *o) {
    if (PyUnicode_CheckExact(o) && PyUnicode_GET_LENGTH(o)) return Py_NewRef(o);
    return PyObject_CallOneArg(G.as_text, o);
}

/* A token count (hot_columns' `tin`): integers as they are, anything else through _count. */
static PyObject *val_count(P *p, const Val *v) {
    switch (v->type) {
    case V_INT: return PyLong_FromLongLong(v->i);
    case V_DOUBLE: {
        PyObject *f = PyFloat_FromDouble(v->d);
        if (!f) return NULL;
        PyObject *c = PyObject_CallOneArg(G.count, f);
        Py_DECREF(f);
        return c;
    }
    case V_STR: {
        PyObject *s = new_str(SV_PTR(p, &v->s), v->s.len, v->s.ascii);
        if (!s) return NULL;
        PyObject *c = PyObject_CallOneArg(G.count, s);
        Py_DECREF(s);
        return c;
    }
    default: Py_RETURN_NONE; /* booleans, lists, dicts: _count gives None */
    }
}

/* The first of column c's keys with a value that is not null, or NULL. */
static const Val *first_val(const Val *vals, int (*hot)[MAX_HOT_KEYS], int c) {
    for (int j = 0; j < G.nkeys[c]; j++)
        if (hot[c][j] && vals[c * MAX_HOT_KEYS + j].type != V_NONE) return &vals[c * MAX_HOT_KEYS + j];
    return NULL;
}

/* Appends mapping.hot_columns(attrs, resource, trace_id) to cols[0 .. 13). A non-empty string
   of the line goes in as it is; anything else through its Python value, as hot_columns has it. */
int hot_columns(P *p, Col *cols, const Val *vals, int (*hot)[MAX_HOT_KEYS], const Val *oi, PyObject *res,
                       const char *tid) {
    for (int c = 0; c < N_HOT; c++) {
        PyObject *x = NULL;
        const Val *v, *direct = NULL;
        if (c == H_RUN) {
            for (int j = 0; j < G.nkeys[c] && !x && !direct; j++) {
                const Val *a = hot[c][j] ? &vals[c * MAX_HOT_KEYS + j] : NULL;
                if (a && a->type == V_STR && a->s.len) {
                    direct = a;
                    break;
                }
                if (a && a->type != V_NONE) {
                    x = val_text(p, a);
                } else {
                    PyObject *o = PyDict_GetItemWithError(res, G.key_objs[c][j]);
                    if (!o && PyErr_Occurred()) return ERR;
                    if (!o || o == Py_None) continue;
                    x = obj_text(o);
                }
                if (!x) return ERR;
                if (x == Py_None) Py_CLEAR(x);
            }
            if (!x && !direct) {
                if (col_str(&cols[c], tid, 32)) return ERR;
                continue;
            }
        } else if (c == H_INCIDENT && !first_val(vals, hot, c)) {
            PyObject *o = PyDict_GetItemWithError(res, G.key_objs[c][0]);
            if (!o && PyErr_Occurred()) return ERR;
            x = (!o || o == Py_None) ? Py_NewRef(Py_None) : obj_text(o);
        } else if ((v = first_val(vals, hot, c))) {
            if (c == H_TIN || c == H_TOUT) {
                if (v->type == V_INT) {
                    if (col_i64(&cols[c], v->i)) return ERR;
                    continue;
                }
                x = val_count(p, v);
            } else if (v->type == V_STR && v->s.len) {
                direct = v;
            } else {
                x = val_text(p, v);
            }
        } else {
            x = Py_NewRef(Py_None);
        }
        if (direct) {
            if (col_str(&cols[c], SV_PTR(p, &direct->s), direct->s.len)) return ERR;
            continue;
        }
        if (!x) return ERR;
        if (c == H_OP && x == Py_None && oi->type == V_STR) {
            /* openinference.span.kind: _OI_OPS.get(k) or _OI_OPS.get(k.upper()) */
            PyObject *k = new_str(SV_PTR(p, &oi->s), oi->s.len, oi->s.ascii);
            if (!k) return ERR;
            PyObject *op = PyDict_GetItemWithError(G.oi_ops, k);
            if (!op && PyErr_Occurred()) { Py_DECREF(k); return ERR; }
            if (!op || !PyObject_IsTrue(op)) {
                PyObject *up = PyObject_CallMethodNoArgs(k, G.s_upper);
                if (!up) { Py_DECREF(k); return ERR; }
                op = PyDict_GetItemWithError(G.oi_ops, up);
                Py_DECREF(up);
                if (!op && PyErr_Occurred()) { Py_DECREF(k); return ERR; }
            }
            Py_DECREF(k);
            if (op) {
                Py_DECREF(x);
                x = Py_NewRef(op);
            }
        }
        int r = col_obj(&cols[c], x);
        Py_DECREF(x);
        if (r) return r;
    }
    return OK;
}

/* -- spans --------------------------------------------------------------------------------- */

static int is_hex_id(const char *s, size_t n, size_t want) {
    if (n != want) return 0;
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return 0;
        nonzero |= c != '0';
    }
    return nonzero;
}

/* nanoseconds: a string of fewer than 20 digits, or an unsigned 64-bit number */
static int nanos(P *p, unsigned long long *out) {
    if (p->p < p->end && *p->p == '"') {
        SV sv;
        int r = sv_read(p, &sv);
        if (r) return r;
        r = (sv.len < 20 && sv.ascii) ? parse_u64_digits(SV_PTR(p, &sv), sv.len, out) : NO;
        if (!sv.raw) p->scratch.len = sv.off;
        return r;
    }
    const unsigned char *s;
    size_t len;
    int is_int, r = scan_number(p, &s, &len, &is_int);
    if (r) return r;
    if (!is_int || *s == '-') return NO; /* "-0" is 0, which no span or event may have */
    return parse_u64_digits((const char *)s, len, out);
}

/* an enum (kind, status code): an integer or one of the names; the index, or NO */
static int enum_value(P *p, PyObject **names, int count, int *out) {
    if (p->p < p->end && *p->p == '"') {
        SV sv;
        int r = sv_read(p, &sv);
        if (r) return r;
        r = NO;
        for (int i = 0; i < count; i++) {
            Py_ssize_t n;
            const char *s = PyUnicode_AsUTF8AndSize(names[i], &n);
            if (!s) return ERR;
            if ((size_t)n == sv.len && memcmp(s, SV_PTR(p, &sv), sv.len) == 0) { *out = i; r = OK; }
        }
        if (!sv.raw) p->scratch.len = sv.off;
        return r;
    }
    const unsigned char *s;
    size_t len;
    int is_int;
    long long x;
    int r = scan_number(p, &s, &len, &is_int);
    if (r) return r;
    if (!is_int || parse_i64((const char *)s, len, &x) || x < 0 || x >= count) return NO;
    *out = (int)x;
    return OK;
}

/* A list of events: rows appended to `ev` as (name, time_us, attributes) until the span's ids
   are known. Python: the events loop of walk_fast. */
static int read_events(P *p, PyObject *ev) {
    if (is_null(p)) return OK;
    int r = open_arr(p);
    if (r) return r;
    size_t n = 0;
    while ((r = arr_next(p, &n)) == MORE) {
        if ((r = open_obj(p))) return r;
        size_t m = 0;
        SV name = {"", 0, 0, 1};
        int have_t = 0, have_name = 0, have_attrs = 0;
        unsigned long long t = 0;
        size_t scratch_mark = p->scratch.len;
        p->out.len = 0;
        while ((r = obj_next(p, &m)) == MORE) {
            if (KEY(p, "timeUnixNano")) {
                if (have_t++) return NO;
                if ((r = nanos(p, &t))) return r;
            } else if (KEY(p, "name")) {
                if (have_name++) return NO;
                if ((r = expect_sv(p, &name))) return r;
            } else if (KEY(p, "attributes")) {
                if (have_attrs++) return NO;
                if ((r = key_values(p, &p->out, 0, NULL, NULL, NULL))) return r;
            } else if ((r = skip_value(p, 0))) {
                return r;
            }
        }
        if (r) return r;
        if (!have_t || !t) return NO;
        if (!have_attrs && put(&p->out, "{}", 2)) return ERR;
        PyObject *row = PyTuple_New(3);
        if (!row) return ERR;
        PyTuple_SET_ITEM(row, 0, new_str(SV_PTR(p, &name), name.len, name.ascii));
        PyTuple_SET_ITEM(row, 1, PyLong_FromUnsignedLongLong(t / 1000));
        PyTuple_SET_ITEM(row, 2, new_str(p->out.b, p->out.len, 0));
        if (!PyTuple_GET_ITEM(row, 0) || !PyTuple_GET_ITEM(row, 1) || !PyTuple_GET_ITEM(row, 2)) {
            Py_DECREF(row);
            return ERR;
        }
        r = PyList_Append(ev, row);
        Py_DECREF(row);
        if (r) return ERR;
        p->scratch.len = scratch_mark;
    }
    return r;
}

/* Links as their JSON text in `out`: [{"trace_id":..,"span_id":..,"attributes":{..}}, ...] */
static int read_links(P *p, Buf *out, int *any) {
    *any = 0;
    if (is_null(p)) return OK;
    int r = open_arr(p);
    if (r) return r;
    size_t n = 0;
    if (putc_(out, '[')) return ERR;
    while ((r = arr_next(p, &n)) == MORE) {
        if ((r = open_obj(p))) return r;
        size_t m = 0, scratch_mark = p->scratch.len;
        SV tid = {0}, sid = {0};
        int have_tid = 0, have_sid = 0, have_attrs = 0;
        Buf attrs = {0};
        while ((r = obj_next(p, &m)) == MORE) {
            if (KEY(p, "traceId")) {
                if (have_tid++) r = NO;
                else r = expect_sv(p, &tid);
            } else if (KEY(p, "spanId")) {
                if (have_sid++) r = NO;
                else r = expect_sv(p, &sid);
            } else if (KEY(p, "attributes")) {
                if (have_attrs++) r = NO;
                else r = key_values(p, &attrs, 0, NULL, NULL, NULL);
            } else {
                r = skip_value(p, 0);
            }
            if (r) break;
        }
        if (!r && (!have_tid || !have_sid || !is_hex_id(SV_PTR(p, &tid), tid.len, 32) ||
                   !is_hex_id(SV_PTR(p, &sid), sid.len, 16)))
            r = NO;
        if (!r && !have_attrs) r = put(&attrs, "{}", 2);
        if (!r) {
            if (n > 1 && putc_(out, ',')) r = ERR;
            else if (put(out, "{\"trace_id\":\"", 13) || put(out, SV_PTR(p, &tid), 32) ||
                     put(out, "\",\"span_id\":\"", 13) || put(out, SV_PTR(p, &sid), 16) ||
                     put(out, "\",\"attributes\":", 15) || put(out, attrs.b, attrs.len) || putc_(out, '}'))
                r = ERR;
        }
        free(attrs.b);
        if (r) return r;
        p->scratch.len = scratch_mark;
    }
    if (r) return r;
    *any = n > 0;
    return putc_(out, ']');
}

/* The row of one span (and of its events) at the end of p->spans (and p->events): all of
   it, or nothing and ERR. Python: the rows.spans.append of walk_fast / _pb_span. */
int append_span(P *p, Ctx *ctx, const SpanRow *s) {
    Columns *t = p->span_cols;
    Col *c = t->cols;
    Py_ssize_t n;
    const char *kind_s = PyUnicode_AsUTF8AndSize(G.kinds[s->kind], &n);
    if (!kind_s || col_str(&c[0], s->tid, 32) || col_str(&c[1], s->sid, 16) ||
        (s->psid ? col_str(&c[2], s->psid, 16) : col_null(&c[2])) ||
        col_str(&c[3], s->name, s->name_len) || col_str(&c[4], kind_s, (size_t)n) ||
        col_i64(&c[5], (long long)(s->start / 1000)) || col_i64(&c[6], (long long)(s->end / 1000)) ||
        /* (end - start) / 1e6: the int difference rounded to a double, as Python does */
        col_f64(&c[7], (double)(s->end - s->start) / 1e6) || col_obj(&c[8], G.codes[s->code]) ||
        (s->msg ? col_str(&c[9], s->msg, s->msg_len) : col_null(&c[9])) || col_obj(&c[10], ctx->service) ||
        col_obj(&c[11], ctx->scope) || hot_columns(p, c + 12, s->vals, s->hot, s->oi, ctx->res, s->tid) ||
        col_str(&c[25], s->attrs->b, s->attrs->len) || col_obj(&c[26], ctx->res_json) ||
        (s->links ? col_str(&c[27], s->links->b, s->links->len) : col_null(&c[27])) || columns_end_row(t)) {
        columns_truncate(t, t->rows); /* no half row stays behind */
        return ERR;
    }
    if (!s->events) return OK;
    t = p->event_cols;
    c = t->cols;
    Py_ssize_t ne = PyList_GET_SIZE(s->events);
    for (Py_ssize_t i = 0; i < ne; i++) {
        PyObject *e = PyList_GET_ITEM(s->events, i); /* (name, time_us, attributes) */
        PyObject *seq = PyLong_FromSsize_t(i);
        int bad = !seq || col_str(&c[0], s->tid, 32) || col_str(&c[1], s->sid, 16) || col_obj(&c[2], seq) ||
                  col_obj(&c[3], PyTuple_GET_ITEM(e, 0)) || col_obj(&c[4], PyTuple_GET_ITEM(e, 1)) ||
                  col_obj(&c[5], PyTuple_GET_ITEM(e, 2)) || columns_end_row(t);
        Py_XDECREF(seq);
        if (bad) {
            columns_truncate(t, t->rows);
            return ERR;
        }
    }
    return OK;
}

static int read_span(P *p, Ctx *ctx) {
    int r = open_obj(p);
    if (r) return r;
    size_t n = 0;
    p->scratch.len = 0;
    SV tid = {0}, sid = {0}, psid = {0}, name = {0}, msg = {0};
    unsigned seen = 0; /* one bit per known field: a repeat goes to Python */
    unsigned long long start = 0, end = 0;
    int kind = 0, code = 0, have_links = 0, have_msg = 0;
    Val vals[N_HOT * MAX_HOT_KEYS], oi = {V_NONE};
    int hot[N_HOT][MAX_HOT_KEYS];
    memset(hot, 0, sizeof hot);
    Buf attrs = {0}, links = {0};
    PyObject *ev = NULL;
#define ONCE(bit) \
    if (seen & (1u << (bit))) { r = NO; break; } \
    seen |= 1u << (bit)
    while ((r = obj_next(p, &n)) == MORE) {
        r = OK; /* each branch below sets it only when it reads something (a null leaves it) */
        if (KEY(p, "traceId")) {
            ONCE(0);
            r = expect_sv(p, &tid);
        } else if (KEY(p, "spanId")) {
            ONCE(1);
            r = expect_sv(p, &sid);
        } else if (KEY(p, "parentSpanId")) {
            ONCE(2);
            if (!is_null(p)) r = expect_sv(p, &psid);
        } else if (KEY(p, "name")) {
            ONCE(3);
            r = expect_sv(p, &name);
        } else if (KEY(p, "startTimeUnixNano")) {
            ONCE(4);
            r = nanos(p, &start);
        } else if (KEY(p, "endTimeUnixNano")) {
            ONCE(5);
            r = nanos(p, &end);
        } else if (KEY(p, "kind")) {
            ONCE(6);
            r = enum_value(p, G.kind_names, 6, &kind);
        } else if (KEY(p, "attributes")) {
            ONCE(7);
            r = key_values(p, &attrs, 0, vals, hot, &oi);
        } else if (KEY(p, "events")) {
            ONCE(8);
            ev = PyList_New(0);
            r = ev ? read_events(p, ev) : ERR;
        } else if (KEY(p, "links")) {
            ONCE(9);
            r = read_links(p, &links, &have_links);
        } else if (KEY(p, "status")) {
            ONCE(10);
            if (!is_null(p)) {
                size_t m = 0;
                int have_code = 0;
                if (!(r = open_obj(p))) {
                    while ((r = obj_next(p, &m)) == MORE) {
                        if (KEY(p, "code")) {
                            if (have_code++) { r = NO; break; }
                            r = enum_value(p, G.code_names, 3, &code);
                        } else if (KEY(p, "message")) {
                            if (have_msg++) { r = NO; break; }
                            if (is_null(p)) r = OK; /* msg_len stays 0: None */
                            else r = expect_sv(p, &msg);
                        } else {
                            r = skip_value(p, 0);
                        }
                        if (r) break;
                    }
                }
            }
        } else {
            r = skip_value(p, 0);
        }
        if (r) break;
    }
#undef ONCE
    if (r) goto done;
    r = NO;
    if ((seen & 0x3b) != 0x3b) goto done; /* traceId, spanId, name, start and end are required */
    if (!is_hex_id(SV_PTR(p, &tid), tid.len, 32) || !is_hex_id(SV_PTR(p, &sid), sid.len, 16)) goto done;
    if (psid.len && !is_hex_id(SV_PTR(p, &psid), psid.len, 16)) goto done;
    if (!name.len || !start || start > end) goto done;
    if (!(seen & (1u << 7)) && put(&attrs, "{}", 2)) { r = ERR; goto done; }
    {
        SpanRow s = {SV_PTR(p, &tid), SV_PTR(p, &sid), psid.len ? SV_PTR(p, &psid) : NULL, SV_PTR(p, &name), name.len,
                     kind, code, start, end, msg.len ? SV_PTR(p, &msg) : NULL, msg.len, vals, hot, &oi, &attrs,
                     have_links ? &links : NULL, ev};
        r = append_span(p, ctx, &s);
    }
done:
    Py_XDECREF(ev);
    free(attrs.b);
    free(links.b);
    return r;
}

/* -- scopes and resources -------------------------------------------------------------------- */

static int read_spans(P *p, Ctx *ctx) {
    if (is_null(p)) return OK;
    int r = open_arr(p);
    if (r) return r;
    size_t n = 0;
    while ((r = arr_next(p, &n)) == MORE)
        if ((r = read_span(p, ctx))) return r;
    return r;
}

/* rows.scope(name) once per scopeSpans entry, as walk_fast calls it */
int make_scope(P *p, Ctx *ctx, PyObject *name) {
    if (ctx->scope) return OK;
    ctx->scope = name ? PyObject_CallMethodOneArg(p->rows, G.s_scope, name) : Py_NewRef(Py_None);
    return ctx->scope ? OK : ERR;
}

/* Keys come in any order, but spans need their scope's name: spans that come before the
   scope are read at the end (a second pass over them, only then). */
static int read_scope_spans(P *p, Ctx *rctx) {
    int r = open_obj(p);
    if (r) return r;
    size_t n = 0;
    const unsigned char *spans_at = NULL;
    int have_scope = 0, have_legacy = 0, have_name = 0, have_spans = 0;
    PyObject *name = NULL;
    Ctx ctx = *rctx;
    ctx.scope = NULL;
    while ((r = obj_next(p, &n)) == MORE) {
        if (KEY(p, "scope")) {
            size_t m = 0;
            if (have_scope++) {
                r = NO;
                break;
            }
            if ((r = open_obj(p))) break;
            while ((r = obj_next(p, &m)) == MORE) {
                if (KEY(p, "name")) {
                    if (have_name++) { r = NO; break; }
                    if (!is_null(p)) {
                        SV sv;
                        if ((r = expect_sv(p, &sv))) break;
                        if (sv.len && !(name = new_str(SV_PTR(p, &sv), sv.len, sv.ascii))) { r = ERR; break; }
                        if (!sv.raw) p->scratch.len = sv.off;
                    }
                } else if ((r = skip_value(p, 0))) {
                    break;
                }
            }
        } else if (KEY(p, "spans")) {
            if (have_spans++) r = NO;
            else if (!have_scope) { spans_at = p->p; r = skip_value(p, 0); }
            else if (!(r = make_scope(p, &ctx, name))) r = read_spans(p, &ctx);
        } else if (KEY(p, "instrumentationLibrary")) {
            have_legacy = 1;
            r = skip_value(p, 0);
        } else {
            r = skip_value(p, 0);
        }
        if (r) break;
    }
    if (!r && !have_scope && have_legacy) r = NO;
    if (!r) r = make_scope(p, &ctx, name);
    if (!r && spans_at) {
        const unsigned char *after = p->p;
        p->p = spans_at;
        r = read_spans(p, &ctx);
        p->p = after;
    }
    Py_XDECREF(name);
    Py_XDECREF(ctx.scope);
    return r;
}

/* rows.resource_json(text) once per resourceSpans entry: (redacted text, dict, service) */
int make_resource(P *p, PyObject **got, Ctx *ctx, int have_attrs) {
    if (*got) return OK;
    if (!have_attrs) p->out.len = 0;
    if (!have_attrs && put(&p->out, "{}", 2)) return ERR;
    PyObject *text = new_str(p->out.b, p->out.len, 0);
    if (!text) return ERR;
    *got = PyObject_CallMethodOneArg(p->rows, G.s_resource_json, text);
    Py_DECREF(text);
    if (!*got) return ERR;
    if (!PyTuple_Check(*got) || PyTuple_GET_SIZE(*got) != 3 || !PyDict_Check(PyTuple_GET_ITEM(*got, 1))) {
        PyErr_SetString(PyExc_TypeError, "rows.resource_json must return (text, dict, service)");
        return ERR;
    }
    ctx->res_json = PyTuple_GET_ITEM(*got, 0);
    ctx->res = PyTuple_GET_ITEM(*got, 1);
    ctx->service = PyTuple_GET_ITEM(*got, 2);
    return OK;
}

static int read_scopes(P *p, Ctx *ctx) {
    int r = open_arr(p);
    if (r) return r;
    size_t k = 0;
    while ((r = arr_next(p, &k)) == MORE)
        if ((r = read_scope_spans(p, ctx))) return r;
    return r;
}

/* As read_scope_spans: scopes that come before the resource are read at the end. */
static int read_resource_spans(P *p) {
    int r = open_obj(p);
    if (r) return r;
    size_t n = 0;
    const unsigned char *scopes_at = NULL;
    int have_resource = 0, have_legacy = 0, have_attrs = 0, have_scopes = 0;
    PyObject *got = NULL;
    Ctx ctx = {0};
    while ((r = obj_next(p, &n)) == MORE) {
        if (KEY(p, "resource")) {
            size_t m = 0;
            if (have_resource++) { r = NO; break; }
            if (is_null(p)) continue;
            if ((r = open_obj(p))) break;
            while ((r = obj_next(p, &m)) == MORE) {
                if (KEY(p, "attributes")) {
                    if (have_attrs++) { r = NO; break; }
                    p->out.len = 0;
                    if ((r = key_values(p, &p->out, 0, NULL, NULL, NULL))) break;
                } else if ((r = skip_value(p, 0))) {
                    break;
                }
            }
        } else if (KEY(p, "scopeSpans")) {
            if (have_scopes++) r = NO;
            else if (!have_resource) { scopes_at = p->p; r = (p->p < p->end && *p->p == '[') ? skip_value(p, 0) : NO; }
            else if (!(r = make_resource(p, &got, &ctx, have_attrs))) r = read_scopes(p, &ctx);
        } else if (KEY(p, "instrumentationLibrarySpans")) {
            have_legacy = 1;
            r = skip_value(p, 0);
        } else {
            r = skip_value(p, 0);
        }
        if (r) break;
    }
    if (!r) r = make_resource(p, &got, &ctx, have_attrs);
    if (!r && !have_scopes && have_legacy) r = NO;
    if (!r && scopes_at) {
        const unsigned char *after = p->p;
        p->p = scopes_at;
        r = read_scopes(p, &ctx);
        p->p = after;
    }
    Py_XDECREF(got);
    return r;
}

static int read_traces_data(P *p) {
    ws(p);
    int r = open_obj(p);
    if (r) return r;
    size_t n = 0;
    int have = 0;
    while ((r = obj_next(p, &n)) == MORE) {
        if (KEY(p, "resourceSpans")) {
            if (have++) return NO;
            if ((r = open_arr(p))) return r;
            size_t k = 0;
            while ((r = arr_next(p, &k)) == MORE)
                if ((r = read_resource_spans(p))) return r;
            if (r) return r;
        } else if ((r = skip_value(p, 0))) {
            return r;
        }
    }
    if (r) return r;
    ws(p);
    return (have && p->p == p->end) ? OK : NO;
}

static long long attr_int(PyObject *o, PyObject *name) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (!v) return -1;
    long long x = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return x;
}

/* The reader for `rows`: its lists and limits. ERR (an exception set) when rows is not a Rows. */
int open_reader(P *p, PyObject *rows, long long *max_line) {
    memset(p, 0, sizeof *p);
    if (!G.ready) {
        PyErr_SetString(PyExc_RuntimeError, "afterfix.ingest._otlpjson.setup() was not called");
        return ERR;
    }
    p->rows = rows;
    p->spans = PyObject_GetAttr(rows, G.s_spans);
    p->events = PyObject_GetAttr(rows, G.s_events);
    if (!p->spans || !p->events) return ERR;
    if (!PyObject_TypeCheck(p->spans, &ColumnsType) || !PyObject_TypeCheck(p->events, &ColumnsType) ||
        ((Columns *)p->spans)->ncols != 28 || ((Columns *)p->events)->ncols != 6) {
        PyErr_SetString(PyExc_TypeError, "rows.spans and rows.events must be Columns of 28 and 6 columns");
        return ERR;
    }
    p->span_cols = (Columns *)p->spans;
    p->event_cols = (Columns *)p->events;
    PyObject *limits = PyObject_GetAttr(rows, G.s_limits);
    if (!limits) return ERR;
    long long mab = attr_int(limits, G.s_max_attribute_bytes), md = attr_int(limits, G.s_max_depth),
              ma = attr_int(limits, G.s_max_attributes), mb = attr_int(limits, G.s_max_body_bytes);
    Py_DECREF(limits);
    if (PyErr_Occurred()) return ERR;
    p->max_attr_bytes = mab < 0 ? 0 : (size_t)mab;
    p->small = p->max_attr_bytes >> 2;
    p->max_depth = (long)md;
    p->max_attributes = ma < 0 ? 0 : (size_t)ma;
    if (max_line) *max_line = mb;
    return OK;
}

void close_reader(P *p) {
    Py_XDECREF(p->spans);
    Py_XDECREF(p->events);
    free(p->scratch.b);
    free(p->key.b);
    free(p->out.b);
    free(p->hashes);
}

static PyObject *walk(PyObject *self, PyObject *args) {
    Py_buffer text;
    PyObject *rows;
    if (!PyArg_ParseTuple(args, "y*O:walk", &text, &rows)) return NULL;
    P p;
    int r = open_reader(&p, rows, NULL);
    if (!r) {
        p.p = text.buf;
        p.end = p.p + text.len;
        r = read_traces_data(&p);
        if (r != OK && r != ERR) r = NO;
    }
    close_reader(&p);
    PyBuffer_Release(&text);
    if (r == ERR) return NULL;
    return Py_NewRef(r == OK ? Py_True : Py_False);
}

/* walk_lines(data, pos, index, rows) -> (pos, index)

   The lines of `data` from byte `pos` on (line `index` of data, counting from 0), each read as
   walk() reads one, until one that walk() would leave to Python: returns where that line
   starts and its index, with nothing of it stored (rows.mark() / rows.rollback()), or
   (len(data), index past the last line) when every line was read. Blank lines are skipped, as
   decode_json_lines skips them; a line over Limits.max_body_bytes is left to Python. */
static PyObject *walk_lines(PyObject *self, PyObject *args) {
    Py_buffer text;
    Py_ssize_t pos, index;
    PyObject *rows;
    if (!PyArg_ParseTuple(args, "y*nnO:walk_lines", &text, &pos, &index, &rows)) return NULL;
    P p;
    long long max_line = 0;
    int r = open_reader(&p, rows, &max_line);
    const unsigned char *base = text.buf, *stop = base + text.len;
    if (pos < 0 || pos > text.len) pos = text.len;
    while (!r && pos < text.len) {
        const unsigned char *ls = base + pos, *nl = memchr(ls, '\n', stop - ls), *le = nl ? nl : stop;
        const unsigned char *q = ls;
        while (q < le && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\v' || *q == '\f')) q++;
        if (q < le) { /* not blank */
            if (le - ls > max_line) break;
            PyObject *mark = PyObject_CallMethodNoArgs(rows, G.s_mark);
            if (!mark) { r = ERR; break; }
            p.p = ls;
            p.end = le;
            p.nhash = 0;
            r = read_traces_data(&p);
            if (r != OK && r != ERR) r = NO; /* anything else the reader returns declines too */
            if (r == NO) {
                PyObject *done = PyObject_CallMethodOneArg(rows, G.s_rollback, mark);
                Py_DECREF(mark);
                if (!done) r = ERR;
                Py_XDECREF(done);
                if (r == NO) r = OK;
                break;
            }
            Py_DECREF(mark);
            if (r) break;
        }
        pos = nl ? (nl - base) + 1 : text.len;
        index++;
    }
    close_reader(&p);
    PyBuffer_Release(&text);
    if (r == ERR) return NULL;
    return Py_BuildValue("(nn)", pos, index);
}

/* count_newlines(data, start, end) -> int: the b"\n" in data[start:end], without copying it */
static PyObject *count_newlines(PyObject *self, PyObject *args) {
    Py_buffer data;
    Py_ssize_t start, end, n = 0;
    if (!PyArg_ParseTuple(args, "y*nn:count_newlines", &data, &start, &end)) return NULL;
    if (start < 0) start = 0;
    if (end > data.len) end = data.len;
    const char *p = (const char *)data.buf + start, *stop = (const char *)data.buf + end;
    while (p < stop && (p = memchr(p, '\n', (size_t)(stop - p)))) {
        n++;
        p++;
    }
    PyBuffer_Release(&data);
    return PyLong_FromSsize_t(n);
}

/* setup(hot_keys, oi_kind_key, oi_ops, as_text, count, dumps, kinds, kind_names, codes, code_names) */
static PyObject *setup(PyObject *self, PyObject *args) {
    PyObject *hot_keys, *oi_kind, *oi_ops, *as_text, *count, *dumps, *kinds, *kind_names, *codes, *code_names;
    if (!PyArg_ParseTuple(args, "O!UO!OOOO!O!O!O!:setup", &PyTuple_Type, &hot_keys, &oi_kind, &PyDict_Type, &oi_ops,
                          &as_text, &count, &dumps, &PyTuple_Type, &kinds, &PyTuple_Type, &kind_names, &PyTuple_Type,
                          &codes, &PyTuple_Type, &code_names))
        return NULL;
    if (G.ready) Py_RETURN_NONE; /* once per process: the references below live as long as it */
    if (PyTuple_GET_SIZE(hot_keys) != N_HOT || PyTuple_GET_SIZE(kinds) != 6 || PyTuple_GET_SIZE(kind_names) != 6 ||
        PyTuple_GET_SIZE(codes) != 3 || PyTuple_GET_SIZE(code_names) != 3) {
        PyErr_SetString(PyExc_ValueError, "setup: 13 hot columns, 6 kinds and 3 status codes expected");
        return NULL;
    }
    for (int c = 0; c < N_HOT; c++) {
        PyObject *ks = PyTuple_GET_ITEM(hot_keys, c);
        if (!PyTuple_Check(ks) || PyTuple_GET_SIZE(ks) < 1 || PyTuple_GET_SIZE(ks) > MAX_HOT_KEYS) {
            PyErr_SetString(PyExc_ValueError, "setup: each hot column needs 1 to 4 keys");
            return NULL;
        }
        G.nkeys[c] = (int)PyTuple_GET_SIZE(ks);
        for (int j = 0; j < G.nkeys[c]; j++) {
            PyObject *k = PyTuple_GET_ITEM(ks, j);
            if (!PyUnicode_Check(k)) {
                PyErr_SetString(PyExc_TypeError, "setup: keys must be str");
                return NULL;
            }
            G.keys[c][j].s = PyUnicode_AsUTF8AndSize(k, &G.keys[c][j].n);
            if (!G.keys[c][j].s) return NULL;
            G.key_objs[c][j] = Py_NewRef(k);
        }
    }
    G.oi_kind.s = PyUnicode_AsUTF8AndSize(oi_kind, &G.oi_kind.n);
    if (!G.oi_kind.s) return NULL;
    Py_INCREF(oi_kind);
    G.oi_ops = Py_NewRef(oi_ops);
    G.as_text = Py_NewRef(as_text);
    G.count = Py_NewRef(count);
    G.dumps = Py_NewRef(dumps);
    for (int i = 0; i < 6; i++) {
        G.kinds[i] = Py_NewRef(PyTuple_GET_ITEM(kinds, i));
        G.kind_names[i] = Py_NewRef(PyTuple_GET_ITEM(kind_names, i));
    }
    for (int i = 0; i < 3; i++) {
        G.codes[i] = Py_NewRef(PyTuple_GET_ITEM(codes, i));
        G.code_names[i] = Py_NewRef(PyTuple_GET_ITEM(code_names, i));
    }
    G.s_true = PyUnicode_InternFromString("true");
    G.s_false = PyUnicode_InternFromString("false");
    G.s_resource_json = PyUnicode_InternFromString("resource_json");
    G.s_scope = PyUnicode_InternFromString("scope");
    G.s_spans = PyUnicode_InternFromString("spans");
    G.s_events = PyUnicode_InternFromString("events");
    G.s_limits = PyUnicode_InternFromString("limits");
    G.s_max_attribute_bytes = PyUnicode_InternFromString("max_attribute_bytes");
    G.s_max_depth = PyUnicode_InternFromString("max_depth");
    G.s_max_attributes = PyUnicode_InternFromString("max_attributes");
    G.s_upper = PyUnicode_InternFromString("upper");
    G.s_max_body_bytes = PyUnicode_InternFromString("max_body_bytes");
    G.s_mark = PyUnicode_InternFromString("mark");
    G.s_rollback = PyUnicode_InternFromString("rollback");
    if (PyErr_Occurred()) return NULL;
    G.ready = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, "walk(text, rows) -> bool: the rows of one OTLP/JSON line, or False (see the module)"},
    {"count_newlines", count_newlines, METH_VARARGS, "count_newlines(data, start, end) -> int, without copying data"},
    {"walk_lines", walk_lines, METH_VARARGS, "walk_lines(data, pos, index, rows) -> (pos, index): walk() line by line"},
    {"walk_protobuf", walk_protobuf, METH_VARARGS,
     "walk_protobuf(body, rows) -> bool: the rows of one OTLP protobuf request upb has parsed, or False (_otlppb.c)"},
    {"setup", setup, METH_VARARGS, "setup(...): the hot keys and constants, once (afterfix.ingest.otlp calls it)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otlpjson", NULL, -1, methods};

PyMODINIT_FUNC PyInit__otlpjson(void) {
    if (PyType_Ready(&ColumnsType) < 0 || PyType_Ready(&BlockType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddObjectRef(m, "Columns", (PyObject *)&ColumnsType) < 0) Py_CLEAR(m);
    return m;
}
