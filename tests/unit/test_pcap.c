/* test_pcap.c — cmocka tests for user/pcap.c: the file is parsed back here (headers, IP and TCP checksums
 * recomputed independently, handshake, segmentation, sequence numbers across calls and gaps, IPv6, duplicate
 * views) and by tshark, which must show exactly the requests and responses written. tshark is required: its
 * absence fails the test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pcap.h"
#include "phiwatch/events.h"

#define SEC 1000000000ull
#define T0 (1764324000ull * SEC)

struct pkt {
	uint64_t ts_us;
	int v6;
	uint8_t src[16], dst[16];
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t flags;
	const uint8_t *data;
	size_t len;
};

static uint32_t rd32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t rd16be(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32be(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* RFC 1071 over a list of byte ranges; 0 when a checksum field inside is right. */
static uint16_t ones(const uint8_t *p, size_t n, uint32_t sum)
{
	for (size_t i = 0; i < n; i++)
		sum += (i & 1) ? p[i] : (uint32_t)p[i] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* Parses every record, checking framing and checksums; returns the count. */
static size_t parse(const uint8_t *f, size_t n, struct pkt *out, size_t max)
{
	size_t off = 24, k = 0;

	assert_true(n >= 24);
	assert_int_equal(rd32le(f), 0xa1b2c3d4);
	assert_int_equal(f[4], 2);
	assert_int_equal(f[6], 4);
	assert_int_equal(rd32le(f + 16), 65535);
	assert_int_equal(rd32le(f + 20), 1);
	while (off < n) {
		assert_true(off + 16 <= n);
		uint32_t incl = rd32le(f + off + 8), orig = rd32le(f + off + 12);
		assert_int_equal(incl, orig);
		assert_true(off + 16 + incl <= n);
		const uint8_t *e = f + off + 16, *ip = e + 14, *tcp;
		struct pkt p = { 0 };
		uint32_t sum;
		size_t tl;
		p.ts_us = (uint64_t)rd32le(f + off) * 1000000u + rd32le(f + off + 4);
		assert_true(rd32le(f + off + 4) < 1000000u);
		uint16_t et = rd16be(e + 12);
		if (et == 0x0800) {
			assert_int_equal(ip[0], 0x45);
			assert_int_equal(ip[9], 6);
			assert_int_equal(rd16be(ip + 2), incl - 14);
			assert_int_equal(ones(ip, 20, 0), 0xffff);      /* header checksum */
			memcpy(p.src, ip + 12, 4);
			memcpy(p.dst, ip + 16, 4);
			tcp = ip + 20;
			tl = incl - 14 - 20;
			sum = ones(ip + 12, 8, 0) + 6 + (uint32_t)tl;
		} else {
			assert_int_equal(et, 0x86dd);
			assert_int_equal(ip[0] >> 4, 6);
			assert_int_equal(ip[6], 6);
			p.v6 = 1;
			memcpy(p.src, ip + 8, 16);
			memcpy(p.dst, ip + 24, 16);
			tcp = ip + 40;
			tl = incl - 14 - 40;
			assert_int_equal(rd16be(ip + 4), tl);
			sum = ones(ip + 8, 32, 0) + 6 + (uint32_t)tl;
		}
		assert_int_equal(ones(tcp, tl, sum), 0xffff);          /* TCP checksum with the pseudo-header */
		p.sport = rd16be(tcp);
		p.dport = rd16be(tcp + 2);
		p.seq = rd32be(tcp + 4);
		p.ack = rd32be(tcp + 8);
		assert_int_equal(tcp[12] >> 4, 5);
		p.flags = tcp[13];
		p.data = tcp + 20;
		p.len = tl - 20;
		if (k < max)
			out[k] = p;
		k++;
		off += 16 + incl;
	}
	return k;
}

static struct pcap_call call(const char *src, uint16_t sp, const char *dst, uint16_t dp, uint64_t t, const char *req,
			     const char *resp)
{
	struct pcap_call c = {
		.ts_req_ns = t, .ts_resp_ns = t + 500000, .src_ip = src, .dst_ip = dst, .src_port = sp,
		.dst_port = dp, .role = PW_ROLE_SERVER, .req = req, .req_len = strlen(req),
		.req_wire = strlen(req), .resp = resp, .resp_len = resp ? strlen(resp) : 0,
		.resp_wire = resp ? strlen(resp) : 0,
	};
	return c;
}

static const char *REQ = "GET /fhir/Patient/1 HTTP/1.1\r\nHost: api\r\n\r\n";
static const char *RESP = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";

static void test_handshake_and_checksums(void **state)
{
	(void)state;
	struct jbuf b;
	struct pkt p[16];
	struct pcap_stats st;
	struct pcap_call c = call("192.0.2.7", 51000, "10.0.0.1", 8443, T0 + 5 * SEC, REQ, RESP);

	jbuf_init(&b);
	struct pcap_writer *w = pcap_writer__new_jbuf(&b);
	assert_non_null(w);
	assert_int_equal(b.len, 24);
	assert_int_equal(pcap_writer__call(w, &c), 0);
	pcap_writer__stats(w, &st);
	pcap_writer__free(w);
	size_t n = parse((const uint8_t *)b.p, b.len, p, 16);
	assert_int_equal(n, 5);
	assert_int_equal(st.packets, 5);
	assert_int_equal(st.bytes, b.len);
	assert_int_equal(st.connections, 1);
	/* SYN, SYN-ACK, ACK, request, response */
	assert_int_equal(p[0].flags, 0x02);
	assert_int_equal(p[1].flags, 0x12);
	assert_int_equal(p[2].flags, 0x10);
	assert_int_equal(p[3].flags, 0x18);
	assert_int_equal(p[4].flags, 0x18);
	assert_int_equal(p[1].ack, p[0].seq + 1);
	assert_int_equal(p[2].seq, p[0].seq + 1);
	assert_int_equal(p[2].ack, p[1].seq + 1);
	assert_int_equal(p[3].seq, p[0].seq + 1);
	assert_int_equal(p[3].ack, p[1].seq + 1);
	assert_int_equal(p[4].seq, p[1].seq + 1);
	assert_int_equal(p[4].ack, p[3].seq + strlen(REQ));
	/* real addresses and ports, each way */
	const uint8_t cli[4] = { 192, 0, 2, 7 }, srv[4] = { 10, 0, 0, 1 };
	assert_memory_equal(p[3].src, cli, 4);
	assert_memory_equal(p[3].dst, srv, 4);
	assert_int_equal(p[3].sport, 51000);
	assert_int_equal(p[3].dport, 8443);
	assert_memory_equal(p[4].src, srv, 4);
	assert_int_equal(p[4].sport, 8443);
	assert_int_equal(p[4].dport, 51000);
	assert_memory_equal(p[3].data, REQ, strlen(REQ));
	assert_memory_equal(p[4].data, RESP, strlen(RESP));
	/* times: handshake just before the request, response at its own time */
	assert_true(p[0].ts_us < p[3].ts_us);
	assert_int_equal(p[3].ts_us, (T0 + 5 * SEC) / 1000);
	assert_int_equal(p[4].ts_us, (T0 + 5 * SEC + 500000) / 1000);
	jbuf_free(&b);
}

static void test_segments_and_continuity(void **state)
{
	(void)state;
	struct jbuf b;
	static struct pkt p[64];
	char big[5000];
	size_t n;

	memcpy(big, "POST /fhir/Bundle HTTP/1.1\r\nContent-Length: 4950\r\n\r\n", 52);
	memset(big + 52, 'x', sizeof(big) - 53);
	big[sizeof(big) - 1] = '\0';
	jbuf_init(&b);
	struct pcap_writer *w = pcap_writer__new_jbuf(&b);
	struct pcap_call c1 = call("10.0.0.2", 40000, "10.0.0.1", 80, T0, big, RESP);
	struct pcap_call c2 = call("10.0.0.2", 40000, "10.0.0.1", 80, T0 + SEC, REQ, RESP);
	/* the capture copied 40 bytes of a 10000-byte response: a 9960-byte gap follows them */
	struct pcap_call c3 = call("10.0.0.2", 40000, "10.0.0.1", 80, T0 + 2 * SEC, REQ, "HTTP/1.1 200 OK\r\nX: 1\r\n\r\n");
	c3.resp_wire = 10000;
	struct pcap_call c4 = call("10.0.0.2", 40000, "10.0.0.1", 80, T0 + 3 * SEC, REQ, RESP);
	assert_int_equal(pcap_writer__call(w, &c1), 0);
	assert_int_equal(pcap_writer__call(w, &c2), 0);
	assert_int_equal(pcap_writer__call(w, &c3), 0);
	assert_int_equal(pcap_writer__call(w, &c4), 0);
	pcap_writer__free(w);
	n = parse((const uint8_t *)b.p, b.len, p, 64);
	/* 3 handshake + 4 request segments (1460*3 + 619) + 1 + (1+1)*3 */
	assert_int_equal(n, 3 + 4 + 1 + 6);
	uint32_t c_next = p[0].seq + 1, s_next = p[1].seq + 1;
	size_t total = 0;
	for (int i = 3; i < 7; i++) {
		assert_true(p[i].len <= PCAP_MSS4);
		assert_int_equal(p[i].seq, c_next + total);
		assert_int_equal(p[i].flags, i == 6 ? 0x18 : 0x10);
		total += p[i].len;
	}
	assert_int_equal(total, strlen(big));
	c_next += (uint32_t)total;
	assert_int_equal(p[7].seq, s_next);          /* response 1 */
	s_next += (uint32_t)strlen(RESP);
	assert_int_equal(p[8].seq, c_next);          /* request 2: no second handshake */
	assert_int_equal(p[8].ack, s_next);
	c_next += (uint32_t)strlen(REQ);
	assert_int_equal(p[9].seq, s_next);
	s_next += (uint32_t)strlen(RESP);
	assert_int_equal(p[10].seq, c_next);         /* request 3 */
	c_next += (uint32_t)strlen(REQ);
	assert_int_equal(p[11].seq, s_next);         /* response 3: 26 bytes copied of 10000 */
	s_next += 10000;
	assert_int_equal(p[12].seq, c_next);         /* request 4 acks past the gap */
	assert_int_equal(p[12].ack, s_next);
	assert_int_equal(p[13].seq, s_next);
	for (size_t i = 3; i < n; i++)
		assert_int_equal(p[i].flags & 0x02, 0);
	jbuf_free(&b);
}

static void test_ipv6_and_mapped(void **state)
{
	(void)state;
	struct jbuf b;
	struct pkt p[16];
	struct pcap_stats st;
	char big[3000];

	memset(big, 'y', sizeof(big) - 1);
	memcpy(big, "PUT /a HTTP/1.1\r\n\r\n", 19);
	big[sizeof(big) - 1] = '\0';
	jbuf_init(&b);
	struct pcap_writer *w = pcap_writer__new_jbuf(&b);
	struct pcap_call c = call("2001:db8::7", 50000, "2001:db8::1", 443, T0, big, NULL);
	assert_int_equal(pcap_writer__call(w, &c), 0);
	size_t n = parse((const uint8_t *)b.p, b.len, p, 16);
	assert_int_equal(n, 3 + 3);                  /* 1440 + 1440 + 119: the IPv6 MSS */
	assert_true(p[3].v6);
	assert_int_equal(p[3].len, PCAP_MSS6);
	assert_int_equal(p[5].len, strlen(big) - 2 * PCAP_MSS6);
	assert_int_equal(p[3].src[0], 0x20);
	assert_int_equal(p[3].src[15], 7);
	assert_int_equal(p[3].dst[15], 1);

	/* IPv4-mapped IPv6 is IPv4; an unparsable address is 0.0.0.0 and counted */
	jbuf_reset(&b);
	pcap_writer__free(w);
	w = pcap_writer__new_jbuf(&b);
	c = call("::ffff:127.0.0.1", 50001, "127.0.0.1", 8080, T0, REQ, RESP);
	assert_int_equal(pcap_writer__call(w, &c), 0);
	c = call("", 50002, "not-an-ip", 8080, T0, REQ, RESP);
	assert_int_equal(pcap_writer__call(w, &c), 0);
	/* one end IPv4, the other IPv6: both written as IPv6 (IPv4-mapped) */
	c = call("10.0.0.2", 50003, "2001:db8::1", 8080, T0, REQ, RESP);
	assert_int_equal(pcap_writer__call(w, &c), 0);
	pcap_writer__stats(w, &st);
	n = parse((const uint8_t *)b.p, b.len, p, 16);
	assert_int_equal(n, 15);
	assert_false(p[3].v6);
	assert_int_equal(p[3].src[0], 127);
	assert_false(p[8].v6);
	assert_int_equal(p[8].src[0], 0);
	assert_int_equal(st.bad_addresses, 2);
	assert_true(p[13].v6);
	assert_int_equal(p[13].src[10], 0xff);
	assert_int_equal(p[13].src[12], 10);
	pcap_writer__free(w);
	jbuf_free(&b);
}

static void test_sorted_and_duplicate_views(void **state)
{
	(void)state;
	struct jbuf b;
	struct pkt p[32];
	struct pcap_stats st;
	struct pcap_call v[4];

	/* A (t=0..10 s) and B (t=1..2 s) on two connections; B's server view and client view of one connection */
	v[0] = call("10.0.0.2", 40000, "10.0.0.1", 80, T0, REQ, RESP);
	v[0].ts_resp_ns = T0 + 10 * SEC;
	v[1] = call("10.0.0.3", 40001, "10.0.0.1", 80, T0 + SEC, REQ, RESP);
	v[1].role = PW_ROLE_CLIENT;
	v[2] = call("10.0.0.3", 40001, "10.0.0.1", 80, T0 + SEC + 1000, REQ, RESP);
	v[3] = call("10.0.0.4", 40002, "10.0.0.1", 80, T0 + 2 * SEC, REQ, RESP);
	v[3].role = PW_ROLE_CLIENT;     /* only a client view: kept */
	jbuf_init(&b);
	struct pcap_writer *w = pcap_writer__new_jbuf(&b);
	assert_int_equal(pcap_writer__calls(w, v, 4), 0);
	pcap_writer__stats(w, &st);
	pcap_writer__free(w);
	assert_int_equal(st.duplicate_views, 1);
	assert_int_equal(st.connections, 3);
	assert_int_equal(st.calls, 3);
	size_t n = parse((const uint8_t *)b.p, b.len, p, 32);
	assert_int_equal(n, 3 * 5);
	for (size_t i = 1; i < n; i++)
		assert_true(p[i].ts_us >= p[i - 1].ts_us || (p[i].flags & 0x02) || p[i].flags == 0x10);
	/* the last packet is A's response at 10 s */
	assert_int_equal(p[n - 1].ts_us, (T0 + 10 * SEC) / 1000);
	assert_int_equal(p[n - 1].sport, 80);
	assert_int_equal(p[n - 1].dport, 40000);
	jbuf_free(&b);
}

/* tshark must exist and must show exactly what was written, on registered and unregistered ports, over IPv4
 * and IPv6, multi-segment and keep-alive, with no checksum flagged. */
static void test_tshark_reads_it(void **state)
{
	(void)state;
	char path[] = "/tmp/test_pcap_XXXXXX", cmd[1024], line[512];
	struct jbuf got;
	int fd = mkstemp(path);
	FILE *f, *pp;
	static char big[4000];

	if (system("command -v tshark >/dev/null 2>&1") != 0)
		fail_msg("tshark is not installed: apt-get install tshark (the pcap cannot be checked without it)");
	assert_true(fd >= 0);
	f = fdopen(fd, "wb");
	assert_non_null(f);
	struct pcap_writer *w = pcap_writer__new_file(f);
	/* a 4000-byte request in three segments, its Content-Length exact */
	int hl = snprintf(big, sizeof(big), "POST /fhir/Bundle HTTP/1.1\r\nHost: api\r\nContent-Length: %4d\r\n\r\n",
			  0);
	snprintf(big, sizeof(big), "POST /fhir/Bundle HTTP/1.1\r\nHost: api\r\nContent-Length: %4d\r\n\r\n",
		 (int)sizeof(big) - 1 - hl);
	memset(big + hl, 'z', sizeof(big) - 1 - (size_t)hl);
	const struct {
		const char *src, *dst;
		uint16_t port;
		const char *req;
	} cases[] = {
		{ "127.0.0.1", "127.0.0.1", 80, "GET /fhir/Patient/1 HTTP/1.1\r\nHost: a\r\n\r\n" },
		{ "127.0.0.1", "127.0.0.1", 8443, "GET /fhir/Patient/2?_elements=name HTTP/1.1\r\nHost: a\r\n\r\n" },
		{ "192.0.2.5", "192.0.2.1", 443, "GET /fhir/Observation?patient=3 HTTP/1.1\r\nHost: a\r\n\r\n" },
		{ "10.0.0.2", "10.0.0.1", 18080, big },
		{ "::1", "::1", 9443, "DELETE /fhir/Patient/4 HTTP/1.1\r\nHost: a\r\n\r\n" },
	};
	struct pcap_call v[10];
	size_t nv = 0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		for (int k = 0; k < 2; k++) {     /* twice on each connection: keep-alive */
			v[nv] = call(cases[i].src, (uint16_t)(41000 + i), cases[i].dst, cases[i].port,
				     T0 + (uint64_t)(2 * i + (size_t)k) * SEC, cases[i].req,
				     k ? "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n" : RESP);
			nv++;
		}
	assert_int_equal(pcap_writer__calls(w, v, nv), 0);
	pcap_writer__free(w);
	assert_int_equal(fclose(f), 0);

	snprintf(cmd, sizeof(cmd),
		 "tshark -r %s -Y http -T fields -e http.request.method -e http.request.uri -e http.response.code "
		 "2>/dev/null", path);
	pp = popen(cmd, "r");
	assert_non_null(pp);
	jbuf_init(&got);
	while (fgets(line, sizeof(line), pp))
		jbuf_puts(&got, line);
	assert_int_equal(pclose(pp), 0);
	const char *want = "GET\t/fhir/Patient/1\t\n\t\t200\nGET\t/fhir/Patient/1\t\n\t\t404\n"
			   "GET\t/fhir/Patient/2?_elements=name\t\n\t\t200\nGET\t/fhir/Patient/2?_elements=name\t\n\t\t404\n"
			   "GET\t/fhir/Observation?patient=3\t\n\t\t200\nGET\t/fhir/Observation?patient=3\t\n\t\t404\n"
			   "POST\t/fhir/Bundle\t\n\t\t200\nPOST\t/fhir/Bundle\t\n\t\t404\n"
			   "DELETE\t/fhir/Patient/4\t\n\t\t200\nDELETE\t/fhir/Patient/4\t\n\t\t404\n";
	assert_string_equal(got.p ? got.p : "", want);

	/* with checksum validation on, nothing is bad; the stream analysis finds no problem */
	snprintf(cmd, sizeof(cmd),
		 "tshark -r %s -o tcp.check_checksum:TRUE -o ip.check_checksum:TRUE "
		 "-Y 'tcp.checksum.status == 0 || ip.checksum.status == 0 || tcp.analysis.flags' 2>/dev/null | wc -l",
		 path);
	pp = popen(cmd, "r");
	assert_non_null(pp);
	assert_non_null(fgets(line, sizeof(line), pp));
	pclose(pp);
	assert_string_equal(line, "0\n");
	snprintf(cmd, sizeof(cmd),
		 "tshark -r %s -o tcp.check_checksum:TRUE -o ip.check_checksum:TRUE -Y 'tcp.checksum.status == 1' "
		 "2>/dev/null | wc -l", path);
	pp = popen(cmd, "r");
	assert_non_null(fgets(line, sizeof(line), pp));
	pclose(pp);
	assert_int_equal(atoi(line), 3 * 5 + 2 * 10 + 2 * 2);  /* every packet: handshakes, calls, 2 more segments x2 */
	jbuf_free(&got);
	unlink(path);
}

static void test_file_errors(void **state)
{
	(void)state;
	FILE *f = fopen("/dev/full", "wb");
	struct pcap_call c = call("10.0.0.2", 1, "10.0.0.1", 80, T0, REQ, RESP);

	assert_non_null(f);
	setvbuf(f, NULL, _IONBF, 0);
	struct pcap_writer *w = pcap_writer__new_file(f);
	assert_non_null(w);
	assert_int_equal(pcap_writer__call(w, &c), -EIO);
	pcap_writer__free(w);
	fclose(f);
	pcap_writer__free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake_and_checksums),
		cmocka_unit_test(test_segments_and_continuity),
		cmocka_unit_test(test_ipv6_and_mapped),
		cmocka_unit_test(test_sorted_and_duplicate_views),
		cmocka_unit_test(test_tshark_reads_it),
		cmocka_unit_test(test_file_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
