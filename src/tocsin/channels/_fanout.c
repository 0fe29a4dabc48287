/* The fan-out's per-device loop in C: tocsin.channels.live.LiveRegistry.publish.
 *
 * For each live connection it makes the same checks as the Python loop it replaces
 * (`_publish_py` in live.py, used when this module is not built), then writes the
 * event's bytes: with one send() on the socket when the transport has nothing queued
 * (as the event loop's own write does first), else through transport.write(), which
 * queues behind what is pending. A partial send queues the rest through the transport,
 * so the bytes on the wire keep their order; a failed send goes through transport.write()
 * too, and the event loop handles the error as for any write.
 *
 * The fd is read from the transport's socket object at each write, never cached: a
 * closed transport reports fd -1 (and is_closing()), so no write can reach a descriptor
 * that has been reused by another connection.
 *
 *   write_each(connections: list, seq: int, sse: Protocol.SSE, sse_bytes: bytes,
 *              ws_bytes: bytes) -> (sent_sse, sent_ws, to_drop: list, to_offer: list)
 *
 * to_drop: connections whose unsent bytes passed max_buffer, or whose transport is
 * closing (the caller cuts them off); to_offer: connections for the queued path (no
 * transport, already dropped, or already at or past this seq).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

static PyObject *s_transport, *s_dropped, *s_last_seq, *s_max_buffer, *s_protocol, *s_sock;
static PyObject *s_get_write_buffer_size, *s_is_closing, *s_write, *s_fileno;

/* A new reference (or NULL) as a C long long, released; -1 with an exception on failure. */
static int
as_long(PyObject *value, long long *out)
{
    if (value == NULL)
        return -1;
    *out = PyLong_AsLongLong(value);
    Py_DECREF(value);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int
attr_long(PyObject *obj, PyObject *name, long long *out)
{
    return as_long(PyObject_GetAttr(obj, name), out);
}

static int
call_long(PyObject *obj, PyObject *method, long long *out)
{
    return as_long(PyObject_CallMethodNoArgs(obj, method), out);
}

static int
call_truth(PyObject *obj, PyObject *method)
{
    PyObject *value = PyObject_CallMethodNoArgs(obj, method);
    if (value == NULL)
        return -1;
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

/* Write `data` to the connection; 0 on success, -1 with an exception set. */
static int
write_one(PyObject *conn, PyObject *transport, PyObject *data, long long queued)
{
    if (queued == 0) {
        PyObject *sock = PyObject_GetAttr(conn, s_sock);
        if (sock == NULL)
            return -1;
        long long fd = -1;
        if (sock != Py_None && call_long(sock, s_fileno, &fd) < 0) {
            PyErr_Clear(); /* no descriptor to send on: the transport writes it */
            fd = -1;
        }
        Py_DECREF(sock);
        if (fd >= 0) {
            const char *buf = PyBytes_AS_STRING(data);
            Py_ssize_t len = PyBytes_GET_SIZE(data);
            ssize_t sent = send((int)fd, buf, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (sent == len)
                return 0;
            if (sent > 0) {
                PyObject *rest = PyBytes_FromStringAndSize(buf + sent, len - sent);
                if (rest == NULL)
                    return -1;
                PyObject *done = PyObject_CallMethodOneArg(transport, s_write, rest);
                Py_DECREF(rest);
                if (done == NULL)
                    return -1;
                Py_DECREF(done);
                return 0;
            }
            /* Nothing sent (full socket buffer, or an error): the transport queues it or
               reports the error as for any write. */
        }
    }
    PyObject *done = PyObject_CallMethodOneArg(transport, s_write, data);
    if (done == NULL)
        return -1;
    Py_DECREF(done);
    return 0;
}

/* One connection: 0 when handled (written, or put on a list), -1 with an exception. */
static int
offer_one(PyObject *conn, PyObject *seq, long long seq_v, PyObject *sse, PyObject *sse_bytes,
          PyObject *ws_bytes, Py_ssize_t *sent_sse, Py_ssize_t *sent_ws, PyObject *to_drop,
          PyObject *to_offer)
{
    PyObject *transport = PyObject_GetAttr(conn, s_transport);
    if (transport == NULL)
        return -1;
    int rc = -1;
    long long last_seq, queued, max_buffer;
    PyObject *dropped = NULL, *protocol = NULL;
    if (transport == Py_None) {
        rc = PyList_Append(to_offer, conn);
        goto done;
    }
    dropped = PyObject_GetAttr(conn, s_dropped);
    if (dropped == NULL || attr_long(conn, s_last_seq, &last_seq) < 0)
        goto done;
    int is_dropped = PyObject_IsTrue(dropped);
    if (is_dropped < 0)
        goto done;
    if (is_dropped || seq_v <= last_seq) {
        rc = PyList_Append(to_offer, conn);
        goto done;
    }
    if (call_long(transport, s_get_write_buffer_size, &queued) < 0 || attr_long(conn, s_max_buffer, &max_buffer) < 0)
        goto done;
    int closing = call_truth(transport, s_is_closing);
    if (closing < 0)
        goto done;
    if (queued > max_buffer || closing) {
        rc = PyList_Append(to_drop, conn);
        goto done;
    }
    protocol = PyObject_GetAttr(conn, s_protocol);
    if (protocol == NULL)
        goto done;
    int is_sse = protocol == sse;
    if (write_one(conn, transport, is_sse ? sse_bytes : ws_bytes, queued) < 0)
        goto done;
    if (PyObject_SetAttr(conn, s_last_seq, seq) < 0)
        goto done;
    if (is_sse)
        (*sent_sse)++;
    else
        (*sent_ws)++;
    rc = 0;
done:
    Py_DECREF(transport);
    Py_XDECREF(dropped);
    Py_XDECREF(protocol);
    return rc;
}

static PyObject *
write_each(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *connections, *seq, *sse, *sse_bytes, *ws_bytes;
    if (!PyArg_ParseTuple(args, "O!O!OSS:write_each", &PyList_Type, &connections, &PyLong_Type, &seq, &sse,
                          &sse_bytes, &ws_bytes))
        return NULL;
    long long seq_v = PyLong_AsLongLong(seq);
    if (seq_v == -1 && PyErr_Occurred())
        return NULL;
    PyObject *to_drop = PyList_New(0);
    PyObject *to_offer = PyList_New(0);
    if (to_drop == NULL || to_offer == NULL)
        goto error;
    Py_ssize_t sent_sse = 0, sent_ws = 0;
    /* A new reference to the list: a write cannot run Python that shrinks it under us. */
    Py_INCREF(connections);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(connections); i++) {
        PyObject *conn = PyList_GET_ITEM(connections, i);
        Py_INCREF(conn);
        int rc = offer_one(conn, seq, seq_v, sse, sse_bytes, ws_bytes, &sent_sse, &sent_ws, to_drop, to_offer);
        Py_DECREF(conn);
        if (rc < 0) {
            Py_DECREF(connections);
            goto error;
        }
    }
    Py_DECREF(connections);
    return Py_BuildValue("nnNN", sent_sse, sent_ws, to_drop, to_offer);
error:
    Py_XDECREF(to_drop);
    Py_XDECREF(to_offer);
    return NULL;
}

static PyMethodDef methods[] = {
    {"write_each", write_each, METH_VARARGS, "Write one event to each live connection (see live.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "tocsin.channels._fanout", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__fanout(void)
{
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        {&s_transport, "transport"}, {&s_dropped, "dropped"}, {&s_last_seq, "last_seq"},
        {&s_max_buffer, "max_buffer"}, {&s_protocol, "protocol"}, {&s_sock, "sock"},
        {&s_get_write_buffer_size, "get_write_buffer_size"}, {&s_is_closing, "is_closing"},
        {&s_write, "write"}, {&s_fileno, "fileno"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].name);
        if (*names[i].slot == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
