/* racf-vm network test probe, run inside test guests (static, no libc beyond the basics).
 *   probe tcp SPORT HOST PORT    connect from SPORT (0 = any), send "hi", print the reply
 *   probe udp SPORT HOST PORT    send a datagram from SPORT, print the reply (2 s)
 *   probe raw PROTO HOST         send one raw IPv4 packet of protocol PROTO
 *   probe listen PORT SECS       tcp+udp listener: print every peer for SECS seconds
 *   probe spoof IF VIP VMAC HOST SECS   poison the host's view of the guest VIP/VMAC for
 *                                SECS seconds, every 100 ms: ARP reply and ARP request
 *                                "VIP is at <my MAC>" (neighbour table), an ARP probe
 *                                (sender 0.0.0.0: no neighbour update) sent from VMAC
 *                                itself (bridge FDB); meanwhile count the
 *                                IPv4 frames for VIP that reach this NIC (promiscuous);
 *                                prints "OK sent=N seen=M" every 5 s and at the end
 * One line on stdout per result, starting with OK or FAIL. */
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/if_ether.h>
#include <sys/ioctl.h>
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

static int parse_mac(const char *s, unsigned char *mac) {
    return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", mac, mac + 1, mac + 2, mac + 3, mac + 4, mac + 5) == 6 ? 0 : -1;
}

/* one ARP frame: ethernet source esrc, ARP op, sender (sha, spa), target (tha, tpa) */
static void arp_frame(unsigned char *f, const unsigned char *esrc, int op, const unsigned char *sha,
                      struct in_addr spa, const unsigned char *tha, struct in_addr tpa) {
    struct ether_header *eh = (void *)f;
    struct ether_arp *a = (void *)(f + sizeof *eh);
    memset(eh->ether_dhost, 0xff, 6);
    memcpy(eh->ether_shost, esrc, 6);
    eh->ether_type = htons(ETHERTYPE_ARP);
    a->arp_hrd = htons(ARPHRD_ETHER); a->arp_pro = htons(ETHERTYPE_IP);
    a->arp_hln = 6; a->arp_pln = 4; a->arp_op = htons(op);
    memcpy(a->arp_sha, sha, 6); memcpy(a->arp_spa, &spa, 4);
    memcpy(a->arp_tha, tha, 6); memcpy(a->arp_tpa, &tpa, 4);
}

static int spoof(int argc, char **argv) {
    unsigned char own[6], victim[6], zero[6] = {0}, bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    struct in_addr vip, host, none = {0};
    if (argc < 7 || parse_mac(argv[4], victim) || !inet_aton(argv[3], &vip) || !inet_aton(argv[5], &host)) {
        printf("FAIL spoof usage\n"); return 2;
    }
    int secs = atoi(argv[6]), ifindex = if_nametoindex(argv[2]);
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", argv[2]);
    if (s < 0 || !ifindex || ioctl(s, SIOCGIFHWADDR, &ifr) < 0) { printf("FAIL spoof socket: %s\n", strerror(errno)); return 1; }
    memcpy(own, ifr.ifr_hwaddr.sa_data, 6);
    struct sockaddr_ll ll = {0};
    ll.sll_family = AF_PACKET; ll.sll_protocol = htons(ETH_P_ALL); ll.sll_ifindex = ifindex; ll.sll_halen = 6;
    memcpy(ll.sll_addr, bcast, 6);
    if (bind(s, (void *)&ll, sizeof ll) < 0) { printf("FAIL spoof bind: %s\n", strerror(errno)); return 1; }
    struct packet_mreq mr = {0};
    mr.mr_ifindex = ifindex; mr.mr_type = PACKET_MR_PROMISC;
    setsockopt(s, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr);
    unsigned char f[3][60];
    memset(f, 0, sizeof f);
    arp_frame(f[0], own, ARPOP_REPLY, own, vip, bcast, host);      /* "VIP is at me" */
    arp_frame(f[1], own, ARPOP_REQUEST, own, vip, zero, host);     /* "who has HOST? tell VIP (me)" */
    arp_frame(f[2], victim, ARPOP_REQUEST, victim, none, zero, host); /* frames from the victim's MAC */
    long sent = 0, seen = 0;
    struct timespec t0, now, last;
    clock_gettime(CLOCK_MONOTONIC, &t0); last = t0;
    for (;;) {
        for (int i = 0; i < 3; i++) if (sendto(s, f[i], sizeof f[i], 0, (void *)&ll, sizeof ll) > 0) sent++;
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        long deadline_ms = until.tv_sec * 1000 + until.tv_nsec / 1000000 + 100;
        for (;;) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            long left = deadline_ms - (now.tv_sec * 1000 + now.tv_nsec / 1000000);
            if (left <= 0 || wait_fd(s, POLLIN, left) <= 0) break;
            unsigned char buf[2048];
            struct sockaddr_ll from; socklen_t fl = sizeof from;
            ssize_t n = recvfrom(s, buf, sizeof buf, 0, (void *)&from, &fl);
            if (n >= 34 && from.sll_pkttype != PACKET_OUTGOING && buf[12] == 0x08 && buf[13] == 0x00 &&
                !memcmp(buf + 30, &vip, 4))
                seen++;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        int done = now.tv_sec - t0.tv_sec >= secs;
        if (done || now.tv_sec - last.tv_sec >= 5) {
            printf("OK sent=%ld seen=%ld\n", sent, seen); fflush(stdout); last = now;
        }
        if (done) return 0;
    }
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
    if (!strcmp(mode, "spoof")) return spoof(argc, argv);
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
