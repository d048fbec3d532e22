/* static_tls_client.c — an HTTPS client with OpenSSL linked in statically (no libssl.so mapped).
 * Usage: static_tls_client PORT PATH... — one keep-alive connection to 127.0.0.1:PORT, one GET per
 * PATH after a line on stdin; prints "connected", then "status request_bytes response_bytes local_port"
 * per request. Built by the test.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int read_response(SSL *ssl, int *status)
{
	char buf[65536];
	int n = 0, head_end = -1, clen = 0;

	for (;;) {
		int r = SSL_read(ssl, buf + n, (int)sizeof(buf) - n - 1);
		if (r <= 0)
			return -1;
		n += r;
		buf[n] = '\0';
		if (head_end < 0) {
			char *e = strstr(buf, "\r\n\r\n");
			if (!e)
				continue;
			head_end = (int)(e - buf) + 4;
			char *cl = strcasestr(buf, "\r\ncontent-length:");
			clen = cl && cl < e ? atoi(cl + 17) : 0;
			*status = atoi(buf + 9);
		}
		if (n >= head_end + clen)
			return n;
	}
}

int main(int argc, char **argv)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])) };
	socklen_t al = sizeof(a);

	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
		return 2;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) != 1)
		return 3;
	getsockname(fd, (struct sockaddr *)&a, &al);
	/* Like a long-running service: connected, then told to go. */
	printf("connected\n");
	fflush(stdout);
	char go[8];
	if (!fgets(go, sizeof(go), stdin))
		return 6;
	for (int i = 2; i < argc; i++) {
		char req[1024];
		int status = 0;
		int len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: static\r\n\r\n", argv[i]);
		if (SSL_write(ssl, req, len) != len)
			return 4;
		int got = read_response(ssl, &status);
		if (got < 0)
			return 5;
		printf("%d %d %d %u\n", status, len, got, ntohs(a.sin_port));
		fflush(stdout);
	}
	SSL_shutdown(ssl);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	return 0;
}
