/* elfsym.h — does an ELF file define (export) a symbol? Used to find binaries with OpenSSL built in. */
#ifndef PHIWATCH_ELFSYM_H
#define PHIWATCH_ELFSYM_H

#include <stdbool.h>

/* True when path is an ELF file whose .dynsym or .symtab defines name
 * (not an undefined import). False on any error. */
bool elf_defines_symbol(const char *path, const char *name);

#endif
