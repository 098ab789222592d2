// Rows of a GGUF block-quantized matrix decoded to f32, one thread per value: the wgpu half of
// the quantized frozen linear layers (src/kernels/frozen.rs). The decoders follow ggml's block
// layouts as src/io/gguf/dequant.rs documents them, and compute in the same order.
//
// A row is `cols / block size` blocks, rows follow one another; the bytes are packed little-endian
// into u32 words (the matrix's byte offsets are not word-aligned: a Q8_0 block is 34 bytes).

@group(0) @binding(0) var<storage, read_write> blocks: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;  // [rows, cols]
@group(0) @binding(2) var<storage, read_write> info: array<u32>; // first row, rows, cols, row bytes, threads per grid row

// The ggml type number (src/io/gguf/dequant.rs `GgmlType::id`).
const TYPE: u32 = {{ pass }}u;
const Q4_0: u32 = 2u;
const Q4_1: u32 = 3u;
const Q8_0: u32 = 8u;
const Q4_K: u32 = 12u;
const Q6_K: u32 = 14u;

fn byte_at(o: u32) -> u32 {
    return (blocks[o >> 2u] >> ((o & 3u) * 8u)) & 0xFFu;
}

fn f16_at(o: u32) -> f32 {
    return unpack2x16float(byte_at(o) | (byte_at(o + 1u) << 8u)).x;
}

// A byte read as a signed 8-bit integer.
fn signed(b: u32) -> f32 {
    return f32(bitcast<i32>(b << 24u) >> 24u);
}

// Q8_0: d (f16), then 32 signed bytes.
fn q8_0(o: u32, i: u32) -> f32 {
    return signed(byte_at(o + 2u + i)) * f16_at(o);
}

// Q4_0: d (f16), then 16 bytes: value j in the low nibble of byte j, value j + 16 in its high
// nibble, each stored +8.
fn q4_0(o: u32, i: u32) -> f32 {
    let q = (byte_at(o + 2u + (i & 15u)) >> (4u * (i >> 4u))) & 15u;
    return f32(i32(q) - 8) * f16_at(o);
}

// Q4_1: d and a minimum m (f16), then nibbles as in Q4_0 without the offset: x = q * d + m.
fn q4_1(o: u32, i: u32) -> f32 {
    let q = (byte_at(o + 4u + (i & 15u)) >> (4u * (i >> 4u))) & 15u;
    return f32(q) * f16_at(o) + f16_at(o + 2u);
}

// Q4_K: d, dmin (f16), 12 bytes of eight 6-bit (scale, min) pairs, 128 nibble bytes; each 64-value
// chunk takes 32 bytes, low nibbles first. x = d * sc * q - dmin * m.
fn q4_k(o: u32, i: u32) -> f32 {
    let chunk = i / 64u;
    let q = (byte_at(o + 16u + chunk * 32u + (i & 31u)) >> (4u * ((i & 63u) / 32u))) & 15u;
    let j = i / 32u;
    let s = o + 4u;
    var sc: u32;
    var m: u32;
    if (j < 4u) {
        sc = byte_at(s + j) & 63u;
        m = byte_at(s + j + 4u) & 63u;
    } else {
        sc = (byte_at(s + j + 4u) & 15u) | ((byte_at(s + j - 4u) >> 6u) << 4u);
        m = (byte_at(s + j + 4u) >> 4u) | ((byte_at(s + j) >> 6u) << 4u);
    }
    return f16_at(o) * f32(sc) * f32(q) - f16_at(o + 2u) * f32(m);
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed scales, d (f16); in each
// 128-value half, value 32k + l takes nibble k/2 of ql[l + 32 (k % 2)] and bits 2k of qh[l];
// stored +32.
fn q6_k(o: u32, i: u32) -> f32 {
    let half = i / 128u;
    let k = (i & 127u) / 32u;
    let l = i & 31u;
    let low = (byte_at(o + half * 64u + l + 32u * (k & 1u)) >> (4u * (k / 2u))) & 15u;
    let high = (byte_at(o + 128u + half * 32u + l) >> (2u * k)) & 3u;
    let q = i32(low | (high << 4u)) - 32;
    return f16_at(o + 208u) * signed(byte_at(o + 192u + i / 16u)) * f32(q);
}

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.y * info[4] + gid.x;
    let cols = info[2];
    if (idx >= info[1] * cols) {
        return;
    }
    let row = info[0] + idx / cols;
    let col = idx % cols;
    var block_size = 32u;
    var type_size = 34u;
    if (TYPE == Q4_0) {
        type_size = 18u;
    } else if (TYPE == Q4_1) {
        type_size = 20u;
    } else if (TYPE == Q4_K) {
        block_size = 256u;
        type_size = 144u;
    } else if (TYPE == Q6_K) {
        block_size = 256u;
        type_size = 210u;
    }
    let o = row * info[3] + (col / block_size) * type_size;
    let i = col % block_size;
    var v: f32;
    if (TYPE == Q8_0) {
        v = q8_0(o, i);
    } else if (TYPE == Q4_0) {
        v = q4_0(o, i);
    } else if (TYPE == Q4_1) {
        v = q4_1(o, i);
    } else if (TYPE == Q4_K) {
        v = q4_k(o, i);
    } else {
        v = q6_k(o, i);
    }
    out[idx] = v;
}
