/* The fast path of OTLP protobuf decoding, in C: the rows of one ExportTraceServiceRequest.

   walk_protobuf(body, rows) -> bool

   Called only with a body that opentelemetry-proto (upb) has parsed already: upb decides what
   is a valid request, and the Python walk over its message (otlp_proto.walk) stays the
   reference this is tested against (tests/ingest/test_otlp_native.py). Walking upb's message
   from Python makes an object for every field it reads, ~5 µs a span here before any work is
   done; this reads the same bytes once more without any, and appends to rows.spans and
   rows.events exactly the rows otlp_proto.walk appends, calling rows.resource_json() once per
   ResourceSpans and rows.scope() once per ScopeSpans as it does (via rows.resource), and
   returns True.

   Anything it does not read exactly as that walk would makes it return False, possibly
   having appended rows: the caller rolls `rows` back and walks upb's message in Python. That
   is: a field given twice where upb would keep the last or merge them, a known field with an
   unexpected wire type (upb keeps those as unknown fields), a span or resource the walk would
   refuse, a limit reached, a repeated attribute key, a double that is not finite, a string
   over Limits.max_attribute_bytes, nesting or lists past WALK_DEPTH / WALK_ATTRIBUTES.

   Input is untrusted even so: every read is bounds-checked against the end of its message,
   strings are checked to be UTF-8, and recursion is bounded by WALK_DEPTH.
*/
#include "_otlp.h"
#include <math.h>

#define FIELD 2 /* next_field: a field was read */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* the bytes of one message */
typedef struct {
    const unsigned char *p, *end;
} W;

static int varint(W *w, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (w->p >= w->end) return NO;
        unsigned char b = *w->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return OK;
        }
    }
    return NO;
}

/* FIELD with the next field's number and wire type, OK at the end of the message, else NO */
static int next_field(W *w, uint32_t *num, int *wt) {
    if (w->p >= w->end) return OK;
    uint64_t tag;
    if (varint(w, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) return NO;
    *num = (uint32_t)(tag >> 3);
    *wt = (int)(tag & 7);
    return FIELD;
}

/* a length-delimited field's bytes */
static int read_len(W *w, W *sub) {
    uint64_t n;
    if (varint(w, &n) || n > (uint64_t)(w->end - w->p)) return NO;
    sub->p = w->p;
    sub->end = w->p + n;
    w->p += n;
    return OK;
}

static int read_fixed64(W *w, uint64_t *out) {
    if (w->end - w->p < 8) return NO;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | w->p[i];
    w->p += 8;
    *out = v;
    return OK;
}

static int skip_field(W *w, int wt) {
    uint64_t v;
    W sub;
    switch (wt) {
    case WT_VARINT: return varint(w, &v);
    case WT_I64: return read_fixed64(w, &v);
    case WT_LEN: return read_len(w, &sub);
    case WT_I32:
        if (w->end - w->p < 4) return NO;
        w->p += 4;
        return OK;
    default: return NO; /* groups: nothing in OTLP has them */
    }
}

static inline size_t wlen(const W *w) { return (size_t)(w->end - w->p); }

/* 1 when s[0..n) is UTF-8 as Python decodes it (strict: utf8_seq), with *ascii set; else 0 */
static int utf8_ok(const unsigned char *s, size_t n, int *ascii) {
    const unsigned char *end = s + n;
    *ascii = 1;
    while (s < end) {
        if (*s < 0x80) {
            s++;
            continue;
        }
        *ascii = 0;
        int k = utf8_seq(s, end);
        if (!k) return 0;
        s += k;
    }
    return 1;
}

/* a string field as an SV pointing into the body; NO unless it is UTF-8 */
static int str_sv(const W *s, SV *v) {
    v->raw = (const char *)s->p;
    v->off = 0;
    v->len = wlen(s);
    return utf8_ok(s->p, v->len, &v->ascii) ? OK : NO;
}

static void to_hex(char *out, const unsigned char *s, size_t n) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[s[i] >> 4];
        out[2 * i + 1] = digits[s[i] & 15];
    }
}

/* an id of `size` bytes that is not all zeros (what _pb_span accepts); hex into `out` */
static int id_hex(const W *id, size_t size, char *out) {
    if (wlen(id) != size) return NO;
    int nonzero = 0;
    for (size_t i = 0; i < size; i++) nonzero |= id->p[i];
    if (!nonzero) return NO;
    to_hex(out, id->p, size);
    return OK;
}

/* base64.b64encode(s).decode(), appended to `b` */
static int put_base64(Buf *b, const unsigned char *s, size_t n) {
    static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t m = (n + 2) / 3 * 4;
    if (b->len + m > b->cap && buf_grow(b, m)) return ERR;
    char *o = b->b + b->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3, o += 4) {
        unsigned x = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        o[0] = digits[x >> 18]; o[1] = digits[(x >> 12) & 63]; o[2] = digits[(x >> 6) & 63]; o[3] = digits[x & 63];
    }
    if (i < n) {
        unsigned x = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
        o[0] = digits[x >> 18];
        o[1] = digits[(x >> 12) & 63];
        o[2] = i + 1 < n ? digits[(x >> 6) & 63] : '=';
        o[3] = '=';
    }
    b->len += m;
    return OK;
}

static int pb_key_value(P *p, Buf *out, long depth, W w, size_t first, int comma, Val *vals,
                        int (*hot)[MAX_HOT_KEYS], Val *oi);

/* One entry of a repeated KeyValue field at `w`: written to `out` (opening the object at the
   first, counted in *n against the limits). The caller closes it: close_kvs. */
static int add_kv(P *p, Buf *out, long depth, W *w, int wt, size_t *n, size_t first, Val *vals,
                  int (*hot)[MAX_HOT_KEYS], Val *oi) {
    W kv;
    if (wt != WT_LEN || read_len(w, &kv)) return NO;
    if (++*n > p->max_attributes || *n > WALK_ATTRIBUTES) return NO;
    if (*n == 1 && putc_(out, '{')) return ERR;
    return pb_key_value(p, out, depth, kv, first, *n > 1, vals, hot, oi);
}

/* `}` after the entries add_kv wrote, or `{}` when there were none */
static int close_kvs(Buf *out, size_t n) { return n ? putc_(out, '}') : put(out, "{}", 2); }

/* One AnyValue message written to `out` as orjson writes the Python value otlp_proto gives it
   (_pb_attrs / _pb_value); `v` receives what hot_columns needs. */
static int pb_any_value(P *p, Buf *out, long depth, W w, Val *v) {
    uint32_t num;
    int wt, r, fields = 0;
    v->type = V_NONE;
    while ((r = next_field(&w, &num, &wt)) == FIELD) {
        if (num < 1 || num > 7) {
            if ((r = skip_field(&w, wt))) return r;
            continue;
        }
        if (fields++) return NO; /* a second member of the oneof (upb keeps the last one) */
        W s;
        uint64_t x;
        switch (num) {
        case 1: /* string_value */
            if (wt != WT_LEN || read_len(&w, &s) || str_sv(&s, &v->s)) return NO;
            /* _sized: the walk refuses it only past max_attribute_bytes */
            if (v->s.len > p->max_attr_bytes) return NO;
            if (put_escaped(out, v->s.raw, v->s.len)) return ERR;
            v->type = V_STR;
            break;
        case 7: { /* bytes_value: its base64 text, kept in scratch for hot_columns */
            if (wt != WT_LEN || read_len(&w, &s)) return NO;
            size_t at = p->scratch.len;
            if (put_base64(&p->scratch, s.p, wlen(&s))) return ERR;
            v->s = (SV){NULL, at, p->scratch.len - at, 1};
            if (v->s.len > p->max_attr_bytes) return NO;
            if (putc_(out, '"') || put(out, p->scratch.b + at, v->s.len) || putc_(out, '"')) return ERR;
            v->type = V_STR;
            break;
        }
        case 2: /* bool_value */
            if (wt != WT_VARINT || varint(&w, &x)) return NO;
            v->type = V_BOOL;
            v->i = x != 0;
            if (x ? put(out, "true", 4) : put(out, "false", 5)) return ERR;
            break;
        case 3: { /* int_value */
            if (wt != WT_VARINT || varint(&w, &x)) return NO;
            char t[24];
            v->type = V_INT;
            v->i = (long long)x;
            if (put(out, t, (size_t)snprintf(t, sizeof t, "%lld", v->i))) return ERR;
            break;
        }
        case 4: /* double_value */
            if (wt != WT_I64 || read_fixed64(&w, &x)) return NO;
            memcpy(&v->d, &x, sizeof v->d);
            if (!isfinite(v->d)) return NO;
            if (put_double(out, v->d)) return ERR;
            v->type = V_DOUBLE;
            break;
        default: { /* 5 array_value, 6 kvlist_value: {values: [...]} */
            if (wt != WT_LEN || read_len(&w, &s)) return NO;
            /* nesting past WALK_DEPTH is left to Python too: this C stack stays bounded */
            if (depth >= p->max_depth || depth >= WALK_DEPTH) return NO;
            size_t at = out->len, n = 0, first = p->nhash;
            uint32_t m;
            int mt;
            if (num == 5 && putc_(out, '[')) return ERR;
            while ((r = next_field(&s, &m, &mt)) == FIELD) {
                if (m != 1) {
                    r = skip_field(&s, mt);
                } else if (num == 6) {
                    r = add_kv(p, out, depth + 1, &s, mt, &n, first, NULL, NULL, NULL);
                } else {
                    W item;
                    Val ignored;
                    if (mt != WT_LEN || read_len(&s, &item)) return NO;
                    r = (n++ && putc_(out, ',')) ? ERR : pb_any_value(p, out, depth + 1, item, &ignored);
                }
                if (r) return r;
            }
            if (r) return r;
            p->nhash = first;
            if (num == 5 ? putc_(out, ']') : close_kvs(out, n)) return ERR;
            if (depth == 0 && out->len - at > p->max_attr_bytes) return NO;
            v->type = num == 5 ? V_LIST : V_DICT;
        }
        }
    }
    if (r) return r;
    return fields ? OK : put(out, "null", 4); /* no member set: None */
}

/* One KeyValue message written to `out` as `"key":value` (after a comma unless it is the
   first); NO for a key that repeats one of the list noted from p->hashes[first] on (a dict
   keeps the first place and the last value: left to Python). With `hot`, the values of the
   hot keys are noted for hot_columns. */
static int pb_key_value(P *p, Buf *out, long depth, W w, size_t first, int comma, Val *vals,
                        int (*hot)[MAX_HOT_KEYS], Val *oi) {
    W key = {(const unsigned char *)"", (const unsigned char *)""}, value = {0};
    int have_key = 0, have_value = 0, r, wt;
    uint32_t num;
    while ((r = next_field(&w, &num, &wt)) == FIELD) {
        if (num == 1 || num == 2) {
            if (wt != WT_LEN || (num == 1 ? have_key++ : have_value++)) return NO;
            if (read_len(&w, num == 1 ? &key : &value)) return NO;
        } else if ((r = skip_field(&w, wt))) {
            return r;
        }
    }
    if (r) return r;
    SV k;
    if (str_sv(&key, &k)) return NO;
    if ((r = note_key(p, first, k.raw, k.len))) return r;
    if ((comma && putc_(out, ',')) || put_escaped(out, k.raw, k.len) || putc_(out, ':')) return ERR;
    Val val = {V_NONE};
    if (!have_value) { /* KeyValue.value unset: an empty AnyValue, None */
        if (put(out, "null", 4)) return ERR;
    } else if ((r = pb_any_value(p, out, depth, value, &val))) {
        return r;
    }
    if (hot) note_hot(k.raw, k.len, &val, vals, hot, oi);
    return OK;
}

/* One Event: (name, time_us, attributes) appended to `ev`. Python: the events loop of _pb_span. */
static int pb_event(P *p, PyObject *ev, W w) {
    uint64_t t = 0;
    W name = {(const unsigned char *)"", (const unsigned char *)""};
    int have_t = 0, have_name = 0, r, wt;
    size_t n = 0, first = p->nhash;
    uint32_t num;
    p->out.len = 0;
    while ((r = next_field(&w, &num, &wt)) == FIELD) {
        if (num == 1) {
            r = (wt != WT_I64 || have_t++) ? NO : read_fixed64(&w, &t);
        } else if (num == 2) {
            r = (wt != WT_LEN || have_name++) ? NO : read_len(&w, &name);
        } else if (num == 3) {
            r = add_kv(p, &p->out, 0, &w, wt, &n, first, NULL, NULL, NULL);
        } else {
            r = skip_field(&w, wt);
        }
        if (r) return r;
    }
    if (r) return r;
    p->nhash = first;
    SV nm;
    if (!t || str_sv(&name, &nm)) return NO;
    if (close_kvs(&p->out, n)) return ERR;
    PyObject *row = PyTuple_New(3);
    if (!row) return ERR;
    PyTuple_SET_ITEM(row, 0, new_str(nm.raw, nm.len, nm.ascii));
    PyTuple_SET_ITEM(row, 1, PyLong_FromUnsignedLongLong(t / 1000));
    PyTuple_SET_ITEM(row, 2, new_str(p->out.b, p->out.len, 0));
    if (!PyTuple_GET_ITEM(row, 0) || !PyTuple_GET_ITEM(row, 1) || !PyTuple_GET_ITEM(row, 2)) {
        Py_DECREF(row);
        return ERR;
    }
    r = PyList_Append(ev, row) ? ERR : OK;
    Py_DECREF(row);
    return r;
}

/* One Link appended to `out` as the JSON list walk writes: [{"trace_id":..,"span_id":..,"attributes":{..}}, ...] */
static int pb_link(P *p, Buf *out, W w, size_t index) {
    W tid = {0}, sid = {0};
    int have_tid = 0, have_sid = 0, r, wt;
    size_t n = 0, first = p->nhash;
    uint32_t num;
    Buf attrs = {0};
    while ((r = next_field(&w, &num, &wt)) == FIELD) {
        if (num == 1) r = (wt != WT_LEN || have_tid++) ? NO : read_len(&w, &tid);
        else if (num == 2) r = (wt != WT_LEN || have_sid++) ? NO : read_len(&w, &sid);
        else if (num == 4) r = add_kv(p, &attrs, 0, &w, wt, &n, first, NULL, NULL, NULL);
        else r = skip_field(&w, wt);
        if (r) break;
    }
    p->nhash = first;
    char th[32], sh[16];
    if (!r && (id_hex(&tid, 16, th) || id_hex(&sid, 8, sh))) r = NO;
    if (!r) r = close_kvs(&attrs, n);
    if (!r && (putc_(out, index > 1 ? ',' : '[') || put(out, "{\"trace_id\":\"", 13) || put(out, th, 32) ||
               put(out, "\",\"span_id\":\"", 13) || put(out, sh, 16) || put(out, "\",\"attributes\":", 15) ||
               put(out, attrs.b, attrs.len) || putc_(out, '}')))
        r = ERR;
    free(attrs.b);
    return r;
}

/* One Span: its row and its events' rows. Python: _pb_span. */
static int pb_span(P *p, Ctx *ctx, W w) {
    W tid = {0}, sid = {0}, psid = {0}, name = {0}, msg = {0};
    unsigned seen = 0; /* one bit per singular field: a repeat goes to Python */
    uint64_t start = 0, end = 0, kind = 0, code = 0;
    Val vals[N_HOT * MAX_HOT_KEYS], oi = {V_NONE};
    int hot[N_HOT][MAX_HOT_KEYS];
    memset(hot, 0, sizeof hot);
    Buf attrs = {0}, links = {0};
    PyObject *ev = NULL;
    size_t nattrs = 0, nlinks = 0, first = p->nhash;
    uint32_t num;
    int r, wt;
    p->scratch.len = 0;
#define ONCE(bit, type) \
    if ((seen & (1u << (bit))) || wt != (type)) { r = NO; break; } \
    seen |= 1u << (bit)
    while ((r = next_field(&w, &num, &wt)) == FIELD) {
        switch (num) {
        case 1: ONCE(1, WT_LEN); r = read_len(&w, &tid); break;
        case 2: ONCE(2, WT_LEN); r = read_len(&w, &sid); break;
        case 4: ONCE(4, WT_LEN); r = read_len(&w, &psid); break;
        case 5: ONCE(5, WT_LEN); r = read_len(&w, &name); break;
        case 6: ONCE(6, WT_VARINT); r = varint(&w, &kind); break;
        case 7: ONCE(7, WT_I64); r = read_fixed64(&w, &start); break;
        case 8: ONCE(8, WT_I64); r = read_fixed64(&w, &end); break;
        case 9: r = add_kv(p, &attrs, 0, &w, wt, &nattrs, first, vals, hot, &oi); break;
        case 11: {
            W e;
            if (wt != WT_LEN || read_len(&w, &e)) { r = NO; break; }
            if (!ev && !(ev = PyList_New(0))) { r = ERR; break; }
            r = pb_event(p, ev, e);
            break;
        }
        case 13: {
            W l;
            if (wt != WT_LEN || read_len(&w, &l)) { r = NO; break; }
            r = pb_link(p, &links, l, ++nlinks);
            break;
        }
        case 15: { /* Status: message (2), code (3) */
            W st;
            uint32_t m;
            int mt, have_msg = 0, have_code = 0;
            ONCE(15, WT_LEN);
            if ((r = read_len(&w, &st))) break;
            while ((r = next_field(&st, &m, &mt)) == FIELD) {
                if (m == 2) r = (mt != WT_LEN || have_msg++) ? NO : read_len(&st, &msg);
                else if (m == 3) r = (mt != WT_VARINT || have_code++) ? NO : varint(&st, &code);
                else r = skip_field(&st, mt);
                if (r) break;
            }
            break;
        }
        default: /* trace_state, flags, dropped counts, unknown fields */
            r = skip_field(&w, wt);
        }
        if (r) break;
    }
#undef ONCE
    p->nhash = first;
    if (r) goto done;
    r = NO;
    char th[32], sh[16], ph[16];
    SV nm, ms;
    if (id_hex(&tid, 16, th) || id_hex(&sid, 8, sh) || (wlen(&psid) && id_hex(&psid, 8, ph))) goto done;
    if (!wlen(&name) || str_sv(&name, &nm) || str_sv(&msg, &ms)) goto done;
    if (kind > 5 || code > 2 || !start || !end || end < start) goto done;
    r = ERR;
    if (close_kvs(&attrs, nattrs) || (nlinks && putc_(&links, ']'))) goto done;
    {
        SpanRow s = {th, sh, wlen(&psid) ? ph : NULL, nm.raw, nm.len, (int)kind, (int)code, start, end,
                     ms.len ? ms.raw : NULL, ms.len, vals, hot, &oi, &attrs, nlinks ? &links : NULL, ev};
        r = append_span(p, ctx, &s);
    }
done:
    Py_XDECREF(ev);
    free(attrs.b);
    free(links.b);
    return r;
}

/* The first pass over a ResourceSpans or a ScopeSpans: its singular field 1 (the resource, or
   the scope) in `one`, wherever it comes (empty when absent), and each field 2 (the list that
   the second pass reads) checked to be length-delimited. NO when field 1 is given twice. */
static int first_pass(W w, W *one) {
    uint32_t num;
    int r, wt, have = 0;
    one->p = one->end = NULL;
    while ((r = next_field(&w, &num, &wt)) == FIELD) {
        if (num == 1) r = (wt != WT_LEN || have++) ? NO : read_len(&w, one);
        else if (num == 2 && wt != WT_LEN) r = NO;
        else r = skip_field(&w, wt);
        if (r) return r;
    }
    return r;
}

/* One ScopeSpans: rows.scope(scope.name) first, then its spans in order. Python: the scope loop
   of otlp_proto.walk. */
static int pb_scope_spans(P *p, Ctx *rctx, W w) {
    W scope, name = {0};
    uint32_t num;
    int wt, have_name = 0, r = first_pass(w, &scope);
    while (!r && (r = next_field(&scope, &num, &wt)) == FIELD) /* InstrumentationScope: name (1) */
        r = num != 1 ? skip_field(&scope, wt) : (wt != WT_LEN || have_name++) ? NO : read_len(&scope, &name);
    if (r) return r;
    SV nm;
    PyObject *name_obj = NULL;
    if (wlen(&name)) {
        if (str_sv(&name, &nm)) return NO;
        if (!(name_obj = new_str(nm.raw, nm.len, nm.ascii))) return ERR;
    }
    Ctx ctx = *rctx;
    ctx.scope = NULL;
    r = make_scope(p, &ctx, name_obj);
    Py_XDECREF(name_obj);
    while (!r && (r = next_field(&w, &num, &wt)) == FIELD) {
        W sp;
        if (num != 2) r = skip_field(&w, wt);
        else r = read_len(&w, &sp) ? NO : pb_span(p, &ctx, sp);
    }
    Py_XDECREF(ctx.scope);
    return r;
}

/* One ResourceSpans: rows.resource_json of its attributes first, then its scopes in order. */
static int pb_resource_spans(P *p, W w) {
    W res;
    uint32_t num;
    int wt, r = first_pass(w, &res);
    size_t n = 0;
    p->out.len = 0;
    while (!r && (r = next_field(&res, &num, &wt)) == FIELD) /* Resource: attributes (1) */
        r = num == 1 ? add_kv(p, &p->out, 0, &res, wt, &n, 0, NULL, NULL, NULL) : skip_field(&res, wt);
    if (r) return r;
    p->nhash = 0;
    if (n && putc_(&p->out, '}')) return ERR;
    PyObject *got = NULL;
    Ctx ctx = {0};
    r = make_resource(p, &got, &ctx, n > 0);
    while (!r && (r = next_field(&w, &num, &wt)) == FIELD) {
        W ss;
        if (num != 2) r = skip_field(&w, wt);
        else r = read_len(&w, &ss) ? NO : pb_scope_spans(p, &ctx, ss);
    }
    Py_XDECREF(got);
    return r;
}

PyObject *walk_protobuf(PyObject *self, PyObject *args) {
    Py_buffer body;
    PyObject *rows;
    if (!PyArg_ParseTuple(args, "y*O:walk_protobuf", &body, &rows)) return NULL;
    P p;
    int r = open_reader(&p, rows, NULL);
    if (!r) {
        W w = {body.buf, (const unsigned char *)body.buf + body.len};
        uint32_t num;
        int wt;
        while ((r = next_field(&w, &num, &wt)) == FIELD) {
            W rs;
            if (num != 1) r = skip_field(&w, wt);
            else r = (wt != WT_LEN || read_len(&w, &rs)) ? NO : pb_resource_spans(&p, rs);
            if (r) break;
        }
        if (r != OK && r != ERR) r = NO;
    }
    close_reader(&p);
    PyBuffer_Release(&body);
    if (r == ERR) return NULL;
    return Py_NewRef(r == OK ? Py_True : Py_False);
}
