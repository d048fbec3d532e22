/* pcap.h — HTTP calls as a classic libpcap capture (LINKTYPE_ETHERNET, microsecond timestamps): the plaintext
 * request and response bytes as TCP segments between the real addresses and ports, with synthesised Ethernet,
 * IPv4/IPv6 and TCP headers, a 3-way handshake when a connection first appears, sequence numbers that continue
 * per connection and direction across calls, and correct IP and TCP checksums.
 * Not a capture of the wire: TLS is shown decrypted, MAC addresses are made up (02:00:00:00:00:01 client,
 * :02 server), and bytes the capture did not copy are a gap in the sequence space (Wireshark says "previous
 * segment not captured"), never invented.
 *
 * Reading it: Wireshark's HTTP heuristic over TCP is on by default, so `tshark -r FILE -Y http` shows the calls
 * on registered HTTP ports and on unregistered ones; a port that Wireshark gives to another protocol (443 and
 * 8443 to TLS, ...) needs `-o tcp.try_heuristic_first:TRUE` (any port) or `-d tcp.port==PORT,http`.
 */
#ifndef PHIWATCH_PCAP_H
#define PHIWATCH_PCAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "json.h"

#define PCAP_MAGIC 0xa1b2c3d4u
#define PCAP_LINKTYPE_ETHERNET 1
#define PCAP_SNAPLEN 65535
#define PCAP_MSS4 1460           /* TCP payload per segment over IPv4 */
#define PCAP_MSS6 1440           /* ... over IPv6 (same 1500-byte MTU) */

/* One HTTP call seen on one connection. Strings NUL-terminated; bytes borrowed for the call. */
struct pcap_call {
	uint64_t ts_req_ns;      /* realtime ns: the request segments' time */
	uint64_t ts_resp_ns;     /* realtime ns: the response segments' time */
	const char *src_ip;      /* client side: IPv4 or IPv6 text (IPv4-mapped IPv6 is written as IPv4) */
	const char *dst_ip;      /* server side */
	uint16_t src_port;
	uint16_t dst_port;
	int role;                /* enum pw_role of the process that saw it (see pcap_writer__calls) */
	const void *req;
	size_t req_len;
	uint64_t req_wire;       /* request bytes on the wire; above req_len: the rest is a sequence gap */
	const void *resp;        /* NULL/0: no response */
	size_t resp_len;
	uint64_t resp_wire;
};

struct pcap_stats {
	uint64_t packets;
	uint64_t bytes;          /* file bytes, headers included */
	uint64_t connections;    /* distinct 4-tuples (handshakes written) */
	uint64_t calls;
	uint64_t duplicate_views;/* calls skipped by pcap_writer__calls: the other end's view of a connection */
	uint64_t bad_addresses;  /* address strings that did not parse (written as 0.0.0.0 / ::) */
};

struct pcap_writer;

/* Takes the file's bytes in order; 0 or -errno (the first error is kept and returned by the writes). */
typedef int (*pcap_sink_fn)(void *ctx, const void *p, size_t n);

/* Writes the 24-byte file header at once. NULL with errno ENOMEM. out/f/ctx are borrowed: they must outlive the
 * writer. A jbuf that runs out of memory gives -ENOMEM, a FILE write error -EIO. */
struct pcap_writer *pcap_writer__new_jbuf(struct jbuf *out);
struct pcap_writer *pcap_writer__new_file(FILE *f);
struct pcap_writer *pcap_writer__new_sink(pcap_sink_fn fn, void *ctx);
/* NULL ok. Does not close f. */
void pcap_writer__free(struct pcap_writer *w);

/* Writes c now: the handshake if its 4-tuple is new, the request at ts_req_ns, the response at ts_resp_ns.
 * 0, -EIO (FILE write failed) or -ENOMEM. */
int pcap_writer__call(struct pcap_writer *w, const struct pcap_call *c);

/* Writes calls[0..n) with every packet in time order (requests at ts_req_ns, responses at ts_resp_ns; ties keep
 * the array order, a call's request before its response). When both ends of one connection were watched (a
 * loopback call appears once with role server and once with role client), only the server's view is written:
 * the client's is counted in duplicate_views. 0, -EIO or -ENOMEM. */
int pcap_writer__calls(struct pcap_writer *w, const struct pcap_call *calls, size_t n);

void pcap_writer__stats(const struct pcap_writer *w, struct pcap_stats *out);

#endif
