/*
 * loadclient: the compiled load client of the gripcore benchmark suite (issue 4).
 *
 * One process, one epoll loop. Two modes:
 *
 *   loadclient sub --port P [--host 127.0.0.1] [--path /x] [--proto sse|ws] [--conns N]
 *                  [--rate CONN_PER_S] [--connect-timeout S] [--drain-timeout S] [--max-time S]
 *       Opens N connections at the given rate (0: as fast as possible), each an HTTP GET
 *       (Accept: text/event-stream) or a WebSocket handshake, and keeps them open. It parses
 *       what arrives: HTTP chunked or close-delimited bodies, SSE lines, WebSocket frames.
 *       When every connection is open or has failed it prints one line "READY {json}".
 *       It then reads stdin: "END FIRST LAST\n" says the publisher sent sequence numbers
 *       FIRST..LAST; the client waits until every open connection has seen LAST (or the drain
 *       timeout passes) and prints the final JSON summary on one line. EOF on stdin ends the
 *       run the same way, with no completeness figures.
 *
 *   loadclient ceiling [--conns N] [--rounds R] [--size BYTES]
 *       The syscall ceiling: N loopback TCP connections, R rounds of one send() of BYTES on
 *       each; prints sends per second (only the send() calls are timed).
 *
 * A message is a line (SSE: "data: M SEQ TS_NS ...", WebSocket: a text frame "M SEQ TS_NS ...")
 * where TS_NS is the publisher's CLOCK_REALTIME (Python time.time_ns()) at send time, so
 * latency = receive time - TS_NS on the same machine. Per connection the client keeps the
 * highest sequence seen and counts in-order, duplicate and out-of-order arrivals; latencies go
 * to a fixed histogram (10 us buckets up to 10 s), so memory stays bounded however long it runs.
 *
 * Build: cc -O2 -Wall -Wextra -o loadclient loadclient.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 18000          /* the machine allows ~19,000 fds per process */
#define HDR_MAX 4096             /* largest response head accepted during the handshake */
#define LINE_MAX_KEEP 48         /* a message line's prefix: "data: M " + seq + ts fits */
#define READ_BUF (256 * 1024)    /* one shared read buffer for every connection */
#define HIST_BUCKET_NS 10000ULL  /* latency histogram resolution: 10 us */
#define HIST_BUCKETS 1000000     /* 10 us x 1e6 = 10 s; later arrivals land in the last bucket */
#define MAX_EVENTS 1024
#define CONNECT_BURST 500        /* most connects started per loop iteration */

enum { ST_CONNECTING, ST_HEAD, ST_OPEN, ST_FAILED, ST_CLOSED };
enum { CH_SIZE, CH_EXT, CH_DATA, CH_DATA_END, CH_DONE };
enum { PROTO_SSE, PROTO_WS };

struct conn {
    int fd;
    uint8_t state;
    uint8_t chunked;
    uint8_t cstate;
    uint8_t llen;
    uint8_t whlen;
    uint8_t wneed;
    uint8_t wop;
    uint8_t wfin;
    uint64_t crem;      /* chunk bytes left */
    uint64_t wrem;      /* websocket payload bytes left */
    char *hdr;          /* response head, only while in ST_HEAD */
    uint16_t hdr_len;
    uint8_t whdr[14];
    char line[LINE_MAX_KEEP];
    double started;     /* monotonic seconds when connect() was called */
    int64_t max_seq;
    uint64_t n_inrange, n_dup, n_ooo, n_rx;
};

static struct conn *conns;
static int n_conns;
static int proto = PROTO_SSE;
static int64_t range_first = -1, range_last = -1;
static uint32_t *hist;
static uint64_t hist_count, lat_max_ns;
static int64_t first_rx_ns = -1, last_rx_ns = -1;
static uint64_t total_rx, total_inrange, total_dup, total_ooo, total_bad_lines, total_ws_close;
static int fail_connect, fail_status, fail_eof_head, fail_timeout, fail_head_too_big;
static int closed_after_open, n_opened, n_failed;
static int status_2xx, status_4xx, status_5xx, status_other;

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t real_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL, 0);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* ---- message accounting ---- */

static void record_message(struct conn *c, const char *s, size_t n) {
    /* s: "M SEQ TS ..." (at most LINE_MAX_KEEP bytes kept) */
    char tmp[LINE_MAX_KEEP + 1];
    if (n < 2 || s[0] != 'M' || s[1] != ' ') {
        return;
    }
    memcpy(tmp, s, n);
    tmp[n] = 0;
    char *end;
    long long seq = strtoll(tmp + 2, &end, 10);
    if (end == tmp + 2 || *end != ' ') {
        total_bad_lines++;
        return;
    }
    char *p = end + 1;
    long long ts = strtoll(p, &end, 10);
    if (end == p) {
        total_bad_lines++;
        return;
    }
    int64_t now = real_now_ns();
    c->n_rx++;
    total_rx++;
    if (first_rx_ns < 0) {
        first_rx_ns = now;
    }
    last_rx_ns = now;
    int64_t lat = now - ts;
    if (lat < 0) {
        lat = 0;
    }
    uint64_t b = (uint64_t)lat / HIST_BUCKET_NS;
    if (b >= HIST_BUCKETS) {
        b = HIST_BUCKETS - 1;
    }
    hist[b]++;
    hist_count++;
    if ((uint64_t)lat > lat_max_ns) {
        lat_max_ns = (uint64_t)lat;
    }
    if (seq == c->max_seq) {
        c->n_dup++;
        total_dup++;
    } else if (seq < c->max_seq) {
        c->n_ooo++;
        total_ooo++;
    } else {
        c->max_seq = seq;
        c->n_inrange++;
        total_inrange++;
    }
}

static void line_byte_run(struct conn *c, const char *p, size_t n) {
    /* SSE / stream content: split into lines, keep each line's prefix. */
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        size_t room = LINE_MAX_KEEP - c->llen;
        size_t k = take < room ? take : room;
        memcpy(c->line + c->llen, p, k);
        c->llen += (uint8_t)k;
        if (!nl) {
            return;
        }
        size_t len = c->llen;
        const char *s = c->line;
        if (len && s[len - 1] == '\r') {
            len--;
        }
        if (len >= 5 && memcmp(s, "data:", 5) == 0) {
            s += 5;
            len -= 5;
            if (len && *s == ' ') {
                s++;
                len--;
            }
            record_message(c, s, len);
        }
        c->llen = 0;
        n -= take + 1;
        p = nl + 1;
    }
}

static void content(struct conn *c, const char *p, size_t n) {
    if (!c->chunked) {
        line_byte_run(c, p, n);
        return;
    }
    while (n) {
        switch (c->cstate) {
        case CH_SIZE: {
            char ch = *p;
            int v = -1;
            if (ch >= '0' && ch <= '9') v = ch - '0';
            else if (ch >= 'a' && ch <= 'f') v = ch - 'a' + 10;
            else if (ch >= 'A' && ch <= 'F') v = ch - 'A' + 10;
            if (v >= 0) {
                c->crem = c->crem * 16 + (uint64_t)v;
            } else if (ch == '\n') {
                c->cstate = c->crem ? CH_DATA : CH_DONE;
            } else if (ch != '\r') {
                c->cstate = CH_EXT;
            }
            p++;
            n--;
            break;
        }
        case CH_EXT:
            if (*p == '\n') {
                c->cstate = c->crem ? CH_DATA : CH_DONE;
            }
            p++;
            n--;
            break;
        case CH_DATA: {
            size_t k = n < c->crem ? n : (size_t)c->crem;
            line_byte_run(c, p, k);
            c->crem -= k;
            p += k;
            n -= k;
            if (!c->crem) {
                c->cstate = CH_DATA_END;
            }
            break;
        }
        case CH_DATA_END:
            if (*p == '\n') {
                c->cstate = CH_SIZE;
                c->crem = 0;
            }
            p++;
            n--;
            break;
        default: /* CH_DONE: the stream ended; ignore anything after */
            return;
        }
    }
}

static void ws_frame_end(struct conn *c) {
    if (c->wop == 1 || c->wop == 2 || c->wop == 0) {
        if (c->wfin) {
            record_message(c, c->line, c->llen);
            c->llen = 0;
        }
    } else if (c->wop == 8) {
        total_ws_close++;
    }
}

static void ws_bytes(struct conn *c, const char *p, size_t n) {
    while (n) {
        if (c->wneed) {
            c->whdr[c->whlen++] = (uint8_t)*p++;
            n--;
            if (c->whlen == 2) {
                uint8_t l7 = c->whdr[1] & 0x7F;
                c->wneed = (uint8_t)(2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) +
                                     ((c->whdr[1] & 0x80) ? 4 : 0));
            }
            if (c->whlen < c->wneed) {
                continue;
            }
            uint8_t l7 = c->whdr[1] & 0x7F;
            uint64_t len = l7;
            if (l7 == 126) {
                len = ((uint64_t)c->whdr[2] << 8) | c->whdr[3];
            } else if (l7 == 127) {
                len = 0;
                for (int i = 0; i < 8; i++) len = (len << 8) | c->whdr[2 + i];
            }
            uint8_t op = c->whdr[0] & 0x0F;
            if (op != 0) {
                c->wop = op;
            }
            c->wfin = (c->whdr[0] & 0x80) != 0;
            c->wrem = len;
            c->wneed = 0;
            c->whlen = 0;
            if (!len) {
                ws_frame_end(c);
                c->wneed = 2;
            }
            continue;
        }
        size_t k = n < c->wrem ? n : (size_t)c->wrem;
        if (c->wop <= 2) {
            size_t room = LINE_MAX_KEEP - c->llen;
            size_t m = k < room ? k : room;
            memcpy(c->line + c->llen, p, m);
            c->llen += (uint8_t)m;
        }
        c->wrem -= k;
        p += k;
        n -= k;
        if (!c->wrem) {
            ws_frame_end(c);
            c->wneed = 2;
        }
    }
}

/* ---- connection lifecycle ---- */

static struct sockaddr_in target;
static const char *host = "127.0.0.1";
static const char *path = "/";
static int port = 0;
static char request[1024];
static size_t request_len;

static void conn_fail(int epfd, struct conn *c, int *counter) {
    (*counter)++;
    n_failed++;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    free(c->hdr);
    c->hdr = NULL;
    c->state = ST_FAILED;
}

static void conn_start(int epfd, struct conn *c) {
    c->started = mono_now();
    c->max_seq = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        c->fd = -1;
        c->state = ST_FAILED;
        fail_connect++;
        n_failed++;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = ST_CONNECTING;
    int rc = connect(fd, (struct sockaddr *)&target, sizeof target);
    if (rc < 0 && errno != EINPROGRESS) {
        close(fd);
        c->fd = -1;
        c->state = ST_FAILED;
        fail_connect++;
        n_failed++;
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void on_connected(int epfd, struct conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        conn_fail(epfd, c, &fail_connect);
        return;
    }
    ssize_t w = send(c->fd, request, request_len, MSG_NOSIGNAL);
    if (w != (ssize_t)request_len) {
        conn_fail(epfd, c, &fail_connect);
        return;
    }
    c->hdr = malloc(HDR_MAX);
    c->hdr_len = 0;
    c->state = ST_HEAD;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void on_head_bytes(int epfd, struct conn *c, const char *p, size_t n) {
    size_t room = HDR_MAX - c->hdr_len;
    size_t k = n < room ? n : room;
    memcpy(c->hdr + c->hdr_len, p, k);
    size_t old = c->hdr_len;
    c->hdr_len += (uint16_t)k;
    size_t scan_from = old >= 3 ? old - 3 : 0;
    char *end = memmem(c->hdr + scan_from, c->hdr_len - scan_from, "\r\n\r\n", 4);
    if (!end) {
        if (c->hdr_len == HDR_MAX) {
            conn_fail(epfd, c, &fail_head_too_big);
        }
        return;
    }
    size_t head_len = (size_t)(end - c->hdr) + 4;
    int status = 0;
    if (c->hdr_len > 12 && memcmp(c->hdr, "HTTP/1.", 7) == 0) {
        status = atoi(c->hdr + 9);
    }
    if (status >= 200 && status < 300) status_2xx++;
    else if (status >= 400 && status < 500) status_4xx++;
    else if (status >= 500 && status < 600) status_5xx++;
    else if (status != 101) status_other++;
    int want = proto == PROTO_WS ? 101 : 200;
    if (status != want) {
        conn_fail(epfd, c, &fail_status);
        return;
    }
    c->hdr[head_len - 1] = 0;
    for (char *q = c->hdr; *q; q++) {
        if (*q >= 'A' && *q <= 'Z') *q = (char)(*q + 32);
    }
    c->chunked = proto == PROTO_SSE && strstr(c->hdr, "\ntransfer-encoding: chunked") != NULL;
    c->cstate = CH_SIZE;
    c->crem = 0;
    c->wneed = 2;
    c->whlen = 0;
    c->state = ST_OPEN;
    n_opened++;
    /* bytes after the head, from this read: the part of p beyond what the head used */
    size_t used_from_p = head_len - old;
    free(c->hdr);
    c->hdr = NULL;
    if (used_from_p < n) {
        if (proto == PROTO_WS) ws_bytes(c, p + used_from_p, n - used_from_p);
        else content(c, p + used_from_p, n - used_from_p);
    }
}

static char *rbuf;

static void on_readable(int epfd, struct conn *c) {
    ssize_t r = recv(c->fd, rbuf, READ_BUF, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (r <= 0) {
        if (c->state == ST_HEAD) {
            conn_fail(epfd, c, &fail_eof_head);
        } else {
            closed_after_open++;
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            c->fd = -1;
            c->state = ST_CLOSED;
        }
        return;
    }
    if (c->state == ST_HEAD) {
        on_head_bytes(epfd, c, rbuf, (size_t)r);
    } else if (proto == PROTO_WS) {
        ws_bytes(c, rbuf, (size_t)r);
    } else {
        content(c, rbuf, (size_t)r);
    }
}

static void close_all(void) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0}; /* RST: leave no TIME_WAIT behind */
    for (int i = 0; i < n_conns; i++) {
        if (conns[i].fd >= 0) {
            setsockopt(conns[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(conns[i].fd);
            conns[i].fd = -1;
        }
    }
}

static uint64_t percentile_us(double q) {
    if (!hist_count) return 0;
    uint64_t want = (uint64_t)(q * (double)hist_count);
    if (want >= hist_count) want = hist_count - 1;
    uint64_t acc = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        acc += hist[i];
        if (acc > want) return ((uint64_t)i * HIST_BUCKET_NS + HIST_BUCKET_NS / 2) / 1000;
    }
    return lat_max_ns / 1000;
}

static void cpu_times(double *user, double *sys) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void print_counts(FILE *f) {
    fprintf(f,
            "\"conns_requested\":%d,\"conns_opened\":%d,\"conns_failed\":%d,"
            "\"fail_connect\":%d,\"fail_status\":%d,\"fail_eof_before_head\":%d,"
            "\"fail_timeout\":%d,\"fail_head_too_big\":%d,\"status_2xx\":%d,\"status_4xx\":%d,"
            "\"status_5xx\":%d,\"status_other\":%d,\"closed_after_open\":%d",
            n_conns, n_opened, n_failed, fail_connect, fail_status, fail_eof_head, fail_timeout,
            fail_head_too_big, status_2xx, status_4xx, status_5xx, status_other,
            closed_after_open);
}

static int run_sub(int nconns, double rate, double connect_timeout, double drain_timeout,
                   double max_time) {
    n_conns = nconns;
    conns = calloc((size_t)nconns, sizeof *conns);
    hist = calloc(HIST_BUCKETS, sizeof *hist);
    rbuf = malloc(READ_BUF);
    if (!conns || !hist || !rbuf) {
        fprintf(stderr, "loadclient: out of memory\n");
        return 1;
    }
    for (int i = 0; i < nconns; i++) conns[i].fd = -1;
    int epfd = epoll_create1(0);
    set_nonblock(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);
    struct epoll_event events[MAX_EVENTS];
    char stdin_buf[256];
    size_t stdin_len = 0;
    int started = 0, ready_printed = 0, ending = 0;
    double t0 = mono_now(), ready_at = 0, end_at = 0, ramp_s = 0;
    for (;;) {
        double now = mono_now();
        if (now - t0 > max_time) break;
        /* start due connections */
        if (started < nconns) {
            int due = rate > 0 ? (int)((now - t0) * rate) + 1 : nconns;
            if (due > nconns) due = nconns;
            int burst = 0;
            while (started < due && burst < CONNECT_BURST) {
                conn_start(epfd, &conns[started++]);
                burst++;
            }
        }
        /* time out stuck handshakes; check readiness */
        if (!ready_printed) {
            for (int i = 0; i < started; i++) {
                struct conn *c = &conns[i];
                if ((c->state == ST_CONNECTING || c->state == ST_HEAD) &&
                    now - c->started > connect_timeout) {
                    conn_fail(epfd, c, &fail_timeout);
                }
            }
            if (started == nconns && n_opened + n_failed >= nconns) {
                ready_at = now;
                ramp_s = now - t0;
                ready_printed = 1;
                double u, s;
                cpu_times(&u, &s);
                printf("READY {\"ramp_seconds\":%.3f,\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,",
                       ramp_s, u, s);
                print_counts(stdout);
                printf("}\n");
                fflush(stdout);
            }
        }
        if (ending) {
            int all = 1;
            for (int i = 0; i < nconns && all; i++) {
                if (conns[i].state == ST_OPEN && conns[i].max_seq < range_last) all = 0;
            }
            if (all || now - end_at > drain_timeout) break;
        }
        int timeout_ms = 20;
        int n = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c) {
                ssize_t r = read(0, stdin_buf + stdin_len, sizeof stdin_buf - 1 - stdin_len);
                if (r == 0) {
                    epoll_ctl(epfd, EPOLL_CTL_DEL, 0, NULL);
                    if (!ending) {
                        ending = 1;
                        end_at = mono_now();
                        range_last = -1;
                    }
                } else if (r > 0) {
                    stdin_len += (size_t)r;
                    stdin_buf[stdin_len] = 0;
                    char *line = stdin_buf, *nl;
                    while ((nl = strchr(line, '\n')) != NULL) { /* other lines are ignored */
                        *nl = 0;
                        long long a = -1, b = -1;
                        if (sscanf(line, "END %lld %lld", &a, &b) == 2 && !ending) {
                            range_first = a;
                            range_last = b;
                            ending = 1;
                            end_at = mono_now();
                        }
                        line = nl + 1;
                    }
                    stdin_len = strlen(line);
                    memmove(stdin_buf, line, stdin_len + 1);
                    if (stdin_len >= sizeof stdin_buf - 1) {
                        stdin_len = 0;
                    }
                }
                continue;
            }
            if (c->state == ST_CONNECTING) {
                if (events[i].events & (EPOLLERR | EPOLLHUP)) {
                    conn_fail(epfd, c, &fail_connect);
                } else if (events[i].events & EPOLLOUT) {
                    on_connected(epfd, c);
                }
            } else if (c->state == ST_HEAD || c->state == ST_OPEN) {
                on_readable(epfd, c);
            }
        }
    }
    (void)ready_at;
    double u, s;
    cpu_times(&u, &s);
    /* completeness over FIRST..LAST */
    long long expected_per_conn = range_last >= range_first && range_first >= 0
                                      ? range_last - range_first + 1
                                      : 0;
    long long missing = 0, conns_incomplete = 0;
    int open_at_end = 0;
    if (expected_per_conn) {
        for (int i = 0; i < nconns; i++) {
            struct conn *c = &conns[i];
            if (c->state != ST_OPEN && c->state != ST_CLOSED) continue;
            long long got = (long long)(c->n_inrange + c->n_ooo);
            long long miss = expected_per_conn - got;
            if (miss < 0) miss = 0;
            missing += miss;
            if (miss || c->state == ST_CLOSED) conns_incomplete++;
        }
    }
    for (int i = 0; i < nconns; i++) open_at_end += conns[i].state == ST_OPEN;
    printf("{");
    print_counts(stdout);
    printf(",\"ramp_seconds\":%.3f,\"open_at_end\":%d,\"messages_received\":%llu,"
           "\"messages_in_order\":%llu,\"duplicates\":%llu,\"out_of_order\":%llu,"
           "\"bad_lines\":%llu,\"ws_close_frames\":%llu,\"seq_first\":%lld,\"seq_last\":%lld,"
           "\"expected_per_conn\":%lld,\"expected_total\":%lld,\"missing\":%lld,"
           "\"conns_incomplete\":%lld,\"first_rx_ns\":%lld,\"last_rx_ns\":%lld,"
           "\"latency_us\":{\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"p999\":%llu,\"max\":%llu},"
           "\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f,\"wall_s\":%.3f}\n",
           ramp_s, open_at_end, (unsigned long long)total_rx,
           (unsigned long long)total_inrange, (unsigned long long)total_dup,
           (unsigned long long)total_ooo, (unsigned long long)total_bad_lines,
           (unsigned long long)total_ws_close, (long long)range_first, (long long)range_last,
           expected_per_conn, expected_per_conn * (n_opened), missing, conns_incomplete,
           (long long)first_rx_ns, (long long)last_rx_ns,
           (unsigned long long)percentile_us(0.50), (unsigned long long)percentile_us(0.90),
           (unsigned long long)percentile_us(0.99), (unsigned long long)percentile_us(0.999),
           (unsigned long long)(lat_max_ns / 1000), u, s, mono_now() - t0);
    fflush(stdout);
    close_all();
    return 0;
}

/* ---- ceiling: one send() per socket per round over loopback TCP ---- */

static int run_ceiling(int nconns, int rounds, int size) {
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(lfd, 4096) < 0 || getsockname(lfd, (struct sockaddr *)&a, &alen) < 0) {
        perror("loadclient: listen");
        return 1;
    }
    int *tx = calloc((size_t)nconns, sizeof *tx);
    int *rx = calloc((size_t)nconns, sizeof *rx);
    char *buf = calloc(1, (size_t)size > 65536 ? (size_t)size : 65536);
    if (!tx || !rx || !buf) return 1;
    memset(buf, 'x', (size_t)size);
    int made = 0;
    for (; made < nconns; made++) {
        tx[made] = socket(AF_INET, SOCK_STREAM, 0);
        if (tx[made] < 0 || connect(tx[made], (struct sockaddr *)&a, sizeof a) < 0) break;
        rx[made] = accept(lfd, NULL, NULL);
        if (rx[made] < 0) {
            close(tx[made]);
            break;
        }
        int one = 1;
        setsockopt(tx[made], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        set_nonblock(tx[made]);
        set_nonblock(rx[made]);
    }
    double sending = 0;
    long long sends = 0, send_errors = 0;
    for (int r = 0; r < rounds; r++) {
        double t = mono_now();
        for (int i = 0; i < made; i++) {
            if (send(tx[i], buf, (size_t)size, MSG_NOSIGNAL) == size) sends++;
            else send_errors++;
        }
        sending += mono_now() - t;
        for (int i = 0; i < made; i++) {
            while (recv(rx[i], buf, 65536, 0) > 0) {
            }
        }
    }
    double u, s;
    cpu_times(&u, &s);
    printf("{\"mode\":\"ceiling\",\"conns\":%d,\"rounds\":%d,\"size\":%d,\"sends\":%lld,"
           "\"send_errors\":%lld,\"send_seconds\":%.4f,\"sends_per_s\":%.0f,"
           "\"ns_per_send\":%.0f,\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f}\n",
           made, rounds, size, sends, send_errors, sending,
           sending > 0 ? (double)sends / sending : 0.0,
           sends ? sending * 1e9 / (double)sends : 0.0, u, s);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    for (int i = 0; i < made; i++) {
        setsockopt(tx[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(tx[i]);
        close(rx[i]);
    }
    close(lfd);
    return 0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadclient sub --port P [--host H] [--path /p] [--proto sse|ws] [--conns N]\n"
            "                      [--rate CONN_PER_S] [--connect-timeout S] [--drain-timeout S]\n"
            "                      [--max-time S]\n"
            "       loadclient ceiling [--conns N] [--rounds R] [--size BYTES]\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage();
        return 2;
    }
    raise_fd_limit();
    int nconns = 1000, rounds = 20, size = 80;
    double rate = 0, connect_timeout = 10, drain_timeout = 5, max_time = 600;
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            usage();
            return 2;
        }
        i++;
        if (!strcmp(k, "--host")) host = v;
        else if (!strcmp(k, "--port")) port = atoi(v);
        else if (!strcmp(k, "--path")) path = v;
        else if (!strcmp(k, "--proto")) proto = !strcmp(v, "ws") ? PROTO_WS : PROTO_SSE;
        else if (!strcmp(k, "--conns")) nconns = atoi(v);
        else if (!strcmp(k, "--rate")) rate = atof(v);
        else if (!strcmp(k, "--connect-timeout")) connect_timeout = atof(v);
        else if (!strcmp(k, "--drain-timeout")) drain_timeout = atof(v);
        else if (!strcmp(k, "--max-time")) max_time = atof(v);
        else if (!strcmp(k, "--rounds")) rounds = atoi(v);
        else if (!strcmp(k, "--size")) size = atoi(v);
        else {
            usage();
            return 2;
        }
    }
    if (nconns < 1 || nconns > MAX_CONNS) {
        fprintf(stderr, "loadclient: --conns must be 1..%d\n", MAX_CONNS);
        return 2;
    }
    if (!strcmp(argv[1], "ceiling")) {
        if (nconns > MAX_CONNS / 2) nconns = MAX_CONNS / 2; /* two fds per connection */
        if (size < 1 || size > 65536 || rounds < 1) {
            usage();
            return 2;
        }
        return run_ceiling(nconns, rounds, size);
    }
    if (strcmp(argv[1], "sub") || port <= 0) {
        usage();
        return 2;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &target.sin_addr) != 1) {
        fprintf(stderr, "loadclient: --host must be an IPv4 address\n");
        return 2;
    }
    if (proto == PROTO_WS) {
        request_len = (size_t)snprintf(
            request, sizeof request,
            "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            path, host, port);
    } else {
        request_len = (size_t)snprintf(request, sizeof request,
                                       "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
                                       "Accept: text/event-stream\r\n\r\n",
                                       path, host, port);
    }
    if (request_len >= sizeof request) {
        fprintf(stderr, "loadclient: --path too long\n");
        return 2;
    }
    return run_sub(nconns, rate, connect_timeout, drain_timeout, max_time);
}
