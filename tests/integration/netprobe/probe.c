/* racf-vm network test probe, run inside test guests (static, no libc beyond the basics).
 *   probe tcp SPORT HOST PORT    connect from SPORT (0 = any), send "hi", print the reply
 *   probe udp SPORT HOST PORT    send a datagram from SPORT, print the reply (2 s)
 *   probe raw PROTO HOST         send one raw IPv4 packet of protocol PROTO
 *   probe listen PORT SECS       tcp+udp listener: print every peer for SECS seconds
 * One line on stdout per result, starting with OK or FAIL. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int resolve(const char *host, int port, int type, struct sockaddr_storage *ss, socklen_t *len) {
    struct addrinfo hints = {0}, *ai;
    char p[16];
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    hints.ai_socktype = type;
    snprintf(p, sizeof p, "%d", port);
    if (getaddrinfo(host, p, &hints, &ai)) return -1;
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

static int bound_socket(int family, int type, int sport) {
    int s = socket(family, type, 0), one = 1;
    if (s < 0) return -1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (sport > 0) {
        struct sockaddr_storage ss = {0};
        socklen_t len;
        if (family == AF_INET6) {
            struct sockaddr_in6 *a = (void *)&ss;
            a->sin6_family = AF_INET6; a->sin6_port = htons(sport); len = sizeof *a;
        } else {
            struct sockaddr_in *a = (void *)&ss;
            a->sin_family = AF_INET; a->sin_port = htons(sport); len = sizeof *a;
        }
        if (bind(s, (void *)&ss, len) < 0) { int e = errno; close(s); errno = e; return -2; }
    }
    return s;
}

static int wait_fd(int s, short ev, int ms) {
    struct pollfd p = {s, ev, 0};
    return poll(&p, 1, ms);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *mode = argv[1];
    struct sockaddr_storage ss;
    socklen_t len;
    char buf[256];
    if (!strcmp(mode, "tcp") || !strcmp(mode, "udp")) {
        int udp = !strcmp(mode, "udp"), sport = atoi(argv[2]), port = atoi(argv[4]);
        if (argc < 5 || resolve(argv[3], port, udp ? SOCK_DGRAM : SOCK_STREAM, &ss, &len)) {
            printf("FAIL %s bad address\n", mode); return 1;
        }
        int s = bound_socket(ss.ss_family, udp ? SOCK_DGRAM : SOCK_STREAM, sport);
        if (s < 0) { printf("FAIL %s %s: %s\n", mode, s == -2 ? "bind" : "socket", strerror(errno)); return 1; }
        if (udp) {
            if (sendto(s, "hi\n", 3, 0, (void *)&ss, len) < 0) { printf("FAIL udp send: %s\n", strerror(errno)); return 1; }
            if (wait_fd(s, POLLIN, 2500) <= 0) { printf("FAIL udp noreply\n"); return 1; }
        } else {
            fcntl(s, F_SETFL, O_NONBLOCK);
            if (connect(s, (void *)&ss, len) < 0 && errno != EINPROGRESS) { printf("FAIL tcp connect: %s\n", strerror(errno)); return 1; }
            if (wait_fd(s, POLLOUT, 3000) <= 0) { printf("FAIL tcp timeout\n"); return 1; }
            int err = 0; socklen_t el = sizeof err;
            getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err) { printf("FAIL tcp connect: %s\n", strerror(err)); return 1; }
            fcntl(s, F_SETFL, 0);
            send(s, "hi\n", 3, 0);
            if (wait_fd(s, POLLIN, 2500) <= 0) { printf("FAIL tcp noreply\n"); return 1; }
        }
        ssize_t n = recv(s, buf, sizeof buf - 1, 0);
        if (n < 0) { printf("FAIL %s recv: %s\n", mode, strerror(errno)); return 1; }
        buf[n] = 0;
        buf[strcspn(buf, "\n")] = 0;
        printf("OK %s reply=%s\n", mode, buf);
        return 0;
    }
    if (!strcmp(mode, "raw")) {
        int proto = atoi(argv[2]);
        struct sockaddr_in *a = (void *)&ss;
        memset(&ss, 0, sizeof ss);
        a->sin_family = AF_INET;
        len = sizeof *a;
        if (argc < 4 || inet_pton(AF_INET, argv[3], &a->sin_addr) != 1) { printf("FAIL raw bad address\n"); return 1; }
        int s = socket(AF_INET, SOCK_RAW, proto);
        if (s < 0) { printf("FAIL raw socket: %s\n", strerror(errno)); return 1; }
        if (sendto(s, "racf-raw-probe", 14, 0, (void *)&ss, len) < 0) { printf("FAIL raw send: %s\n", strerror(errno)); return 1; }
        printf("OK raw sent\n");
        return 0;
    }
    if (!strcmp(mode, "listen")) {
        int port = atoi(argv[2]), secs = argc > 3 ? atoi(argv[3]) : 30;
        int t = bound_socket(AF_INET, SOCK_STREAM, port), u = bound_socket(AF_INET, SOCK_DGRAM, port);
        if (t < 0 || u < 0 || listen(t, 8) < 0) { printf("FAIL listen: %s\n", strerror(errno)); return 1; }
        printf("OK listening %d\n", port); fflush(stdout);
        time_t end = time(NULL) + secs;
        while (time(NULL) < end) {
            struct pollfd p[2] = {{t, POLLIN, 0}, {u, POLLIN, 0}};
            if (poll(p, 2, 500) <= 0) continue;
            struct sockaddr_in peer; socklen_t pl = sizeof peer;
            if (p[0].revents) {
                int c = accept(t, (void *)&peer, &pl);
                if (c >= 0) { printf("GOT tcp from %s:%d\n", inet_ntoa(peer.sin_addr), ntohs(peer.sin_port)); close(c); }
            }
            if (p[1].revents) {
                recvfrom(u, buf, sizeof buf, 0, (void *)&peer, &pl);
                printf("GOT udp from %s:%d\n", inet_ntoa(peer.sin_addr), ntohs(peer.sin_port));
            }
            fflush(stdout);
        }
        return 0;
    }
    return 2;
}
