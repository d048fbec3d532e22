/* siphash.h — SipHash-2-4: a keyed 64-bit hash for tables whose keys an attacker chooses
 * (principals, patient ids, dedup keys). Not a MAC for anything stored or sent.
 */
#ifndef PHIWATCH_SIPHASH_H
#define PHIWATCH_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

struct siphash_key {
	uint64_t k0, k1;
};

/* Hash of data[0..len) under key (the reference SipHash-2-4, little-endian). */
uint64_t siphash24(const struct siphash_key *key, const void *data, size_t len);

#endif
