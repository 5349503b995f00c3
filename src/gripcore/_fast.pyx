# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twin of `_fast_py` (the specification). Same names, results and exceptions."""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next
from cpython.list cimport PyList_Append
from cpython.ref cimport PyObject
from libc.string cimport memcpy

cdef const char* _HEX = b"0123456789abcdef"


cdef inline Py_ssize_t _hex_into(char* out, size_t n) noexcept:
    # Writes n in lowercase hex (no leading zeros) at out; returns the digit count.
    cdef char tmp[16]
    cdef Py_ssize_t k = 0, i
    if n == 0:
        out[0] = b'0'
        return 1
    while n:
        tmp[k] = _HEX[n & 0xF]
        n >>= 4
        k += 1
    for i in range(k):
        out[i] = tmp[k - 1 - i]
    return k


def encode_chunk(bytes data not None):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    if n == 0:
        return b""
    cdef char head[20]
    cdef Py_ssize_t h = _hex_into(head, <size_t>n)
    head[h] = b'\r'
    head[h + 1] = b'\n'
    h += 2
    out = PyBytes_FromStringAndSize(NULL, h + n + 2)
    cdef char* p = PyBytes_AS_STRING(out)
    memcpy(p, head, h)
    memcpy(p + h, PyBytes_AS_STRING(data), n)
    p[h + n] = b'\r'
    p[h + n + 1] = b'\n'
    return out


cdef inline Py_ssize_t _ws_header_into(char* out, int opcode, Py_ssize_t length) except -1:
    cdef int i
    if opcode < 0 or opcode > 0x0F:
        raise ValueError(f"invalid WebSocket opcode {opcode}")
    if length < 0:
        raise ValueError("negative WebSocket payload length")
    out[0] = <char>(0x80 | opcode)
    if length < 126:
        out[1] = <char>length
        return 2
    if length < 0x10000:
        out[1] = 126
        out[2] = <char>((length >> 8) & 0xFF)
        out[3] = <char>(length & 0xFF)
        return 4
    out[1] = 127
    for i in range(8):
        out[2 + i] = <char>((length >> (8 * (7 - i))) & 0xFF)
    return 10


cdef inline int _need_int(object value, str name) except -1:
    # Typed `int` arguments would take a float (truncated) and refuse an __index__ object;
    # the twin's contract is: an int (bool included) or TypeError.
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return 0


cdef inline int _check_opcode(object opcode) except -1:
    _need_int(opcode, "opcode")
    if not 0 <= opcode <= 0x0F:
        raise ValueError(f"invalid WebSocket opcode {opcode}")
    return 0


def ws_frame_header(object opcode, object length):
    _need_int(opcode, "opcode")
    _need_int(length, "length")
    _check_opcode(opcode)
    if length < 0:
        raise ValueError("negative WebSocket payload length")
    if length > 0x7FFFFFFFFFFFFFFF:
        raise OverflowError("WebSocket payload length over 2**63 - 1")
    cdef char head[10]
    cdef Py_ssize_t h = _ws_header_into(head, <int>opcode, <Py_ssize_t>length)
    return PyBytes_FromStringAndSize(head, h)


def encode_ws_frame(object opcode, bytes payload not None):
    _check_opcode(opcode)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    cdef char head[10]
    cdef Py_ssize_t h = _ws_header_into(head, <int>opcode, n)
    out = PyBytes_FromStringAndSize(NULL, h + n)
    cdef char* p = PyBytes_AS_STRING(out)
    memcpy(p, head, h)
    memcpy(p + h, PyBytes_AS_STRING(payload), n)
    return out


def encode_woh_event(bytes event_type not None, content):
    if content is None:
        return event_type + b"\r\n"
    cdef bytes c = content
    cdef Py_ssize_t t = PyBytes_GET_SIZE(event_type)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(c)
    cdef char hexbuf[20]
    cdef Py_ssize_t h = _hex_into(hexbuf, <size_t>n)
    out = PyBytes_FromStringAndSize(NULL, t + 1 + h + 2 + n + 2)
    cdef char* p = PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(event_type), t)
    p[t] = b' '
    memcpy(p + t + 1, hexbuf, h)
    p += t + 1 + h
    p[0] = b'\r'
    p[1] = b'\n'
    memcpy(p + 2, PyBytes_AS_STRING(c), n)
    p[2 + n] = b'\r'
    p[3 + n] = b'\n'
    return out


def fanout(dict targets not None, bytes payload not None, list woken not None,
           list overflowed not None, object limit):
    _need_int(limit, "limit")
    if not -0x8000000000000000 <= limit <= 0x7FFFFFFFFFFFFFFF:
        raise OverflowError("limit does not fit a C ssize_t")
    cdef Py_ssize_t climit = limit
    cdef Py_ssize_t pos = 0
    cdef PyObject* key
    cdef PyObject* value
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    cdef const char* src = PyBytes_AS_STRING(payload)
    cdef Py_ssize_t size
    cdef Py_ssize_t delivered = 0
    cdef object buf
    while PyDict_Next(targets, &pos, &key, &value):
        buf = <object>value
        if type(buf) is not bytearray:
            raise TypeError("fanout targets must map to bytearray buffers")
        size = PyByteArray_GET_SIZE(buf)
        if climit and size + n > climit:
            PyList_Append(overflowed, <object>key)
            continue
        if size == 0:
            PyList_Append(woken, <object>key)
        if n:
            # declared `except -1` (cpython/bytearray.pxd): a failed resize (MemoryError, or
            # BufferError while the buffer is exported) raises here, before any memcpy
            PyByteArray_Resize(buf, size + n)
            memcpy(PyByteArray_AS_STRING(buf) + size, src, n)
        delivered += 1
    return delivered


def flush_connections(list batch not None, object now):
    cdef object conn, sub, session, buf, data
    cdef Py_ssize_t n
    for conn in batch:
        try:
            sub = conn.subscriber
            session = conn.session
            if sub is None or session is None or conn.closed or sub.events:
                conn.flush()
                continue
            buf = sub.outbuf
            if type(buf) is bytearray:
                n = PyByteArray_GET_SIZE(buf)
                if n == 0 or conn.paused:
                    continue
                data = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(buf), n)
                PyByteArray_Resize(buf, 0)  # except -1: raises rather than lose data
            else:  # the twin's generic path, for any buffer type
                if not buf or conn.paused:
                    continue
                data = bytes(buf)
                buf.clear()
            conn.io.write(data)
            session.wrote(now)
        except Exception as exc:  # one connection's failure ends it, not the pass
            conn.fail(exc)
