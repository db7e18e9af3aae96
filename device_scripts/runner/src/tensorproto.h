/* A reader and writer for serialized onnx.TensorProto, written against the protobuf wire format
 * so that the runner needs no libprotobuf on the device.
 *
 * The reader treats its input as hostile: every length is checked against what is left of the
 * buffer, every size computation is checked for overflow, and any inconsistency is reported as an
 * error message rather than a crash. It has a libFuzzer target (fuzz/fuzz_tensorproto.c).
 */
#ifndef EDGEPACK_TENSORPROTO_H
#define EDGEPACK_TENSORPROTO_H

#include <stddef.h>
#include <stdint.h>

/* onnx.TensorProto.DataType values (the same numbers as ONNXTensorElementDataType). */
enum {
    TP_FLOAT = 1,
    TP_UINT8 = 2,
    TP_INT8 = 3,
    TP_UINT16 = 4,
    TP_INT16 = 5,
    TP_INT32 = 6,
    TP_INT64 = 7,
    TP_STRING = 8,
    TP_BOOL = 9,
    TP_FLOAT16 = 10,
    TP_DOUBLE = 11,
    TP_UINT32 = 12,
    TP_UINT64 = 13,
    TP_BFLOAT16 = 16,
    TP_FLOAT8E4M3FN = 17,
    TP_FLOAT8E4M3FNUZ = 18,
    TP_FLOAT8E5M2 = 19,
    TP_FLOAT8E5M2FNUZ = 20,
    TP_UINT4 = 21, /* 4-bit types: two elements a byte, the first in the low nibble */
    TP_INT4 = 22,
    TP_FLOAT4E2M1 = 23,
    TP_FLOAT8E8M0 = 24,
    TP_UINT2 = 25, /* 2-bit types: four elements a byte, the first in the lowest two bits */
    TP_INT2 = 26
};

typedef struct {
    char *name;       /* NUL-terminated; "" when the file carries no name */
    int32_t data_type;
    size_t ndims;
    int64_t *dims;    /* ndims entries (NULL when ndims == 0: a scalar) */
    size_t count;     /* number of elements: product of dims */
    size_t nbytes;    /* count * element size (4-bit and 2-bit types: ceil(count * bits / 8),
                       * packed as in ONNX);
                       * for TP_STRING the strings' total length */
    void *data;       /* little-endian elements, 64-byte aligned, at least 1 byte allocated;
                       * for TP_STRING the strings' bytes back to back, with no terminators:
                       * a string may hold any byte, NUL included */
    size_t *offsets;  /* TP_STRING only (else NULL): count + 1 entries, string i is
                       * data[offsets[i]] .. data[offsets[i + 1] - 1] */
} tp_tensor;

/* Bits one element takes (4 and 2 for the packed types), or 0 for strings and for types the
 * runner does not carry. The numbers are onnx.proto's (see tp_to_ort). The table mirrors edgepack/dtypes.py: a new type is a row there and a
 * case here. */
size_t tp_elem_bits(int32_t data_type);

/* onnx.proto's number of an element type <-> onnxruntime's C API (ONNXTensorElementDataType).
 * They agree up to FLOAT4E2M1 (23); after it the C API's enum, fixed by its ABI, has UINT2 = 24,
 * INT2 = 25, FLOAT8E8M0 = 26 where onnx.proto has FLOAT8E8M0 = 24, UINT2 = 25, INT2 = 26. Every
 * type that crosses between a TensorProto file and the C API goes through these. */
int32_t tp_to_ort(int32_t data_type);
int32_t tp_from_ort(int32_t ort_type);

/* Byte size of one element, or 0 for strings, packed 4-bit and 2-bit types and types the
 * runner does not carry (use tp_data_bytes for those). */
size_t tp_elem_size(int32_t data_type);

/* Bytes `count` elements take in raw_data (4-bit types: ceil(count / 2), 2-bit: ceil(count / 4)).
 * Returns 0 and sets
 * *nbytes, or -1 for strings, unknown types and sizes that overflow. */
int tp_data_bytes(int32_t data_type, size_t count, size_t *nbytes);

/* edgepack's name for a data type ("float32", ..., "string"), or NULL for types the runner does
 * not carry. */
const char *tp_dtype_name(int32_t data_type);

/* Parse `len` bytes. On success returns 0 and fills `out` (release with tp_free). On failure
 * returns -1, leaves `out` empty, and writes a one-line reason to `err`. */
int tp_parse(const uint8_t *buf, size_t len, tp_tensor *out, char *err, size_t errlen);

void tp_free(tp_tensor *t);

/* Serialize a numeric tensor with raw_data, fields in the order protobuf itself uses, so the bytes
 * equal those of onnx.numpy_helper.from_array(arr, name).SerializeToString() (which, like this,
 * leaves out an empty name). Returns 0, or -1 when out of memory or when a size overflows. The
 * caller frees *out. */
int tp_serialize(const char *name, int32_t data_type, const int64_t *dims, size_t ndims,
                 const void *data, size_t nbytes, uint8_t **out, size_t *out_len);

/* Serialize a STRING tensor: `count` strings, string i being data[offsets[i]] ..
 * data[offsets[i + 1] - 1] (offsets has count + 1 entries, never decreasing), as string_data,
 * byte-identical to onnx.numpy_helper.from_array(object array, name).SerializeToString().
 * Returns 0, or -1 when out of memory, when a size overflows or when offsets decrease. */
int tp_serialize_strings(const char *name, const int64_t *dims, size_t ndims, const uint8_t *data,
                         const size_t *offsets, size_t count, uint8_t **out, size_t *out_len);

/* Aligned allocation used for tensor data (free with tp_aligned_free). */
void *tp_aligned_alloc(size_t nbytes);
void tp_aligned_free(void *p);

#endif
