/* ssn.c — streaming SSN matcher (see ssn.h): a byte-at-a-time state machine, no buffering. */
#include "ssn.h"

#include <string.h>

/* Pattern positions 0..10 of "ddd-dd-dddd": 'd' digit, '-' dash. */
static const char ssn_pat[11] = { 'd', 'd', 'd', '-', 'd', 'd', '-', 'd', 'd', 'd', 'd' };

static inline bool is_word(unsigned char c)
{
	return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c == '_' ||
	       c == '-';
}

void ssn_scan_init(struct ssn_scan *s)
{
	memset(s, 0, sizeof(*s));
	s->prev_boundary = true;     /* the body start is a boundary */
}

static bool ssa_valid(const struct ssn_scan *s)
{
	return s->area != 0 && s->area != 666 && s->area < 900 && s->group != 0 && s->serial != 0;
}

/* A complete candidate met its right boundary. */
static void ssn_accept(struct ssn_scan *s)
{
	if (ssa_valid(s)) {
		if (s->count == 0) {
			unsigned v = s->serial;
			memcpy(s->masked, "***-**-", 7);
			s->masked[7] = (char)('0' + v / 1000);
			s->masked[8] = (char)('0' + v / 100 % 10);
			s->masked[9] = (char)('0' + v / 10 % 10);
			s->masked[10] = (char)('0' + v % 10);
			s->masked[11] = '\0';
			s->first_offset = s->cand_offset;
		}
		if (s->count != UINT32_MAX)
			s->count++;
	}
}

static void ssn_reset_cand(struct ssn_scan *s)
{
	s->pos = 0;
	s->area = s->group = s->serial = 0;
}

void ssn_scan_feed(struct ssn_scan *s, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = p[i];
		bool digit = c >= '0' && c <= '9';

		if (s->pos == 11) {
			/* the byte after a full candidate decides it */
			if (!is_word(c))
				ssn_accept(s);
			ssn_reset_cand(s);
		} else if (s->pos > 0) {
			if (ssn_pat[s->pos] == 'd' ? digit : c == '-') {
				unsigned d = (unsigned)(c - '0');
				if (s->pos < 3)
					s->area = (uint16_t)(s->area * 10 + d);
				else if (s->pos == 4 || s->pos == 5)
					s->group = (uint16_t)(s->group * 10 + d);
				else if (s->pos >= 7)
					s->serial = (uint16_t)(s->serial * 10 + d);
				s->pos++;
				s->prev_boundary = false;
				s->offset++;
				continue;
			}
			/* Every byte of a partial match is a digit or '-', neither a
			 * boundary, so no other match can start inside it: only c
			 * itself is looked at again below. */
			ssn_reset_cand(s);
		}
		if (digit && s->prev_boundary) {
			s->pos = 1;
			s->area = (uint16_t)(c - '0');
			s->cand_offset = s->offset;
		}
		s->prev_boundary = !is_word(c);
		s->offset++;
	}
}

void ssn_scan_finish(struct ssn_scan *s)
{
	if (s->pos == 11)
		ssn_accept(s);
	ssn_reset_cand(s);
	s->prev_boundary = true;
}
