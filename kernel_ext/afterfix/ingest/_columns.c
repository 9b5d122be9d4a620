/* Columns: rows appended value by value into Arrow-layout buffers (values, offsets, validity
   bits), which Python turns into pyarrow arrays without converting a Python object per value.

   The OTLP/JSON walker appends straight from the bytes it reads; the Python decoders append
   tuples (`append`, `extend`), converted as pyarrow converts them. `truncate` rolls back,
   `column(i)` and indexing give Python values back (redaction, tests), and `buffers()` hands
   the buffers over (rows.Rows builds the tables from them). */
#include "_native.h"

static inline int set_valid(Col *c, int valid) {
    size_t byte = (size_t)(c->n >> 3);
    if (byte >= c->valid.len) {
        size_t add = byte + 1 - c->valid.len;
        if (c->valid.len + add > c->valid.cap && buf_grow(&c->valid, add)) return ERR;
        memset(c->valid.b + c->valid.len, 0, add);
        c->valid.len += add;
    }
    unsigned char bit = (unsigned char)(1u << (c->n & 7));
    if (valid) c->valid.b[byte] |= bit;
    else c->valid.b[byte] &= (unsigned char)~bit;
    return OK;
}

static inline int put_offset(Col *c) {
    int64_t end = (int64_t)c->data.len;
    return put(&c->offsets, &end, sizeof end);
}

int col_str(Col *c, const char *s, size_t n) {
    if (set_valid(c, 1) || put(&c->data, s, n) || put_offset(c)) return ERR;
    c->n++;
    return OK;
}

int col_null(Col *c) {
    if (set_valid(c, 0)) return ERR;
    switch (c->kind) {
    case 's':
        if (put_offset(c)) return ERR;
        break;
    case 'i': {
        int32_t z = 0;
        if (put(&c->data, &z, sizeof z)) return ERR;
        break;
    }
    default: {
        int64_t z = 0; /* 'l' and 'd': eight zero bytes */
        if (put(&c->data, &z, sizeof z)) return ERR;
    }
    }
    c->n++;
    return OK;
}

int col_i64(Col *c, long long v) {
    int64_t x = v;
    if (set_valid(c, 1) || put(&c->data, &x, sizeof x)) return ERR;
    c->n++;
    return OK;
}

int col_f64(Col *c, double v) {
    if (set_valid(c, 1) || put(&c->data, &v, sizeof v)) return ERR;
    c->n++;
    return OK;
}

int col_obj(Col *c, PyObject *o) {
    if (o == Py_None) return col_null(c);
    switch (c->kind) {
    case 's': {
        Py_ssize_t n;
        const char *s;
        if (!PyUnicode_Check(o)) {
            PyErr_Format(PyExc_TypeError, "expected a str, got %.80s", Py_TYPE(o)->tp_name);
            return ERR;
        }
        if (!(s = PyUnicode_AsUTF8AndSize(o, &n))) return ERR;
        return col_str(c, s, (size_t)n);
    }
    case 'l':
    case 'i': {
        if (!PyLong_Check(o) || PyBool_Check(o)) {
            PyErr_Format(PyExc_TypeError, "expected an int, got %.80s", Py_TYPE(o)->tp_name);
            return ERR;
        }
        long long v = PyLong_AsLongLong(o);
        if (v == -1 && PyErr_Occurred()) return ERR;
        if (c->kind == 'l') return col_i64(c, v);
        if (v < INT32_MIN || v > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "value out of range for a 32-bit integer");
            return ERR;
        }
        int32_t x = (int32_t)v;
        if (set_valid(c, 1) || put(&c->data, &x, sizeof x)) return ERR;
        c->n++;
        return OK;
    }
    default: {
        double v = PyFloat_AsDouble(o);
        if (v == -1.0 && PyErr_Occurred()) return ERR;
        return col_f64(c, v);
    }
    }
}

int columns_end_row(Columns *t) {
    t->rows++;
    for (int i = 0; i < t->ncols; i++)
        if (t->cols[i].n != t->rows) {
            PyErr_Format(PyExc_SystemError, "Columns: column %d has %zd values in row %zd", i, t->cols[i].n, t->rows);
            return ERR;
        }
    return OK;
}

int columns_truncate(Columns *t, Py_ssize_t rows) {
    if (rows < 0 || rows > t->rows) {
        PyErr_Format(PyExc_ValueError, "cannot truncate %zd rows to %zd", t->rows, rows);
        return ERR;
    }
    for (int i = 0; i < t->ncols; i++) {
        Col *c = &t->cols[i];
        if (c->n <= rows) continue; /* nothing appended beyond (it can only be behind mid-row) */
        c->n = rows;
        if (c->kind == 's') {
            c->offsets.len = (size_t)(rows + 1) * sizeof(int64_t);
            c->data.len = (size_t)((int64_t *)c->offsets.b)[rows];
        } else {
            c->data.len = (size_t)rows * (c->kind == 'i' ? 4 : 8);
        }
        c->valid.len = (size_t)((rows + 7) >> 3);
    }
    /* a column that fell behind in an unfinished row: cut the others back to it */
    t->rows = rows;
    return OK;
}

/* -- the Python type ------------------------------------------------------------------------ */

static int Columns_init(Columns *self, PyObject *args, PyObject *kw) {
    const char *kinds;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "s#:Columns", &kinds, &n)) return -1;
    if (self->cols) {
        PyErr_SetString(PyExc_RuntimeError, "Columns already initialised");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (!strchr("slid", kinds[i])) {
            PyErr_Format(PyExc_ValueError, "Columns: kind %c is not one of s, l, i, d", kinds[i]);
            return -1;
        }
    self->cols = calloc((size_t)(n ? n : 1), sizeof(Col));
    if (!self->cols) {
        PyErr_NoMemory();
        return -1;
    }
    self->ncols = (int)n;
    for (int i = 0; i < self->ncols; i++) {
        self->cols[i].kind = kinds[i];
        if (kinds[i] == 's') {
            int64_t zero = 0;
            if (put(&self->cols[i].offsets, &zero, sizeof zero)) return -1;
        }
    }
    return 0;
}

static void Columns_dealloc(Columns *self) {
    for (int i = 0; i < self->ncols; i++) {
        free(self->cols[i].data.b);
        free(self->cols[i].offsets.b);
        free(self->cols[i].valid.b);
    }
    free(self->cols);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int append_row(Columns *self, PyObject *row) {
    PyObject *seq = PySequence_Fast(row, "Columns.append takes a tuple");
    if (!seq) return ERR;
    if (PySequence_Fast_GET_SIZE(seq) != self->ncols) {
        PyErr_Format(PyExc_ValueError, "a row of %d values expected, got %zd", self->ncols, PySequence_Fast_GET_SIZE(seq));
        Py_DECREF(seq);
        return ERR;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (int i = 0; i < self->ncols; i++)
        if (col_obj(&self->cols[i], items[i])) {
            Py_DECREF(seq);
            columns_truncate(self, self->rows); /* no half row stays behind */
            return ERR;
        }
    Py_DECREF(seq);
    return columns_end_row(self);
}

static PyObject *Columns_append(Columns *self, PyObject *row) {
    if (append_row(self, row)) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Columns_extend(Columns *self, PyObject *rows) {
    PyObject *it = PyObject_GetIter(rows), *row;
    if (!it) return NULL;
    while ((row = PyIter_Next(it))) {
        int r = append_row(self, row);
        Py_DECREF(row);
        if (r) {
            Py_DECREF(it);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Columns_truncate(Columns *self, PyObject *arg) {
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (columns_truncate(self, n)) return NULL;
    Py_RETURN_NONE;
}

static PyObject *value(Col *c, Py_ssize_t i) {
    if (!(((unsigned char *)c->valid.b)[i >> 3] & (1u << (i & 7)))) Py_RETURN_NONE;
    switch (c->kind) {
    case 's': {
        int64_t *off = (int64_t *)c->offsets.b;
        return PyUnicode_DecodeUTF8(c->data.b + off[i], (Py_ssize_t)(off[i + 1] - off[i]), NULL);
    }
    case 'i': return PyLong_FromLong(((int32_t *)c->data.b)[i]);
    case 'l': return PyLong_FromLongLong(((int64_t *)c->data.b)[i]);
    default: return PyFloat_FromDouble(((double *)c->data.b)[i]);
    }
}

static PyObject *Columns_column(Columns *self, PyObject *arg) {
    Py_ssize_t k = PyLong_AsSsize_t(arg);
    if (k == -1 && PyErr_Occurred()) return NULL;
    if (k < 0 || k >= self->ncols) {
        PyErr_SetString(PyExc_IndexError, "no such column");
        return NULL;
    }
    PyObject *out = PyList_New(self->rows);
    for (Py_ssize_t i = 0; out && i < self->rows; i++) {
        PyObject *v = value(&self->cols[k], i);
        if (!v) Py_CLEAR(out);
        else PyList_SET_ITEM(out, i, v);
    }
    return out;
}

static Py_ssize_t Columns_len(Columns *self) { return self->rows; }

static PyObject *Columns_item(Columns *self, Py_ssize_t i) {
    if (i < 0 || i >= self->rows) {
        PyErr_SetString(PyExc_IndexError, "row index out of range");
        return NULL;
    }
    PyObject *row = PyTuple_New(self->ncols);
    for (int k = 0; row && k < self->ncols; k++) {
        PyObject *v = value(&self->cols[k], i);
        if (!v) Py_CLEAR(row);
        else PyTuple_SET_ITEM(row, k, v);
    }
    return row;
}

/* -- handing the buffers over ---------------------------------------------------------------- */

/* A buffer taken from a column: memory that pyarrow reads in place (buffer protocol) and that
   is freed when the last array using it goes. */
typedef struct {
    PyObject_HEAD
    char *b;
    Py_ssize_t len;
} Block;

static int Block_getbuffer(Block *self, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)self, self->b ? self->b : (char *)"", self->len, 1, flags);
}

static void Block_dealloc(Block *self) {
    free(self->b);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyBufferProcs Block_as_buffer = {.bf_getbuffer = (getbufferproc)Block_getbuffer};

PyTypeObject BlockType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "afterfix.ingest._otlpjson.Block",
    .tp_basicsize = sizeof(Block),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Memory handed over by Columns.buffers(), read in place through the buffer protocol",
    .tp_dealloc = (destructor)Block_dealloc,
    .tp_as_buffer = &Block_as_buffer,
};

/* The Buf's memory as a Block, `len` bytes of it; the Buf is left empty. */
static PyObject *take(Buf *buf, size_t len) {
    Block *blk = PyObject_New(Block, &BlockType);
    if (!blk) return NULL;
    blk->b = buf->b;
    blk->len = (Py_ssize_t)len;
    buf->b = NULL;
    buf->len = buf->cap = 0;
    return (PyObject *)blk;
}

/* buffers(max_text=2**31-1) -> [(validity, offsets or None, data, wide) per column], each
   buffer-protocol memory that pyarrow reads in place. Offsets are int32 (an Arrow string array)
   when a column's text is at most max_text bytes, else int64 (`wide`: a large string array).
   The builder is empty afterwards. */
static PyObject *Columns_buffers(Columns *self, PyObject *args) {
    Py_ssize_t rows = self->rows, max_text = INT32_MAX;
    if (!PyArg_ParseTuple(args, "|n:buffers", &max_text)) return NULL;
    if (max_text > INT32_MAX) max_text = INT32_MAX;
    size_t bits = (size_t)((rows + 7) >> 3);
    PyObject *out = PyList_New(self->ncols);
    for (int k = 0; out && k < self->ncols; k++) {
        Col *c = &self->cols[k];
        size_t width = c->kind == 's' ? 0 : c->kind == 'i' ? 4 : 8;
        size_t data = width ? (size_t)rows * width : (size_t)((int64_t *)c->offsets.b)[rows];
        /* the validity bytes must exist even for zero rows' worth of bits */
        if (c->valid.len < bits && buf_grow(&c->valid, bits - c->valid.len)) {
            Py_CLEAR(out);
            break;
        }
        int wide = c->kind == 's' && data > (size_t)max_text;
        if (c->kind == 's' && !wide) { /* narrowed in place: each int32 goes where its int64 began, or before */
            int64_t *from = (int64_t *)c->offsets.b;
            int32_t *to = (int32_t *)c->offsets.b;
            for (Py_ssize_t i = 0; i <= rows; i++) to[i] = (int32_t)from[i];
        }
        size_t offsets = (size_t)(rows + 1) * (wide ? sizeof(int64_t) : sizeof(int32_t));
        PyObject *v = take(&c->valid, bits);
        PyObject *o = c->kind == 's' ? take(&c->offsets, offsets) : Py_NewRef(Py_None);
        PyObject *d = take(&c->data, data);
        PyObject *t = (v && o && d) ? Py_BuildValue("(OOON)", v, o, d, PyBool_FromLong(wide)) : NULL;
        Py_XDECREF(v);
        Py_XDECREF(o);
        Py_XDECREF(d);
        if (!t) Py_CLEAR(out);
        else PyList_SET_ITEM(out, k, t);
        c->n = 0;
        c->valid.len = 0;
        if (c->kind == 's') {
            int64_t zero = 0;
            if (put(&c->offsets, &zero, sizeof zero)) Py_CLEAR(out);
        }
    }
    self->rows = 0;
    return out;
}

static PyMethodDef Columns_methods[] = {
    {"append", (PyCFunction)Columns_append, METH_O, "append(row): one row, a tuple of one value per column"},
    {"extend", (PyCFunction)Columns_extend, METH_O, "extend(rows): append each"},
    {"truncate", (PyCFunction)Columns_truncate, METH_O, "truncate(n): keep the first n rows"},
    {"column", (PyCFunction)Columns_column, METH_O, "column(i) -> list: the values of column i"},
    {"buffers", (PyCFunction)Columns_buffers, METH_VARARGS,
     "buffers() -> [(validity, offsets or None, data, wide)]: each column's Arrow buffers, handed over"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Columns_as_sequence = {
    .sq_length = (lenfunc)Columns_len,
    .sq_item = (ssizeargfunc)Columns_item,
};

PyTypeObject ColumnsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "afterfix.ingest._otlpjson.Columns",
    .tp_basicsize = sizeof(Columns),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Columns(kinds): rows kept as Arrow buffers; kinds has one of s, l, i, d per column",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Columns_init,
    .tp_dealloc = (destructor)Columns_dealloc,
    .tp_methods = Columns_methods,
    .tp_as_sequence = &Columns_as_sequence,
};
