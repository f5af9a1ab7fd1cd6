/* md5.h: MD5 (RFC 1321), which twemproxy's `md5` hash and its ketama points are made of. Not
 * for security: only to compute the same routing as the proxy. */
#ifndef LTR_MD5_H
#define LTR_MD5_H

#include <stddef.h>
#include <stdint.h>

/* The 16-byte digest of data[0, len). */
void md5_digest(const uint8_t *data, size_t len, uint8_t out[16]);

#endif
