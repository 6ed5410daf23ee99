/*
 * The compiled data path of the agent's TFTP server.
 *
 * Why C: once a transfer is under way, each 512-byte block costs the
 * server one recv() of an ACK and one send() of the next DATA block.  The
 * kernel's share of that is within 1-2 us of dnsmasq's; CPython added
 * 3.5-4.4 us a block around the two calls, which is what kept the agent
 * up to 13 % behind dnsmasq.  Nothing left in Python closed it, so this
 * module takes exactly that path out of the interpreter and nothing else.
 *
 * Two types:
 *
 * SessionCore  the hot state of one transfer (window base, blocks sent,
 *              last block, deadline, last heard, retries left, the
 *              connected socket's descriptor and the file's bytes).
 *              tftp_session.Session derives from it, so the Python code
 *              and the pump read and write the same fields: one owner,
 *              nothing to keep in sync.  The session holds its own
 *              reference to the file's bytes, so they live as long as the
 *              session does, whatever the file table does meanwhile.
 *
 * Pump         one per event loop: epoll_wait() with the GIL released,
 *              then, for each ready session socket whose session is in
 *              the fast state (peer proven, OACK settled, file in memory,
 *              no result yet), reads the datagram; an in-order ACK of a
 *              block in flight that is not the last advances the window
 *              and sends the next DATA block(s) with sendmsg() (a 4-byte
 *              header and a pointer into the file's bytes).  Everything
 *              else (the listening socket, the inbox eventfd, any other
 *              datagram, a session that is not in the fast state, a
 *              receive error) is handed back to the Python loop, with the
 *              datagram when one was read, so every limit, counter and
 *              rule of the Python code applies unchanged.
 *
 *              Single-port mode (one socket for every transfer): the pump
 *              reads the listening socket itself, up to 16 datagrams a
 *              wake-up as the Python loop does, finds the sender's
 *              session by one integer made of its IPv4 address and port
 *              (the key the server files single-port sessions under),
 *              answers the in-order ACKs as above with sendmsg() to that
 *              address, and hands every other datagram back with its
 *              sender as (datagram, (address, port)).  No recvmmsg() or
 *              sendmmsg(): per datagram the Python cost is gone already,
 *              and batching would have to keep per-message errors apart
 *              (not measured to matter here).
 *
 * Threading: a session is only touched by its own loop's thread (the
 * server's rule), and the pump runs on that thread, so no lock is needed.
 * The GIL is released around epoll_wait() and around the socket calls:
 * with the GIL the pump looks the ready sessions up and holds them (and
 * their bytes); without it, it reads, advances the C fields and sends
 * (most of a block's cost is the kernel's send, which two loops then do
 * on two cores at once, and the agent's other threads, DHCP among them,
 * are not kept waiting); with the GIL again, it reports and lets go.
 * Other threads only read a session's fields (the listener's choice of
 * whom to evict reads last_heard), never write them.  Nothing here calls
 * back into Python code.
 *
 * Nothing a peer sends can crash this: a datagram is at most 256 bytes
 * into a stack buffer (as the Python path's recv size), it is used only
 * if it is at least 4 bytes and an ACK, the block number is mapped into
 * the window with the same modular arithmetic as the Python path
 * (counted from 1 without limit, sent modulo 65536), and the bytes sent
 * are clamped to the file's bytes.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#define RECV_SIZE 256
/* The listening socket's receive size and datagrams per wake-up, as the
 * Python loop's (_RECV_LISTENER, _BURST). */
#define LISTENER_RECV_SIZE 2048
#define LISTENER_BURST 16
#define OP_DATA 3
#define OP_ACK 4

typedef struct {
    PyObject_HEAD
    Py_ssize_t base;          /* oldest unacknowledged block */
    Py_ssize_t sent_upto;     /* highest block sent */
    Py_ssize_t last;          /* the last block (shorter than blksize) */
    Py_ssize_t blksize;
    Py_ssize_t windowsize;
    int retries;
    int retries_left;
    double timeout;
    double deadline;
    double last_heard;
    char proven;
    char waiting_oack;
    int fd;                   /* connected socket (classic), or -1 */
    PyObject *data;           /* the file's bytes, or None */
    PyObject *result;         /* None while the transfer runs */
} SessionCore;

static int
core_init(SessionCore *self, PyObject *args, PyObject *kwds)
{
    /* Session.__init__ sets every field; nothing to take here. */
    return 0;
}

static PyObject *
core_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    SessionCore *self = (SessionCore *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->fd = -1;
    self->windowsize = 1;
    self->blksize = 512;
    self->base = 1;
    Py_INCREF(Py_None);
    self->data = Py_None;
    Py_INCREF(Py_None);
    self->result = Py_None;
    return (PyObject *)self;
}

static int
core_clear(SessionCore *self)
{
    Py_CLEAR(self->data);
    Py_CLEAR(self->result);
    return 0;
}

static int
core_traverse(SessionCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->data);
    Py_VISIT(self->result);
    return 0;
}

static void
core_dealloc(SessionCore *self)
{
    PyObject_GC_UnTrack(self);
    core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef core_members[] = {
    {"_base", T_PYSSIZET, offsetof(SessionCore, base), 0,
     "Oldest unacknowledged block, counted from 1 without wrapping."},
    {"_sent_upto", T_PYSSIZET, offsetof(SessionCore, sent_upto), 0,
     "Highest block sent."},
    {"_last", T_PYSSIZET, offsetof(SessionCore, last), 0,
     "The last block of the file."},
    {"blksize", T_PYSSIZET, offsetof(SessionCore, blksize), 0, NULL},
    {"windowsize", T_PYSSIZET, offsetof(SessionCore, windowsize), 0, NULL},
    {"retries", T_INT, offsetof(SessionCore, retries), 0, NULL},
    {"_retries_left", T_INT, offsetof(SessionCore, retries_left), 0, NULL},
    {"timeout", T_DOUBLE, offsetof(SessionCore, timeout), 0, NULL},
    {"deadline", T_DOUBLE, offsetof(SessionCore, deadline), 0, NULL},
    {"last_heard", T_DOUBLE, offsetof(SessionCore, last_heard), 0, NULL},
    {"proven", T_BOOL, offsetof(SessionCore, proven), 0,
     "The peer has acknowledged DATA."},
    {"_waiting_oack", T_BOOL, offsetof(SessionCore, waiting_oack), 0, NULL},
    {"_fd", T_INT, offsetof(SessionCore, fd), 0,
     "The connected socket the pump may use, or -1."},
    {"_data", T_OBJECT, offsetof(SessionCore, data), 0,
     "The file's bytes the pump sends from, or None."},
    {"result", T_OBJECT, offsetof(SessionCore, result), 0, NULL},
    {NULL}
};

static PyTypeObject SessionCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vmetal_ironic.dhcp_agent._tftp_pump.SessionCore",
    .tp_doc = "The hot state of one TFTP transfer, shared with the pump.",
    .tp_basicsize = sizeof(SessionCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = core_new,
    .tp_init = (initproc)core_init,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_members = core_members,
};

/* One ready descriptor's work in a wake-up.  The session and its bytes are
 * held (strong references) from the classification, with the GIL, to the
 * hand-back, with the GIL; in between the socket calls run without it. */
enum { W_HAND, W_FAST };
enum { O_NONE, O_ANSWERED, O_DATAGRAM, O_ERRNO };

typedef struct {
    int fd;
    int kind;
    int outcome;
    int err;                  /* errno of a failed recv */
    int failed;               /* a send failed for good */
    ssize_t got;
    SessionCore *s;
    PyObject *data;
    struct sockaddr_in from;  /* single-port: the sender */
} Work;

typedef struct {
    PyObject_HEAD
    int epfd;
    int maxevents;
    struct epoll_event *events;
    Work *work;               /* maxevents items */
    unsigned char *bufs;      /* maxevents x LISTENER_RECV_SIZE */
    PyObject *sessions;       /* the loop's dict: fd or peer key -> session */
    PyObject *aborted;        /* the result a failed send ends with */
    int listen_fd;            /* single-port mode: the one socket, or -1 */
    unsigned long long fast;  /* ACKs answered here */
    unsigned long long handed; /* events given back to Python */
} Pump;

static void
pump_free_buffers(Pump *self)
{
    PyMem_Free(self->events);
    PyMem_Free(self->work);
    PyMem_Free(self->bufs);
    self->events = NULL;
    self->work = NULL;
    self->bufs = NULL;
}

static int
pump_traverse(Pump *self, visitproc visit, void *arg)
{
    Py_VISIT(self->sessions);
    Py_VISIT(self->aborted);
    return 0;
}

static int
pump_clear(Pump *self)
{
    Py_CLEAR(self->sessions);
    Py_CLEAR(self->aborted);
    return 0;
}

static void
pump_dealloc(Pump *self)
{
    PyObject_GC_UnTrack(self);
    pump_clear(self);
    pump_free_buffers(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
pump_init(Pump *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"epoll_fd", "sessions", "aborted", "maxevents",
                             "single_port_fd", NULL};
    int epfd, maxevents = 64, listen_fd = -1;
    PyObject *sessions, *aborted;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO!O|ii", kwlist, &epfd,
                                     &PyDict_Type, &sessions, &aborted,
                                     &maxevents, &listen_fd))
        return -1;
    if (maxevents < LISTENER_BURST || maxevents > 4096) {
        PyErr_SetString(PyExc_ValueError, "maxevents must be 16..4096");
        return -1;
    }
    pump_free_buffers(self);
    self->events = PyMem_Calloc(maxevents, sizeof(struct epoll_event));
    self->work = PyMem_Calloc(maxevents, sizeof(Work));
    self->bufs = PyMem_Calloc(maxevents, LISTENER_RECV_SIZE);
    if (self->events == NULL || self->work == NULL || self->bufs == NULL) {
        pump_free_buffers(self);
        PyErr_NoMemory();
        return -1;
    }
    self->epfd = epfd;
    self->maxevents = maxevents;
    self->listen_fd = listen_fd;
    Py_INCREF(sessions);
    Py_XSETREF(self->sessions, sessions);
    Py_INCREF(aborted);
    Py_XSETREF(self->aborted, aborted);
    return 0;
}

static double
monotonic(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Send blocks base .. end (the Python path's _transmit for a proven,
 * settled session) from ``bytes``.  A full buffer, an interrupted call or
 * an ICMP error of an earlier datagram loses the datagram (the timer
 * resends it).  Runs without the GIL: it touches only the session's C
 * fields and the bytes the caller holds.  Returns 1 if a send failed for
 * good (the transfer ends, as on the Python path). */
static int
transmit(SessionCore *s, PyObject *data, struct sockaddr_in *to)
{
    const char *bytes = PyBytes_AS_STRING(data);
    Py_ssize_t length = PyBytes_GET_SIZE(data);
    Py_ssize_t end = s->base;
    unsigned char header[4];
    struct iovec iov[2];
    struct msghdr msg;

    if (s->windowsize > 1) {
        end = s->base + s->windowsize - 1;
        if (end > s->last)
            end = s->last;
    }
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = iov;
    if (to != NULL) {
        msg.msg_name = to;
        msg.msg_namelen = sizeof(*to);
    }
    for (Py_ssize_t block = s->base; block <= end; block++) {
        Py_ssize_t offset = (block - 1) * s->blksize;
        Py_ssize_t size = 0;
        ssize_t sent;

        if (offset < length) {
            size = length - offset;
            if (size > s->blksize)
                size = s->blksize;
        }
        header[0] = 0;
        header[1] = OP_DATA;
        header[2] = (unsigned char)((block >> 8) & 0xff);
        header[3] = (unsigned char)(block & 0xff);
        iov[0].iov_base = header;
        iov[0].iov_len = 4;
        iov[1].iov_base = (void *)(bytes + (size ? offset : 0));
        iov[1].iov_len = (size_t)size;
        msg.msg_iovlen = size ? 2 : 1;
        sent = sendmsg(s->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0)
            return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR
                && errno != ECONNREFUSED;
        if (block > s->sent_upto)
            s->sent_upto = block;
    }
    return 0;
}

/* ``buf`` is what the peer of a session in the fast state sent: an
 * in-order ACK of a block in flight that is not the last advances the
 * window and sends what follows.  Returns 1 if it was such an ACK.  Runs
 * without the GIL (see transmit). */
static int
answer_ack(Work *w, const unsigned char *buf, double now,
           struct sockaddr_in *to)
{
    SessionCore *s = w->s;
    Py_ssize_t block, acked;

    if (w->got < 4 || buf[0] != 0 || buf[1] != OP_ACK)
        return 0;
    block = (Py_ssize_t)buf[2] << 8 | buf[3];
    /* Only base-1 .. sent_upto can be named, under 65536 apart. */
    acked = s->base - 1 + ((block - s->base + 1) & 0xffff);
    if (acked < s->base || acked > s->sent_upto || acked == s->last)
        return 0;
    s->last_heard = now;
    s->retries_left = s->retries;
    s->deadline = now + s->timeout;
    s->base = acked + 1;
    w->failed = transmit(s, w->data, to);
    return 1;
}

/* With the GIL: may the pump serve this session's datagrams? */
static int
fast_state(PyObject *found, int fd)
{
    SessionCore *s;

    if (found == NULL || !PyObject_TypeCheck(found, &SessionCoreType))
        return 0;
    s = (SessionCore *)found;
    return s->proven && !s->waiting_oack && s->fd == fd
        && s->result == Py_None && PyBytes_Check(s->data)
        && s->blksize >= 1 && s->windowsize >= 1;
}

/* Hold a session (and, when the pump will send from them, its bytes) from
 * the classification to the report. */
static void
hold(Work *w, PyObject *found, int fast)
{
    w->s = (SessionCore *)found;
    Py_INCREF(found);
    if (fast) {
        w->kind = W_FAST;
        w->data = ((SessionCore *)found)->data;
        Py_INCREF(w->data);
    }
}

/* Append (fd, session, what) to the list of events for Python. */
static int
hand_back(Pump *pump, PyObject *out, int fd, PyObject *session,
          PyObject *what)
{
    PyObject *item = Py_BuildValue("(iOO)", fd, session ? session : Py_None,
                                   what ? what : Py_None);
    int failed;

    if (item == NULL)
        return -1;
    failed = PyList_Append(out, item);
    Py_DECREF(item);
    pump->handed++;
    return failed;
}

/* With the GIL, after the socket calls: what Python is told about one
 * piece of work (nothing, when the pump answered it). */
static int
report(Pump *pump, PyObject *out, Work *w, const unsigned char *buf)
{
    PyObject *what = NULL, *session = (PyObject *)w->s;
    int failed;

    if (w->outcome == O_ANSWERED) {
        pump->fast++;
        if (!w->failed)
            return 0;
        Py_INCREF(pump->aborted);
        Py_XSETREF(w->s->result, pump->aborted);
    } else if (w->outcome == O_ERRNO) {
        what = PyLong_FromLong(w->err);
    } else if (w->outcome == O_DATAGRAM) {
        if (pump->listen_fd >= 0) {
            char address[INET_ADDRSTRLEN];

            inet_ntop(AF_INET, &w->from.sin_addr, address, sizeof(address));
            what = Py_BuildValue("(y#(si))", (char *)buf, (Py_ssize_t)w->got,
                                 address, (int)ntohs(w->from.sin_port));
            session = NULL;   /* the listener's datagram */
        } else {
            what = PyBytes_FromStringAndSize((char *)buf, w->got);
        }
    } else if (w->kind == W_FAST) {
        return 0;             /* nothing was there to read */
    }
    if (w->outcome == O_ERRNO || w->outcome == O_DATAGRAM) {
        if (what == NULL)
            return -1;
    }
    failed = hand_back(pump, out, w->fd, session, what);
    Py_XDECREF(what);
    return failed;
}

static void
release(Work *work, int count)
{
    for (int i = 0; i < count; i++) {
        Py_CLEAR(work[i].s);
        Py_CLEAR(work[i].data);
    }
}

/* Classic mode: one connected socket per session. */
static int
serve_sessions(Pump *pump, PyObject *out, int ready, double now)
{
    Work *work = pump->work;
    int failed = 0;

    for (int i = 0; i < ready; i++) {
        Work *w = &work[i];
        PyObject *key, *found;

        memset(w, 0, sizeof(*w));
        w->fd = pump->events[i].data.fd;
        key = PyLong_FromLong(w->fd);
        if (key == NULL) {
            release(work, i);
            return -1;
        }
        found = PyDict_GetItemWithError(pump->sessions, key);
        Py_DECREF(key);
        if (found == NULL && PyErr_Occurred()) {
            release(work, i);
            return -1;
        }
        if (found != NULL) {
            /* A session's: held, so it outlives a close in Python while
             * the hand-backs before it run. */
            hold(w, found, fast_state(found, w->fd));
        }
    }
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < ready; i++) {
        Work *w = &work[i];
        unsigned char *buf = pump->bufs + (size_t)i * LISTENER_RECV_SIZE;

        if (w->kind != W_FAST)
            continue;
        w->got = recv(w->fd, buf, RECV_SIZE, MSG_DONTWAIT);
        if (w->got < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                w->outcome = O_ERRNO;
                w->err = errno;
            }
        } else if (answer_ack(w, buf, now, NULL)) {
            w->outcome = O_ANSWERED;
        } else {
            w->outcome = O_DATAGRAM;
        }
    }
    Py_END_ALLOW_THREADS
    for (int i = 0; i < ready && !failed; i++)
        failed = report(pump, out, &work[i],
                        pump->bufs + (size_t)i * LISTENER_RECV_SIZE) < 0;
    release(work, ready);
    return failed ? -1 : 0;
}

/* Single-port mode: the listening socket is readable.  Up to
 * LISTENER_BURST datagrams are read (as the Python loop reads); an
 * in-order ACK of a session in the fast state is answered here (sessions
 * are filed under peer_key(address, port)); anything else is handed back
 * as (fd, None, (datagram, (address, port))) for the Python listener
 * code. */
static int
serve_listener(Pump *pump, PyObject *out, int fd, double now)
{
    Work *work = pump->work;
    int count = 0, failed = 0;

    Py_BEGIN_ALLOW_THREADS
    /* At most LISTENER_BURST reads, failed ones included. */
    for (int tries = 0; tries < LISTENER_BURST; tries++) {
        Work *w = &work[count];
        socklen_t fromlen = sizeof(w->from);

        memset(w, 0, sizeof(*w));
        w->fd = fd;
        w->got = recvfrom(fd, pump->bufs + (size_t)count * LISTENER_RECV_SIZE,
                          LISTENER_RECV_SIZE, MSG_DONTWAIT,
                          (struct sockaddr *)&w->from, &fromlen);
        if (w->got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            continue;   /* an ICMP error for an earlier datagram */
        }
        if (fromlen < sizeof(w->from) || w->from.sin_family != AF_INET)
            continue;   /* not IPv4: the server binds IPv4 only */
        w->outcome = O_DATAGRAM;
        count++;
    }
    Py_END_ALLOW_THREADS
    for (int i = 0; i < count; i++) {
        Work *w = &work[i];
        PyObject *key, *found;

        key = PyLong_FromUnsignedLongLong(
            (unsigned long long)ntohl(w->from.sin_addr.s_addr) << 16
            | ntohs(w->from.sin_port));
        if (key == NULL) {
            release(work, i);
            return -1;
        }
        found = PyDict_GetItemWithError(pump->sessions, key);
        Py_DECREF(key);
        if (found == NULL && PyErr_Occurred()) {
            release(work, i);
            return -1;
        }
        if (fast_state(found, fd))
            hold(w, found, 1);
    }
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < count; i++) {
        Work *w = &work[i];

        if (w->kind == W_FAST
                && answer_ack(w, pump->bufs + (size_t)i * LISTENER_RECV_SIZE,
                              now, &w->from))
            w->outcome = O_ANSWERED;
    }
    Py_END_ALLOW_THREADS
    /* A failed send ends the transfer in report(), as in classic mode: the
     * session goes back to Python to be closed. */
    for (int i = 0; i < count && !failed; i++)
        failed = report(pump, out, &work[i],
                        pump->bufs + (size_t)i * LISTENER_RECV_SIZE) < 0;
    release(work, count);
    return failed ? -1 : 0;
}

PyDoc_STRVAR(pump_poll_doc,
"poll(timeout, until=0) -> (now, events)\n\n"
"Wait up to ``timeout`` seconds, serve the in-order ACKs of sessions in\n"
"the fast state, and return the monotonic time read after the wait and\n"
"the events left for Python: ``(fd, session or None, what)``, ``what``\n"
"being the datagram read (bytes), ``None`` (not read: the descriptor is\n"
"readable, or the session's send failed and its result is set), an\n"
"errno (the receive failed) or, in single-port mode, for the listening\n"
"socket, ``(datagram, (address, port))``.\n\n"
"With ``until`` (a monotonic time), ``timeout`` is ignored: the pump\n"
"keeps waiting and serving until it has something for Python or the\n"
"time comes, so a transfer's blocks cost no return to the interpreter.");

/* One wait and what it brought: 0, or -1 with a Python error set. */
static int
serve_once(Pump *self, PyObject *out, double timeout, int *ready,
           double *now)
{
    int timeout_ms = timeout <= 0 ? 0 : (int)(timeout * 1000.0 + 0.999);
    int failed = 0;

    Py_BEGIN_ALLOW_THREADS
    *ready = epoll_wait(self->epfd, self->events, self->maxevents,
                        timeout_ms);
    Py_END_ALLOW_THREADS
    if (*ready < 0) {
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        *ready = 0;
        if (PyErr_CheckSignals() < 0)
            return -1;
    }
    *now = monotonic();
    if (self->listen_fd < 0)
        return serve_sessions(self, out, *ready, *now);
    /* Single-port: the listening socket, or the inbox (Python's). */
    for (int i = 0; i < *ready && !failed; i++) {
        int fd = self->events[i].data.fd;

        failed = (fd == self->listen_fd
                  ? serve_listener(self, out, fd, *now)
                  : hand_back(self, out, fd, NULL, NULL)) < 0;
    }
    return failed ? -1 : 0;
}

static PyObject *
pump_poll(Pump *self, PyObject *args)
{
    double timeout, until = 0, now;
    int ready;
    PyObject *out;

    if (!PyArg_ParseTuple(args, "d|d", &timeout, &until))
        return NULL;
    if (self->events == NULL) {
        PyErr_SetString(PyExc_ValueError, "pump not initialised");
        return NULL;
    }
    out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (;;) {
        if (until > 0)
            timeout = until - monotonic();
        if (serve_once(self, out, timeout, &ready, &now) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        if (until <= 0 || ready == 0 || PyList_GET_SIZE(out) > 0
                || now >= until)
            break;
    }
    return Py_BuildValue("(dN)", now, out);
}

static PyObject *
pump_counts(Pump *self, PyObject *unused)
{
    return Py_BuildValue("(KK)", self->fast, self->handed);
}

static PyMethodDef pump_methods[] = {
    {"poll", (PyCFunction)pump_poll, METH_VARARGS, pump_poll_doc},
    {"counts", (PyCFunction)pump_counts, METH_NOARGS,
     "(ACKs answered in the pump, events handed back to Python)."},
    {NULL}
};

static PyTypeObject PumpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vmetal_ironic.dhcp_agent._tftp_pump.Pump",
    .tp_doc = "Pump(epoll_fd, sessions, aborted, maxevents=64, "
              "single_port_fd=-1): one event loop's wait and in-order ACK "
              "path; with single_port_fd, sessions are filed under "
              "tftp_server.peer_key and that socket is read here.",
    .tp_basicsize = sizeof(Pump),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)pump_init,
    .tp_dealloc = (destructor)pump_dealloc,
    .tp_traverse = (traverseproc)pump_traverse,
    .tp_clear = (inquiry)pump_clear,
    .tp_methods = pump_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vmetal_ironic.dhcp_agent._tftp_pump",
    .m_doc = "The compiled per-block path of the TFTP server.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__tftp_pump(void)
{
    PyObject *mod;

    if (PyType_Ready(&SessionCoreType) < 0 || PyType_Ready(&PumpType) < 0)
        return NULL;
    mod = PyModule_Create(&module);
    if (mod == NULL)
        return NULL;
    Py_INCREF(&SessionCoreType);
    if (PyModule_AddObject(mod, "SessionCore",
                           (PyObject *)&SessionCoreType) < 0) {
        Py_DECREF(&SessionCoreType);
        Py_DECREF(mod);
        return NULL;
    }
    Py_INCREF(&PumpType);
    if (PyModule_AddObject(mod, "Pump", (PyObject *)&PumpType) < 0) {
        Py_DECREF(&PumpType);
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
