/* htable_format.h: layout constants of the HTable file, version 1. The byte-by-byte description,
 * with the reasons, is docs/format/htable.md; this header only names its numbers. */
#ifndef LTR_HTABLE_FORMAT_H
#define LTR_HTABLE_FORMAT_H

#define HT_MAGIC "LTRHTBL1"
#define HT_VERSION 1
/* A table holding pointers into value logs (and their list in the trailer): version 2. */
#define HT_VERSION_BLOBS 2

/* Bucket footer (htable.md "Bucket"). */
#define BK_COUNT 4080
#define BK_USED 4082
#define BK_TARGET 4084
#define BK_FLAGS 4086
#define BK_HASHMARK 4088
#define BK_CRC 4092
#define BK_FLAG_MIGRATED 1

/* Trailer entry sizes (htable.md "Trailer sections"). */
#define HT_RECORD_SIZE 12
#define HT_OVF_ENTRY_SIZE 20
#define HT_BLOB_REF_SIZE 16

/* Footer (htable.md "Footer"): the last HT_FOOTER_SIZE bytes of the file. */
#define HT_FOOTER_SIZE 104
#define FT_MAGIC 0
#define FT_VERSION 8
#define FT_FOOTER_SIZE 10
#define FT_BUCKET_SIZE 12
#define FT_BUCKETS 16
#define FT_SEED 20
#define FT_BLOOM_BITS 24
#define FT_BLOOM_PROBES 28
#define FT_ITEMS 32
#define FT_TOMBSTONES 40
#define FT_DATA_BYTES 48
#define FT_OVF_OFFSET 56
#define FT_OVF_BYTES 64
#define FT_OVF_ITEMS 72
#define FT_RECORDS 76
#define FT_CACHED 80
#define FT_RESERVED 84 /* version 1: 0 */
#define FT_BLOB_REFS 84 /* version 2: entries of the value-log references */
#define FT_TRAILER_OFFSET 88
#define FT_TRAILER_CRC 96
#define FT_FOOTER_CRC 100

#endif
