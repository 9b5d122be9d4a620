/* What the two C files of afterfix.ingest._otlpjson share: growable byte buffers and the
   column builder (Columns, in _columns.c) that the OTLP/JSON walker (_otlpjson.c) fills. */
#ifndef AFTERFIX_NATIVE_H
#define AFTERFIX_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* results of the functions below and of the walker's */
#define OK 0
#define NO 1   /* (walker) leave the line to the Python path */
#define ERR -1 /* a Python exception is set */

typedef struct {
    char *b;
    size_t len, cap;
} Buf;

static inline int buf_grow(Buf *b, size_t need) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + need) cap *= 2;
    char *nb = realloc(b->b, cap);
    if (!nb) {
        PyErr_NoMemory();
        return ERR;
    }
    b->b = nb;
    b->cap = cap;
    return OK;
}

static inline int put(Buf *b, const void *s, size_t n) {
    if (!n) return OK; /* memcpy may not be handed the NULL of a buffer never grown */
    if (b->len + n > b->cap && buf_grow(b, n)) return ERR;
    memcpy(b->b + b->len, s, n);
    b->len += n;
    return OK;
}

static inline int putc_(Buf *b, char c) {
    if (b->len + 1 > b->cap && buf_grow(b, 1)) return ERR;
    b->b[b->len++] = c;
    return OK;
}

/* One column of a Columns: 's' UTF-8 text (int64 offsets), 'l' int64 (timestamps too),
   'i' int32, 'd' float64; every value may be null (a validity bit per row). */
typedef struct {
    char kind;
    Py_ssize_t n; /* values appended, which may run ahead of the rows while a row is filled */
    Buf data, offsets, valid;
} Col;

typedef struct {
    PyObject_HEAD
    Py_ssize_t rows;
    int ncols;
    Col *cols;
} Columns;

extern PyTypeObject ColumnsType, BlockType;

/* One value at the end of a column; a row is complete once every column has one and
   columns_end_row() is called. */
int col_str(Col *c, const char *s, size_t n);
int col_null(Col *c);
int col_i64(Col *c, long long v);
int col_f64(Col *c, double v);
int col_obj(Col *c, PyObject *o); /* None, or the Python value of the column's kind */
int columns_end_row(Columns *t);
int columns_truncate(Columns *t, Py_ssize_t rows);

#endif
