// Flash-style attention, one thread per query row (forward, dq) or per key row (dk, dv): scores
// and probabilities live in registers only, never as a [B, H, S, T] buffer. The forward keeps a
// running max and sum (online softmax) and saves each row's log-sum-exp; the backward passes
// recompute the probabilities from it. Grouped-query attention reads key/value head
// head / (H / Hk) in place; query i of batch row b sees keys j < visible(b, i) (causal order
// after `past` cached positions, right padding as lengths); ALiBi adds slope[h] * j, and a dense
// bias [1 or B, H, S, T] (T5's relative positions) adds its element.
// `pass` picks the entry: 0 forward, 1 dq, 2 dk and dv, 3 the dense bias's gradient (one thread
// per bias element, summing the batch rows it serves). Every pass binds the same layout; buffers
// a pass does not use are one-element placeholders.

@group(0) @binding(0) var<storage, read_write> q: array<{{ elem }}>;       // [B, H, S, D]
@group(0) @binding(1) var<storage, read_write> k: array<{{ elem }}>;       // [B, Hk, T, D]
@group(0) @binding(2) var<storage, read_write> v: array<{{ elem }}>;       // [B, Hk, T, D]
@group(0) @binding(3) var<storage, read_write> lse: array<{{ elem }}>;     // [B, H, S]: written by the forward
@group(0) @binding(4) var<storage, read_write> dout: array<{{ elem }}>;    // [B, H, S, D]
@group(0) @binding(5) var<storage, read_write> delta: array<{{ elem }}>;   // [B, H, S]: rowsum(dout * out)
@group(0) @binding(6) var<storage, read_write> out_a: array<{{ elem }}>;   // out, dq, dk or dbias
@group(0) @binding(7) var<storage, read_write> out_b: array<{{ elem }}>;   // dv
@group(0) @binding(8) var<storage, read_write> lengths: array<u32>;        // [B] real keys, if info[9]
@group(0) @binding(9) var<storage, read_write> slopes: array<f32>;         // [H] ALiBi slopes, if info[10]
// B, H, Hk, S, T, D, scale as f32 bits, causal, past, has lengths, has ALiBi, threads per grid row,
// has a dense bias, its batch rows (1 or B)
@group(0) @binding(10) var<storage, read_write> info: array<u32>;
@group(0) @binding(11) var<storage, read_write> dense: array<{{ elem }}>;  // [1 or B, H, S, T], if info[12]

const PASS: u32 = {{ pass }}u;
const MAX_D: u32 = 256u;

fn visible(b: u32, i: u32) -> u32 {
    var n = info[4];
    if (info[7] != 0u) {
        n = min(n, info[8] + i + 1u);
    }
    if (info[9] != 0u) {
        n = min(n, lengths[b]);
    }
    return n;
}

// The additive bias of query i of batch row b, head h, on key j.
fn bias(b: u32, h: u32, i: u32, j: u32) -> f32 {
    var x = 0.0;
    if (info[10] != 0u) {
        x += slopes[h] * f32(j);
    }
    if (info[12] != 0u) {
        let row = select(b, 0u, info[13] == 1u);
        x += f32(dense[((row * info[1] + h) * info[3] + i) * info[4] + j]);
    }
    return x;
}

// scale * q[qo..] . k[ko..] + bias
fn score(qo: u32, ko: u32, b: u32, h: u32, i: u32, j: u32) -> f32 {
    var acc = 0.0;
    for (var c = 0u; c < info[5]; c++) {
        acc += f32(q[qo + c]) * f32(k[ko + c]);
    }
    return acc * bitcast<f32>(info[6]) + bias(b, h, i, j);
}

fn dot_dout_v(qo: u32, ko: u32) -> f32 {
    var acc = 0.0;
    for (var c = 0u; c < info[5]; c++) {
        acc += f32(dout[qo + c]) * f32(v[ko + c]);
    }
    return acc;
}

// Query row n = ((b * H + h) * S + i): the forward and dq passes.
fn query_row(n: u32) {
    let h_all = info[1];
    let s = info[3];
    let d = info[5];
    let i = n % s;
    let bh = n / s;
    let h = bh % h_all;
    let b = bh / h_all;
    let kv = (b * info[2] + h / (h_all / info[2])) * info[4] * d;
    let qo = n * d;
    let seen = visible(b, i);
    var acc: array<f32, MAX_D>;
    for (var c = 0u; c < d; c++) {
        acc[c] = 0.0;
    }
    if (PASS == 0u) {
        var m = -3.0e38;
        var l = 0.0;
        for (var j = 0u; j < seen; j++) {
            let sc = score(qo, kv + j * d, b, h, i, j);
            let m_new = max(m, sc);
            let correction = exp(m - m_new);
            let p = exp(sc - m_new);
            l = l * correction + p;
            for (var c = 0u; c < d; c++) {
                acc[c] = acc[c] * correction + p * f32(v[kv + j * d + c]);
            }
            m = m_new;
        }
        if (seen == 0u) {
            lse[n] = {{ elem }}(bitcast<f32>(0x7f800000u));
            l = 1.0;
        } else {
            lse[n] = {{ elem }}(m + log(l));
        }
        for (var c = 0u; c < d; c++) {
            out_a[qo + c] = {{ elem }}(acc[c] / l);
        }
    } else {
        let row_lse = f32(lse[n]);
        let row_delta = f32(delta[n]);
        for (var j = 0u; j < seen; j++) {
            let p = exp(score(qo, kv + j * d, b, h, i, j) - row_lse);
            let ds = p * (dot_dout_v(qo, kv + j * d) - row_delta);
            for (var c = 0u; c < d; c++) {
                acc[c] += ds * f32(k[kv + j * d + c]);
            }
        }
        let scale = bitcast<f32>(info[6]);
        for (var c = 0u; c < d; c++) {
            out_a[qo + c] = {{ elem }}(acc[c] * scale);
        }
    }
}

// Key row n = ((b * Hk + g) * T + j): the dk and dv pass, over every query head reading head g.
fn key_row(n: u32) {
    let h_all = info[1];
    let hk = info[2];
    let s = info[3];
    let t = info[4];
    let d = info[5];
    let j = n % t;
    let bg = n / t;
    let g = bg % hk;
    let b = bg / hk;
    let ko = n * d;
    let group = h_all / hk;
    var dk: array<f32, MAX_D>;
    var dv: array<f32, MAX_D>;
    for (var c = 0u; c < d; c++) {
        dk[c] = 0.0;
        dv[c] = 0.0;
    }
    // Causal order: only queries i >= j - past see key j.
    var first = 0u;
    if (info[7] != 0u && j > info[8]) {
        first = j - info[8];
    }
    for (var hg = 0u; hg < group; hg++) {
        let h = g * group + hg;
        let bh = b * h_all + h;
        for (var i = first; i < s; i++) {
            if (j >= visible(b, i)) {
                continue;
            }
            let row = bh * s + i;
            let qo = row * d;
            let p = exp(score(qo, ko, b, h, i, j) - f32(lse[row]));
            let ds = p * (dot_dout_v(qo, ko) - f32(delta[row]));
            for (var c = 0u; c < d; c++) {
                dv[c] += p * f32(dout[qo + c]);
                dk[c] += ds * f32(q[qo + c]);
            }
        }
    }
    let scale = bitcast<f32>(info[6]);
    for (var c = 0u; c < d; c++) {
        out_a[ko + c] = {{ elem }}(dk[c] * scale);
        out_b[ko + c] = {{ elem }}(dv[c]);
    }
}

// Bias element n = ((row * H + h) * S + i) * T + j: the score gradient summed over the batch rows
// that read it (every row for a bias of one row).
fn bias_element(n: u32) {
    let h_all = info[1];
    let s = info[3];
    let t = info[4];
    let d = info[5];
    let j = n % t;
    let i = (n / t) % s;
    let h = (n / (s * t)) % h_all;
    let bias_row = n / (h_all * s * t);
    var first = bias_row;
    var last = bias_row + 1u;
    if (info[13] == 1u) {
        first = 0u;
        last = info[0];
    }
    var acc = 0.0;
    for (var b = first; b < last; b++) {
        if (j >= visible(b, i)) {
            continue;
        }
        let row = (b * h_all + h) * s + i;
        let qo = row * d;
        let ko = ((b * info[2] + h / (h_all / info[2])) * t + j) * d;
        let p = exp(score(qo, ko, b, h, i, j) - f32(lse[row]));
        acc += p * (dot_dout_v(qo, ko) - f32(delta[row]));
    }
    out_a[n] = {{ elem }}(acc);
}

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.y * info[11] + gid.x;
    if (PASS == 3u) {
        if (n < info[13] * info[1] * info[3] * info[4]) {
            bias_element(n);
        }
    } else if (PASS == 2u) {
        if (n < info[0] * info[2] * info[4]) {
            key_row(n);
        }
    } else if (n < info[0] * info[1] * info[3]) {
        query_row(n);
    }
}
