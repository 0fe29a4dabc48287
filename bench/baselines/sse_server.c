/* Baseline: the least a server can do to fan one SSE event out to N devices.
 *
 * One thread, epoll, non-blocking sockets. A device connects to the device port, sends any
 * HTTP request (read and ignored up to its blank line), and gets a chunked
 * `text/event-stream` head followed by an `event: synced` chunk. The bench connects to the
 * control port and sends lines `P <seq> <count>\n`: the server builds `count` events
 * (seq, seq+1, ...) of the payload size given on the command line, each one HTTP chunk
 * (`id: <seq>\nevent: alert\ndata: xxxx...\n\n`), and writes each event to every device
 * with one write() per device, in connection order, then answers `D <seq>\n`. A device
 * whose socket buffer is full is closed (as tocsin cuts a slow device).
 *
 *     gcc -O2 -o sse_server sse_server.c && ./sse_server DEVICE_PORT CONTROL_PORT PAYLOAD
 *
 * Written for bench/fanout_bench.py; loopback only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 262144
static char state[MAX_FDS]; /* 0 none, 1 reading request, 2 streaming, 3 control */
static int streaming[MAX_FDS];
static int n_streaming;
static char reqbuf[MAX_FDS][4];

static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 4096) < 0) {
        perror("bind/listen");
        exit(1);
    }
    return fd;
}

static void close_fd(int fd) {
    if (state[fd] == 2) {
        for (int i = 0; i < n_streaming; i++)
            if (streaming[i] == fd) { streaming[i] = streaming[--n_streaming]; break; }
    }
    state[fd] = 0;
    close(fd);
}

static const char HEAD[] =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    "transfer-encoding: chunked\r\n\r\n";
static const char SYNCED[] = "event: synced\ndata: {}\n\n";

static size_t chunk(char *out, const char *data, size_t len) {
    size_t n = (size_t)sprintf(out, "%zx\r\n", len);
    memcpy(out + n, data, len);
    memcpy(out + n + len, "\r\n", 2);
    return n + len + 2;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s DEVICE_PORT CONTROL_PORT PAYLOAD\n", argv[0]); return 2; }
    signal(SIGPIPE, SIG_IGN);
    int payload = atoi(argv[3]);
    int dev = listen_on(atoi(argv[1])), ctl = listen_on(atoi(argv[2]));
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = dev; epoll_ctl(ep, EPOLL_CTL_ADD, dev, &ev);
    ev.data.fd = ctl; epoll_ctl(ep, EPOLL_CTL_ADD, ctl, &ev);
    char *event = malloc((size_t)payload + 256), *framed = malloc((size_t)payload + 300);
    char synced[128];
    size_t synced_len = chunk(synced, SYNCED, sizeof SYNCED - 1);
    printf("ready\n");
    fflush(stdout);
    struct epoll_event events[1024];
    char buf[4096];
    for (;;) {
        int n = epoll_wait(ep, events, 1024, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == dev || fd == ctl) {
                for (;;) {
                    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0) break;
                    if (c >= MAX_FDS) { close(c); continue; }
                    int one = 1;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    state[c] = fd == dev ? 1 : 3;
                    memset(reqbuf[c], 0, 4);
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t got = read(fd, buf, sizeof buf - 1);
            if (got <= 0) { if (got == 0 || errno != EAGAIN) close_fd(fd); continue; }
            if (state[fd] == 1) {
                /* find the blank line ending the request, across reads (last 4 bytes kept) */
                int done = 0;
                for (ssize_t k = 0; k < got; k++) {
                    memmove(reqbuf[fd], reqbuf[fd] + 1, 3);
                    reqbuf[fd][3] = buf[k];
                    if (memcmp(reqbuf[fd], "\r\n\r\n", 4) == 0) { done = 1; break; }
                }
                if (done) {
                    write(fd, HEAD, sizeof HEAD - 1);
                    write(fd, synced, synced_len);
                    state[fd] = 2;
                    streaming[n_streaming++] = fd;
                }
            } else if (state[fd] == 3) {
                buf[got] = 0;
                long seq = 0, count = 0;
                if (sscanf(buf, "P %ld %ld", &seq, &count) == 2) {
                    for (long s = seq; s < seq + count; s++) {
                        int len = sprintf(event, "id: %ld\nevent: alert\ndata: ", s);
                        memset(event + len, 'x', (size_t)payload);
                        memcpy(event + len + payload, "\n\n", 2);
                        size_t flen = chunk(framed, event, (size_t)len + (size_t)payload + 2);
                        for (int k = 0; k < n_streaming; k++) {
                            ssize_t w = write(streaming[k], framed, flen);
                            if (w != (ssize_t)flen) { close_fd(streaming[k]); k--; }
                        }
                    }
                    char reply[64];
                    int rl = sprintf(reply, "D %ld\n", seq);
                    write(fd, reply, (size_t)rl);
                }
            }
            /* streaming devices send nothing more; reads there are ignored */
        }
    }
}
